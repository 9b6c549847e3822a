-- When the review card was first sent: a retry finds a card Slack posted
-- whose answer was lost (read back from the channel) instead of posting a
-- second one.
ALTER TABLE proposals ADD COLUMN review_posting_at timestamptz;
GRANT UPDATE (review_posting_at) ON proposals TO automate_e_service;
