MERGE (l:CdcRelayLease {name: 'relay'})
WITH l
WHERE l.holder IS NULL OR l.holder = $me OR l.expires_at < $now
SET l.holder = $me, l.expires_at = $now + $ttl
RETURN l.holder AS holder
