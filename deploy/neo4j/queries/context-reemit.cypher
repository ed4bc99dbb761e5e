// A relationship changed: the node whose context it is gets a new version. Run in the
// relay's transaction that also writes the re-emit's outbox entry and deletes the
// relationship's entry, so the version bump and its outbox entry commit together and the
// re-emit is published like any change, in version order with the node's own entries.
UNWIND $keys AS k
MATCH (n:`__LABEL__` {`__KEY__`: k})
MERGE (v:CdcVersion {key: 'node:' + k})
SET v.version = coalesce(v.version, 0) + 1
RETURN k AS key, labels(n) AS labels, properties(n) AS props, v.version AS version
