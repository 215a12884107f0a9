COPY events (event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload,
             topic, kafka_partition, kafka_offset, sdk)
FROM STDIN (FORMAT binary)
