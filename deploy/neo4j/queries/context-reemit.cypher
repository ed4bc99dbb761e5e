// A relationship changed: the node whose context it is gets a new version and its state
// is published again, so its denormalised payload follows the graph.
UNWIND $keys AS k
MATCH (n:`__LABEL__` {`__KEY__`: k})
MERGE (v:CdcVersion {key: 'node:' + k})
SET v.version = coalesce(v.version, 0) + 1
RETURN k AS key, labels(n) AS labels, properties(n) AS props, v.version AS version
