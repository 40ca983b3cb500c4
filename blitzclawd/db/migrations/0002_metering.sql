-- 0002_metering: reservations that hold balance, and settlement / credit in one statement each.
--
-- Available balance = balance_micros - reserved_micros. balances.reserved_micros is always the
-- sum of the user's open reservations: only the reservation triggers below change it, so the
-- invariant holds by construction, like balance_micros = sum(ledger_entries).

ALTER TABLE balances
    ADD COLUMN reserved_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0);

ALTER TABLE reservations
    -- The floor the reservation was admitted against (the minimum balance at the time).
    ADD COLUMN floor_micros bigint NOT NULL DEFAULT 0,
    -- What the prompt alone costs at the plain input rate: recovery's lower bound.
    ADD COLUMN input_estimate_micros bigint NOT NULL DEFAULT 0 CHECK (input_estimate_micros >= 0),
    -- Checkpointed cost of the tokens an in-flight stream has produced so far.
    ADD COLUMN seen_micros bigint NOT NULL DEFAULT 0 CHECK (seen_micros >= 0),
    ADD COLUMN api text,
    ADD COLUMN model text;

ALTER TABLE usage_logs
    -- Settled by crash recovery from a checkpoint, not from the upstream's reported usage.
    ADD COLUMN recovered boolean NOT NULL DEFAULT false;

-- Admission: a new (open) reservation holds its amount, only if the user's available balance
-- stays at or above its floor. The balances row lock serialises concurrent admissions of one
-- user, so simultaneous requests can never overdraw together.
CREATE FUNCTION reservations_hold() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status <> 'open' THEN
        RAISE EXCEPTION 'a reservation is created open';
    END IF;
    UPDATE balances SET reserved_micros = reserved_micros + NEW.amount_micros
    WHERE user_id = NEW.user_id
      AND balance_micros - reserved_micros - NEW.amount_micros >= NEW.floor_micros;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient available balance' USING ERRCODE = 'BC402';
    END IF;
    RETURN NEW;
END
$$;

-- Closing a reservation (settled, voided, recovered) releases its hold; nothing else may change.
CREATE FUNCTION reservations_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.amount_micros <> OLD.amount_micros OR NEW.user_id <> OLD.user_id
            OR (OLD.status <> 'open' AND NEW.status <> OLD.status) THEN
        RAISE EXCEPTION 'a reservation''s amount, owner and closed status are fixed';
    END IF;
    IF OLD.status = 'open' AND NEW.status <> 'open' THEN
        UPDATE balances SET reserved_micros = reserved_micros - OLD.amount_micros
        WHERE user_id = OLD.user_id;
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION reservations_no_open_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'open' THEN
        RAISE EXCEPTION 'an open reservation is closed by settlement, not deleted';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER reservations_hold BEFORE INSERT ON reservations
    FOR EACH ROW EXECUTE FUNCTION reservations_hold();
CREATE TRIGGER reservations_release BEFORE UPDATE ON reservations
    FOR EACH ROW EXECUTE FUNCTION reservations_release();
CREATE TRIGGER reservations_no_open_delete BEFORE DELETE ON reservations
    FOR EACH ROW EXECUTE FUNCTION reservations_no_open_delete();

-- Settlement of a batch of proxy requests in the caller's ONE transaction (group commit). Per
-- item, idempotent on request_id: close the reservation, debit the cost, write the usage row;
-- when the debit leaves the balance below the minimum, pause the user's active instances.
-- Outcomes: settled | recovered | voided (nothing used: the hold is released, nothing charged)
-- | duplicate (settled before: nothing changes).
CREATE FUNCTION settle_usage(items jsonb, minimum_micros bigint)
RETURNS TABLE (request_id uuid, outcome text, user_id uuid, balance_micros bigint, paused integer)
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

-- A credit (top-up, subscription, adjustment), idempotent on its key; when it brings the balance
-- back to the minimum, instances paused for depletion resume.
CREATE FUNCTION credit_balance(
    p_user uuid, p_amount bigint, p_kind text, p_reference text, p_key text,
    minimum_micros bigint)
RETURNS TABLE (outcome text, balance_micros bigint, resumed integer)
LANGUAGE plpgsql AS $$
BEGIN
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
    outcome := 'credited';
    IF balance_micros >= minimum_micros THEN
        UPDATE instances i SET status = 'active', status_reason = NULL
        WHERE i.user_id = p_user AND i.status = 'paused' AND i.status_reason = 'balance_depleted';
        GET DIAGNOSTICS resumed = ROW_COUNT;
    END IF;
    RETURN NEXT;
END
$$;
