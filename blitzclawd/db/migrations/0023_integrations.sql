-- 0023_integrations: Google OAuth for users' assistants. A connect starts an `oauth_states` row
-- (random state, the PKCE verifier encrypted with the keyring, single use, 10 minutes) bound to
-- the user who started it; the callback consumes it and stores the tokens, encrypted, on the
-- user's one integration per provider. An integration whose refresh Google refuses is 'broken'.
-- Instances use integrations through `instance_integrations`.

CREATE TABLE oauth_states (
    state text PRIMARY KEY CHECK (length(state) BETWEEN 32 AND 128),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_-]*$'),
    code_verifier_enc bytea NOT NULL,
    redirect_uri text NOT NULL,
    scopes text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX oauth_states_expires_at_idx ON oauth_states (expires_at);

ALTER TABLE user_integrations
    ADD COLUMN status text NOT NULL DEFAULT 'connected' CHECK (status IN ('connected', 'broken')),
    ADD COLUMN account_email text,
    ADD COLUMN broken_reason text,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN refreshed_at timestamptz;
CREATE INDEX user_integrations_expires_at_idx ON user_integrations (expires_at)
    WHERE status = 'connected';

CREATE TABLE instance_integrations (
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    integration_id uuid NOT NULL REFERENCES user_integrations (id) ON DELETE CASCADE,
    attached_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, integration_id)
);
CREATE INDEX instance_integrations_integration_idx ON instance_integrations (integration_id);
