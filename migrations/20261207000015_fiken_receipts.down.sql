DROP INDEX proposals_unexecuted;
ALTER TABLE proposals DROP COLUMN execution_until, DROP COLUMN execution_holder;
ALTER TABLE proposals DROP CONSTRAINT proposals_state_check;
ALTER TABLE proposals ADD CONSTRAINT proposals_state_check CHECK (state IN ('proposed',
    'auto_approved', 'review_requested', 'approved', 'rejected', 'expired', 'executing',
    'executed', 'execution_failed'));
DROP TABLE files;
ALTER TABLE tenants DROP COLUMN file_retention_days, DROP COLUMN accounting_company;
