-- The copy that comes first in the order is the event (src/copies.rs): a later copy of the
-- same client's event is skipped, an earlier one replaces the copy stored before it arrived.
-- The row's lock serialises two writers holding copies of one id (from two lanes) until the
-- first one's transaction ends.
INSERT INTO event_ids AS g (event_id, client_id, ordered_at, topic, kafka_partition, kafka_offset)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::int4[],
                     $6::int8[])
ON CONFLICT (event_id) DO UPDATE SET
    ordered_at = excluded.ordered_at, topic = excluded.topic,
    kafka_partition = excluded.kafka_partition, kafka_offset = excluded.kafka_offset
WHERE g.client_id = excluded.client_id
  AND (excluded.ordered_at, excluded.topic COLLATE "C", excluded.kafka_partition, excluded.kafka_offset)
    < (g.ordered_at, g.topic COLLATE "C", g.kafka_partition, g.kafka_offset)
RETURNING event_id, (xmax = 0) AS inserted
