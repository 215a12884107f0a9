//! Every metric of query-service, defined once. Labels never carry client or event ids.

use std::sync::LazyLock;

use prometheus::{
    register_gauge, register_histogram, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, Gauge, Histogram,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

/// Registers every metric and creates its known labelled series at zero, so dashboards and
/// `rate()` see them from the start (a series born on its first increment hides that
/// increment) and alert rules can be checked against what is exported.
pub fn init(shards: usize) {
    for result in ["hit", "miss"] {
        PAGE_CACHE.with_label_values(&[result]);
    }
    for status in ["200", "400", "401", "403", "503", "504"] {
        QUERY_SECONDS.with_label_values(&[status]);
    }
    TailTurns::resolve();
    for shard in 0..shards {
        SHARD_UP.with_label_values(&[&shard.to_string()]);
    }
    LazyLock::force(&PAGE_RETRIES);
    LazyLock::force(&UNHELD_READS);
    LazyLock::force(&IN_FLIGHT);
    LazyLock::force(&IN_FLIGHT_BYTES);
    LazyLock::force(&TAIL_PAUSED);
    LazyLock::force(&UNDECODABLE);
    LazyLock::force(&INCOMPLETE_ANSWERS);
    LazyLock::force(&FRONTIER_LAG);
    LazyLock::force(&RELEASE_DELAY);
    LazyLock::force(&CONSUME_DELAY);
    LazyLock::force(&UNRELEASED);
    LazyLock::force(&PER_CLIENT_RELEASE);
    LazyLock::force(&LATE_EVENTS);
    LazyLock::force(&UNVERIFIED);
    LazyLock::force(&INDEXED_CLIENTS);
    LazyLock::force(&INDEXINGS);
    LazyLock::force(&CHECK_SECONDS);
    LazyLock::force(&STREAMS);
    LazyLock::force(&GROUP_LAG);
    LazyLock::force(&GROUP_OFFSET);
    LazyLock::force(&PARTITION_OFFSET);
    LazyLock::force(&PIPELINE_DEPTH);
    LazyLock::force(&OLDEST_UNSTORED);
    LazyLock::force(&DEAD_LETTER_RECORDS);
    LazyLock::force(&PARTITIONS_WITHOUT_WRITER);
}

pub static PAGE_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "query_page_cache_total",
        "Persisted pages by where they came from: hit (the page cache), miss (a shard, after a lookup), bypassed (a shard, for a client not indexed, whose pages the cache cannot follow)",
        &["result"]
    )
    .expect("metric registers once")
});

pub static PAGE_RETRIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_page_retries_total",
        "Pages read again because evictions during the shard read outran what the replica remembers"
    )
    .expect("metric registers once")
});

pub static UNHELD_READS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_unheld_reads_total",
        "Pages of a client not read lately that nothing in flight was held of: read without waiting for the tail to index it"
    )
    .expect("metric registers once")
});

pub static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "query_in_flight_events",
        "Events consumed but not yet persisted"
    )
    .expect("metric registers once")
});

pub static IN_FLIGHT_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "query_in_flight_bytes",
        "Estimated bytes held for events consumed but not yet persisted"
    )
    .expect("metric registers once")
});

pub static TAIL_PAUSED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "query_tail_paused",
        "1 while consumption waits at the in-flight bound (answers lag and say complete=false)"
    )
    .expect("metric registers once")
});

pub static UNDECODABLE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_undecodable_messages_total",
        "Messages that are not valid events or ticks (the writer dead-letters them)"
    )
    .expect("metric registers once")
});

pub static INCOMPLETE_ANSWERS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_incomplete_answers_total",
        "Answers marked complete=false because consumption waited at the in-flight bound"
    )
    .expect("metric registers once")
});

pub static QUERY_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "query_request_seconds",
        "GET /events latency by answer status",
        &["status"],
        vec![0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5]
    )
    .expect("metric registers once")
});

pub static FRONTIER_LAG: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "query_release_frontier_lag_seconds",
        "How far the release frontier trails this replica's clock"
    )
    .expect("metric registers once")
});

pub static RELEASE_DELAY: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "query_release_delay_seconds",
        "From an event's ingest time to its release to readers (the cost of the stable order; events of indexed clients only, see cache.index_on_read)",
        vec![0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 5.0]
    )
    .expect("metric registers once")
});

pub static CONSUME_DELAY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "query_consume_delay_seconds",
        "From a record's gateway time (an event's ingest time, a tick's time) to its consumption here, by kind",
        &["kind"],
        vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0]
    )
    .expect("metric registers once")
});

pub static PER_CLIENT_RELEASE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "query_per_client_release",
        "1 while clients' events are released by their own partitions' clocks, 0 while by \
         the slowest of all partitions (turned off, or settling after a start or a growth)"
    )
    .expect("metric registers once")
});

pub static UNRELEASED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "query_unreleased_events",
        "Consumed events the release frontier has not passed yet"
    )
    .expect("metric registers once")
});

pub static LATE_EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_late_events_total",
        "Events that arrived after the frontier passed their place (order.quiet_bound too small)"
    )
    .expect("metric registers once")
});

pub static UNVERIFIED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "query_unverified_events",
        "Producer-chosen ids waiting for their duplicate check against the shard"
    )
    .expect("metric registers once")
});

pub static INDEXED_CLIENTS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "query_indexed_clients",
        "Clients whose in-flight events are indexed because they were read lately (cache.index_on_read)"
    )
    .expect("metric registers once")
});

pub static INDEXINGS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_client_indexings_total",
        "Reads that had the tail index a client's held events first (cache.index_on_read)"
    )
    .expect("metric registers once")
});

pub static READ_STAGE_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "query_read_stage_seconds",
        "Where a read's time goes, by stage: index (waiting for the tail to index a client not read lately), shard (reading a page of rows from its shard)",
        &["stage"],
        vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
    )
    .expect("metric registers once")
});

pub static TAIL_TURN_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "query_tail_turn_seconds",
        "One turn of the tail's loop, by its work: records (a drain of consumed records), reading (applying the writer's commits: evictions), index (clients about to be read), checked (a duplicate check's answer). A read that indexes a client and the release of events wait for the turn under way",
        &["work"],
        vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]
    )
    .expect("metric registers once")
});

/// `query_tail_turn_seconds` by the turn's work, each label set looked up once (the tail
/// resolves them when it starts) rather than on each of ~1,000 turns a second.
pub struct TailTurns {
    pub records: Histogram,
    pub reading: Histogram,
    pub index: Histogram,
    pub checked: Histogram,
}

impl TailTurns {
    pub fn resolve() -> Self {
        let work = |label: &str| TAIL_TURN_SECONDS.with_label_values(&[label]);
        TailTurns {
            records: work("records"),
            reading: work("reading"),
            index: work("index"),
            checked: work("checked"),
        }
    }
}

pub static CHECK_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "query_duplicate_check_seconds",
        "Duration of one batch of duplicate checks against the shards",
        vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0]
    )
    .expect("metric registers once")
});

pub static STREAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("query_streams_active", "Open Server-Sent Event streams")
        .expect("metric registers once")
});

// The pipeline view (`pipeline`). Lag metrics are named as kafka_exporter names them, so
// dashboards and alerts written for it work here too; every replica exports the same values.

pub static GROUP_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "kafka_consumergroup_lag",
        "Records (events and gateway ticks) of a partition the group has not committed",
        &["consumergroup", "topic", "partition"]
    )
    .expect("metric registers once")
});

pub static GROUP_OFFSET: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "kafka_consumergroup_current_offset",
        "The group's committed offset of a partition",
        &["consumergroup", "topic", "partition"]
    )
    .expect("metric registers once")
});

pub static PARTITION_OFFSET: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "kafka_topic_partition_current_offset",
        "A partition's end offset",
        &["topic", "partition"]
    )
    .expect("metric registers once")
});

pub static PIPELINE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "eventpipe_pipeline_depth_events",
        "Events acknowledged by the gateway and not yet stored"
    )
    .expect("metric registers once")
});

pub static OLDEST_UNSTORED: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "eventpipe_oldest_unstored_age_seconds",
        "Age of the oldest acknowledged event not yet stored (0 when none)"
    )
    .expect("metric registers once")
});

pub static PARTITIONS_WITHOUT_WRITER: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "eventpipe_partitions_without_writer",
        "Partitions of the event topics that no db-writer holds: their records are not being stored (0 while the writers are not known, `writers_known` in GET /pipeline)"
    )
    .expect("metric registers once")
});

pub static DEAD_LETTER_RECORDS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "eventpipe_dead_letter_records",
        "Records in the dead-letter topic"
    )
    .expect("metric registers once")
});

pub static SHARD_UP: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "eventpipe_shard_up",
        "1 when the shard answered the last check",
        &["shard"]
    )
    .expect("metric registers once")
});

pub static AUTH_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "query_auth_refused_total",
        "Requests refused by authentication (401) or authorization (403), by reason",
        &["reason"]
    )
    .expect("metric registers once")
});
