-- 0010_settlement_fixes: a usage debit no longer carries a ledger idempotency key, and
-- lease_release no longer deadlocks with a settlement.
--
-- lease_release chose the rows to lock in one statement and deleted leases in the next: a lease
-- granted in between was deleted without its user's balances row, and when a settlement of that
-- user held the row (and then wanted the lease) the two waited for each other. It now deletes only
-- leases whose rows it holds.
--
-- settle_usage already refuses a request it settled before (its usage_logs row, UNIQUE on
-- request_id, is checked and written in the same transaction as the debit, after the user's
-- balances row is locked), so the key added a second guard that cost every settlement an advisory
-- lock, a lookup and an index entry: about a sixth of its database time. Credits keep their keys.
-- Usage entries still name their request in `reference`.

CREATE OR REPLACE FUNCTION settle_usage(items jsonb, minimum_micros bigint)
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
            -- No idempotency key: the usage row (UNIQUE request_id), written in this same
            -- transaction after the check above, already makes a second debit impossible.
            INSERT INTO ledger_entries (user_id, amount_micros, kind, reference)
            VALUES (settle_usage.user_id, -cost, 'usage', settle_usage.request_id::text)
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

CREATE OR REPLACE FUNCTION lease_release(p_daemon uuid, p_users uuid[])
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
