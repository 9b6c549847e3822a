DELETE FROM tenant_reviewers WHERE platform = 'web';
DELETE FROM tenant_members WHERE platform = 'web';
DELETE FROM tenant_routes WHERE platform = 'web';
ALTER TABLE tenant_reviewers DROP CONSTRAINT tenant_reviewers_platform_check,
    ADD CONSTRAINT tenant_reviewers_platform_check CHECK (platform IN ('slack'));
ALTER TABLE tenant_members DROP CONSTRAINT tenant_members_platform_check,
    ADD CONSTRAINT tenant_members_platform_check CHECK (platform IN ('slack', 'discord', 'telegram'));
ALTER TABLE tenant_routes DROP CONSTRAINT tenant_routes_platform_check,
    ADD CONSTRAINT tenant_routes_platform_check CHECK (platform IN ('slack', 'discord', 'telegram'));
-- Conversations and facts of the page stay: they are the record.
ALTER TABLE user_facts DROP CONSTRAINT user_facts_platform_check,
    ADD CONSTRAINT user_facts_platform_check CHECK (platform IN ('slack', 'discord', 'telegram', 'web')) NOT VALID;
ALTER TABLE conversations DROP CONSTRAINT conversations_platform_check,
    ADD CONSTRAINT conversations_platform_check CHECK (platform IN ('slack', 'discord', 'telegram', 'web')) NOT VALID;
