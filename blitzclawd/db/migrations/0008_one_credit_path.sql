-- 0008_one_credit_path: adjust_balance (0003) does everything credit_balance (0002) did, and
-- also pauses when a movement leaves the balance below the minimum: one way for money to move
-- outside settlement, not two.

DROP FUNCTION credit_balance(uuid, bigint, text, text, text, bigint);
