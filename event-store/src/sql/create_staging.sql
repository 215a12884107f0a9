CREATE TEMP TABLE IF NOT EXISTS events_staging (
    event_id        uuid,
    client_id       text,
    type            text,
    ts              timestamptz,
    ingested_at     timestamptz,
    ordered_at      timestamptz,
    priority        text,
    payload         jsonb,
    topic           text,
    kafka_partition integer,
    kafka_offset    bigint,
    sdk             text
) ON COMMIT DELETE ROWS
