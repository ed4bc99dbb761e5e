// The fencing check: renew the lease only while it still carries this relay's epoch
// (no row: another relay took it over, and this one must not publish or delete).
MATCH (l:CdcRelayLease {name: 'relay'})
SET l.locked_at = timestamp()
WITH l, timestamp() AS now
WHERE l.holder = $me AND l.epoch = $epoch
SET l.expires_at = now + $ttl
RETURN l.epoch AS epoch
