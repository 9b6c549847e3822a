-- Operator commands by index, not by a scan that grows with history.
--
-- `worker dead replay` of a turn reopens its message only if the user got a
-- failure notice, an outbox row keyed `turn-failed:<message>:<notice>`. A
-- `LIKE` on the key is not leakproof, so under row-level security it could
-- not be an index condition: the check read the whole outbox. Byte-wise
-- range comparisons (`~>=~`, `~<~`) are leakproof and can; the index holds
-- only the failure notices, so replies pay nothing for it.
CREATE INDEX outbox_failure_notices ON outbox (dedupe_key text_pattern_ops)
    WHERE dedupe_key LIKE 'turn-failed:%';

-- `worker dead list --all`, newest first, without a sort of every dead job
-- (the open ones keep `dead_jobs_open`).
CREATE INDEX dead_jobs_by_time ON dead_jobs (dead_at);
