-- 0003_accounts: top-ups, notifications, and ledger adjustments in either direction.

-- A requested top-up: our id is Creem's request_id, so the webhook finds it again.
CREATE TABLE topups (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    checkout_id text UNIQUE,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid')),
    credited_micros bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    paid_at timestamptz
);
CREATE INDEX topups_user_id_idx ON topups (user_id, created_at);

-- One email per (user, kind, period): the row is written before sending, so a retry or a second
-- daemon never sends twice; `period` says what makes a kind due again (a week, a top-up cycle).
CREATE TABLE notifications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    period text NOT NULL,
    facts jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    provider_id text,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    UNIQUE (user_id, kind, period)
);
CREATE INDEX notifications_pending_idx ON notifications (next_attempt_at) WHERE status = 'pending';

-- Any ledger movement other than usage (top-up, subscription, refund, chargeback, adjustment),
-- idempotent on its key. After it: below the minimum pauses the user's active instances (reason
-- given), back at or above it resumes those paused for depletion.
CREATE FUNCTION adjust_balance(
    p_user uuid, p_amount bigint, p_kind text, p_reference text, p_key text,
    minimum_micros bigint, pause_reason text DEFAULT 'balance_depleted')
RETURNS TABLE (outcome text, balance_micros bigint, paused integer, resumed integer)
LANGUAGE plpgsql AS $$
BEGIN
    paused := 0;
    resumed := 0;
    BEGIN
        INSERT INTO ledger_entries (user_id, amount_micros, kind, reference, idempotency_key)
        VALUES (p_user, p_amount, p_kind, p_reference, p_key)
        RETURNING balance_after_micros INTO balance_micros;
    EXCEPTION WHEN unique_violation THEN
        outcome := 'duplicate';
        SELECT b.balance_micros INTO balance_micros FROM balances b WHERE b.user_id = p_user;
        RETURN NEXT;
        RETURN;
    END;
    outcome := 'applied';
    IF balance_micros < minimum_micros THEN
        UPDATE instances i SET status = 'paused', status_reason = pause_reason
        WHERE i.user_id = p_user AND i.status = 'active';
        GET DIAGNOSTICS paused = ROW_COUNT;
    ELSE
        UPDATE instances i SET status = 'active', status_reason = NULL
        WHERE i.user_id = p_user AND i.status = 'paused' AND i.status_reason = 'balance_depleted';
        GET DIAGNOSTICS resumed = ROW_COUNT;
    END IF;
    RETURN NEXT;
END
$$;
