DROP INDEX IF EXISTS outbox_undelivered;
