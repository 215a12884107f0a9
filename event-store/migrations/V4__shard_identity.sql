-- Which shard this database is: stamped by every migrate with the shard's position in the
-- list that ran it (src/identity.rs). A list with two URLs swapped would route clients to the
-- wrong database silently; the stamp turns that into an error at start and in
-- `eventpipe-admin shards check`.
CREATE TABLE IF NOT EXISTS shard_identity (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    shard_index integer NOT NULL,
    shard_count integer NOT NULL,
    stamped_at  timestamptz NOT NULL DEFAULT now()
);
