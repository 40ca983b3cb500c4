-- 0021_device_logins: `blitzclaw auth login` without a key (a device flow). The CLI asks for a
-- request and shows its user code; the signed-in user confirms that code on the dashboard's
-- /device page; the CLI, polling with its secret device code (kept here only as a hash), then
-- gets an API key minted for it once. Requests expire after 10 minutes.

CREATE TABLE device_logins (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_code_hash bytea NOT NULL UNIQUE,
    user_code text NOT NULL UNIQUE CHECK (user_code ~ '^[A-Z2-9]{4}-[A-Z2-9]{4}$'),
    client_name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    approved_by uuid REFERENCES users (id) ON DELETE CASCADE,
    approved_at timestamptz,
    issued_at timestamptz
);
CREATE INDEX device_logins_expires_at_idx ON device_logins (expires_at);
