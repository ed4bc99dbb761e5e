MATCH (o:CdcOutbox) WHERE o.failed IS NULL RETURN count(o) AS depth, min(o.commit_time_ms) AS oldest
