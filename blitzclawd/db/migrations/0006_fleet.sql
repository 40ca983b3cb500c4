-- 0006_fleet: lookups of the pool manager, the provisioner and the ready callback.

-- Jobs whose daemon died are reclaimed: running jobs are found by their locker.
CREATE INDEX instance_jobs_running_idx ON instance_jobs (locked_by) WHERE status = 'running';

-- A server that calls back ready goes to the oldest instance still waiting for one.
CREATE INDEX instances_waiting_idx ON instances (created_at)
    WHERE status = 'pending' AND server_id IS NULL;
