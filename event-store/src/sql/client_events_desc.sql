SELECT event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload::text,
       topic, kafka_partition, kafka_offset, sdk
FROM events
WHERE client_id = $1
  AND (ordered_at, event_id) < ($2, $3)
  -- Implied by the line above; lets partition pruning skip the days after the cursor.
  AND ordered_at <= $2
  AND ordered_at >= $4
  AND ordered_at < $5
ORDER BY ordered_at DESC, event_id DESC
LIMIT $6
