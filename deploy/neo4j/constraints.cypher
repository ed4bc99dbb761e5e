// constraints.cypher — run against the USER database (e.g. `cypher-shell -d neo4j -f constraints.cypher`).
// Neo4j 5 syntax. Idempotent (IF NOT EXISTS). Run BEFORE installing the outbox trigger.

// --- Version counters: one node per captured entity, key = '<kind>:<business key>' -------------
// MERGE on a uniqueness constraint serialises concurrent creators of the same counter,
// and `SET v.version = coalesce(v.version, 0) + 1` takes the write lock before reading.
CREATE CONSTRAINT cdc_version_key IF NOT EXISTS
FOR (v:CdcVersion) REQUIRE v.key IS UNIQUE;

// --- Outbox entries ------------------------------------------------------------------------------
// event_id uniqueness also gives the relay an index for "delete by event_id" after publishing.
CREATE CONSTRAINT cdc_outbox_event_id IF NOT EXISTS
FOR (o:CdcOutbox) REQUIRE o.event_id IS UNIQUE;

// Per-entity ordering / gap checks by the relay: (key, version).
CREATE INDEX cdc_outbox_key_version IF NOT EXISTS
FOR (o:CdcOutbox) ON (o.key, o.version);

// Batch polling by the relay: oldest first, by an index seek (queries/relay-read-outbox-keys.cypher).
// Every outbox entry must carry created_at: the relay finds entries only through this index.
CREATE INDEX cdc_outbox_created_at IF NOT EXISTS
FOR (o:CdcOutbox) ON (o.created_at);

// --- Relay lease: one node, so two relays starting together cannot each create one -------
CREATE CONSTRAINT cdc_relay_lease_name IF NOT EXISTS
FOR (l:CdcRelayLease) REQUIRE l.name IS UNIQUE;

// --- Recommended: business keys of captured entities are unique -------------------------------
// (The trigger uses `uuid` as key; duplicates would share one version counter / one Qdrant point.)
CREATE CONSTRAINT chunk_uuid IF NOT EXISTS FOR (n:Chunk) REQUIRE n.uuid IS UNIQUE;
CREATE CONSTRAINT entity_uuid IF NOT EXISTS FOR (n:Entity) REQUIRE n.uuid IS UNIQUE;
CREATE CONSTRAINT document_uuid IF NOT EXISTS FOR (n:Document) REQUIRE n.uuid IS UNIQUE;
// Relationship key (optional, Neo4j 5.7+ relationship uniqueness constraints).
// Without a `uuid` on MENTIONS the trigger falls back to '<start_key>|MENTIONS|<end_key>'.
// CREATE CONSTRAINT mentions_uuid IF NOT EXISTS FOR ()-[r:MENTIONS]-() REQUIRE r.uuid IS UNIQUE;
