DROP SEQUENCE lease_fences;
