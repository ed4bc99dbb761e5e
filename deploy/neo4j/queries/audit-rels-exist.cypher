// The audit: which of $keys still exist as relationships of one type, keyed as the
// trigger keys them (the relationship key property, else '<start key>|<TYPE>|<end key>').
// The key is computed, so this scans the type once per call.
MATCH (s)-[r:`__REL__`]->(e)
WITH coalesce(toString(r.`__KEY__`), toString(s.`__PROP__`) + '|__REL__|' + toString(e.`__PROP__`)) AS key
WHERE key IN $keys
RETURN DISTINCT key
