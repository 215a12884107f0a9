-- One row per accepted event. event_id is the idempotency key: redelivery after a crash or
-- rebalance, and producer retries with the same id, land on the primary key and are skipped.
CREATE TABLE IF NOT EXISTS events (
    event_id        uuid        PRIMARY KEY,
    client_id       text        NOT NULL,
    type            text        NOT NULL,
    ts              timestamptz,
    ingested_at     timestamptz NOT NULL,
    priority        text        NOT NULL CHECK (priority IN ('normal', 'critical')),
    payload         jsonb       NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    persisted_at    timestamptz NOT NULL DEFAULT now()
);

-- Reads are "one client's history in ingest order", paged by (ingested_at, event_id).
CREATE INDEX IF NOT EXISTS events_client_ingest_order
    ON events (client_id, ingested_at, event_id);
