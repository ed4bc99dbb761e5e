// Writing first takes the node's write lock, so two relays cannot both pass the WHERE.
MERGE (l:CdcRelayLease {name: 'relay'})
SET l.locked_at = $now
WITH l
WHERE l.holder IS NULL OR l.holder = $me OR l.expires_at < $now
SET l.holder = $me, l.expires_at = $now + $ttl
RETURN l.holder AS holder
