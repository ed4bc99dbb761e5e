// One property of the nodes related to each key, for a denormalised payload field.
UNWIND $keys AS k
MATCH (n:`__LABEL__` {`__KEY__`: k})
OPTIONAL MATCH (n)__LEFT__[:`__REL__`]__RIGHT__(m)
WITH k, m ORDER BY m.`__SORT__`
RETURN k AS key, collect(m.`__PROP__`) AS values
