DROP TABLE IF EXISTS outbox;
DROP TABLE IF EXISTS events;
DROP TABLE IF EXISTS inbox;
DROP TABLE IF EXISTS conversations;
DROP TABLE IF EXISTS tenant_routes;
DROP TABLE IF EXISTS tenants;
-- The role `automate_e_service` is cluster-wide and may serve other databases;
-- it is left in place.
