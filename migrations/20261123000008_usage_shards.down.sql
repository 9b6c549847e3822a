CREATE TEMP TABLE usage_by_day AS
    SELECT tenant_id, day, sum(tokens)::bigint AS tokens FROM tenant_llm_usage GROUP BY 1, 2;
DELETE FROM tenant_llm_usage;
ALTER TABLE tenant_llm_usage DROP CONSTRAINT tenant_llm_usage_pkey;
ALTER TABLE tenant_llm_usage DROP COLUMN shard;
ALTER TABLE tenant_llm_usage ADD PRIMARY KEY (tenant_id, day);
INSERT INTO tenant_llm_usage (tenant_id, day, tokens) SELECT tenant_id, day, tokens FROM usage_by_day;
DROP TABLE usage_by_day;
