INSERT INTO events AS e (event_id, client_id, type, ts, ingested_at, ordered_at, priority,
                         payload, topic, kafka_partition, kafka_offset, sdk)
SELECT u.event_id, u.client_id, u.type, u.ts, u.ingested_at, u.ordered_at, u.priority,
       u.payload::jsonb, u.topic, u.kafka_partition, u.kafka_offset, u.sdk
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
            $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::int4[], $11::int8[],
            $12::text[])
     AS u(event_id, client_id, type, ts, ingested_at, ordered_at, priority, payload,
          topic, kafka_partition, kafka_offset, sdk)
-- The copy that comes first in the order is the event (src/copies.rs): a later copy of the
-- same client's event is skipped, an earlier one replaces a copy stored before it arrived.
ON CONFLICT (event_id) DO UPDATE SET
    type = excluded.type, ts = excluded.ts, ingested_at = excluded.ingested_at,
    ordered_at = excluded.ordered_at, priority = excluded.priority, payload = excluded.payload,
    topic = excluded.topic, kafka_partition = excluded.kafka_partition,
    kafka_offset = excluded.kafka_offset, sdk = excluded.sdk, persisted_at = now()
WHERE e.client_id = excluded.client_id
  AND (excluded.ordered_at, excluded.topic COLLATE "C", excluded.kafka_partition, excluded.kafka_offset)
    < (e.ordered_at, e.topic COLLATE "C", e.kafka_partition, e.kafka_offset)
RETURNING event_id, (xmax = 0) AS inserted
