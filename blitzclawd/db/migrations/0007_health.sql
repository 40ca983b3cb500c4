-- 0007_health: the health monitor's last result per instance, and its alerts.

CREATE TABLE instance_health (
    instance_id uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    checked_at timestamptz NOT NULL DEFAULT now(),
    ok boolean NOT NULL,
    -- ok | not_ready (gateway up, /readyz failing) | down (gateway not listening)
    -- | unreachable (no SSH) | error (gave up after the automatic restarts)
    state text NOT NULL CHECK (state IN ('ok', 'not_ready', 'down', 'unreachable', 'error')),
    detail text,
    restarts integer NOT NULL DEFAULT 0 CHECK (restarts >= 0),  -- since it was last healthy
    down_since timestamptz,  -- first failing check of the current outage
    alerted_at timestamptz  -- the current outage's alert, once
);

CREATE TABLE health_alerts (
    id bigserial PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('down', 'error')),
    detail text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX health_alerts_created_at_idx ON health_alerts (created_at);
