SELECT event_id, client_id, ordered_at, topic, kafka_partition, kafka_offset
FROM event_ids
WHERE event_id = ANY($1::uuid[])
