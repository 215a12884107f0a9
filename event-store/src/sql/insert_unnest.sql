INSERT INTO events (event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload,
                    topic, kafka_partition, kafka_offset, sdk)
SELECT u.event_id, u.client_id, u.type, u.ts, u.ingested_at, u.ordered_at, u.priority,
       u.payload::jsonb, u.topic, u.kafka_partition, u.kafka_offset, u.sdk
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::int4[], $11::int8[],
            $12::text[])
     AS u(event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload,
          topic, kafka_partition, kafka_offset, sdk)
-- A Kafka redelivery is the same record with the same `ordered_at`: the key absorbs it. Which
-- copy of a producer-chosen id is stored was settled in `event_ids` first (src/write.rs).
ON CONFLICT (event_id, ordered_at) DO NOTHING
RETURNING event_id
