-- 0005_hot_path: every proxied request holds and releases on its user's balances row; keep the
-- triggers that row fires out of PL/pgSQL unless they have something to check.

-- Admission reads balances.reserved_micros; nothing looks open reservations up by user.
DROP INDEX reservations_open_user_id_idx;

-- The guard only matters when balance_micros (or the owner) changes, not for holds.
DROP TRIGGER balances_guard ON balances;
CREATE TRIGGER balances_guard_insert BEFORE INSERT ON balances
    FOR EACH ROW EXECUTE FUNCTION balances_guard();
CREATE TRIGGER balances_guard_update BEFORE UPDATE ON balances
    FOR EACH ROW
    WHEN (NEW.balance_micros IS DISTINCT FROM OLD.balance_micros
          OR NEW.user_id IS DISTINCT FROM OLD.user_id)
    EXECUTE FUNCTION balances_guard();

-- updated_at tracks the balance and the auto-top-up settings, not every hold.
DROP TRIGGER balances_set_updated_at ON balances;
CREATE TRIGGER balances_set_updated_at BEFORE UPDATE ON balances
    FOR EACH ROW
    WHEN (NEW.balance_micros IS DISTINCT FROM OLD.balance_micros
          OR NEW.auto_topup_enabled IS DISTINCT FROM OLD.auto_topup_enabled
          OR NEW.topup_threshold_micros IS DISTINCT FROM OLD.topup_threshold_micros
          OR NEW.topup_amount_micros IS DISTINCT FROM OLD.topup_amount_micros)
    EXECUTE FUNCTION set_updated_at();
