// `graphcdc audit --bump-epoch` (a restored Neo4j): one page of version counters, in key
// order, moved into the epoch $epoch (a multiple of 2^32 above every version graph.state
// holds). A counter below $epoch gets $epoch added; one at or above it (moved by an earlier,
// interrupted run) is left alone, so the command can be run again. The trigger's next bump
// of a moved counter is above anything published before the restore. Each page is its own
// transaction; the counter's write lock orders it with the trigger's bumps.
MATCH (v:CdcVersion) WHERE v.key > $after
WITH v ORDER BY v.key ASC LIMIT $limit
WITH v, CASE WHEN v.version < $epoch THEN 1 ELSE 0 END AS move
SET v.version = v.version + move * $epoch
RETURN max(v.key) AS last, count(v) AS counters, sum(move) AS moved
