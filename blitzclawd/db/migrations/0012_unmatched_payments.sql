-- 0012_unmatched_payments: a payment credits only the top-up we sold, and what we cannot match
-- is kept for the operator instead of being credited to whoever an event names.
--
-- A top-up remembers the Creem order (and its transaction) that paid it, so a refund finds the
-- credit it takes back, and how much of that credit refunds have taken back already: the CHECK
-- makes "a refund never exceeds its credit" hold in the database too, over any number of partial
-- refunds.
--
-- unmatched_payments: every Creem event that moved no money although it carried some (a user
-- mismatch, no or an unknown request_id, another currency, more than the top-up, a refund of
-- nothing we credited, data we refuse), or moved less than it asked (a capped refund). One row
-- per event, written in the same transaction as the event's processed_webhook_events row.

ALTER TABLE topups
    ADD COLUMN order_id text UNIQUE,
    ADD COLUMN transaction_id text UNIQUE,
    ADD COLUMN refunded_micros bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT topups_refund_cap
        CHECK (refunded_micros >= 0 AND refunded_micros <= coalesce(credited_micros, 0));

CREATE TABLE unmatched_payments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    reason text NOT NULL CHECK (reason IN (
        'invalid_data', 'no_request_id', 'unknown_topup', 'checkout_mismatch', 'user_mismatch',
        'currency', 'amount_above_topup', 'topup_already_paid', 'unknown_payment',
        'refund_above_credit', 'unknown_user', 'rejected_by_database')),
    detail text NOT NULL,
    amount_cents bigint,  -- as the event stated it (NULL when absent or unusable)
    currency text,
    request_id text,  -- what the event claimed, as sent (cleaned)
    claimed_user text,  -- metadata.user_id as sent: never trusted, kept for the operator
    topup_id uuid REFERENCES topups (id) ON DELETE RESTRICT,  -- the top-up it matched, if any
    user_id uuid REFERENCES users (id) ON DELETE RESTRICT,  -- that top-up's user
    received_at timestamptz NOT NULL DEFAULT now(),
    payload jsonb,  -- the event's object, cleaned of what jsonb refuses
    UNIQUE (provider, event_id),
    FOREIGN KEY (provider, event_id) REFERENCES processed_webhook_events (provider, event_id)
        ON DELETE RESTRICT
);
CREATE INDEX unmatched_payments_received_at_idx ON unmatched_payments (received_at);
