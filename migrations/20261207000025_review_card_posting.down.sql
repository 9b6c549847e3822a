ALTER TABLE proposals DROP COLUMN review_posting_at;
