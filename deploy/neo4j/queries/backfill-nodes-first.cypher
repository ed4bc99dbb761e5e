// First page of a label: an ordered index scan from the lowest key; the version each
// node has now (no lock: the page's transaction bumps the counters before reading).
MATCH (n:`__LABEL__`) WHERE n.`__KEY__` IS NOT NULL
WITH n.`__KEY__` AS key ORDER BY key ASC LIMIT $limit
OPTIONAL MATCH (v:CdcVersion {key: 'node:' + toString(key)})
RETURN key, coalesce(v.version, 0) AS version
ORDER BY key ASC
