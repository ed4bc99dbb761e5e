MATCH (o:CdcOutbox) RETURN count(o) AS depth, min(o.commit_time_ms) AS oldest
