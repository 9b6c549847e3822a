ALTER TABLE tenant_reviewers DROP COLUMN escalation;
DROP TABLE tenant_review_windows;
ALTER TABLE proposals
    DROP COLUMN review_requested_at,
    DROP COLUMN review_deadline,
    DROP COLUMN review_reminded_at,
    DROP COLUMN review_escalated_at;
