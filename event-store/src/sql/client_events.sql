SELECT event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload::text,
       topic, kafka_partition, kafka_offset, sdk
FROM events
WHERE client_id = $1
  AND (ordered_at, event_id) > ($2, $3)
  -- Implied by the line above; said again so that a page after a cursor skips the days
  -- before it (partition pruning reads plain bounds, not row comparisons).
  AND ordered_at >= $2
  AND ordered_at >= $4
  AND ordered_at < $5
ORDER BY ordered_at, event_id
LIMIT $6
