-- 0018_usage_time_index: time-range reads of usage_logs (spike alerts every minute, the
-- operators' dashboards) without a sequential scan. BRIN: the table is appended in time order,
-- so the index is a few pages and costs the settlement's insert next to nothing (a B-tree on
-- created_at would add a write per request on the hot path).

CREATE INDEX usage_logs_created_at_brin ON usage_logs USING brin (created_at);
