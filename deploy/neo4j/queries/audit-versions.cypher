// The audit's second look: the version each counter of $keys ('<kind>:<key>') has now,
// 0 without a counter (read only; the node's properties are read by backfill-nodes-read).
UNWIND $keys AS k
OPTIONAL MATCH (v:CdcVersion {key: k})
RETURN k AS key, coalesce(v.version, 0) AS version
