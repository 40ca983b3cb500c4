-- 0009_leases: proxied requests are admitted against per-daemon balance leases, so none of them
-- waits for a database round trip before it is forwarded.
--
-- A lease is an amount of one user's balance that one daemon holds and may commit to that user's
-- requests on its own: it admits a request in memory when the request's worst-case cost fits in
-- what the lease has left. A lease grows only through lease_grow, which keeps the user's
-- available balance (balance - all leases) at or above the minimum; a settlement consumes from
-- its daemon's lease what the request spent (at most what it reserved); an idle lease and every
-- lease of a stopped daemon are released. So concurrent requests, on any number of daemons,
-- still cannot take a balance below the minimum by more than requests cost beyond their
-- reservations.
--
-- reservations rows no longer hold money: each is the durable record of one request in flight
-- (written when it is admitted, deleted by its settlement), from which crash recovery charges
-- what a dead daemon left unsettled. balances.reserved_micros is now the sum of the user's leases.

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

-- Give back a daemon's leases on the given users (all of its leases when p_users is NULL).
-- The users' balances rows are locked first, in one order, as lease_grow and settle_usage do.
CREATE FUNCTION lease_release(p_daemon uuid, p_users uuid[])
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    released bigint;
BEGIN
    PERFORM FROM balances b
    WHERE b.user_id IN (SELECT l.user_id FROM balance_leases l
                        WHERE l.daemon_id = p_daemon
                          AND (p_users IS NULL OR l.user_id = ANY(p_users)))
    ORDER BY b.user_id
    FOR UPDATE;
    WITH gone AS (
        DELETE FROM balance_leases l
        WHERE l.daemon_id = p_daemon AND (p_users IS NULL OR l.user_id = ANY(p_users))
        RETURNING l.amount_micros)
    SELECT COALESCE(sum(gone.amount_micros), 0)::bigint INTO released FROM gone;
    RETURN released;
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

-- Requests in flight: records, not holds. What was held in open reservations moves into a lease
-- of the same daemon, so balances.reserved_micros does not change; closed rows are history that
-- usage_logs already keeps.
DROP TRIGGER reservations_hold ON reservations;
DROP TRIGGER reservations_release ON reservations;
DROP TRIGGER reservations_no_open_delete ON reservations;
DROP FUNCTION reservations_hold();
DROP FUNCTION reservations_release();
DROP FUNCTION reservations_no_open_delete();
DELETE FROM reservations WHERE status <> 'open';
UPDATE balances SET reserved_micros = 0 WHERE reserved_micros <> 0;
INSERT INTO balance_leases (user_id, daemon_id, amount_micros)
SELECT user_id, daemon_id, sum(amount_micros) FROM reservations GROUP BY user_id, daemon_id;

-- Every admitted request writes one row and its settlement deletes it: the row carries no more
-- than its primary key. Its ids come from rows the daemon read; recovery finds a dead daemon's
-- records by joining daemons (a small table of in-flight rows needs no index for that).
DROP INDEX reservations_open_daemon_id_idx;
ALTER TABLE reservations
    DROP CONSTRAINT reservations_check,
    DROP CONSTRAINT reservations_user_id_fkey,
    DROP CONSTRAINT reservations_instance_id_fkey,
    DROP CONSTRAINT reservations_daemon_id_fkey,
    DROP COLUMN status,
    DROP COLUMN closed_at,
    DROP COLUMN floor_micros;

-- Settlement: as before (0004), plus: the request's record is deleted, and its daemon's lease
-- gives up what the request spent (item lease_micros: its cost, at most what it reserved).
-- A replay is recognised by its usage_logs row; a replayed void moves nothing anyway.
-- lease_found: false when lease_micros was to be consumed but the daemon holds no lease on the
-- user any more (recovery released it): that daemon must stop admitting against it.
DROP FUNCTION settle_usage(jsonb, bigint);

CREATE FUNCTION settle_usage(items jsonb, minimum_micros bigint)
RETURNS TABLE (request_id uuid, outcome text, user_id uuid, balance_micros bigint, paused integer,
               auto_topup_micros bigint, lease_found boolean)
LANGUAGE plpgsql AS $$
DECLARE
    it jsonb;
    cost bigint;
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
        IF cost > 0 THEN
            INSERT INTO ledger_entries (user_id, amount_micros, kind, reference, idempotency_key)
            VALUES (settle_usage.user_id, -cost, 'usage', settle_usage.request_id::text,
                    'usage:' || settle_usage.request_id::text)
            RETURNING balance_after_micros INTO balance_micros;
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
            cost_micros, upstream_request_id, status_code, duration_ms, interrupted, recovered)
        VALUES (
            settle_usage.request_id, (it->>'instance_id')::uuid, settle_usage.user_id,
            it->>'api', it->>'model', (it->>'input_tokens')::bigint,
            (it->>'output_tokens')::bigint, (it->>'cache_write_5m_tokens')::bigint,
            (it->>'cache_write_1h_tokens')::bigint, (it->>'cache_read_tokens')::bigint,
            (it->>'reasoning_tokens')::bigint, cost, it->>'upstream_request_id',
            (it->>'status_code')::integer, (it->>'duration_ms')::integer,
            (it->>'interrupted')::boolean, (it->>'recovered')::boolean);
        IF balance_micros IS NOT NULL THEN
            SELECT b.topup_amount_micros INTO auto_topup_micros FROM balances b
            WHERE b.user_id = settle_usage.user_id AND b.auto_topup_enabled
              AND settle_usage.balance_micros < b.topup_threshold_micros
              AND settle_usage.balance_micros + cost >= b.topup_threshold_micros;
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
