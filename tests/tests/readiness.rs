//! Ready means ready: each service answers `/readyz` 503 (problem+json naming what is
//! missing) until it can do its job, and 200 once it can.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::time::Duration;

use pipeline_tests::{eventually, PrivateShard, Stack};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

/// `/readyz`, checked against its alias `/health/ready`; `/livez` (alias `/health/live`)
/// answers 200 whether ready or not.
async fn ready(stack: &Stack, base: &str) -> (u16, String) {
    let get = |path: &'static str| async move {
        let response = stack
            .http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    // The state may change between two requests: the alias is compared only between two
    // answers of `/readyz` that agree.
    let (status, body, alias) = eventually(DEADLINE, "a steady readiness", || async {
        let (before, body) = get("/readyz").await;
        let alias = get("/health/ready").await.0;
        let (after, _) = get("/readyz").await;
        (before == after).then_some((before, body, alias))
    })
    .await;
    assert_eq!(alias, status, "/health/ready agrees with /readyz");
    for live in ["/livez", "/health/live"] {
        assert_eq!(get(live).await.0, 200, "{live} while /readyz is {status}");
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_service_is_ready_only_once_it_has_consumed_what_was_there_at_start() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let events: Vec<Value> = (0..300)
        .map(|n| json!({"client_id": format!("c{}", n % 10), "type": "t", "payload": {"n": n}}))
        .collect();
    stack.post_events(&gateway, &events).await;
    // No writer, and room for a third of the backlog: this replica cannot catch up.
    let mut settings = stack.query_settings();
    settings.cache.max_in_flight_events = 100;
    let (query, _stop) = stack.start_query_with(settings).await;
    eventually(DEADLINE, "the tail paused at its bound", || async {
        (stack.metric(&query, "query_tail_paused").await == 1.0).then_some(())
    })
    .await;
    let (status, body) = ready(&stack, &query).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("caught-up"), "{body}");
    assert_eq!(ready(&stack, &query).await.0, 503);

    let _writer = stack.start_writer().await;
    eventually(DEADLINE, "ready once caught up", || async {
        (ready(&stack, &query).await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_is_ready_once_it_has_broker_metadata() {
    let stack = Stack::new().await;
    let mut nowhere = stack.gateway_settings();
    nowhere.kafka.brokers = "127.0.0.1:9".into();
    let lost = stack.start_gateway_with(nowhere).await;
    let gateway = stack.start_gateway().await;
    eventually(DEADLINE, "the gateway ready", || async {
        (ready(&stack, &gateway).await.0 == 200).then_some(())
    })
    .await;
    let (status, body) = ready(&stack, &lost).await;
    assert_eq!(status, 503, "no broker, no readiness: {body}");
    assert!(body.contains("brokers"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_is_not_ready_while_a_shard_is_down() {
    let shard = PrivateShard::start().await;
    let mut stack = Stack::new().await;
    stack.shard_urls[1] = shard.url();
    let (_writer, writer) = stack.start_writer_with(stack.writer_settings()).await;
    eventually(DEADLINE, "the writer ready", || async {
        (ready(&stack, &writer).await.0 == 200).then_some(())
    })
    .await;
    shard.stop();
    let body = eventually(DEADLINE, "not ready with a shard down", || async {
        let (status, body) = ready(&stack, &writer).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("shard(s) 1 unreachable"), "{body}");
    shard.start_again().await;
    eventually(DEADLINE, "ready again", || async {
        (ready(&stack, &writer).await.0 == 200).then_some(())
    })
    .await;
}
