//! Every metric of producer-gateway, defined once. Labels never carry client or event ids.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, Histogram, IntCounter,
    IntCounterVec,
};

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gateway_requests_total",
        "POST /events requests by answer status",
        &["status"]
    )
    .expect("metric registers once")
});

pub static EVENTS_ACCEPTED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gateway_events_accepted_total",
        "Events acknowledged by the brokers and answered 202"
    )
    .expect("metric registers once")
});

pub static PUBLISH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "gateway_publish_seconds",
        "Time from enqueueing a request's events to the last broker acknowledgement",
        vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0]
    )
    .expect("metric registers once")
});
