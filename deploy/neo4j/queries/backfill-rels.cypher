// A page of one relationship type, keyed as the trigger keys it: the relationship key
// property, else '<start key>|<TYPE>|<end key>'. The key is computed, so no index
// serves it: each page scans the type. Run in the page's transaction after the bump,
// it reads the properties; before it (without a lock) it only selects the page.
MATCH (s)-[r:`__REL__`]->(e)
WITH s, r, e, toString(s.`__PROP__`) AS sk, toString(e.`__PROP__`) AS ek
WITH r, sk, ek, coalesce(toString(r.`__KEY__`), sk + '|__REL__|' + ek) AS key
WHERE key IS NOT NULL AND ($after IS NULL OR key > $after)
WITH r, sk, ek, key ORDER BY key ASC LIMIT $limit
OPTIONAL MATCH (v:CdcVersion {key: 'relationship:' + key})
RETURN key, sk AS start_key, ek AS end_key, properties(r) AS props, coalesce(v.version, 0) AS version
ORDER BY key ASC
