-- The stored copies of ids whose earlier copy is about to be inserted: any day's partition.
DELETE FROM events WHERE event_id = ANY($1::uuid[])
