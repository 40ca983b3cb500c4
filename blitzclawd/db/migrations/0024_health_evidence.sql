-- 0024_health_evidence: a restart needs evidence. `timeout` (the gateway did not answer /readyz
-- in time) restarts only after `failures` such checks in a row; `unreachable` (no SSH) never
-- restarts and has its own alert kind, for the operators. `answer_ms`: a healthy answer's time.

ALTER TABLE instance_health
    DROP CONSTRAINT instance_health_state_check,
    ADD CONSTRAINT instance_health_state_check
        CHECK (state IN ('ok', 'not_ready', 'down', 'timeout', 'unreachable', 'error')),
    ADD COLUMN failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0),
    ADD COLUMN answer_ms integer CHECK (answer_ms >= 0);

ALTER TABLE health_alerts
    DROP CONSTRAINT health_alerts_kind_check,
    ADD CONSTRAINT health_alerts_kind_check CHECK (kind IN ('down', 'unreachable', 'error'));
