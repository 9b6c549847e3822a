-- Discord and Telegram: attachments (receipts) travel with the message as
-- references, and a message posted inside a conversation's thread finds it.
ALTER TABLE inbox ADD COLUMN attachments jsonb NOT NULL DEFAULT '[]'::jsonb
    CHECK (jsonb_typeof(attachments) = 'array');
CREATE INDEX conversations_by_thread ON conversations (platform, thread) WHERE thread <> '';
