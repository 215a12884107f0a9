//! Every metric of producer-gateway, defined once. Labels never carry client or event ids.

use std::sync::LazyLock;

use prometheus::{
    register_gauge, register_histogram, register_int_counter, register_int_counter_vec,
    register_int_gauge, Gauge, Histogram, IntCounter, IntCounterVec, IntGauge,
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

pub static TICKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gateway_ticks_total",
        "Ticks queued, by kind: release (after critical acknowledgements), trailing (behind critical events), periodic, final",
        &["kind"]
    )
    .expect("metric registers once")
});

pub static ADMISSION_SHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gateway_admission_shed_total",
        "Requests refused with 503 because the pipeline was behind, by the lane that was shed",
        &["lane"]
    )
    .expect("metric registers once")
});

pub static ADMISSION_FAIL_OPEN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "gateway_admission_fail_open_total",
        "Lanes of requests admitted without a fresh lag sample (Kafka's admin side unreachable)"
    )
    .expect("metric registers once")
});

pub static ADMISSION_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gateway_admission_depth",
        "Events acknowledged and not yet stored, as admission last sampled it"
    )
    .expect("metric registers once")
});

pub static ADMISSION_OLDEST_AGE: LazyLock<Gauge> = LazyLock::new(|| {
    register_gauge!(
        "gateway_admission_oldest_age_seconds",
        "Age of the oldest event not yet stored, as admission last sampled it"
    )
    .expect("metric registers once")
});

pub static ADMISSION_ENABLED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "gateway_admission_enabled",
        "1 when lag-aware admission is on"
    )
    .expect("metric registers once")
});

/// Creates the admission series at start, so dashboards and alerts see zeros, not gaps.
pub fn init_admission(enabled: bool) {
    ADMISSION_ENABLED.set(i64::from(enabled));
    for lane in ["normal", "critical"] {
        ADMISSION_SHED.with_label_values(&[lane]);
    }
    LazyLock::force(&ADMISSION_FAIL_OPEN);
    LazyLock::force(&ADMISSION_DEPTH);
    LazyLock::force(&ADMISSION_OLDEST_AGE);
    for bound in ["requests", "buffered bytes"] {
        OVERLOADED.with_label_values(&[bound]);
    }
}

pub static OVERLOADED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gateway_overloaded_total",
        "Requests refused with 503 because the gateway held its most requests or buffered bytes",
        &["bound"]
    )
    .expect("metric registers once")
});

pub static AUTH_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "gateway_auth_refused_total",
        "Requests refused by authentication (401) or authorization (403), by reason",
        &["reason"]
    )
    .expect("metric registers once")
});
