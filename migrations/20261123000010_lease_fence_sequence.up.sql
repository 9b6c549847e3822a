-- A lease is taken in the transaction that starts the turn; if that
-- transaction rolls back, a fence computed as `lease_fence + 1` would be
-- handed to the next holder too, and the first one (still believing it
-- holds fence N) could release or write under the new holder's lease.
-- Fences now come from a sequence, which a rollback does not rewind: no
-- fence number is ever given twice.
CREATE SEQUENCE lease_fences;
SELECT setval('lease_fences', (SELECT coalesce(max(lease_fence), 0) + 1 FROM conversations));
GRANT USAGE ON SEQUENCE lease_fences TO automate_e_service;
