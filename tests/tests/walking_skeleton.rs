//! The foundation's promises, end to end on real Kafka and both PostgreSQL shards.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use event_store::ShardRouter;
use pipeline_tests::{by_client, eventually, ids, Feeder, Stack};
use rdkafka::Message;
use serde_json::{json, Value};

const DRAIN: Duration = Duration::from_secs(60);

fn events_for(clients: usize, per_client: usize, tag: &str) -> Vec<Value> {
    (0..per_client)
        .flat_map(|n| {
            (0..clients).map(move |c| {
                json!({"client_id": format!("client-{c}"), "type": "reading", "payload": {"n": n, "tag": tag}})
            })
        })
        .collect()
}

/// Event ids per client, in the order the gateway acknowledged them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_is_returned_exactly_once_in_flight_and_after_persisting() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;

    // No writer yet: everything the gateway acknowledged is in flight.
    let events = events_for(20, 15, "first");
    let posted = stack.post_events(&gateway, &events).await;
    let expected = by_client(&events, &posted.event_ids);

    for (client, want) in &expected {
        let history = eventually(Duration::from_secs(20), "in-flight events", || async {
            let h = stack.history(&query, client, 7).await;
            (h.len() >= want.len()).then_some(h)
        })
        .await;
        assert_eq!(
            &ids(&history),
            want,
            "{client}: in-flight history in ingest order"
        );
        assert!(history.iter().all(|e| e["status"] == "in_flight"));
        assert!(history.iter().all(|e| e["client_id"] == client.as_str()));
    }

    // The writer persists them; the answers stay the same, now from PostgreSQL.
    let _writer = stack.start_writer().await;
    stack.drained(DRAIN).await;
    for (client, want) in &expected {
        let history = eventually(Duration::from_secs(20), "in-flight evicted", || async {
            let h = stack.history(&query, client, 7).await;
            h.iter().all(|e| e["status"] == "persisted").then_some(h)
        })
        .await;
        assert_eq!(&ids(&history), want, "{client}: persisted history");
    }

    // A mix: new events in flight behind persisted ones, each once, still in order.
    let writer_paused_events = events_for(20, 3, "second");
    let more = stack.post_events(&gateway, &writer_paused_events).await;
    let mut all = expected.clone();
    for (client, new) in by_client(&writer_paused_events, &more.event_ids) {
        all.get_mut(&client).unwrap().extend(new);
    }
    for (client, want) in &all {
        let history = eventually(Duration::from_secs(20), "all events", || async {
            let h = stack.history(&query, client, 4).await;
            (h.len() >= want.len()).then_some(h)
        })
        .await;
        assert_eq!(&ids(&history), want, "{client}: merged history");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drained_events_sit_once_in_their_clients_shard_and_offsets_are_committed() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;

    let mut posted = HashMap::new();
    for round in 0..5 {
        let events = events_for(50, 4, &format!("round-{round}"));
        let acked = stack.post_events(&gateway, &events).await;
        for (event, id) in events.iter().zip(acked.event_ids) {
            posted.insert(id, event["client_id"].as_str().unwrap().to_owned());
        }
    }
    // One event per request too, as devices without batching send them.
    for n in 0..20 {
        let event = json!({"client_id": format!("solo-{n}"), "type": "ping", "payload": n});
        let response = stack
            .post(
                &gateway,
                "application/json",
                serde_json::to_vec(&event).unwrap(),
            )
            .await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["accepted"], 1);
        assert!(body["partition"].as_i64().is_some() && body["offset"].as_i64().is_some());
        posted.insert(
            body["event_id"].as_str().unwrap().parse().unwrap(),
            format!("solo-{n}"),
        );
    }

    stack.drained(DRAIN).await;
    let rows = stack.shard_rows().await;
    let router = ShardRouter::new(stack.shard_urls.len());
    let mut seen = HashSet::new();
    for (shard, id, client) in &rows {
        assert!(seen.insert(*id), "event {id} stored twice");
        assert_eq!(
            posted.get(id),
            Some(client),
            "row {id} was never acknowledged"
        );
        assert_eq!(
            *shard,
            router.shard_for(client),
            "{client} stored on the wrong shard"
        );
    }
    assert_eq!(
        seen.len(),
        posted.len(),
        "acknowledged events missing from PostgreSQL"
    );
    assert!(
        rows.iter().any(|r| r.0 == 0) && rows.iter().any(|r| r.0 == 1),
        "both shards receive clients"
    );
    // The commits cover every event (gateways keep adding ticks behind them).
    for topic in stack.topics() {
        let committed = stack.kafka.committed_offsets(&stack.writer_group, topic);
        for event in stack.kafka.read_events(topic, Duration::from_secs(20)) {
            assert!(
                committed[&event.partition()] > event.offset(),
                "{topic}/{} committed at {}, not past event at {}",
                event.partition(),
                committed[&event.partition()],
                event.offset()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_writer_killed_mid_stream_loses_and_duplicates_nothing() {
    let stack = std::sync::Arc::new(Stack::new().await);
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let writer = stack.spawn_writer_process();

    // Traffic keeps flowing while the writer is killed and while it is down.
    let feeder = Feeder::start(stack.clone(), gateway.clone(), |round| {
        events_for(40, 5, &format!("r{round}"))
    });
    let ledger = feeder.ledger();
    // Kill once the writer is demonstrably mid-stream: some rows in, more arriving.
    eventually(DRAIN, "first rows persisted", || async {
        (!stack.shard_rows().await.is_empty()).then_some(())
    })
    .await;
    writer.kill().await;
    feeder.more(2000, DRAIN).await;
    let acknowledged = feeder.stop().await;
    assert!(
        stack.shard_rows().await.len() < acknowledged.len(),
        "the killed writer left events unpersisted"
    );
    // With the writer gone, most of it is in flight: every event answered once all the same.
    ledger
        .assert_readable(&stack, &query, |_| true, DRAIN)
        .await;

    let restarted = stack.spawn_writer_process();
    stack.drained(DRAIN).await;
    ledger.assert_stored(&stack).await;
    ledger
        .assert_readable(&stack, &query, |_| true, DRAIN)
        .await;
    assert!(
        restarted.terminate().await.success(),
        "clean exit on SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_a_readable_4xx_and_publish_nothing() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;

    let cases: [(&str, &str, u16, &str); 4] = [
        (
            "application/json",
            r#"{"client_id": "a", "type": "#,
            400,
            "/problems/malformed-json",
        ),
        (
            "application/json",
            r#"{"type": "click", "payload": {}}"#,
            422,
            "/problems/invalid-events",
        ),
        (
            "application/json",
            r#"[{"client_id":"a","type":"t"},{"client_id":"b"}]"#,
            422,
            "/problems/invalid-events",
        ),
        (
            "text/plain",
            r#"{"client_id": "a", "type": "t"}"#,
            415,
            "/problems/unsupported-media-type",
        ),
    ];
    for (content_type, body, status, problem_type) in cases {
        let response = stack.post(&gateway, content_type, body).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{body}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], problem_type, "{problem}");
        assert_eq!(problem["status"], status);
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    let response = stack
        .post(&gateway, "application/json", r#"{"type": "click"}"#)
        .await;
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["errors"],
        json!([{"index": 0, "field": "client_id", "reason": "is required"}])
    );

    // The valid first item of the rejected batch was not published either.
    assert_eq!(stack.published_count(), 0);
    // And the gateway still works.
    stack.post_events(&gateway, &events_for(1, 1, "ok")).await;
    assert_eq!(stack.published_count(), 1);
}
