-- 0017_spend_alerts: an instance spending far above its own recent hourly baseline, once per
-- instance per clock hour (the UNIQUE key is the "one alert per window" rule).

CREATE TABLE spend_alerts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    window_start timestamptz NOT NULL,
    spent_micros bigint NOT NULL,
    baseline_micros bigint NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (instance_id, window_start)
);
CREATE INDEX spend_alerts_created_at_idx ON spend_alerts (created_at);
