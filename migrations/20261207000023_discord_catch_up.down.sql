DROP FUNCTION automate_e_discord_newest_message();
DROP FUNCTION automate_e_discord_channels();
