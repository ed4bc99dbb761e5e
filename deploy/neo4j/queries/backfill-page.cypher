MATCH (n:`__LABEL__`) WHERE n.`__KEY__` IS NOT NULL AND ($after IS NULL OR n.`__KEY__` > $after)
WITH n ORDER BY n.`__KEY__` ASC LIMIT $limit
OPTIONAL MATCH (v:CdcVersion {key: 'node:' + toString(n.`__KEY__`)})
RETURN n.`__KEY__` AS key, labels(n) AS labels, properties(n) AS props, coalesce(v.version, 0) AS version
ORDER BY key ASC
