// direct-trigger.cypher — DIRECT capture mode: publish straight to Kafka from an afterAsync trigger.
//
// Requires APOC Extended with the Kafka procedures (apoc.kafka.publish; merged for the 5.26 and 2025.01
// branches in Feb 2025) + the apoc-kafka-dependencies-<version>-all.jar in plugins/,
// and apoc.conf: apoc.trigger.enabled=true, apoc.kafka.enabled=true, apoc.kafka.bootstrap.servers=...
// Run against the SYSTEM database:   cypher-shell -d system -f direct-trigger.cypher
// The topic must already exist (apoc.kafka silently drops records for unknown topics).
//
// BEST EFFORT: at most once, no state topic, no relationship delete without a $cdcRelKey property,
// and nothing detects a lost event. Set capture.mode = "direct" in the graphcdc config: the
// reconciler then refuses to run (there is no state topic to reconcile against).
//
// afterAsync = after commit, in a NEW transaction on a thread pool. Consequences (README.md,
// "Semantics this Cypher relies on", lists each assumption with its source):
//   * version = $transactionId (monotonic in commit order per database; gaps are normal),
//     commit_time_ms = $commitTime (real commit time here, unlike the 'before' phase).
//   * live entities are re-read in the new transaction => properties are the CURRENT state,
//     possibly newer than this commit (consumers must keep "highest version wins").
//   * deleted entities arrive as virtual nodes/relationships => read them with apoc.node.labels /
//     apoc.rel.type / apoc.any.properties, not labels()/type()/properties().
//   * nodes/relationships that ONLY had labels or properties REMOVED are not captured here:
//     afterAsync rebuilds $removedLabels/$removed*Properties entries as virtual entities, so they
//     cannot be matched back to the live entity. Use outbox mode if that matters.
//   * a failure (e.g. an entity deleted before this runs, Kafka error) is only logged: events are lost.
//   * removed_labels (a node losing one captured label but keeping another) is never filled here, for
//     the same reason: the removed labels of a live node cannot be matched back to it. The point in the
//     lost label's collection stays live with its old content (outbox mode tombstones it).
//   * events are collapsed per kind:key before publishing (the upsert wins); a key change publishes a
//     delete for the old key (a key REMOVAL is not seen, see above).
//   * CALL tx.setMetaData({cdcSkip: true}) in a transaction makes this statement publish nothing for it;
//     APOC still converts that transaction's data on the committing thread before this runs.
//
// Kafka record produced by apoc.kafka.publish:
//   key   = JSON-serialised config.key  -> the string key arrives WITH quotes, e.g. "\"3f2a...\""
//   value = {"payload": <the map below>} (APOC wraps the payload)

CALL apoc.trigger.install('neo4j', 'cdc-direct', "
// ---- opt-out: a transaction whose metadata says cdcSkip: true publishes nothing ----
WITH $metaData AS md
WHERE coalesce(md.cdcSkip, false) <> true
// ---- nodes created / label-assigned / property-assigned (rebound to the live node) ----
CALL () {
  WITH $createdNodes
     + reduce(a = [], l IN keys($assignedLabels) | a + $assignedLabels[l])
     + reduce(a = [], k IN keys($assignedNodeProperties) | a + [e IN $assignedNodeProperties[k] | e.node]) AS touched
  UNWIND touched AS n
  WITH DISTINCT n
  WITH n, labels(n) AS lbls
  WHERE any(l IN lbls WHERE l IN $cdcNodeLabels)
    AND NOT any(l IN lbls WHERE l IN ['CdcOutbox', 'CdcVersion'])
    AND n[$cdcNodeKey] IS NOT NULL
  // JSON round trip turns temporal/spatial values into plain JSON-friendly values
  WITH n, lbls, apoc.convert.fromJsonMap(apoc.convert.toJson(apoc.map.removeKeys(properties(n), $cdcExcludeProps))) AS props
  RETURN collect({
    kind: 'node', key: toString(n[$cdcNodeKey]), labels: lbls, relationship: null, op: 'upsert',
    properties: props
  }) AS nodeEvents
}
// ---- key changed on a live node: delete the old key (labels as they are now; a removed key is not seen here) ----
CALL () {
  UNWIND coalesce($assignedNodeProperties[$cdcNodeKey], []) AS e
  WITH e
  WHERE e.old IS NOT NULL AND toString(e.old) <> toString(e.new)
  WITH e.old AS old, labels(e.node) AS lbls
  WHERE any(l IN lbls WHERE l IN $cdcNodeLabels)
  RETURN collect({
    kind: 'node', key: toString(old), labels: lbls, relationship: null, op: 'delete', properties: {}
  }) AS oldKeyNodeEvents
}
// ---- deleted nodes: virtual nodes rebuilt by APOC from $removedLabels / $removedNodeProperties ----
CALL () {
  UNWIND $deletedNodes AS d
  WITH apoc.node.labels(d) AS lbls, apoc.any.properties(d)[$cdcNodeKey] AS k
  WHERE any(l IN lbls WHERE l IN $cdcNodeLabels) AND k IS NOT NULL
  RETURN collect({
    kind: 'node', key: toString(k), labels: lbls, relationship: null, op: 'delete', properties: {}
  }) AS delNodeEvents
}
// ---- relationships created / property-assigned ----
CALL () {
  WITH $createdRelationships
     + reduce(a = [], k IN keys($assignedRelationshipProperties) | a + [e IN $assignedRelationshipProperties[k] | e.relationship]) AS touched
  UNWIND touched AS r
  WITH DISTINCT r
  WHERE type(r) IN $cdcRelTypes
  WITH r, type(r) AS t, toString(startNode(r)[$cdcNodeKey]) AS sk, toString(endNode(r)[$cdcNodeKey]) AS ek
  WITH r, t, sk, ek, coalesce(toString(r[$cdcRelKey]), sk + '|' + t + '|' + ek) AS k
  WHERE k IS NOT NULL
  WITH t, sk, ek, k, apoc.convert.fromJsonMap(apoc.convert.toJson(apoc.map.removeKeys(properties(r), $cdcExcludeProps))) AS props
  RETURN collect({
    kind: 'relationship', key: k, labels: [], op: 'upsert',
    relationship: {type: t, start_key: sk, end_key: ek},
    properties: props
  }) AS relEvents
}
// ---- relationship key changed on a live relationship: delete the old key ----
CALL () {
  UNWIND coalesce($assignedRelationshipProperties[$cdcRelKey], []) AS e
  WITH e
  WHERE e.old IS NOT NULL AND toString(e.old) <> toString(e.new)
  WITH e.old AS old, e.relationship AS r
  WHERE type(r) IN $cdcRelTypes
  RETURN collect({
    kind: 'relationship', key: toString(old), labels: [], op: 'delete',
    relationship: {type: type(r), start_key: toString(startNode(r)[$cdcNodeKey]), end_key: toString(endNode(r)[$cdcNodeKey])},
    properties: {}
  }) AS oldKeyRelEvents
}
// ---- deleted relationships: virtual (rebuilt by APOC after commit; a failure here cannot fail the
//      user's transaction); only the relationship's own key property is reliable here ----
CALL () {
  UNWIND $deletedRelationships AS r
  WITH apoc.rel.type(r) AS t, apoc.any.properties(r)[$cdcRelKey] AS k
  WHERE t IN $cdcRelTypes AND k IS NOT NULL
  RETURN collect({
    kind: 'relationship', key: toString(k), labels: [], op: 'delete',
    relationship: {type: t, start_key: '', end_key: ''}, properties: {}
  }) AS delRelEvents
}
// ---- one event per kind:key: the upsert wins (the entity exists), a delete carries every label seen ----
WITH nodeEvents + oldKeyNodeEvents + delNodeEvents + relEvents + oldKeyRelEvents + delRelEvents AS events
UNWIND events AS ev
WITH ev.kind AS kind, ev.key AS key, collect(ev) AS evs
WITH head([e IN evs WHERE e.op = 'upsert']) AS up, head(evs) AS firstEv,
     reduce(acc = [], e IN evs | acc + [l IN coalesce(e.labels, []) WHERE NOT l IN acc]) AS allLabels
WITH coalesce(up, firstEv {.*, labels: allLabels}) AS ev
WITH ev {
  .*,
  event_id: randomUUID(),
  version: $transactionId,
  commit_time_ms: $commitTime,
  vector: null,
  source: {db: $cdcDb, mode: 'direct'},
  traceparent: $metaData.traceparent
} AS event
CALL apoc.kafka.publish($cdcTopic, event, {key: event.key})
RETURN count(*) AS published
", {phase: 'afterAsync'}, {params: {
  cdcNodeLabels: ['Chunk', 'Entity', 'Document'],
  cdcRelTypes: ['MENTIONS'],
  cdcNodeKey: 'uuid',
  cdcRelKey: 'uuid',
  cdcExcludeProps: [],
  cdcDb: 'neo4j',
  cdcTopic: 'graph.changes'
}});

// Alternative: apoc.kafka.publish.sync(topic, payload, config) YIELD value waits for the broker ack and
// returns {timestamp, offset, partition, keySize, valueSize}; slower, but errors surface in the log.
CALL apoc.trigger.show('neo4j');
