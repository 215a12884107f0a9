INSERT INTO events (event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload,
                    topic, kafka_partition, kafka_offset, sdk)
SELECT event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload,
       topic, kafka_partition, kafka_offset, sdk
FROM events_staging
-- Same rule as insert_unnest.sql.
ON CONFLICT (event_id, ordered_at) DO NOTHING
RETURNING event_id
