// The audit's second look: keys that still have outbox entries the relay has not
// published (nor marked failed). Their difference with graph.state is in flight, not drift.
// The (key, version) index serves the lookup.
UNWIND $keys AS k
MATCH (o:CdcOutbox {key: k})
WHERE o.failed IS NULL
RETURN DISTINCT o.key AS key
