DROP TABLE IF EXISTS proposals;
DROP TABLE IF EXISTS tenant_reviewers;
ALTER TABLE tenants DROP COLUMN IF EXISTS auto_approve_limit_minor, DROP COLUMN IF EXISTS review_channel;
