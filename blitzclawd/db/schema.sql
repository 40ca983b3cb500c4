-- blitzclawd's schema as it stands after every migration in migrations/, for reading.
--
-- Keep it equal to applying all migrations: when you add migrations/NNNN_*.sql, make the same
-- change here (tests/test_migrations.py compares the two catalogs). The runner's own table,
-- schema_migrations, is created by blitzclawd/db/migrate.py and is not listed here.
--
-- Money is integer micro-USD (1 µ$ = 1e-6 USD) in bigint columns named *_micros; never cents,
-- never numeric or float. Enumerations are text + CHECK (easier to migrate than enum types).
-- Users and instances are soft-deleted (deleted_at), and every foreign key from a money or usage
-- row RESTRICTs, so no ledger, reservation or usage row is ever cascade-deleted. Credentials
-- (api_keys, user_integrations) and queued jobs do cascade with their owner.

-- Shared trigger functions ---------------------------------------------------------------------

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

-- For tables where some operations are never allowed (statement-level, so it also covers
-- TRUNCATE and statements that touch no rows).
CREATE FUNCTION refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed', TG_OP, TG_TABLE_NAME
        USING HINT = 'money moves only by inserting into ledger_entries';
END
$$;

-- Identity -------------------------------------------------------------------------------------

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    clerk_user_id text UNIQUE,  -- NULL until synced from Clerk
    email text,
    google_id text,
    creem_customer_id text UNIQUE,  -- webhooks find the user by it
    role text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,  -- anonymised, not deleted: the ledger stays
    email_verified boolean,  -- Clerk's word on the primary email; NULL: not known
    clerk_checked_at timestamptz  -- last Backend API lookup of the user (spaces retries out)
);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name text NOT NULL,
    prefix text NOT NULL,  -- first characters of the key, for display
    key_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);

-- Encrypted columns (*_enc) hold a self-describing AES-256-GCM blob: key id + nonce + ciphertext.
CREATE TABLE user_integrations (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider text NOT NULL CHECK (provider ~ '^[a-z][a-z0-9_-]*$'),  -- google, github, ...
    access_token_enc bytea,
    refresh_token_enc bytea,
    scopes text[] NOT NULL DEFAULT '{}',
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- 0023: a refresh Google refused makes it 'broken' (the user reconnects).
    status text NOT NULL DEFAULT 'connected' CHECK (status IN ('connected', 'broken')),
    account_email text,
    broken_reason text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz,
    UNIQUE (user_id, provider)
);
CREATE INDEX user_integrations_expires_at_idx ON user_integrations (expires_at)
    WHERE status = 'connected';

-- Every running daemon registers itself; recovery settles the reservations of dead ones.
CREATE TABLE daemons (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    hostname text NOT NULL,
    pid integer NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz
);

-- Money ----------------------------------------------------------------------------------------

CREATE TABLE balances (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE RESTRICT,
    -- Always the sum of the user's ledger_entries: only the ledger trigger writes it.
    balance_micros bigint NOT NULL DEFAULT 0,
    auto_topup_enabled boolean NOT NULL DEFAULT false,
    topup_threshold_micros bigint CHECK (topup_threshold_micros >= 0),
    topup_amount_micros bigint CHECK (topup_amount_micros > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Always the sum of the user's balance leases: only the lease trigger writes it.
    -- Available balance = balance_micros - reserved_micros.
    reserved_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    CHECK (
        NOT auto_topup_enabled
        OR (topup_threshold_micros IS NOT NULL AND topup_amount_micros IS NOT NULL)
    )
);

-- Append-only. Inserting an entry moves the balance (trigger below); nothing else can.
-- The id is GENERATED ALWAYS (bigserial's strict form): a client-chosen id could collide and let
-- INSERT ... ON CONFLICT (id) DO NOTHING skip a row whose BEFORE trigger already moved money.
CREATE TABLE ledger_entries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    amount_micros bigint NOT NULL CHECK (amount_micros <> 0),  -- credits +, debits -
    kind text NOT NULL CHECK (
        kind IN ('topup', 'subscription', 'usage', 'refund', 'adjustment', 'chargeback')
    ),
    reference text,  -- usage request id, Creem order id, ...
    idempotency_key text UNIQUE,  -- a replayed credit or debit cannot apply twice
    balance_after_micros bigint NOT NULL,  -- set by the trigger; a client's value is ignored
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE kind
        WHEN 'topup' THEN amount_micros > 0
        WHEN 'subscription' THEN amount_micros > 0
        WHEN 'usage' THEN amount_micros < 0
        WHEN 'chargeback' THEN amount_micros < 0
        ELSE true
    END)
);
CREATE INDEX ledger_entries_user_id_idx ON ledger_entries (user_id, id);

CREATE FUNCTION ledger_entries_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.idempotency_key IS NOT NULL THEN
        -- INSERT ... ON CONFLICT DO NOTHING runs BEFORE triggers for rows it then skips, so a
        -- duplicate must fail here, before the balance moves. The transaction-scoped lock
        -- (two-int keyspace, 0x6c656467 = 'ledg') makes a concurrent writer of the same key
        -- wait for our commit and then see our row.
        PERFORM pg_advisory_xact_lock(1818584167, hashtext(NEW.idempotency_key));
        IF EXISTS (SELECT FROM ledger_entries WHERE idempotency_key = NEW.idempotency_key) THEN
            RAISE EXCEPTION 'duplicate ledger_entries.idempotency_key'
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('Key (idempotency_key)=(%s) already exists.',
                                      NEW.idempotency_key),
                      CONSTRAINT = 'ledger_entries_idempotency_key_key',
                      TABLE = 'ledger_entries';
        END IF;
    END IF;
    INSERT INTO balances AS b (user_id, balance_micros)
    VALUES (NEW.user_id, NEW.amount_micros)
    ON CONFLICT (user_id) DO UPDATE SET balance_micros = b.balance_micros + EXCLUDED.balance_micros
    RETURNING b.balance_micros INTO NEW.balance_after_micros;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_entries_apply BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_apply();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER ledger_entries_no_truncate BEFORE TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Only ledger_entries_apply may set balance_micros. That trigger's statements fire this one at
-- pg_trigger_depth() = 2, while any statement a client sends fires it at depth 1. A session flag
-- (set_config) would not do: every client can set it. Reaching depth 2 another way needs a
-- trigger of one's own, i.e. DDL rights, which could drop these triggers anyway.
CREATE FUNCTION balances_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.user_id <> OLD.user_id THEN
        RAISE EXCEPTION 'balances.user_id cannot change';
    END IF;
    IF pg_trigger_depth() < 2
            AND NEW.balance_micros <> (CASE TG_OP WHEN 'INSERT' THEN 0 ELSE OLD.balance_micros END)
    THEN
        RAISE EXCEPTION 'balances.balance_micros changes only through ledger_entries'
            USING HINT = 'insert a ledger entry; its trigger moves the balance';
    END IF;
    RETURN NEW;
END
$$;

-- PL/pgSQL runs only when there is something to check (holds change reserved_micros only).
CREATE TRIGGER balances_guard_insert BEFORE INSERT ON balances
    FOR EACH ROW EXECUTE FUNCTION balances_guard();
CREATE TRIGGER balances_guard_update BEFORE UPDATE ON balances
    FOR EACH ROW
    WHEN (NEW.balance_micros IS DISTINCT FROM OLD.balance_micros
          OR NEW.user_id IS DISTINCT FROM OLD.user_id)
    EXECUTE FUNCTION balances_guard();
CREATE TRIGGER balances_set_updated_at BEFORE UPDATE ON balances
    FOR EACH ROW
    WHEN (NEW.balance_micros IS DISTINCT FROM OLD.balance_micros
          OR NEW.auto_topup_enabled IS DISTINCT FROM OLD.auto_topup_enabled
          OR NEW.topup_threshold_micros IS DISTINCT FROM OLD.topup_threshold_micros
          OR NEW.topup_amount_micros IS DISTINCT FROM OLD.topup_amount_micros)
    EXECUTE FUNCTION set_updated_at();
-- A deleted row would restart at zero and break balance = sum(entries).
CREATE TRIGGER balances_no_delete BEFORE DELETE ON balances
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER balances_no_truncate BEFORE TRUNCATE ON balances
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Fleet ----------------------------------------------------------------------------------------

CREATE TABLE server_pool (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    hetzner_server_id bigint UNIQUE,  -- NULL until Hetzner has created it
    name text NOT NULL UNIQUE,
    ip_address inet,
    location text,
    server_type text,
    status text NOT NULL DEFAULT 'provisioning' CHECK (
        status IN ('provisioning', 'available', 'assigned', 'deleting', 'gone')
    ),
    assigned_to uuid UNIQUE,  -- FK to instances, added below (the two tables refer to each other)
    secret_hash bytea,
    ssh_host_key text,  -- pinned; SSH never runs without it
    created_at timestamptz NOT NULL DEFAULT now(),
    ready_at timestamptz,
    status_changed_at timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'assigned' OR assigned_to IS NOT NULL)
);
CREATE INDEX server_pool_available_idx ON server_pool (created_at) WHERE status = 'available';

CREATE FUNCTION set_status_changed_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        NEW.status_changed_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER server_pool_status_changed_at BEFORE UPDATE ON server_pool
    FOR EACH ROW EXECUTE FUNCTION set_status_changed_at();

CREATE TABLE instances (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    server_id uuid REFERENCES server_pool (id) ON DELETE SET NULL,
    hetzner_server_id bigint,
    ip_address inet,
    status text NOT NULL DEFAULT 'pending' CHECK (
        status IN ('waiting_for_channel', 'pending', 'provisioning', 'active', 'paused', 'stopped',
                   'error', 'deleted')
    ),
    status_reason text,
    -- Channels are plugins, so the set of types is the plugin registry's business, not the
    -- schema's: a third-party channel must not need a core migration.
    channel_type text NOT NULL CHECK (channel_type ~ '^[a-z][a-z0-9_-]*$'),
    channel_config jsonb NOT NULL DEFAULT '{}',  -- non-secret parts only
    channel_secret_enc bytea,  -- the channel's secrets: one encrypted JSON document
    persona_template text,
    soul_md text,
    use_own_api_key boolean NOT NULL DEFAULT false,
    own_api_provider text CHECK (own_api_provider IN ('anthropic', 'openai')),
    own_api_key_enc bytea,
    secret_hash bytea NOT NULL UNIQUE,  -- the instance's own proxy secret, hashed
    msgs_per_hour integer CHECK (msgs_per_hour >= 0),  -- NULL: the global limit
    tokens_per_day bigint CHECK (tokens_per_day >= 0),  -- NULL: the global limit
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_health_check timestamptz,
    deleted_at timestamptz,
    CHECK (NOT use_own_api_key OR (own_api_provider IS NOT NULL AND own_api_key_enc IS NOT NULL)),
    channel_session_enc bytea  -- a linked session's files (WhatsApp), encrypted
);
CREATE INDEX instances_user_id_idx ON instances (user_id);
CREATE INDEX instances_waiting_idx ON instances (created_at)
    WHERE status = 'pending' AND server_id IS NULL;

CREATE TRIGGER instances_set_updated_at BEFORE UPDATE ON instances
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

ALTER TABLE server_pool ADD FOREIGN KEY (assigned_to) REFERENCES instances (id) ON DELETE RESTRICT;

-- Durable instance work (deploy, configure, restart, teardown), claimed with
-- FOR UPDATE SKIP LOCKED so a restarted daemon resumes it. The payload never holds plaintext
-- secrets: the worker reads the encrypted columns when it deploys.
CREATE TABLE instance_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
    payload jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    run_after timestamptz NOT NULL DEFAULT now(),
    locked_by uuid REFERENCES daemons (id) ON DELETE SET NULL,
    locked_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX instance_jobs_queued_idx ON instance_jobs (run_after) WHERE status = 'queued';
CREATE INDEX instance_jobs_instance_id_idx ON instance_jobs (instance_id);
CREATE INDEX instance_jobs_running_idx ON instance_jobs (locked_by) WHERE status = 'running';

-- The health monitor (0007): the last result per instance, and its alerts.
CREATE TABLE instance_health (
    instance_id uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    checked_at timestamptz NOT NULL DEFAULT now(),
    ok boolean NOT NULL,
    -- ok | not_ready (gateway up, /readyz failing) | down (gateway not listening)
    -- | timeout (0024: no answer in time) | unreachable (no SSH)
    -- | error (gave up after the automatic restarts)
    state text NOT NULL CONSTRAINT instance_health_state_check
        CHECK (state IN ('ok', 'not_ready', 'down', 'timeout', 'unreachable', 'error')),
    detail text,
    restarts integer NOT NULL DEFAULT 0 CHECK (restarts >= 0),  -- since it was last healthy
    down_since timestamptz,  -- first failing check of the current outage
    alerted_at timestamptz,  -- the current outage's alert, once
    failures integer NOT NULL DEFAULT 0 CHECK (failures >= 0),  -- 0024: timeouts in a row
    answer_ms integer CHECK (answer_ms >= 0)  -- 0024: a healthy /readyz's time
);

CREATE TABLE health_alerts (
    id bigserial PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    kind text NOT NULL CONSTRAINT health_alerts_kind_check
        CHECK (kind IN ('down', 'unreachable', 'error')),
    detail text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX health_alerts_created_at_idx ON health_alerts (created_at);

-- Metering -------------------------------------------------------------------------------------

-- One proxy request in flight: written when it is admitted (against its daemon's lease, see
-- balance_leases), deleted by its settlement. What a dead daemon left here is charged by recovery.
-- Written once per request, so it carries nothing but its primary key (no foreign keys: its ids
-- come from rows the daemon read; recovery finds a dead daemon's rows by joining daemons).
CREATE TABLE reservations (
    id uuid PRIMARY KEY,  -- the proxy request id, supplied by the caller
    user_id uuid NOT NULL,
    instance_id uuid,
    amount_micros bigint NOT NULL CHECK (amount_micros > 0),  -- its worst-case cost
    daemon_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- What the prompt alone costs at the plain input rate: recovery's lower bound.
    input_estimate_micros bigint NOT NULL DEFAULT 0 CHECK (input_estimate_micros >= 0),
    -- Checkpointed cost of the tokens an in-flight stream has produced so far; once finished,
    -- the request's final cost.
    seen_micros bigint NOT NULL DEFAULT 0 CHECK (seen_micros >= 0),
    api text,
    model text,
    finished boolean NOT NULL DEFAULT false  -- 0011: the request is over
);

-- Per-daemon balance leases (0009): a daemon admits a user's requests in memory against the
-- amount it holds of that user's balance. balances.reserved_micros = sum of the user's leases.
CREATE TABLE balance_leases (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    daemon_id uuid NOT NULL REFERENCES daemons (id) ON DELETE RESTRICT,
    amount_micros bigint NOT NULL CHECK (amount_micros >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, daemon_id)
);
CREATE INDEX balance_leases_daemon_id_idx ON balance_leases (daemon_id);

-- balances.reserved_micros = sum of the user's leases, by construction: only this trigger
-- writes it. AFTER, so an INSERT ... ON CONFLICT DO UPDATE counts what it really did.
CREATE FUNCTION balance_leases_hold() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    delta bigint;
    owner uuid;
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.user_id <> OLD.user_id OR NEW.daemon_id <> OLD.daemon_id) THEN
        RAISE EXCEPTION 'a lease''s user and daemon are fixed';
    END IF;
    IF TG_OP = 'INSERT' THEN
        delta := NEW.amount_micros;
        owner := NEW.user_id;
    ELSIF TG_OP = 'UPDATE' THEN
        delta := NEW.amount_micros - OLD.amount_micros;
        owner := NEW.user_id;
    ELSE
        delta := -OLD.amount_micros;
        owner := OLD.user_id;
    END IF;
    IF delta <> 0 THEN
        UPDATE balances SET reserved_micros = reserved_micros + delta WHERE user_id = owner;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no balance to lease from' USING ERRCODE = 'BC402';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER balance_leases_hold AFTER INSERT OR UPDATE OR DELETE ON balance_leases
    FOR EACH ROW EXECUTE FUNCTION balance_leases_hold();

-- Grow a daemon's lease on a user's balance by up to `wanted`, at least `needed`, keeping the
-- available balance at or above `floor_micros`. Returns what was granted; BC402 when not even
-- `needed` fits. The balances row lock serialises every grow of one user, on every daemon.
CREATE FUNCTION lease_grow(
    p_user uuid, p_daemon uuid, needed bigint, wanted bigint, floor_micros bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    headroom bigint;
    granted bigint;
BEGIN
    IF needed <= 0 OR wanted < needed THEN
        RAISE EXCEPTION 'lease_grow: 0 < needed <= wanted';
    END IF;
    SELECT b.balance_micros - b.reserved_micros - floor_micros INTO headroom
    FROM balances b WHERE b.user_id = p_user FOR UPDATE;
    granted := LEAST(wanted, headroom);
    IF granted IS NULL OR granted < needed THEN
        RAISE EXCEPTION 'insufficient available balance' USING ERRCODE = 'BC402';
    END IF;
    INSERT INTO balance_leases AS l (user_id, daemon_id, amount_micros)
    VALUES (p_user, p_daemon, granted)
    ON CONFLICT (user_id, daemon_id) DO UPDATE
        SET amount_micros = l.amount_micros + EXCLUDED.amount_micros, updated_at = now();
    RETURN granted;
END
$$;

CREATE TABLE usage_logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id uuid NOT NULL UNIQUE,  -- settlement is idempotent on it
    instance_id uuid REFERENCES instances (id) ON DELETE RESTRICT,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    api text NOT NULL CHECK (api IN ('anthropic-messages', 'openai-chat', 'openai-responses')),
    model text NOT NULL,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cache_write_5m_tokens bigint NOT NULL DEFAULT 0,
    cache_write_1h_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    reasoning_tokens bigint NOT NULL DEFAULT 0,
    cost_micros bigint NOT NULL CHECK (cost_micros >= 0),
    upstream_request_id text,
    status_code integer,
    duration_ms integer CHECK (duration_ms >= 0),
    interrupted boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Settled by crash recovery from a checkpoint, not from the upstream's reported usage.
    recovered boolean NOT NULL DEFAULT false,
    -- 0013: audio tokens (parts of input/output billed at audio rates), server-side tool uses
    -- billed per use, the tier that served it, and what usage could not debit (the balance is
    -- never taken below zero: a worst case that failed to bound the cost).
    audio_input_tokens bigint NOT NULL DEFAULT 0 CHECK (audio_input_tokens >= 0),
    audio_output_tokens bigint NOT NULL DEFAULT 0 CHECK (audio_output_tokens >= 0),
    web_search_requests bigint NOT NULL DEFAULT 0 CHECK (web_search_requests >= 0),
    web_fetch_requests bigint NOT NULL DEFAULT 0 CHECK (web_fetch_requests >= 0),
    file_search_calls bigint NOT NULL DEFAULT 0 CHECK (file_search_calls >= 0),
    service_tier text,
    unbilled_micros bigint NOT NULL DEFAULT 0 CHECK (unbilled_micros >= 0),
    CHECK (
        LEAST(input_tokens, output_tokens, cache_write_5m_tokens, cache_write_1h_tokens,
              cache_read_tokens, reasoning_tokens) >= 0
    )
);
CREATE INDEX usage_logs_user_id_created_at_idx ON usage_logs (user_id, created_at);
CREATE INDEX usage_logs_instance_id_created_at_idx ON usage_logs (instance_id, created_at);
-- Time-range reads (spike alerts, dashboards; 0018): BRIN, nearly free for an append-only table.
CREATE INDEX usage_logs_created_at_brin ON usage_logs USING brin (created_at);

-- Webhooks -------------------------------------------------------------------------------------

-- Inserted in the same transaction as the credit it causes: a replay finds its row and stops.
CREATE TABLE processed_webhook_events (
    provider text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload jsonb,
    PRIMARY KEY (provider, event_id)
);

-- Metering functions (0002, 0004, 0009, 0010) -----------------------------------------------

-- Settlement of a batch of proxy requests in the caller's ONE transaction (group commit). Per
-- item, idempotent on request_id: delete the request's record, consume its daemon's lease, debit
-- the cost, write the usage row; when the debit leaves the balance below the minimum, pause the
-- user's active instances. Outcomes: settled | recovered | voided (nothing used, nothing
-- charged) | duplicate (settled before: nothing changes). auto_topup_micros: set when this very
-- debit took the balance across the user's auto-top-up threshold (the amount to offer them).
CREATE FUNCTION settle_usage(items jsonb, minimum_micros bigint)
RETURNS TABLE (request_id uuid, outcome text, user_id uuid, balance_micros bigint, paused integer,
               auto_topup_micros bigint, lease_found boolean)
LANGUAGE plpgsql AS $$
DECLARE
    it jsonb;
    cost bigint;
    charge bigint;
    tokens bigint;
    lease bigint;
BEGIN
    -- Every user's balances row first, in one order (as lease_release does): two batches, or a
    -- batch and a release, then never wait for each other in a cycle.
    PERFORM FROM balances b
    WHERE b.user_id IN (SELECT (value->>'user_id')::uuid FROM jsonb_array_elements(items))
    ORDER BY b.user_id
    FOR UPDATE;
    FOR it IN SELECT value FROM jsonb_array_elements(items) LOOP
        request_id := (it->>'request_id')::uuid;
        user_id := (it->>'user_id')::uuid;
        cost := (it->>'cost_micros')::bigint;
        lease := COALESCE((it->>'lease_micros')::bigint, 0);
        balance_micros := NULL;
        paused := 0;
        auto_topup_micros := NULL;
        lease_found := true;
        tokens := (it->>'input_tokens')::bigint + (it->>'output_tokens')::bigint
            + (it->>'cache_write_5m_tokens')::bigint + (it->>'cache_write_1h_tokens')::bigint
            + (it->>'cache_read_tokens')::bigint;
        IF cost < 0 OR lease < 0 OR lease > cost THEN
            RAISE EXCEPTION 'settle_usage: bad cost or lease for %', request_id;
        END IF;
        -- The record goes in every case: a replay must not leave one for recovery to charge.
        DELETE FROM reservations r WHERE r.id = settle_usage.request_id;
        IF EXISTS (SELECT FROM usage_logs u WHERE u.request_id = settle_usage.request_id) THEN
            outcome := 'duplicate';
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF cost = 0 AND tokens = 0 THEN
            outcome := 'voided';
            RETURN NEXT;
            CONTINUE;
        END IF;
        outcome := CASE WHEN (it->>'recovered')::boolean THEN 'recovered' ELSE 'settled' END;
        -- Usage never takes a balance below zero (0013): admission reserved the worst case, so
        -- a cost beyond the balance is a bound that failed; what is not debited is recorded.
        SELECT LEAST(cost, GREATEST(b.balance_micros, 0)) INTO charge
        FROM balances b WHERE b.user_id = settle_usage.user_id;
        charge := COALESCE(charge, 0);
        IF charge > 0 THEN
            -- No idempotency key: the usage row (UNIQUE request_id), written in this same
            -- transaction after the check above, already makes a second debit impossible.
            INSERT INTO ledger_entries (user_id, amount_micros, kind, reference)
            VALUES (settle_usage.user_id, -charge, 'usage', settle_usage.request_id::text)
            RETURNING balance_after_micros INTO balance_micros;
        ELSIF cost > 0 THEN
            SELECT b.balance_micros INTO balance_micros FROM balances b
            WHERE b.user_id = settle_usage.user_id;
        END IF;
        -- After the debit, which locked the user's balances row: every writer of a lease takes
        -- that row first (lease_grow, lease_release), so none of them can deadlock with us.
        IF lease > 0 THEN
            UPDATE balance_leases l SET amount_micros = l.amount_micros - LEAST(l.amount_micros, lease)
            WHERE l.user_id = settle_usage.user_id AND l.daemon_id = (it->>'daemon_id')::uuid;
            lease_found := FOUND;
        END IF;
        INSERT INTO usage_logs (
            request_id, instance_id, user_id, api, model, input_tokens, output_tokens,
            cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, reasoning_tokens,
            cost_micros, upstream_request_id, status_code, duration_ms, interrupted, recovered,
            audio_input_tokens, audio_output_tokens, web_search_requests, web_fetch_requests,
            file_search_calls, service_tier, unbilled_micros)
        VALUES (
            settle_usage.request_id, (it->>'instance_id')::uuid, settle_usage.user_id,
            it->>'api', it->>'model', (it->>'input_tokens')::bigint,
            (it->>'output_tokens')::bigint, (it->>'cache_write_5m_tokens')::bigint,
            (it->>'cache_write_1h_tokens')::bigint, (it->>'cache_read_tokens')::bigint,
            (it->>'reasoning_tokens')::bigint, charge, it->>'upstream_request_id',
            (it->>'status_code')::integer, (it->>'duration_ms')::integer,
            (it->>'interrupted')::boolean, (it->>'recovered')::boolean,
            COALESCE((it->>'audio_input_tokens')::bigint, 0),
            COALESCE((it->>'audio_output_tokens')::bigint, 0),
            COALESCE((it->>'web_search_requests')::bigint, 0),
            COALESCE((it->>'web_fetch_requests')::bigint, 0),
            COALESCE((it->>'file_search_calls')::bigint, 0),
            it->>'service_tier', cost - charge);
        IF balance_micros IS NOT NULL THEN
            SELECT b.topup_amount_micros INTO auto_topup_micros FROM balances b
            WHERE b.user_id = settle_usage.user_id AND b.auto_topup_enabled
              AND settle_usage.balance_micros < b.topup_threshold_micros
              AND settle_usage.balance_micros + charge >= b.topup_threshold_micros;
        END IF;
        IF balance_micros IS NOT NULL AND balance_micros < minimum_micros THEN
            UPDATE instances i SET status = 'paused', status_reason = 'balance_depleted'
            WHERE i.user_id = settle_usage.user_id AND i.status = 'active';
            GET DIAGNOSTICS paused = ROW_COUNT;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Give back part of a lease: `p_by` of what a daemon holds on a user (another daemon wants it).
-- The user's balances row first, as every writer of a lease does.
CREATE FUNCTION lease_shrink(p_daemon uuid, p_user uuid, p_by bigint)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    left_micros bigint;
BEGIN
    PERFORM FROM balances b WHERE b.user_id = p_user FOR UPDATE;
    UPDATE balance_leases l SET amount_micros = l.amount_micros - LEAST(l.amount_micros, p_by)
    WHERE l.daemon_id = p_daemon AND l.user_id = p_user
    RETURNING l.amount_micros INTO left_micros;
    RETURN left_micros;
END
$$;

-- Give back a daemon's leases on the given users (all of its leases when p_users is NULL).
-- The users' balances rows are locked first, in one order, as lease_grow and settle_usage do.
CREATE FUNCTION lease_release(p_daemon uuid, p_users uuid[])
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    released bigint;
    locked uuid[];
BEGIN
    -- Only leases whose user's balances row this transaction holds are deleted, so no lease is
    -- ever deleted while a settlement of its user holds the row (that was a deadlock). A lease
    -- granted after the rows were chosen is left as it is: every caller (idle release under the
    -- user's lease lock, a stop, a dead daemon) keeps grows of these users from running.
    SELECT array_agg(b.user_id) INTO locked FROM (
        SELECT b.user_id FROM balances b
        WHERE b.user_id IN (SELECT l.user_id FROM balance_leases l
                            WHERE l.daemon_id = p_daemon
                              AND (p_users IS NULL OR l.user_id = ANY(p_users)))
        ORDER BY b.user_id
        FOR UPDATE) b;
    WITH gone AS (
        DELETE FROM balance_leases l
        WHERE l.daemon_id = p_daemon AND l.user_id = ANY(locked)
        RETURNING l.amount_micros)
    SELECT COALESCE(sum(gone.amount_micros), 0)::bigint INTO released FROM gone;
    RETURN released;
END
$$;

-- Proxies cache instances; a change that matters to them is announced at commit, so every
-- daemon drops its copy at once (status, secret, own-key mode, limits).
CREATE FUNCTION instances_announce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('blitzclaw_instances', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER instances_announce AFTER UPDATE ON instances
    FOR EACH ROW
    WHEN ((OLD.status, OLD.secret_hash, OLD.use_own_api_key, OLD.msgs_per_hour,
           OLD.tokens_per_day)
          IS DISTINCT FROM (NEW.status, NEW.secret_hash, NEW.use_own_api_key, NEW.msgs_per_hour,
                            NEW.tokens_per_day))
    EXECUTE FUNCTION instances_announce();

-- Accounts (0003) ----------------------------------------------------------------------------

-- A requested top-up: our id is Creem's request_id, so the webhook finds it again.
CREATE TABLE topups (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0),
    checkout_id text UNIQUE,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid')),
    credited_micros bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    paid_at timestamptz,
    -- The Creem order (and transaction) that paid it: a refund finds its credit by them.
    order_id text UNIQUE,
    transaction_id text UNIQUE,
    -- What refunds have taken back of credited_micros: never more than was credited.
    refunded_micros bigint NOT NULL DEFAULT 0,
    CONSTRAINT topups_refund_cap
        CHECK (refunded_micros >= 0 AND refunded_micros <= coalesce(credited_micros, 0))
);
CREATE INDEX topups_user_id_idx ON topups (user_id, created_at);

-- Creem events that carried money we did not (fully) apply: a user mismatch, no or an unknown
-- request_id, another currency, more than the top-up, a refund of nothing we credited, data we
-- refuse, or a capped refund. Kept for the operator; one row per event, written in the same
-- transaction as the event's processed_webhook_events row.
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

-- The base plan (0022): a user's Creem subscription, kept from the webhooks. `event_at` is the
-- created_at of the last event applied: an older event delivered late never moves it back.
CREATE TABLE subscriptions (
    id text PRIMARY KEY,  -- Creem's subscription id (sub_…)
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    product_id text,
    -- Creem's status: active, trialing, past_due, scheduled_cancel, paused, canceled, expired, …
    status text NOT NULL CHECK (status ~ '^[a-z_]{1,40}$'),
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    ended_at timestamptz,  -- when it was canceled or expired
    event_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_user_id_idx ON subscriptions (user_id, event_at);

-- The user's open checkout of the base plan, answered again while fresh (0025): two Subscribe
-- clicks never open two checkouts that could both be paid. Forgotten once a subscription of
-- the user is recorded.
CREATE TABLE plan_checkouts (
    user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    checkout_id text,  -- NULL while a request is opening it
    checkout_url text,
    created_at timestamptz NOT NULL DEFAULT now()
);

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
    -- An operator's address (0020): the email is about this user, sent to them; NULL: the user.
    recipient text,
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

-- Operators ----------------------------------------------------------------------------------

-- Every operator action through the admin API (0016): who did what to what, when.
CREATE TABLE admin_actions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor text NOT NULL,
    action text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_.]*$'),
    target text,
    detail jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_actions_created_at_idx ON admin_actions (created_at);

-- An instance spending far above its own recent hourly baseline (0017), once per instance per
-- clock hour (the UNIQUE key is the "one alert per window" rule).
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

-- An operator's hold on the server pool (0019): while its one row exists the pool manager keeps
-- no spare servers (POST /api/admin/pool/drain until /resume).
CREATE TABLE pool_hold (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    held_by text NOT NULL,
    held_at timestamptz NOT NULL DEFAULT now()
);

-- A user whose balance ran out mid-conversation (0020): their instances paused; one row per pause
-- (the period is their top-up cycle), for the operators' live events and emails.
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

-- OAuth connects under way (0023): single use, 10 minutes, bound to the user who started them;
-- the PKCE verifier encrypted with the keyring.
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

-- Which of a user's integrations each instance uses (0023).
CREATE TABLE instance_integrations (
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    integration_id uuid NOT NULL REFERENCES user_integrations (id) ON DELETE CASCADE,
    attached_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, integration_id)
);
CREATE INDEX instance_integrations_integration_idx ON instance_integrations (integration_id);
