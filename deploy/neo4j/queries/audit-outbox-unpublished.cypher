// After `graphcdc audit --repair`: which of the repair's outbox entries the relay has not
// published yet (an index seek on event_id). `waiting`: those it still may publish (not
// marked failed).
MATCH (o:CdcOutbox) WHERE o.event_id IN $ids
RETURN count(o) AS unpublished, count(CASE WHEN o.failed IS NULL THEN 1 END) AS waiting
