//! Every compression `kafka.compression` documents works end to end: librdkafka is built with
//! each codec (zstd needs its own feature), and what the gateway compresses the writer stores.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::time::Duration;

use pipeline_tests::Stack;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_compresses_with_zstd_and_the_events_are_stored() {
    let stack = Stack::new().await;
    let mut settings = stack.gateway_settings();
    settings.kafka.compression = "zstd".into();
    let gateway = stack.start_gateway_with(settings).await;
    let _writer = stack.start_writer().await;
    let events: Vec<_> = (0..50)
        .map(|n| json!({"client_id": format!("z-{}", n % 5), "type": "t", "payload": {"n": n, "text": "zstd ".repeat(20)}}))
        .collect();
    let posted = stack.post_events(&gateway, &events).await;
    assert_eq!(posted.event_ids.len(), 50);
    stack.drained(Duration::from_secs(60)).await;
    let counts = stack.row_counts().await;
    for id in &posted.event_ids {
        assert_eq!(counts.get(id), Some(&1), "{id} stored once");
    }
}
