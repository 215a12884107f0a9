//! Harness for tests against the real servers started by `deploy/local/up`.
//!
//! Every test gets its own topics, consumer groups and a fresh database on every shard, so
//! tests run in parallel and never see each other's data. Endpoints come from
//! the same variables as `deploy/local`: `KAFKA_PORT` (default 9092; or a full
//! `PIPELINE_KAFKA` bootstrap list) and `PIPELINE_PG_PORTS` (default `5433 5434`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed set-up should fail the test loudly

pub mod bench;
mod browser;
mod cluster;
mod feeder;
mod kafka;
pub mod keep_alive;
mod ledger;
mod poll;
mod private;
mod secure;
mod services;
mod sse;

pub use browser::{Browser, BrowserError};
pub use cluster::Cluster;
pub use feeder::Feeder;
pub use kafka::{header, KafkaAdmin};
pub use ledger::Ledger;
pub use poll::{eventually, eventually_seen};
pub use private::{PrivateKafka, PrivateShard};
pub use secure::SecureStack;
pub use services::{
    post_via, sibling_binary, GatewayProcess, Links, Logs, Posted, QueryProcess, Stack,
    WriterProcess, MAX_CLOCK_AHEAD_MS,
};
pub use sse::{Block, SseReader, Streamed};

use std::collections::HashMap;

use serde_json::Value;
use uuid::Uuid;

/// The `event_id`s of events as the query API returns them, in order.
pub fn ids(history: &[Value]) -> Vec<Uuid> {
    history.iter().map(event_id).collect()
}

/// The `event_id` of an event as the query API returns it (or as a test posted it).
pub fn event_id(event: &Value) -> Uuid {
    event["event_id"]
        .as_str()
        .expect("event_id")
        .parse()
        .expect("uuid")
}

/// `(ordered_at micros, event_id)`: an answered event's position in its client's history, the
/// order every read promises (README, "Reads exactly once, in a stable order"). Posted order
/// is that order only within one lane: another lane's partition may raise `ordered_at`.
pub fn order_key(event: &Value) -> (i64, Uuid) {
    let at = time::OffsetDateTime::parse(
        event["ordered_at"].as_str().expect("ordered_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("ordered_at is RFC 3339");
    ((at.unix_timestamp_nanos() / 1_000) as i64, event_id(event))
}

/// Acknowledged ids per client, in the order they were posted.
pub fn by_client(events: &[Value], ids: &[Uuid]) -> HashMap<String, Vec<Uuid>> {
    let mut map: HashMap<String, Vec<Uuid>> = HashMap::new();
    for (event, id) in events.iter().zip(ids) {
        let client = event["client_id"].as_str().expect("client_id").to_owned();
        map.entry(client).or_default().push(*id);
    }
    map
}

/// Asserts that an event as the query API answers it carries what was posted: type, payload
/// (as JSON), device time, priority and sdk, with the documented defaults.
pub fn assert_same_content(posted: &Value, answered: &Value) {
    let id = &answered["event_id"];
    assert_eq!(answered["type"], posted["type"], "{id}: type");
    let payload = posted
        .get("payload")
        .cloned()
        .unwrap_or(serde_json::json!({}));
    assert_eq!(answered["payload"], payload, "{id}: payload");
    let instant = |v: &Value| {
        v.as_str().map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339")
        })
    };
    assert_eq!(instant(&answered["ts"]), instant(&posted["ts"]), "{id}: ts");
    let priority = posted.get("priority").cloned().unwrap_or("normal".into());
    assert_eq!(answered["priority"], priority, "{id}: priority");
    let sdk = posted.get("sdk").cloned().unwrap_or(Value::Null);
    assert_eq!(answered["sdk"], sdk, "{id}: sdk");
    assert_eq!(
        answered["client_id"], posted["client_id"],
        "{id}: client_id"
    );
}
