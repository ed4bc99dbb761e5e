MATCH (l:CdcRelayLease {name: 'relay'}) WHERE l.holder = $me
SET l.holder = null, l.expires_at = 0
