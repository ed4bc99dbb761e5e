// The page's transaction, first statement: bump the trigger's counter of every entity
// of the page (write lock on each counter until commit; keys are in order, as the
// trigger takes them). A commit that changes an entity bumps the same counter, so it
// either committed before this (and the read that follows sees it) or waits for this
// transaction and gets a higher version.
UNWIND $keys AS k
MERGE (v:CdcVersion {key: k})
SET v.version = coalesce(v.version, 0) + 1
RETURN k AS key, v.version AS version
