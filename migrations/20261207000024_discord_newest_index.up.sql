-- no-transaction
-- The newest Discord message, read at each reconnect, from an index.
CREATE INDEX CONCURRENTLY IF NOT EXISTS inbox_discord_newest
    ON inbox (length(platform_message_id), platform_message_id) WHERE platform = 'discord';
