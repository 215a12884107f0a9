INSERT INTO events (event_id, client_id, type, ts, ingested_at, priority, payload,
                    topic, kafka_partition, kafka_offset, sdk)
SELECT event_id, client_id, type, ts, ingested_at, priority, payload,
       topic, kafka_partition, kafka_offset, sdk
FROM events_staging
ON CONFLICT (event_id) DO NOTHING
