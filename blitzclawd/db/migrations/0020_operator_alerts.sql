-- 0020_operator_alerts: operators are emailed about users' trouble (alerts.operator_emails).
-- notifications.recipient: the address an email about this user goes to instead of theirs (an
-- operator's); NULL, the user's own. The UNIQUE (user_id, kind, period) key still makes each
-- email once: an operator's period names the operator.
-- balance_alerts: a user whose balance ran out mid-conversation (their instances paused), once
-- per pause: the period is the user's top-up cycle (their latest credit), as their own email's.

ALTER TABLE notifications ADD COLUMN recipient text;

CREATE TABLE balance_alerts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    period text NOT NULL,
    balance_micros bigint NOT NULL,
    paused_instances integer NOT NULL CHECK (paused_instances >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, period)
);
CREATE INDEX balance_alerts_created_at_idx ON balance_alerts (created_at);
