// Writing first takes the node's write lock, so two relays cannot both pass the WHERE.
// Expiry is the database's clock (timestamp()), never a relay host's. Taking the lease from
// another holder, an expired one or nobody increments its fencing epoch; renewing keeps it.
MERGE (l:CdcRelayLease {name: 'relay'})
SET l.locked_at = timestamp()
WITH l, timestamp() AS now
WHERE l.holder IS NULL OR l.holder = $me OR l.expires_at < now
WITH l, now, CASE WHEN l.holder = $me THEN coalesce(l.epoch, 1) ELSE coalesce(l.epoch, 0) + 1 END AS epoch
SET l.holder = $me, l.expires_at = now + $ttl, l.epoch = epoch
RETURN l.holder AS holder, l.epoch AS epoch
