-- 0016_admin_actions: every operator action through the admin API, who did what to what, when.
-- actor: "admin_key" or "user:<uuid>" (an admin user's key or session); target: the row acted on.

CREATE TABLE admin_actions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor text NOT NULL,
    action text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_.]*$'),
    target text,
    detail jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_actions_created_at_idx ON admin_actions (created_at);
