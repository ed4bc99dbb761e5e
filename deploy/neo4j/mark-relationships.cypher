// mark-relationships.cypher — run on the USER database (cypher-shell -d neo4j -f mark-relationships.cypher)
// ONCE after installing outbox-trigger.cypher, and again after adding a type to cdcRelTypes.
//
// The outbox trigger captures a relationship DELETE only from the old value of its marker property
// (`_cdc` = [key, type, start_key, end_key], see README.md, "Semantics this Cypher relies on", item 4):
// it writes the marker itself on every captured relationship it sees created or changed, but
// relationships that existed before the trigger have none, and their deletion would go unseen.
// This script writes the marker on those. It is idempotent (only relationships without a marker).
//
// With the trigger active, each batch is an ordinary transaction: the trigger sees the marker being
// set and publishes one relationship upsert per relationship (a relationship re-snapshot; versions
// go up by one). Run it after installing the trigger: relationships created between this script and
// the installation would otherwise stay unmarked.
//
// Keep the type, the key property names and the marker name equal to the trigger's params
// (cdcRelTypes, cdcNodeKey, cdcRelKey, cdcRelMarker); one statement per captured type.

MATCH (s)-[r:MENTIONS]->(e)
WHERE r._cdc IS NULL
CALL (r, s, e) {
  WITH r, s, e, coalesce(toString(r.uuid), toString(s.uuid) + '|MENTIONS|' + toString(e.uuid)) AS k
  WHERE k IS NOT NULL
  SET r._cdc = [k, 'MENTIONS', coalesce(toString(s.uuid), ''), coalesce(toString(e.uuid), '')]
} IN TRANSACTIONS OF 10000 ROWS;
