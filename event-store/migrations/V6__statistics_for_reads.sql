-- Statistics for the reads, and no more. Autovacuum analyzes a day's partition again after
-- every 10 % of change, on both shards at about the same moment (they take the same share of
-- the load). Each pass sorted a 30,000-row sample of every column, the jsonb payload most
-- of all: 0.5 s of CPU per shard under 20,000 events/s ingest on a 2-core host, against
-- 0.02-0.03 s with the targets below (docs/benchmarks.md, 2026-12-06 18:00).
--
-- Reads filter and sort on client_id, ordered_at and event_id only. Their plans rest on the
-- client index and the key, so a 3,000-row sample (target 10) is enough: the estimates
-- decide nothing else. No statement filters, joins or sorts on the other columns, so the
-- planner never reads their statistics (target 0: none gathered; what earlier passes left
-- in pg_statistic stays unused). A deployment that adds queries on them raises the target
-- on `events`.
--
-- ALTER TABLE on the parent recurses to the existing partitions. PostgreSQL gives a new
-- partition the default targets, so db-writer copies the parent's to each day it creates
-- (src/partitions.rs).
ALTER TABLE events
    ALTER COLUMN event_id SET STATISTICS 10,
    ALTER COLUMN client_id SET STATISTICS 10,
    ALTER COLUMN ordered_at SET STATISTICS 10,
    ALTER COLUMN type SET STATISTICS 0,
    ALTER COLUMN ts SET STATISTICS 0,
    ALTER COLUMN ingested_at SET STATISTICS 0,
    ALTER COLUMN priority SET STATISTICS 0,
    ALTER COLUMN payload SET STATISTICS 0,
    ALTER COLUMN topic SET STATISTICS 0,
    ALTER COLUMN kafka_partition SET STATISTICS 0,
    ALTER COLUMN kafka_offset SET STATISTICS 0,
    ALTER COLUMN persisted_at SET STATISTICS 0,
    ALTER COLUMN sdk SET STATISTICS 0;
