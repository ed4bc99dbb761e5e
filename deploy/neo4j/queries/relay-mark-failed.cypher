// An outbox entry that cannot become an event: keep it, out of the relay's way.
MATCH (o:CdcOutbox) WHERE o.event_id = $id
SET o.failed = true, o.error = $error
