-- 0019_pool_hold: an operator's hold on the server pool (POST /api/admin/pool/drain until
-- /resume): while its one row exists the pool manager, on whichever daemon holds its lock, keeps
-- no spare servers. In the database so that it outlives restarts and binds every daemon.

CREATE TABLE pool_hold (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    held_by text NOT NULL,
    held_at timestamptz NOT NULL DEFAULT now()
);
