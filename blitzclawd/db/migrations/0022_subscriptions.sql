-- 0022_subscriptions: the base plan ($20/month including usage), a Creem subscription per user,
-- kept from Creem's webhooks. `event_at` is the created_at of the last event applied to the row:
-- an older event delivered late never moves a subscription back. The credit of a paid period is
-- a `subscription` ledger entry (0008), not kept here.

CREATE TABLE subscriptions (
    id text PRIMARY KEY,  -- Creem's subscription id (sub_…)
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    product_id text,
    -- Creem's status: active, trialing, past_due, scheduled_cancel, paused, canceled, expired, …
    status text NOT NULL CHECK (status ~ '^[a-z_]{1,40}$'),
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    ended_at timestamptz,  -- when it was canceled or expired
    event_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_user_id_idx ON subscriptions (user_id, event_at);
