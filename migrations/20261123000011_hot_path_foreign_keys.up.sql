-- Every row of the per-message tables checked its tenant_id against
-- tenants with a foreign key, which share-locks that tenant's one row: a
-- WAL record per inserted row, and under concurrent turns a new MultiXact
-- each time (one tenant, many writers). Their tenant_id is already pinned
-- by row-level security (WITH CHECK tenant_id = the transaction's tenant,
-- which the service only sets from a tenant it read), inbox and outbox rows
-- also reference their conversation (which keeps its tenant foreign key),
-- and the product never deletes a tenant. So these three checks go.
ALTER TABLE events DROP CONSTRAINT events_tenant_id_fkey;
ALTER TABLE inbox DROP CONSTRAINT inbox_tenant_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_tenant_id_fkey;
