MATCH (o:CdcOutbox) WHERE o.event_id IN $ids DELETE o
