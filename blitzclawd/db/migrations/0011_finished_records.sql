-- 0011_finished_records: a request's database record can say that the request is over, and what
-- it cost.
--
-- A request still in flight at a checkpoint has a `reservations` row, which any daemon's recovery
-- charges if the request's daemon dies. When the request ends, its daemon marks the row finished
-- with its final cost (0 when the upstream refused it) before the settlement commits. So a daemon
-- that dies in between, or stops with the settlement not committed, has the request charged
-- exactly what it cost, by whichever daemon recovers it, never an estimate.

ALTER TABLE reservations ADD COLUMN finished boolean NOT NULL DEFAULT false;
