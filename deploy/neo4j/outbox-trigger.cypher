// outbox-trigger.cypher — OUTBOX capture mode (APOC Core 5.x only).
//
// Run against the SYSTEM database:   cypher-shell -d system -f outbox-trigger.cypher
// Prerequisites: apoc.conf has apoc.trigger.enabled=true; constraints.cypher ran on the user DB.
// Installation is eventually consistent: the trigger becomes active within apoc.trigger.refresh ms.
// Every assumption this statement makes about APOC / Neo4j, with its source, is listed in
// README.md, "Semantics this Cypher relies on".
//
// What it does (phase 'before' = inside the writing transaction, so it commits or rolls back
// together with the business change):
//   0. returns at once when the transaction metadata says cdcSkip: true (bulk maintenance opt-out),
//      and builds its lookup maps ONCE (ids of deleted nodes/relationships, old keys): no per-row
//      list scans over the transaction data, so the work is linear in the size of the change;
//   1. live nodes: an upsert per captured node (with the captured labels it lost while staying in
//      scope, `removed_labels`, and the names of the properties the transaction assigned or
//      removed on it, `changed`), plus a delete of the key it had before the transaction when
//      that key changed, was removed, or the node left scope;
//   2. deleted nodes: labels and key only survive in $removedLabels / $removedNodeProperties;
//   3. live relationships (created, properties changed, or an endpoint's key changed): an upsert,
//      plus a delete of the previously published key when it changed; each captured relationship
//      carries a trigger-owned marker property ($cdcRelMarker = [key, type, start_key, end_key]);
//   4. deleted relationships: read ONLY from $removedRelationshipProperties[$cdcRelMarker] (the
//      marker's old value); nothing is ever called on a deleted relationship;
//   5. collapses the events per kind:key (the upsert wins: the entity exists at commit, and its
//      removed_labels gain every captured label the group's deletes had and it lacks), then one
//      version bump + one CdcOutbox node per kind:key, in (kind, key) order.
// CdcOutbox / CdcVersion nodes are never in scope (label filter below), so there is no recursion.
//
// Trigger-scoped parameters come from config.params (merged into the built-in $createdNodes, ...):
//   $cdcNodeLabels   labels whose nodes are captured
//   $cdcRelTypes     relationship types that are captured
//   $cdcNodeKey      business-key property of nodes          (Kafka key / Qdrant point id source)
//   $cdcRelKey       business-key property of relationships  (fallback: '<start>|<TYPE>|<end>')
//   $cdcRelMarker    property the trigger writes on captured relationships; never write it yourself,
//                    exclude it from relationship payloads (the trigger does) — see README.md
//   $cdcExcludeProps property names left out of `properties` (e.g. ['embedding']), [] = full map
//   $cdcDb           database name copied into every entry (no built-in $databaseName exists)

CALL apoc.trigger.install('neo4j', 'cdc-outbox', "
// ---- 0. opt-out, then lookup maps built once per transaction ----
WITH $metaData AS md
WHERE coalesce(md.cdcSkip, false) <> true
WITH apoc.map.fromPairs([d IN $deletedNodes | [toString(id(d)), true]]) AS goneNodes,
     apoc.map.fromPairs([r IN $deletedRelationships | [toString(id(r)), true]]) AS goneRels
// key each node had before this transaction, where the key was changed or removed (deleted nodes included)
CALL () {
  UNWIND coalesce($assignedNodeProperties[$cdcNodeKey], []) + coalesce($removedNodeProperties[$cdcNodeKey], []) AS e
  WITH e
  WHERE e.old IS NOT NULL AND (e.new IS NULL OR toString(e.old) <> toString(e.new))
  WITH collect([toString(id(e.node)), e.old]) AS pairs
  RETURN apoc.map.fromPairs(pairs) AS oldKeyById
}
// ---- 1. live nodes: upsert, plus a delete of the old key (key changed / removed, node left scope) ----
CALL (goneNodes, oldKeyById) {
  // captured labels gained / lost in this transaction, per node id
  CALL () {
    UNWIND $cdcNodeLabels AS l
    UNWIND coalesce($assignedLabels[l], []) AS n
    WITH toString(id(n)) AS nid, collect(l) AS ls
    WITH collect([nid, ls]) AS pairs
    RETURN apoc.map.fromPairs(pairs) AS gainedById
  }
  CALL () {
    UNWIND $cdcNodeLabels AS l
    UNWIND coalesce($removedLabels[l], []) AS n
    WITH toString(id(n)) AS nid, collect(l) AS ls
    WITH collect([nid, ls]) AS pairs
    RETURN apoc.map.fromPairs(pairs) AS lostById
  }
  // names of the properties assigned or removed, per node id (the relay re-emits the nodes whose
  // [[mappings.context]] lists one of them)
  CALL () {
    CALL () {
        UNWIND keys($assignedNodeProperties) AS k
        UNWIND $assignedNodeProperties[k] AS e
        RETURN toString(id(e.node)) AS nid, k
      UNION
        UNWIND keys($removedNodeProperties) AS k
        UNWIND $removedNodeProperties[k] AS e
        RETURN toString(id(e.node)) AS nid, k
    }
    WITH nid, collect(k) AS ks
    WITH collect([nid, ks]) AS pairs
    RETURN apoc.map.fromPairs(pairs) AS changedById
  }
  // every node touched by the transaction, once, minus deleted ones (UNION removes duplicates)
  CALL (goneNodes) {
      UNWIND $createdNodes AS n
      RETURN n
    UNION
      UNWIND keys($assignedLabels) AS l
      UNWIND $assignedLabels[l] AS n
      WITH n WHERE goneNodes[toString(id(n))] IS NULL
      RETURN n
    UNION
      UNWIND keys($removedLabels) AS l
      UNWIND $removedLabels[l] AS n
      WITH n WHERE goneNodes[toString(id(n))] IS NULL
      RETURN n
    UNION
      UNWIND keys($assignedNodeProperties) AS k
      UNWIND $assignedNodeProperties[k] AS e
      WITH e.node AS n WHERE goneNodes[toString(id(n))] IS NULL
      RETURN n
    UNION
      UNWIND keys($removedNodeProperties) AS k
      UNWIND $removedNodeProperties[k] AS e
      WITH e.node AS n WHERE goneNodes[toString(id(n))] IS NULL
      RETURN n
  }
  WITH gainedById, lostById, changedById, oldKeyById, n, toString(id(n)) AS nid, labels(n) AS lbls
  WHERE NOT any(l IN lbls WHERE l IN ['CdcOutbox', 'CdcVersion'])
  WITH n, lbls, coalesce(gainedById[nid], []) AS gained, coalesce(lostById[nid], []) AS lost,
       coalesce(changedById[nid], []) AS changed, n[$cdcNodeKey] AS curKey, oldKeyById[nid] AS oldKey
  // nowIn: captured labels now; wasIn: captured labels when the transaction started
  WITH n, lbls, gained, lost, changed, curKey, coalesce(oldKey, curKey) AS prevKey,
       [l IN lbls WHERE l IN $cdcNodeLabels] AS nowIn,
       [l IN lbls WHERE l IN $cdcNodeLabels AND NOT l IN gained] + lost AS wasIn
  WHERE size(nowIn) > 0 OR size(wasIn) > 0
  WITH lbls, gained, lost, changed, curKey, prevKey, nowIn, wasIn,
       apoc.convert.toJson(apoc.map.removeKeys(properties(n), $cdcExcludeProps)) AS json
  // the upsert names the captured labels the node lost (it stays in scope through another one):
  // the mapper tombstones it in their collections
  WITH [ev IN [
         CASE WHEN size(nowIn) > 0 AND curKey IS NOT NULL THEN {
           kind: 'node', key: toString(curKey), labels: lbls, removed_labels: lost, changed: changed,
           op: 'upsert', properties: json, rel_type: null, start_key: null, end_key: null} END,
         CASE WHEN size(wasIn) > 0 AND prevKey IS NOT NULL
                   AND (size(nowIn) = 0 OR curKey IS NULL OR toString(prevKey) <> toString(curKey)) THEN {
           kind: 'node', key: toString(prevKey), labels: [l IN lbls WHERE NOT l IN gained] + lost, op: 'delete',
           properties: '{}', rel_type: null, start_key: null, end_key: null} END
       ] WHERE ev IS NOT NULL] AS evs
  UNWIND evs AS ev
  RETURN collect(ev) AS nodeEvents
}
// ---- 2. node deletes: labels/key of deleted nodes only exist in $removedLabels / $removedNodeProperties ----
CALL (goneNodes, oldKeyById) {
  WITH goneNodes, oldKeyById
  WHERE any(l IN $cdcNodeLabels WHERE $removedLabels[l] IS NOT NULL)
  UNWIND keys($removedLabels) AS l
  UNWIND $removedLabels[l] AS d
  WITH oldKeyById, l, toString(id(d)) AS nid
  WHERE goneNodes[nid]
  WITH oldKeyById, nid, collect(l) AS lbls
  WHERE any(l IN lbls WHERE l IN $cdcNodeLabels)
  WITH lbls, oldKeyById[nid] AS k
  WHERE k IS NOT NULL
  RETURN collect({
    kind: 'node', key: toString(k), labels: lbls, op: 'delete', properties: '{}',
    rel_type: null, start_key: null, end_key: null
  }) AS delNodeEvents
}
// ---- 3. live relationships: created, properties changed, or an endpoint's key changed ----
CALL (goneNodes, goneRels) {
  // relationship key each relationship had before this transaction, where it was changed or removed
  CALL () {
    UNWIND coalesce($assignedRelationshipProperties[$cdcRelKey], []) + coalesce($removedRelationshipProperties[$cdcRelKey], []) AS e
    WITH e
    WHERE e.old IS NOT NULL AND (e.new IS NULL OR toString(e.old) <> toString(e.new))
    WITH collect([toString(id(e.relationship)), e.old]) AS pairs
    RETURN apoc.map.fromPairs(pairs) AS relOldKeyById
  }
  CALL (goneNodes, goneRels) {
      UNWIND $createdRelationships AS r
      RETURN r
    UNION
      UNWIND keys($assignedRelationshipProperties) AS k
      UNWIND $assignedRelationshipProperties[k] AS e
      WITH e.relationship AS r WHERE goneRels[toString(id(r))] IS NULL
      RETURN r
    UNION
      UNWIND keys($removedRelationshipProperties) AS k
      UNWIND $removedRelationshipProperties[k] AS e
      WITH e.relationship AS r WHERE goneRels[toString(id(r))] IS NULL
      RETURN r
    UNION
      // live nodes whose key changed or was removed: their captured relationships get new endpoint keys
      UNWIND coalesce($assignedNodeProperties[$cdcNodeKey], []) + coalesce($removedNodeProperties[$cdcNodeKey], []) AS e
      WITH e
      WHERE e.old IS NOT NULL AND (e.new IS NULL OR toString(e.old) <> toString(e.new))
      WITH e.node AS n WHERE goneNodes[toString(id(n))] IS NULL
      MATCH (n)-[r]-()
      WHERE type(r) IN $cdcRelTypes
      RETURN r
  }
  // r is live from here on: type()/startNode()/endNode()/properties() are safe
  WITH relOldKeyById, r
  WHERE type(r) IN $cdcRelTypes
  WITH relOldKeyById, r, type(r) AS t,
       toString(startNode(r)[$cdcNodeKey]) AS sk, toString(endNode(r)[$cdcNodeKey]) AS ek,
       CASE WHEN valueType(r[$cdcRelMarker]) STARTS WITH 'LIST<STRING' THEN r[$cdcRelMarker] END AS marker
  WITH relOldKeyById, r, t, sk, ek, CASE WHEN size(marker) = 4 THEN marker END AS stamp,
       coalesce(toString(r[$cdcRelKey]), sk + '|' + t + '|' + ek) AS k
  // prevKey: the key last published for r (the marker), else the relationship key it had before
  WITH r, t, sk, ek, stamp, k, coalesce(stamp[0], toString(relOldKeyById[toString(id(r))])) AS prevKey,
       CASE WHEN k IS NULL THEN null ELSE [k, t, coalesce(sk, ''), coalesce(ek, '')] END AS newStamp
  WITH r, t, sk, ek, stamp, k, prevKey, newStamp,
       apoc.convert.toJson(apoc.map.removeKeys(properties(r), $cdcExcludeProps + [$cdcRelMarker])) AS props,
       apoc.map.fromPairs([[$cdcRelMarker, newStamp]]) AS mark
  // keep the marker equal to what is published (a null value removes it)
  FOREACH (_ IN CASE WHEN coalesce(stamp = newStamp, stamp IS NULL AND newStamp IS NULL) THEN [] ELSE [1] END |
    SET r += mark)
  WITH [ev IN [
         CASE WHEN k IS NOT NULL THEN {
           kind: 'relationship', key: k, labels: null, op: 'upsert', properties: props,
           rel_type: t, start_key: sk, end_key: ek} END,
         CASE WHEN prevKey IS NOT NULL AND (k IS NULL OR prevKey <> k) THEN {
           kind: 'relationship', key: prevKey, labels: null, op: 'delete', properties: '{}',
           rel_type: t,
           start_key: CASE WHEN stamp IS NULL THEN sk WHEN stamp[2] = '' THEN null ELSE stamp[2] END,
           end_key: CASE WHEN stamp IS NULL THEN ek WHEN stamp[3] = '' THEN null ELSE stamp[3] END} END
       ] WHERE ev IS NOT NULL] AS evs
  UNWIND evs AS ev
  RETURN collect(ev) AS relEvents
}
// ---- 4. relationship deletes: only the marker's old value; nothing is called on a deleted relationship ----
CALL () {
  UNWIND coalesce($removedRelationshipProperties[$cdcRelMarker], []) AS x
  WITH CASE WHEN valueType(x.old) STARTS WITH 'LIST<STRING' THEN x.old END AS s
  WHERE size(s) = 4 AND s[1] IN $cdcRelTypes
  RETURN collect({
    kind: 'relationship', key: s[0], labels: null, op: 'delete', properties: '{}',
    rel_type: s[1],
    start_key: CASE WHEN s[2] = '' THEN null ELSE s[2] END,
    end_key: CASE WHEN s[3] = '' THEN null ELSE s[3] END
  }) AS delRelEvents
}
// ---- 5. one event per kind:key (upsert wins; a delete carries every label seen; a node upsert's
//         removed_labels = every captured label seen in the group that it lacks), then one version
//         bump + one outbox entry each, sorted to take counter locks in a stable order ----
WITH nodeEvents + delNodeEvents + relEvents + delRelEvents AS events, timestamp() AS now
UNWIND events AS ev
WITH now, ev.kind AS kind, ev.key AS key, collect(ev) AS evs
WITH now, kind, key, head([e IN evs WHERE e.op = 'upsert']) AS up, head(evs) AS firstEv,
     reduce(acc = [], e IN evs | acc + [l IN coalesce(e.labels, []) + coalesce(e.removed_labels, []) WHERE NOT l IN acc]) AS allLabels
WITH now, kind, key, CASE
       WHEN up IS NULL THEN firstEv {.*, labels: CASE WHEN kind = 'node' THEN allLabels END}
       WHEN kind = 'node' THEN up {.*, removed_labels: [l IN allLabels WHERE l IN $cdcNodeLabels AND NOT l IN up.labels]}
       ELSE up
     END AS ev
ORDER BY kind, key
MERGE (v:CdcVersion {key: kind + ':' + key})
SET v.version = coalesce(v.version, 0) + 1
CREATE (:CdcOutbox {
  event_id: randomUUID(),
  kind: ev.kind, key: ev.key, labels: ev.labels, removed_labels: ev.removed_labels, op: ev.op,
  changed: ev.changed,
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
  cdcRelMarker: '_cdc',
  cdcExcludeProps: [],
  cdcDb: 'neo4j'
}});

// Verify (still on system; `installed` is true immediately, activation follows apoc.trigger.refresh):
CALL apoc.trigger.show('neo4j');
