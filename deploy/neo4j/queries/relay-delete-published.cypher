// Delete published entries, fenced: only while the lease still carries this relay's epoch.
// Writing the lease first takes its write lock, which orders this delete with a takeover.
MATCH (l:CdcRelayLease {name: 'relay'})
SET l.locked_at = timestamp()
WITH l
WHERE l.holder = $me AND l.epoch = $epoch
MATCH (o:CdcOutbox) WHERE o.event_id IN $ids
DELETE o
RETURN count(o) AS deleted
