-- 0013_usage_fees: usage never takes a balance below zero, and the usage row records every fee.
--
-- Admission reserves a request's worst case (every token, tier, long-context rate and per-use
-- fee it can incur), so its cost never exceeds what the user could spend. Should that bound ever
-- fail (an upstream reporting more than it can bill), settle_usage debits the cost only down to
-- a zero balance and records the rest as unbilled_micros: the balance never goes negative from
-- usage, and the shortfall is visible (the proxy also logs it as an error). cost_micros is what
-- was debited, so a balance stays the sum of its entries and usage_logs sums to the debits.

ALTER TABLE usage_logs
    ADD COLUMN audio_input_tokens bigint NOT NULL DEFAULT 0 CHECK (audio_input_tokens >= 0),
    ADD COLUMN audio_output_tokens bigint NOT NULL DEFAULT 0 CHECK (audio_output_tokens >= 0),
    ADD COLUMN web_search_requests bigint NOT NULL DEFAULT 0 CHECK (web_search_requests >= 0),
    ADD COLUMN web_fetch_requests bigint NOT NULL DEFAULT 0 CHECK (web_fetch_requests >= 0),
    ADD COLUMN file_search_calls bigint NOT NULL DEFAULT 0 CHECK (file_search_calls >= 0),
    ADD COLUMN service_tier text,
    ADD COLUMN unbilled_micros bigint NOT NULL DEFAULT 0 CHECK (unbilled_micros >= 0);

CREATE OR REPLACE FUNCTION settle_usage(items jsonb, minimum_micros bigint)
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
