DROP INDEX dead_jobs_by_time;
DROP INDEX outbox_failure_notices;
