INSERT INTO events (event_id, client_id, type, ts, ingested_at, priority, payload,
                    topic, kafka_partition, kafka_offset, sdk)
SELECT u.event_id, u.client_id, u.type, u.ts, u.ingested_at, u.priority, u.payload::jsonb,
       u.topic, u.kafka_partition, u.kafka_offset, u.sdk
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::text[], $7::text[], $8::text[], $9::int4[], $10::int8[], $11::text[])
     AS u(event_id, client_id, type, ts, ingested_at, priority, payload,
          topic, kafka_partition, kafka_offset, sdk)
ON CONFLICT (event_id) DO NOTHING
