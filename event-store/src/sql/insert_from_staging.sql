INSERT INTO events AS e (event_id, client_id, type, ts, ingested_at, ordered_at, priority,
                         payload, topic, kafka_partition, kafka_offset, sdk)
SELECT event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload,
       topic, kafka_partition, kafka_offset, sdk
FROM events_staging
-- Same rule as insert_unnest.sql.
ON CONFLICT (event_id) DO UPDATE SET
    type = excluded.type, ts = excluded.ts, ingested_at = excluded.ingested_at,
    ordered_at = excluded.ordered_at, priority = excluded.priority, payload = excluded.payload,
    topic = excluded.topic, kafka_partition = excluded.kafka_partition,
    kafka_offset = excluded.kafka_offset, sdk = excluded.sdk, persisted_at = now()
WHERE e.client_id = excluded.client_id
  AND (excluded.ordered_at, excluded.topic COLLATE "C", excluded.kafka_partition, excluded.kafka_offset)
    < (e.ordered_at, e.topic COLLATE "C", e.kafka_partition, e.kafka_offset)
RETURNING event_id, (xmax = 0) AS inserted
