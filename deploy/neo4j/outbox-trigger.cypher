// outbox-trigger.cypher — OUTBOX capture mode (APOC Core 5.x only).
//
// Run against the SYSTEM database:   cypher-shell -d system -f outbox-trigger.cypher
// Prerequisites: apoc.conf has apoc.trigger.enabled=true; constraints.cypher ran on the user DB.
// Installation is eventually consistent: the trigger becomes active within apoc.trigger.refresh ms.
//
// What it does (phase 'before' = inside the writing transaction, so it commits or rolls back
// together with the business change):
//   1. collects every touched entity ONCE (created ∪ labels changed ∪ properties changed, minus deleted),
//   2. collects deleted entities separately (their data only survives in $removed* in this phase),
//   3. per event: MERGE a CdcVersion counter, increment it under its write lock, CREATE one CdcOutbox node.
// CdcOutbox / CdcVersion nodes are never in scope (label filter below), so there is no recursion.
//
// Trigger-scoped parameters come from config.params (merged into the built-in $createdNodes, ...):
//   $cdcNodeLabels   labels whose nodes are captured
//   $cdcRelTypes     relationship types that are captured
//   $cdcNodeKey      business-key property of nodes          (Kafka key / Qdrant point id source)
//   $cdcRelKey       business-key property of relationships  (fallback: '<start>|<TYPE>|<end>')
//   $cdcExcludeProps property names left out of `properties` (e.g. ['embedding']), [] = full map
//   $cdcDb           database name copied into every entry (no built-in $databaseName exists)

CALL apoc.trigger.install('neo4j', 'cdc-outbox', "
// ---- 1. node upserts (plus 'left scope' deletes when the last captured label was removed) ----
CALL () {
  WITH $createdNodes
     + reduce(a = [], l IN keys($assignedLabels) | a + $assignedLabels[l])
     + reduce(a = [], l IN keys($removedLabels) | a + $removedLabels[l])
     + reduce(a = [], k IN keys($assignedNodeProperties) | a + [e IN $assignedNodeProperties[k] | e.node])
     + reduce(a = [], k IN keys($removedNodeProperties) | a + [e IN $removedNodeProperties[k] | e.node]) AS touched
  UNWIND touched AS n
  WITH DISTINCT n
  WHERE NOT n IN $deletedNodes
  WITH n, labels(n) AS lbls,
       [l IN keys($removedLabels) WHERE l IN $cdcNodeLabels AND n IN $removedLabels[l]] AS lostLabels
  WITH n, lbls, lostLabels, any(l IN lbls WHERE l IN $cdcNodeLabels) AS inScope
  WHERE (inScope OR size(lostLabels) > 0)
    AND NOT any(l IN lbls WHERE l IN ['CdcOutbox', 'CdcVersion'])
    AND n[$cdcNodeKey] IS NOT NULL
  WITH n, lbls, lostLabels, inScope,
       apoc.convert.toJson(apoc.map.removeKeys(properties(n), $cdcExcludeProps)) AS json
  RETURN collect({
    kind: 'node',
    key: toString(n[$cdcNodeKey]),
    labels: CASE WHEN inScope THEN lbls ELSE lbls + lostLabels END,
    op: CASE WHEN inScope THEN 'upsert' ELSE 'delete' END,
    properties: CASE WHEN inScope THEN json ELSE '{}' END,
    rel_type: null, start_key: null, end_key: null
  }) AS nodeEvents
}
// ---- 2. node deletes: labels/properties of deleted nodes only exist in $removedLabels / $removedNodeProperties ----
CALL () {
  UNWIND $deletedNodes AS d
  WITH d, [l IN keys($removedLabels) WHERE d IN $removedLabels[l]] AS lbls
  WHERE any(l IN lbls WHERE l IN $cdcNodeLabels)
  WITH lbls, head([e IN coalesce($removedNodeProperties[$cdcNodeKey], []) WHERE e.node = d | e.old]) AS k
  WHERE k IS NOT NULL
  RETURN collect({
    kind: 'node', key: toString(k), labels: lbls, op: 'delete', properties: '{}',
    rel_type: null, start_key: null, end_key: null
  }) AS delNodeEvents
}
// ---- 3. relationship upserts (created ∪ properties changed, minus deleted) ----
CALL () {
  WITH $createdRelationships
     + reduce(a = [], k IN keys($assignedRelationshipProperties) | a + [e IN $assignedRelationshipProperties[k] | e.relationship])
     + reduce(a = [], k IN keys($removedRelationshipProperties) | a + [e IN $removedRelationshipProperties[k] | e.relationship]) AS touched
  UNWIND touched AS r
  WITH DISTINCT r
  WHERE NOT r IN $deletedRelationships AND type(r) IN $cdcRelTypes
  WITH r, type(r) AS t, toString(startNode(r)[$cdcNodeKey]) AS sk, toString(endNode(r)[$cdcNodeKey]) AS ek
  WITH r, t, sk, ek, coalesce(toString(r[$cdcRelKey]), sk + '|' + t + '|' + ek) AS k
  WHERE k IS NOT NULL
  WITH t, sk, ek, k, apoc.convert.toJson(apoc.map.removeKeys(properties(r), $cdcExcludeProps)) AS props
  RETURN collect({
    kind: 'relationship', key: k, labels: null, op: 'upsert', properties: props,
    rel_type: t, start_key: sk, end_key: ek
  }) AS relEvents
}
// ---- 4. relationship deletes: type()/properties() are not usable on deleted rels in this phase;
//         apoc.rel.type/startNode/endNode use the Java entity (same calls as apoc.trigger.toRelationship) ----
CALL () {
  UNWIND $deletedRelationships AS r
  WITH r, apoc.rel.type(r) AS t
  WHERE t IN $cdcRelTypes
  WITH r, t, apoc.rel.startNode(r) AS s, apoc.rel.endNode(r) AS e
  WITH t,
       toString(CASE WHEN s IN $deletedNodes
            THEN head([x IN coalesce($removedNodeProperties[$cdcNodeKey], []) WHERE x.node = s | x.old])
            ELSE s[$cdcNodeKey] END) AS sk,
       toString(CASE WHEN e IN $deletedNodes
            THEN head([x IN coalesce($removedNodeProperties[$cdcNodeKey], []) WHERE x.node = e | x.old])
            ELSE e[$cdcNodeKey] END) AS ek,
       head([x IN coalesce($removedRelationshipProperties[$cdcRelKey], []) WHERE x.relationship = r | x.old]) AS rk
  WITH t, sk, ek, coalesce(toString(rk), sk + '|' + t + '|' + ek) AS k
  WHERE k IS NOT NULL
  RETURN collect({
    kind: 'relationship', key: k, labels: null, op: 'delete', properties: '{}',
    rel_type: t, start_key: sk, end_key: ek
  }) AS delRelEvents
}
// ---- 5. one version bump + one outbox entry per entity; sorted to take counter locks in a stable order ----
WITH nodeEvents + delNodeEvents + relEvents + delRelEvents AS events, timestamp() AS now
UNWIND events AS ev
WITH ev, now ORDER BY ev.kind, ev.key
MERGE (v:CdcVersion {key: ev.kind + ':' + ev.key})
SET v.version = coalesce(v.version, 0) + 1
CREATE (:CdcOutbox {
  event_id: randomUUID(),
  kind: ev.kind, key: ev.key, labels: ev.labels, op: ev.op,
  version: v.version,
  commit_time_ms: now,
  properties: ev.properties,
  rel_type: ev.rel_type, start_key: ev.start_key, end_key: ev.end_key,
  db: $cdcDb,
  traceparent: $metaData.traceparent,
  created_at: now
})
", {phase: 'before'}, {params: {
  cdcNodeLabels: ['Chunk', 'Entity', 'Document'],
  cdcRelTypes: ['MENTIONS'],
  cdcNodeKey: 'uuid',
  cdcRelKey: 'uuid',
  cdcExcludeProps: [],
  cdcDb: 'neo4j'
}});

// Verify (still on system; `installed` is true immediately, activation follows apoc.trigger.refresh):
CALL apoc.trigger.show('neo4j');
