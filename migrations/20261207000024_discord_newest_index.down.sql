DROP INDEX IF EXISTS inbox_discord_newest;
