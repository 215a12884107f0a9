SELECT event_id, client_id, type, ts, ingested_at, priority, payload::text,
       topic, kafka_partition, kafka_offset, sdk
FROM events
WHERE client_id = $1
  AND (ingested_at, event_id) > ($2, $3)
  AND ingested_at >= $4
  AND ingested_at < $5
ORDER BY ingested_at, event_id
LIMIT $6
