-- The gateway's own chat page is a channel like the others (`web`): it can
-- be routed, its people listed as members and reviewers, its conversations
-- and facts kept. Each check is a superset of the one it replaces, added
-- NOT VALID and then validated, so the tables stay writable meanwhile.
ALTER TABLE tenant_routes DROP CONSTRAINT tenant_routes_platform_check,
    ADD CONSTRAINT tenant_routes_platform_check
    CHECK (platform IN ('slack', 'discord', 'telegram', 'web')) NOT VALID;
ALTER TABLE tenant_routes VALIDATE CONSTRAINT tenant_routes_platform_check;

ALTER TABLE conversations DROP CONSTRAINT conversations_platform_check,
    ADD CONSTRAINT conversations_platform_check
    CHECK (platform IN ('slack', 'discord', 'telegram', 'web')) NOT VALID;
ALTER TABLE conversations VALIDATE CONSTRAINT conversations_platform_check;

ALTER TABLE user_facts DROP CONSTRAINT user_facts_platform_check,
    ADD CONSTRAINT user_facts_platform_check
    CHECK (platform IN ('slack', 'discord', 'telegram', 'web')) NOT VALID;
ALTER TABLE user_facts VALIDATE CONSTRAINT user_facts_platform_check;

ALTER TABLE tenant_members DROP CONSTRAINT tenant_members_platform_check,
    ADD CONSTRAINT tenant_members_platform_check
    CHECK (platform IN ('slack', 'discord', 'telegram', 'web')) NOT VALID;
ALTER TABLE tenant_members VALIDATE CONSTRAINT tenant_members_platform_check;

-- Reviews happen in Slack or on the page (a review channel `web:<name>`).
ALTER TABLE tenant_reviewers DROP CONSTRAINT tenant_reviewers_platform_check,
    ADD CONSTRAINT tenant_reviewers_platform_check
    CHECK (platform IN ('slack', 'web')) NOT VALID;
ALTER TABLE tenant_reviewers VALIDATE CONSTRAINT tenant_reviewers_platform_check;
