-- 0004_auto_topup: settlement also says when a debit crossed the user's auto-top-up threshold.
--
-- Creem cannot charge a saved card without the customer (no off-session charges through its API),
-- so "auto top-up" means: the moment the balance crosses the threshold, the user is emailed a
-- checkout prepared for their chosen amount.

DROP FUNCTION settle_usage(jsonb, bigint);

-- Settlement of a batch of proxy requests in the caller's ONE transaction (group commit). Per
-- item, idempotent on request_id: close the reservation, debit the cost, write the usage row;
-- when the debit leaves the balance below the minimum, pause the user's active instances.
-- Outcomes: settled | recovered | voided (nothing used: the hold is released, nothing charged)
-- | duplicate (settled before: nothing changes). auto_topup_micros: set when this very debit took
-- the balance across the user's auto-top-up threshold (the amount to offer them).
CREATE FUNCTION settle_usage(items jsonb, minimum_micros bigint)
RETURNS TABLE (request_id uuid, outcome text, user_id uuid, balance_micros bigint, paused integer,
               auto_topup_micros bigint)
LANGUAGE plpgsql AS $$
DECLARE
    it jsonb;
    cost bigint;
    tokens bigint;
    closed text;
BEGIN
    FOR it IN SELECT value FROM jsonb_array_elements(items) LOOP
        request_id := (it->>'request_id')::uuid;
        user_id := (it->>'user_id')::uuid;
        cost := (it->>'cost_micros')::bigint;
        balance_micros := NULL;
        paused := 0;
        auto_topup_micros := NULL;
        tokens := (it->>'input_tokens')::bigint + (it->>'output_tokens')::bigint
            + (it->>'cache_write_5m_tokens')::bigint + (it->>'cache_write_1h_tokens')::bigint
            + (it->>'cache_read_tokens')::bigint;
        IF cost < 0 THEN
            RAISE EXCEPTION 'settle_usage: negative cost for %', request_id;
        END IF;
        IF EXISTS (SELECT FROM usage_logs u WHERE u.request_id = settle_usage.request_id) THEN
            outcome := 'duplicate';
            RETURN NEXT;
            CONTINUE;
        END IF;
        closed := CASE
            WHEN cost = 0 AND tokens = 0 THEN 'voided'
            WHEN (it->>'recovered')::boolean THEN 'recovered'
            ELSE 'settled' END;
        UPDATE reservations r SET status = closed, closed_at = now()
        WHERE r.id = settle_usage.request_id AND r.status = 'open';
        -- A reservation already closed means an earlier settlement (e.g. a void): a replay.
        -- One that is missing altogether (lost with an asynchronously committed admission when
        -- the database crashed) does not excuse the charge: settle without it.
        IF NOT FOUND AND EXISTS (
                SELECT FROM reservations r WHERE r.id = settle_usage.request_id) THEN
            outcome := 'duplicate';
            RETURN NEXT;
            CONTINUE;
        END IF;
        outcome := closed;
        IF closed <> 'voided' THEN
            IF cost > 0 THEN
                INSERT INTO ledger_entries (user_id, amount_micros, kind, reference, idempotency_key)
                VALUES (settle_usage.user_id, -cost, 'usage', settle_usage.request_id::text,
                        'usage:' || settle_usage.request_id::text)
                RETURNING balance_after_micros INTO balance_micros;
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
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
