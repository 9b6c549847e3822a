DROP INDEX outbox_undelivered_by_conversation;
DROP TABLE delivery_holds;
