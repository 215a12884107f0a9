-- Reads order a client's history by (ordered_at, event_id): ingested_at raised to the latest
-- gateway time already in the event's Kafka partition (schemas/src/order.rs), the same value
-- every query-service replica computes for events still in flight.
ALTER TABLE events ADD COLUMN IF NOT EXISTS ordered_at timestamptz;
-- Rows stored before this version were ordered by ingested_at.
UPDATE events SET ordered_at = ingested_at WHERE ordered_at IS NULL;
ALTER TABLE events ALTER COLUMN ordered_at SET NOT NULL;
CREATE INDEX IF NOT EXISTS events_client_order ON events (client_id, ordered_at, event_id);
DROP INDEX IF EXISTS events_client_ingest_order;
