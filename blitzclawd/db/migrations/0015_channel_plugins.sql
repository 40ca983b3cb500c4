-- 0015_channel_plugins: create first, connect the channel after; a linked session backed up.
--
-- waiting_for_channel: created without the channel's required settings (a bot token, ...): no
-- server is claimed until they are sent (POST /api/instances/{id}/channel).
-- channel_secret_enc now holds one JSON document of the channel's secrets (older rows: one bare
-- secret, read as the channel's first secret field). channel_session_enc: the channel's linked
-- session files (WhatsApp's), encrypted, restored when the instance gets a new server.

ALTER TABLE instances DROP CONSTRAINT instances_status_check;
ALTER TABLE instances ADD CONSTRAINT instances_status_check CHECK (
    status IN ('waiting_for_channel', 'pending', 'provisioning', 'active', 'paused', 'stopped',
               'error', 'deleted')
);
ALTER TABLE instances ADD COLUMN channel_session_enc bytea;
