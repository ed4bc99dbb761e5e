// The audit's repair (`graphcdc audit --repair`): raise each entity's counter to at least
// row.floor (the version graph.state holds for it), plus row.step, under the counter's
// write lock (the trigger's own lock: a commit that changes the entity waits, then gets a
// higher version). Upserts raise with step 0, then bump and read in the backfill's page
// transaction; tombstones raise with step 1 and publish that version, so graph.state gets
// a delete above anything it holds, and a later create of the key goes higher still.
UNWIND $rows AS row
MERGE (v:CdcVersion {key: row.key})
SET v.version = CASE WHEN coalesce(v.version, 0) > row.floor THEN v.version ELSE row.floor END + row.step
RETURN row.key AS key, v.version AS version
