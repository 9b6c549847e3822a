DROP INDEX IF EXISTS conversations_by_thread;
ALTER TABLE inbox DROP COLUMN IF EXISTS attachments;
