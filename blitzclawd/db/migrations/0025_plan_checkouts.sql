-- 0025_plan_checkouts: the user's open checkout of the base plan, answered again while it is
-- fresh, so that two Subscribe clicks (two tabs, a double tap) never open two checkouts that
-- could both be paid. Forgotten once a subscription of the user is recorded.

CREATE TABLE plan_checkouts (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    checkout_id text,  -- NULL while a request is opening it
    checkout_url text,
    created_at timestamptz NOT NULL DEFAULT now()
);
