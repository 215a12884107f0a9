//! The write path's promises: ingest formats and errors, idempotency, lanes, rate limits,
//! dead letters, persisted notices, and writers joining and dying under traffic.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{collections::HashSet, sync::Arc, time::Duration};

use pipeline_tests::{eventually, header, Feeder, Stack};
use rdkafka::Message;
use schemas::PersistedCodec;
use serde_json::{json, Value};
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(60);

fn event(client: &str, n: usize) -> Value {
    json!({"client_id": client, "type": "reading", "payload": {"n": n}})
}

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_objects_arrays_and_ndjson_and_rejects_bad_requests_whole() {
    let stack = Stack::new().await;
    let mut settings = stack.gateway_settings();
    settings.limits.max_body_bytes = 2048;
    settings.limits.max_events = 5;
    let gateway = stack.start_gateway_with(settings).await;

    let ndjson = (0..5)
        .map(|n| event("nd", n).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let response = stack.post(&gateway, "application/x-ndjson", ndjson).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], 5);
    assert_eq!(body["events"].as_array().unwrap().len(), 5);
    assert!(body["token"].as_str().unwrap().starts_with("v1~"));
    assert_eq!(stack.published_count(), 5);

    let too_many = json!((0..6).map(|n| event("x", n)).collect::<Vec<_>>()).to_string();
    let (status, p) = problem(stack.post(&gateway, "application/json", too_many).await).await;
    assert_eq!(
        (status, p["type"].as_str()),
        (413, Some("/problems/too-many-events"))
    );

    let big = json!({"client_id": "x", "type": "t", "payload": "y".repeat(4000)}).to_string();
    let (status, p) = problem(stack.post(&gateway, "application/json", big).await).await;
    assert_eq!(
        (status, p["type"].as_str()),
        (413, Some("/problems/body-too-large"))
    );

    let (status, p) = problem(
        stack
            .post(
                &gateway,
                "application/x-ndjson",
                format!("{}\n{{nope", event("x", 1)),
            )
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(p["detail"].as_str().unwrap().contains("line 2"), "{p}");

    let (status, _) = problem(stack.post(&gateway, "application/xml", "<e/>").await).await;
    assert_eq!(status, 415);

    let mixed = json!([
        event("ok", 0),
        {"client_id": "bad id", "type": "t"},
        event("ok", 1),
        {"client_id": "x", "type": "t", "event_id": "not-a-uuid", "priority": "urgent"}
    ])
    .to_string();
    let (status, p) = problem(stack.post(&gateway, "application/json", mixed).await).await;
    assert_eq!(status, 422);
    let errors: Vec<(u64, &str)> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        vec![(1, "client_id"), (3, "event_id"), (3, "priority")]
    );
    assert!(p["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("not allowed"));

    assert_eq!(
        stack.published_count(),
        5,
        "rejected requests published nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_event_id_is_stored_once_across_and_within_requests() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;

    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let with_id = |id: Uuid, n: usize| json!({"event_id": id, "client_id": "retrying-device", "type": "t", "payload": {"n": n}});
    stack.post_events(&gateway, &[with_id(a, 1)]).await;
    // A retry of the same request, and a batch that repeats an id inside itself.
    stack.post_events(&gateway, &[with_id(a, 1)]).await;
    let posted = stack
        .post_events(&gateway, &[with_id(b, 2), with_id(b, 2), with_id(a, 1)])
        .await;
    assert_eq!(
        posted.event_ids,
        vec![b, b, a],
        "the producer's ids are kept"
    );
    assert_eq!(stack.published_count(), 5);

    stack.drained(DRAIN).await;
    let counts = stack.row_counts().await;
    assert_eq!(counts.get(&a), Some(&1));
    assert_eq!(counts.get(&b), Some(&1));
    assert_eq!(counts.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_events_take_their_own_lane_to_the_same_table() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;

    let response = stack
        .post(
            &gateway,
            "application/json",
            json!({"client_id": "pump-7", "type": "alarm", "priority": "critical"}).to_string(),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(
        token.starts_with(&format!("v1~{}~", stack.critical_topic)),
        "{token}"
    );
    let id: Uuid = body["event_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        stack
            .kafka
            .end_offsets(&stack.critical_topic)
            .values()
            .sum::<i64>(),
        1
    );
    assert_eq!(
        stack.kafka.end_offsets(&stack.topic).values().sum::<i64>(),
        0
    );
    eventually(DRAIN, "critical event persisted", || async {
        stack.row_counts().await.contains_key(&id).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_w3c_traceparent_travels_with_each_event_in_kafka_headers() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = stack
        .http
        .post(format!("{gateway}/events"))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(json!([event("traced", 0), event("traced", 1)]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let messages = stack
        .kafka
        .read_all(&stack.topic, 2, Duration::from_secs(20));
    assert_eq!(messages.len(), 2);
    for message in &messages {
        assert_eq!(header(message, "traceparent").as_deref(), Some(traceparent));
        assert_eq!(message.key(), Some(&b"traced"[..]), "keyed by client id");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_and_nothing_of_its_request_is_published() {
    let stack = Stack::new().await;
    let mut settings = stack.gateway_settings();
    settings.rate_limit.enabled = true;
    // Slow enough that no token comes back while the test runs, however loaded the machine.
    settings.rate_limit.events_per_second = 0.01;
    settings.rate_limit.burst = 5.0;
    let gateway = stack.start_gateway_with(settings).await;

    let five: Vec<Value> = (0..5).map(|n| event("chatty", n)).collect();
    stack.post_events(&gateway, &five).await;
    let response = stack
        .post(
            &gateway,
            "application/json",
            json!([event("quiet", 0), event("chatty", 5)]).to_string(),
        )
        .await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(stack.published_count(), 5);
    // Other clients are not affected.
    stack.post_events(&gateway, &[event("quiet", 1)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_go_to_the_dead_letter_topic_and_the_rest_is_stored() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;

    // Valid JSON that PostgreSQL's jsonb refuses, among good events of the same batches.
    let mut events: Vec<Value> = (0..60).map(|n| event(&format!("c{}", n % 7), n)).collect();
    events[13] = json!({"client_id": "c1", "type": "t", "payload": {"text": "nul \u{0000} byte"}});
    events[41] = json!({"client_id": "c2", "type": "t", "payload": "\u{0000}"});
    let posted = stack.post_events(&gateway, &events).await;
    // A message no event codec can read, from a foreign producer.
    stack
        .kafka
        .produce_raw(&stack.topic, "c3", b"{\"not\":\"avro\"}")
        .await;

    let _writer = stack.start_writer().await;
    stack.drained(DRAIN).await;

    let counts = stack.row_counts().await;
    let poisoned = [posted.event_ids[13], posted.event_ids[41]];
    for (n, id) in posted.event_ids.iter().enumerate() {
        let expected = usize::from(!poisoned.contains(id));
        assert_eq!(counts.get(id).copied().unwrap_or(0), expected, "event {n}");
    }
    assert_eq!(counts.len(), 58);

    let dead = stack
        .kafka
        .read_all(&stack.dead_letter_topic, 3, Duration::from_secs(20));
    assert_eq!(dead.len(), 3);
    let mut classes: Vec<String> = dead
        .iter()
        .map(|m| header(m, "dlq.error.class").unwrap())
        .collect();
    classes.sort();
    assert_eq!(
        classes,
        vec![
            "rejected-by-database",
            "rejected-by-database",
            "undecodable"
        ]
    );
    for message in &dead {
        assert_eq!(header(message, "dlq.source.topic").unwrap(), stack.topic);
        let partition: i32 = header(message, "dlq.source.partition")
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = header(message, "dlq.source.offset")
            .unwrap()
            .parse()
            .unwrap();
        assert!(partition >= 0 && offset >= 0);
        assert!(!header(message, "dlq.error.message").unwrap().is_empty());
        assert!(
            message.payload().is_some_and(|p| !p.is_empty()),
            "the record travels whole"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn persisted_notices_name_every_stored_event() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;
    let mut posted = HashSet::new();
    for round in 0..5 {
        let events: Vec<Value> = (0..40)
            .map(|n| event(&format!("d{}", n % 9), round * 100 + n))
            .collect();
        posted.extend(stack.post_events(&gateway, &events).await.event_ids);
    }
    stack.drained(DRAIN).await;

    let codec = PersistedCodec::default();
    let noticed = eventually(
        Duration::from_secs(30),
        "notices for every event",
        || async {
            let mut ids = HashSet::new();
            let notices =
                stack
                    .kafka
                    .read_all(&stack.persisted_topic, usize::MAX, Duration::from_secs(2));
            for message in &notices {
                let batch = codec.decode(message.payload().unwrap()).unwrap();
                assert!(batch.persisted_at >= batch.last_ingested_at);
                assert!(!batch.ranges.is_empty());
                for shard in batch.shards {
                    assert_eq!(shard.rows as usize, shard.event_ids.len());
                    ids.extend(shard.event_ids.iter().map(|id| id.parse::<Uuid>().unwrap()));
                }
            }
            (ids.len() >= posted.len()).then_some(ids)
        },
    )
    .await;
    assert_eq!(noticed, posted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_joining_and_dying_under_traffic_lose_and_duplicate_nothing() {
    let stack = Arc::new(Stack::new().await);
    let gateway = stack.start_gateway().await;
    let first = stack.spawn_writer_process();
    let second = stack.spawn_writer_process();

    let feeder = Feeder::start(stack.clone(), gateway.clone(), |round| {
        (0..100)
            .map(|n| event(&format!("w{}", n % 50), round * 1000 + n))
            .collect()
    });
    eventually(DRAIN, "both writers storing", || async {
        (stack.shard_rows().await.len() > 500).then_some(())
    })
    .await;
    first.kill().await;
    let third = stack.spawn_writer_process();
    // The group rebalances twice (one member gone, one joined) while events keep coming.
    stack
        .published_beyond(stack.published_count(), 3000, DRAIN)
        .await;
    let acknowledged = feeder.stop().await;

    stack.drained(DRAIN).await;
    let counts = stack.row_counts().await;
    let duplicated = counts.values().filter(|n| **n > 1).count();
    assert_eq!(duplicated, 0, "rows stored twice");
    let missing = acknowledged
        .iter()
        .filter(|id| !counts.contains_key(id))
        .count();
    assert_eq!(missing, 0, "acknowledged events lost");
    assert_eq!(counts.len(), acknowledged.len());
    assert!(second.terminate().await.success());
    assert!(third.terminate().await.success());
}
