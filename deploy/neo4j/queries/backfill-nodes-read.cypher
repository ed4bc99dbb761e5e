// The page's transaction, second statement: the nodes' properties, read after their
// counters were locked (index lookups by key).
UNWIND $keys AS k
MATCH (n:`__LABEL__` {`__KEY__`: k})
RETURN k AS key, labels(n) AS labels, properties(n) AS props
