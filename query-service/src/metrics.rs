//! Every metric of query-service, defined once. Labels never carry client or event ids.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    HistogramVec, IntCounter, IntCounterVec, IntGauge,
};

pub static PAGE_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "query_page_cache_total",
        "Persisted-page lookups by result (hit, miss)",
        &["result"]
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

pub static IN_FLIGHT_OVERFLOW: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_in_flight_overflow_total",
        "Events not held because the in-flight bound was reached (answers marked incomplete)"
    )
    .expect("metric registers once")
});

pub static UNDECODABLE: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_undecodable_messages_total",
        "Messages that are not valid events (the writer dead-letters them)"
    )
    .expect("metric registers once")
});

pub static INCOMPLETE_ANSWERS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "query_incomplete_answers_total",
        "Answers marked complete=false because in-flight events were not held"
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
