//! Every metric of db-writer, defined once. Labels are shard, topic and error class, never ids.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge_vec,
    HistogramVec, IntCounter, IntCounterVec, IntGaugeVec,
};

/// Every reason a record is dead-lettered (`dlq.error.class`).
pub const DEAD_LETTER_CLASSES: [&str; 5] = [
    "undecodable",
    "empty",
    crate::consume::INVALID,
    "rejected-by-database",
    "event-id-conflict",
];

/// Creates every labelled series this writer will report, at zero: a series that appears only
/// on its first increment hides that increment from `rate()` and `increase()`, and alert rules
/// and dashboards can be checked against what is exported.
pub fn init(shards: usize, topics: &[&str]) {
    for shard in 0..shards {
        let shard = shard.to_string();
        let shard = [shard.as_str()];
        ROWS_WRITTEN.with_label_values(&shard);
        ROWS_DUPLICATE.with_label_values(&shard);
        WRITE_SECONDS.with_label_values(&shard);
        WRITE_RETRIES.with_label_values(&shard);
        SHARD_PAUSED.with_label_values(&shard);
        PARTITIONS.with_label_values(&shard);
        PARTITIONS_DROPPED.with_label_values(&shard);
        PARTITION_MAINTENANCE_FAILURES.with_label_values(&shard);
        DEFAULT_PARTITION_ROWS.with_label_values(&shard);
        FLUSH_WAIT_SECONDS.with_label_values(&shard);
        UNCONFIRMED_WRITES.with_label_values(&shard);
    }
    for class in DEAD_LETTER_CLASSES {
        DEAD_LETTERS.with_label_values(&[class]);
    }
    for topic in topics {
        BATCH_RECORDS.with_label_values(&[topic]);
        BATCH_FLUSH_SECONDS.with_label_values(&[topic]);
        LANE_PAUSED.with_label_values(&[topic]);
        LANE_YIELDING.with_label_values(&[topic]);
    }
    LazyLock::force(&BATCHES_COMMITTED);
    LazyLock::force(&NOTICES_LOST);
    LazyLock::force(&EVENT_ID_CONFLICTS);
}

pub static ROWS_WRITTEN: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "db_writer_rows_inserted_total",
        "Rows stored (new, or replacing a later copy of the same event), by shard",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static ROWS_DUPLICATE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "db_writer_rows_duplicate_total",
        "Rows not stored because a copy of the same event that comes first is stored (redelivery, retry), by shard",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static WRITE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "db_writer_shard_write_seconds",
        "Duration of one bulk insert statement, by shard",
        &["shard"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    )
    .expect("metric registers once")
});

pub static FLUSH_WAIT_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "db_writer_flush_wait_seconds",
        "From the end of a write made without waiting for the WAL flush (a lane's synchronous_commit off) to the shard's confirmation that its WAL is flushed past it, by shard",
        &["shard"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
    )
    .expect("metric registers once")
});

pub static UNCONFIRMED_WRITES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "db_writer_unconfirmed_writes_total",
        "Writes made without waiting for the WAL flush whose flush no session could confirm (the shard restarted or its connection broke), written again waiting for the flush, by shard",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static WRITE_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "db_writer_write_retries_total",
        "Bulk inserts retried after a transient database error, by shard",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "db_writer_dead_letters_total",
        "Records sent to the dead-letter topic, by error class",
        &["error_class"]
    )
    .expect("metric registers once")
});

pub static NOTICES_LOST: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "db_writer_persisted_notices_lost_total",
        "Persisted notifications that could not be published (readers fall back to offsets)"
    )
    .expect("metric registers once")
});

pub static BATCHES_COMMITTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "db_writer_batches_committed_total",
        "Batches whose offsets were committed after every shard write succeeded"
    )
    .expect("metric registers once")
});

pub static SHARD_PAUSED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "db_writer_shard_paused",
        "Writes to this shard waiting to retry after an error (consumption pauses while > 0)",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static LANE_PAUSED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "db_writer_lane_paused",
        "1 while a lane's partitions are paused: its batch is full and its write slots busy (the other lane keeps consuming)",
        &["topic"]
    )
    .expect("metric registers once")
});

pub static LANE_YIELDING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "db_writer_lane_yielding",
        "1 while the normal lane yields to critical traffic: small batches, one at a time (critical_first)",
        &["topic"]
    )
    .expect("metric registers once")
});

pub static EVENT_ID_CONFLICTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "db_writer_event_id_conflicts_total",
        "Events dead-lettered because another client's event has their event_id"
    )
    .expect("metric registers once")
});

pub static BATCH_RECORDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "db_writer_batch_records",
        "Records (events, ticks, poison) per batch stored, by topic (lane)",
        &["topic"],
        vec![1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 25000.0]
    )
    .expect("metric registers once")
});

pub static BATCH_FLUSH_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "db_writer_batch_flush_seconds",
        "Time to store one batch on every shard it touches (and dead-letter its poison), by topic (lane)",
        &["topic"],
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]
    )
    .expect("metric registers once")
});

pub static PARTITIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "db_writer_partitions",
        "Partitions of the events table (days, legacy and default) after the last maintenance pass, by shard",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static PARTITIONS_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "db_writer_partitions_dropped_total",
        "Partitions dropped because all their rows were older than the retention, by shard",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static PARTITION_MAINTENANCE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "db_writer_partition_maintenance_failures_total",
        "Maintenance passes that failed or had a step postponed (lock not granted), by shard",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static DEFAULT_PARTITION_ROWS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "db_writer_default_partition_rows",
        "Rows (estimate) in the default partition after the last pass: days nobody had created a partition for",
        &["shard"]
    )
    .expect("metric registers once")
});
