// A listed property of a related node changed: the keys of the mapped label's nodes whose
// context follows a relationship to it, at most $limit per related node (the relay passes
// max_fanout + 1, so a full list means more than max_fanout: an overflow). The LIMIT inside
// the per-node subquery stops the expansion of a hub early. Run in the relay's transaction
// that re-emits them (context-reemit.cypher).
UNWIND $keys AS k
MATCH (m:`__RELATED__` {`__KEY__`: k})
CALL (m) {
  MATCH (n:`__LABEL__`)__LEFT__[:`__REL__`]__RIGHT__(m)
  WHERE n.`__KEY__` IS NOT NULL
  RETURN DISTINCT toString(n.`__KEY__`) AS key
  LIMIT $limit
}
RETURN k AS related, collect(key) AS keys
