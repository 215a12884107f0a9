-- The partitions of `events` with their bounds read back from PostgreSQL's own description
-- (`FOR VALUES FROM ('…') TO ('…')`, `FROM (MINVALUE)`, `DEFAULT`), which renders and parses
-- timestamps in the same session settings.
SELECT c.relname::text AS name,
       b.bound = 'DEFAULT' AS is_default,
       substring(b.bound FROM $re$FROM \('([^']*)'\)$re$)::timestamptz AS from_at,
       substring(b.bound FROM $re$TO \('([^']*)'\)$re$)::timestamptz AS to_at,
       c.reltuples::int8 AS rows_estimate,
       pg_total_relation_size(c.oid) AS bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
WHERE i.inhparent = 'events'::regclass
