// uninstall.cypher — remove CDC capture.
// Part A runs against the SYSTEM database:  cypher-shell -d system -f uninstall.cypher
// Part B (commented out) runs against the USER database: copy the lines you want and run with -d neo4j.
// Dropping a trigger is eventually consistent: it stops firing within apoc.trigger.refresh ms.

// ---- A. triggers (system database) ---------------------------------------------------------------
CALL apoc.trigger.drop('neo4j', 'cdc-outbox');
CALL apoc.trigger.drop('neo4j', 'cdc-direct');
// Drops EVERY APOC trigger of the database, CDC or not:
// CALL apoc.trigger.dropAll('neo4j');
// Pause/resume instead of removing (keeps statement + params):
// CALL apoc.trigger.stop('neo4j', 'cdc-outbox');
// CALL apoc.trigger.start('neo4j', 'cdc-outbox');
CALL apoc.trigger.show('neo4j');

// ---- B. outbox data + schema (USER database, -d neo4j) — OPTIONAL and destructive ---------------------------
// Let the relay drain CdcOutbox first. Keep CdcVersion nodes if you may re-enable capture later:
// deleting them restarts versions at 1 and consumers that keep "highest version wins" would then
// ignore new events for existing keys.
// MATCH (o:CdcOutbox) CALL (o) { DETACH DELETE o } IN TRANSACTIONS OF 10000 ROWS;
// MATCH (v:CdcVersion) CALL (v) { DETACH DELETE v } IN TRANSACTIONS OF 10000 ROWS;
// DROP INDEX cdc_outbox_created_at IF EXISTS;
// DROP INDEX cdc_outbox_key_version IF EXISTS;
// DROP CONSTRAINT cdc_outbox_event_id IF EXISTS;
// DROP CONSTRAINT cdc_version_key IF EXISTS;
