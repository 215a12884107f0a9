-- `events` becomes a table partitioned by day of `ordered_at` (docs/design.md, "Data that
-- grows without end"): retention drops whole days instead of deleting rows, and a read with
-- `since`/`until` touches only the days it covers. db-writer creates the days ahead
-- (src/partitions.rs); the DEFAULT partition catches rows of a day nobody created yet, so an
-- insert never fails for want of a partition.
--
-- The primary key has to contain the partition key: `(event_id, ordered_at)` still absorbs a
-- Kafka redelivery (the same record, so the same `ordered_at`). Copies of one event under a
-- producer-chosen id carry different `ordered_at`s, possibly on different days; the narrow
-- unpartitioned `event_ids` table keeps one row per such id (the first copy), so "one row
-- per event id" holds across partitions.
--
-- An existing table is kept as the partition `events_legacy` covering everything up to the
-- end of the day of its newest row; retention drops it whole once that day is old enough.
-- Filling `event_ids` and building the new key on a large legacy table take time: run this
-- migration with the writers stopped (Kafka buffers meanwhile), docs/operations/pipeline.md.

ALTER TABLE events RENAME TO events_legacy;
ALTER INDEX events_pkey RENAME TO events_legacy_event_id;
ALTER INDEX events_client_order RENAME TO events_legacy_client_order;

CREATE TABLE events (
    event_id        uuid        NOT NULL,
    client_id       text        NOT NULL,
    type            text        NOT NULL,
    ts              timestamptz,
    ingested_at     timestamptz NOT NULL,
    priority        text        NOT NULL CONSTRAINT events_priority_check
                                         CHECK (priority IN ('normal', 'critical')),
    payload         jsonb       NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL,
    persisted_at    timestamptz NOT NULL DEFAULT now(),
    sdk             text,
    ordered_at      timestamptz NOT NULL,
    PRIMARY KEY (event_id, ordered_at)
) PARTITION BY RANGE (ordered_at);

CREATE INDEX events_client_order ON events (client_id, ordered_at, event_id);

CREATE TABLE events_default PARTITION OF events DEFAULT;

-- One row per producer-chosen event id: where its first copy is stored. Gateway-assigned ids
-- (fresh UUIDv7s, header `eventpipe-id-origin: gateway`) cannot have copies and skip it.
CREATE TABLE event_ids (
    event_id        uuid        PRIMARY KEY,
    client_id       text        NOT NULL,
    ordered_at      timestamptz NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    kafka_offset    bigint      NOT NULL
);
-- Retention forgets ids whose rows were dropped, oldest first.
CREATE INDEX event_ids_ordered_at ON event_ids (ordered_at);

DO $$
DECLARE
    legacy_until timestamptz;
BEGIN
    SELECT date_trunc('day', max(ordered_at), 'UTC') + interval '1 day'
      INTO legacy_until
      FROM events_legacy;
    IF legacy_until IS NULL THEN
        DROP TABLE events_legacy;
        RETURN;
    END IF;
    -- The legacy table does not know who chose its ids, so every one is guarded.
    INSERT INTO event_ids (event_id, client_id, ordered_at, topic, kafka_partition, kafka_offset)
    SELECT event_id, client_id, ordered_at, topic, kafka_partition, kafka_offset
    FROM events_legacy;
    -- `event_ids` holds the uniqueness of ids now; the partitioned table's key replaces the
    -- old one (a table has one primary key): attaching builds it and checks the range.
    ALTER TABLE events_legacy DROP CONSTRAINT events_legacy_event_id;
    EXECUTE format(
        'ALTER TABLE events ATTACH PARTITION events_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
        legacy_until);
END
$$;
