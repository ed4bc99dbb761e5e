// Every later page: an index seek from the last key published ($after, of the key's
// own type), so a page costs its size, not its position.
MATCH (n:`__LABEL__`) WHERE n.`__KEY__` > $after
WITH n.`__KEY__` AS key ORDER BY key ASC LIMIT $limit
OPTIONAL MATCH (v:CdcVersion {key: 'node:' + toString(key)})
RETURN key, coalesce(v.version, 0) AS version
ORDER BY key ASC
