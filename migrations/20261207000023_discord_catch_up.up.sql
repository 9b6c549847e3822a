-- What the gateway catches up on when it (re)connects to Discord: messages
-- sent while it was away are read back from each routed channel and each
-- recent conversation thread in it. Lookups before a tenant is known, like
-- the routes (migration 5): ids only, no message text.

-- Explicitly routed guild channels, and the threads of their conversations
-- of the last seven days, with their guild.
CREATE FUNCTION automate_e_discord_channels()
    RETURNS TABLE (channel text, guild text)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    BEGIN
        RETURN QUERY
        WITH routed AS (
            SELECT r.channel, r.workspace AS guild FROM tenant_routes r
            WHERE r.platform = 'discord' AND r.channel <> '*' AND r.workspace <> '@dm')
        SELECT routed.channel, routed.guild FROM routed
        UNION
        SELECT c.thread, routed.guild FROM conversations c JOIN routed ON routed.channel = c.chat
        WHERE c.platform = 'discord' AND c.thread <> '' AND c.created_at > now() - interval '7 days';
    END
    $$;

-- The newest Discord message recorded (snowflakes grow with time: longer is
-- newer, then larger).
CREATE FUNCTION automate_e_discord_newest_message()
    RETURNS text
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    BEGIN
        RETURN (SELECT i.platform_message_id FROM inbox i WHERE i.platform = 'discord'
                ORDER BY length(i.platform_message_id) DESC, i.platform_message_id DESC LIMIT 1);
    END
    $$;

REVOKE ALL ON FUNCTION automate_e_discord_channels(), automate_e_discord_newest_message()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION automate_e_discord_channels(), automate_e_discord_newest_message()
    TO automate_e_service;
