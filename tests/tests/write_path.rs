//! The write path's promises: ingest formats and errors, idempotency, lanes, rate limits,
//! dead letters, persisted notices, and writers joining and dying under traffic.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{collections::HashSet, sync::Arc, time::Duration};

use db_writer::settings::GroupProtocol;
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
    let lane = |topic: &str| stack.kafka.read_events(topic, Duration::from_secs(20));
    let critical = lane(&stack.critical_topic);
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0].key(), Some(&b"pump-7"[..]));
    assert!(lane(&stack.topic).is_empty(), "nothing in the normal lane");
    eventually(DRAIN, "critical event persisted", || async {
        stack.row_counts().await.contains_key(&id).then_some(())
    })
    .await;
}

/// query-service releases a client's events by the partitions its id maps to, and the gateway
/// ticks those partitions: both compute the map themselves (`schemas::partitioning`), so it
/// must be the one the gateway's producer uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_clients_records_land_in_the_partition_kafkas_partitioner_maps_it_to() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let clients: Vec<String> = (0..40)
        .map(|n| format!("device-{n}-{}", Uuid::new_v4()))
        .collect();
    for (n, client) in clients.iter().enumerate() {
        let priority = if n % 2 == 0 { "critical" } else { "normal" };
        let body = json!({"client_id": client, "type": "t", "priority": priority});
        let response = stack
            .post(&gateway, "application/json", body.to_string())
            .await;
        assert_eq!(response.status(), 202);
    }
    let mut seen = 0;
    for topic in [&stack.topic, &stack.critical_topic] {
        let count = stack.kafka.end_offsets(topic).len();
        assert!(count > 1, "{topic} has {count} partitions");
        for record in stack.kafka.read_events(topic, Duration::from_secs(20)) {
            let key = record.key().unwrap();
            assert_eq!(
                usize::try_from(record.partition()).ok(),
                schemas::partitioning::partition_for(key, count),
                "{topic}: {}",
                String::from_utf8_lossy(key)
            );
            seen += 1;
        }
    }
    assert_eq!(seen, clients.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_events_are_stored_while_the_normal_lane_is_stuck() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let mut settings = stack.writer_settings();
    settings.batch.max_rows = 10;
    settings.max_in_flight_batches = 1;
    let (_writer, writer_url) = stack.start_writer_with(settings).await;
    // Producer-chosen ids pass the shards' id guard; a session holding it locks every
    // normal batch of them out, so the normal lane's one write slot and its batch fill up.
    let mut guards = Vec::new();
    for url in &stack.shard_urls {
        let guard = stack.links.connect(url).await;
        guard
            .batch_execute("BEGIN; LOCK TABLE event_ids IN EXCLUSIVE MODE")
            .await
            .unwrap();
        guards.push(guard);
    }
    let normal: Vec<Value> = (0..50)
        .map(|n| {
            let mut e = event(&format!("slow-{}", n % 5), n);
            e["event_id"] = Uuid::now_v7().to_string().into();
            e
        })
        .collect();
    let normal_ids = stack.post_events(&gateway, &normal).await.event_ids;
    eventually(DRAIN, "the normal lane paused", || async {
        let paused = stack
            .metric(
                &writer_url,
                &format!("db_writer_lane_paused{{topic=\"{}\"}}", stack.topic),
            )
            .await;
        (paused == 1.0).then_some(())
    })
    .await;

    // Critical events (ids from the gateway, no guard) are stored all the same.
    let critical: Vec<Value> = (0..5)
        .map(|n| {
            let mut e = event(&format!("urgent-{n}"), n);
            e["priority"] = "critical".into();
            e
        })
        .collect();
    let critical_ids = stack.post_events(&gateway, &critical).await.event_ids;
    eventually(
        DRAIN,
        "critical events stored past the stuck lane",
        || async {
            let rows = stack.row_counts().await;
            critical_ids
                .iter()
                .all(|id| rows.get(id) == Some(&1))
                .then_some(())
        },
    )
    .await;
    let rows = stack.row_counts().await;
    assert!(
        normal_ids.iter().all(|id| !rows.contains_key(id)),
        "the normal lane was stuck throughout"
    );

    // Released, the normal lane resumes where it paused: everything once.
    for guard in &guards {
        guard.batch_execute("COMMIT").await.unwrap();
    }
    stack.drained(DRAIN).await;
    let rows = stack.row_counts().await;
    for id in normal_ids.iter().chain(&critical_ids) {
        assert_eq!(rows.get(id), Some(&1), "{id} stored once");
    }
    assert_eq!(rows.len(), normal_ids.len() + critical_ids.len());
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
        .read_events(&stack.topic, Duration::from_secs(20));
    assert_eq!(messages.len(), 2);
    for message in &messages {
        assert_eq!(header(message, "traceparent").as_deref(), Some(traceparent));
        assert_eq!(message.key(), Some(&b"traced"[..]), "keyed by client id");
    }
}

/// Readers built before `event.v3` cannot read it, so a gateway at `kafka.schema_version = 2`
/// writes what they read: `event.v2`, with the gateway's ids marked in a header. The newest
/// writes v3, the mark in the value, and no headers at all. Side by side (a rolling upgrade),
/// both are stored and served once each, and a producer's id that comes back through the
/// other format is still one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_at_schema_versions_2_and_3_side_by_side_are_read_once_each() {
    let stack = Stack::new().await;
    let newest = stack.start_gateway().await;
    let mut settings = stack.gateway_settings();
    settings.kafka.schema_version = 2;
    let older = stack.start_gateway_with(settings).await;
    let _writer = stack.start_writer().await;
    let own = Uuid::now_v7();
    let own_event = json!({"event_id": own, "client_id": "mixed", "type": "v2-own"});
    let v2 = stack
        .post_events(
            &older,
            &[
                json!({"client_id": "mixed", "type": "v2"}),
                own_event.clone(),
            ],
        )
        .await;
    let v3 = stack
        .post_events(&newest, &[json!({"client_id": "mixed", "type": "v3"})])
        .await;

    let codec = schemas::EventCodec::new();
    let fingerprint = |version| codec.version(version).unwrap().fingerprint();
    let records = stack
        .kafka
        .read_events(&stack.topic, Duration::from_secs(20));
    assert_eq!(records.len(), 3);
    for record in &records {
        let value = record.payload().unwrap();
        let event = codec.decode(value).unwrap();
        let mark = header(record, schemas::headers::ID_ORIGIN);
        match event.event_type.as_str() {
            "v2" => {
                assert_eq!(value[2..10], fingerprint(2));
                assert_eq!(mark.as_deref(), Some("gateway"));
            }
            "v2-own" => {
                assert_eq!(value[2..10], fingerprint(2));
                assert_eq!(mark, None, "a producer's id is not marked");
            }
            "v3" => {
                assert_eq!(value[2..10], fingerprint(3));
                assert_eq!(event.id_origin, Some(schemas::IdOrigin::Gateway));
                assert!(record.headers().is_none(), "no headers to parse");
            }
            other => panic!("unexpected event {other}"),
        }
    }
    stack.drained(DRAIN).await;

    // The producer retries its own id through the newest gateway, long after: a replica that
    // never saw the first copy checks it against the stored one and shows it once.
    let (query, _stop) = stack.start_query_with(stack.query_settings()).await;
    stack.ready(&query, DRAIN).await;
    stack
        .post_events(&newest, std::slice::from_ref(&own_event))
        .await;
    let last = stack
        .post_events(&older, &[json!({"client_id": "mixed", "type": "last"})])
        .await;
    let history = eventually(DRAIN, "the last event visible", || async {
        let h = stack.history(&query, "mixed", 10).await;
        h.iter()
            .any(|e| pipeline_tests::event_id(e) == last.event_ids[0])
            .then_some(h)
    })
    .await;
    let mut read = pipeline_tests::ids(&history);
    read.sort();
    let mut posted: Vec<Uuid> = [v2.event_ids, v3.event_ids, last.event_ids].concat();
    posted.sort();
    assert_eq!(read, posted, "each event once, the retried one too");
    stack.drained(DRAIN).await;
    let counts = stack.row_counts().await;
    assert_eq!(counts.len(), posted.len());
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
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

/// An event as a producer built against `schemas` would write it straight to Kafka.
fn raw_event(client: &str, payload: &str) -> (Uuid, Vec<u8>) {
    let id = Uuid::now_v7();
    let event = schemas::Event {
        event_id: id,
        client_id: client.into(),
        event_type: "t".into(),
        ts_micros: None,
        ingested_at_micros: 1_763_000_000_000_000,
        priority: schemas::Priority::Normal,
        payload: payload.into(),
        sdk: None,
        id_origin: Some(schemas::IdOrigin::Producer),
    };
    (id, schemas::EventCodec::new().encode(&event).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_records_go_to_the_dead_letter_topic_whole_and_the_rest_is_stored() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let posted = stack
        .post_events(
            &gateway,
            &(0..30).map(|n| event("c1", n)).collect::<Vec<_>>(),
        )
        .await;
    // Written around the gateway (which refuses such input): an event PostgreSQL's jsonb
    // would refuse (the writer checks the gateway's rules before the database sees it), and a
    // message no event codec can read. Each carries a trace header.
    let (refused_id, refused_value) = raw_event("c1", r#"{"text":"nul \u0000 byte"}"#);
    let garbage = b"{\"not\":\"avro\"}".to_vec();
    let mut sources = Vec::new();
    for (key, value) in [("c1", &refused_value), ("c3", &garbage)] {
        let (partition, offset) = stack
            .kafka
            .produce_raw_with(&stack.topic, key, value, &[("traceparent", traceparent)])
            .await;
        sources.push((partition, offset, value.clone()));
    }
    let more = stack
        .post_events(
            &gateway,
            &(30..60).map(|n| event("c2", n)).collect::<Vec<_>>(),
        )
        .await;

    let _writer = stack.start_writer().await;
    stack.drained(DRAIN).await;

    let counts = stack.row_counts().await;
    for id in posted.event_ids.iter().chain(&more.event_ids) {
        assert_eq!(counts.get(id), Some(&1), "{id} stored once");
    }
    assert!(!counts.contains_key(&refused_id));
    assert_eq!(counts.len(), 60);

    let dead = stack
        .kafka
        .read_all(&stack.dead_letter_topic, Duration::from_secs(20));
    assert_eq!(dead.len(), 2, "each refused record dead-lettered once");
    for message in &dead {
        let partition: i32 = header(message, "dlq.source.partition")
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = header(message, "dlq.source.offset")
            .unwrap()
            .parse()
            .unwrap();
        let (_, _, original) = sources
            .iter()
            .find(|(p, o, _)| *p == partition && *o == offset)
            .expect("names the record it came from");
        assert_eq!(header(message, "dlq.source.topic").unwrap(), stack.topic);
        assert_eq!(
            message.payload(),
            Some(original.as_slice()),
            "original bytes"
        );
        assert_eq!(header(message, "traceparent").as_deref(), Some(traceparent));
        assert!(!header(message, "dlq.error.message").unwrap().is_empty());
        let class = header(message, "dlq.error.class").unwrap();
        if original == &garbage {
            assert_eq!(class, "undecodable");
        } else {
            assert_eq!(class, "invalid-record");
            let reason = header(message, "dlq.error.message").unwrap();
            assert!(
                reason.contains(r"payload: \u0000 is not allowed"),
                "{reason}"
            );
        }
    }

    // The persisted notices name exactly the rows stored: not the refused one.
    let codec = PersistedCodec::default();
    let noticed = eventually(Duration::from_secs(30), "notices", || async {
        let mut noticed = HashSet::new();
        for message in stack
            .kafka
            .read_notices(&stack.persisted_topic, Duration::from_secs(20))
        {
            let batch = codec.decode(message.payload().unwrap()).unwrap();
            for shard in batch.shards {
                for id in shard.event_ids {
                    assert!(noticed.insert(id.parse::<Uuid>().unwrap()), "noticed twice");
                }
            }
        }
        (noticed.len() >= 60).then_some(noticed)
    })
    .await;
    assert!(!noticed.contains(&refused_id));
    assert_eq!(noticed.len(), 60);
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
            let notices = stack
                .kafka
                .read_notices(&stack.persisted_topic, Duration::from_secs(20));
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
    writers_join_and_die_under_traffic(GroupProtocol::Classic).await;
}

/// The same on KIP-848's protocol: the broker assigns, and a killed member's partitions move
/// after the brokers' `group.consumer.session.timeout.ms` (10 s in deploy/local).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_on_the_consumer_group_protocol_join_and_die_losing_and_duplicating_nothing() {
    writers_join_and_die_under_traffic(GroupProtocol::Consumer).await;
}

async fn writers_join_and_die_under_traffic(protocol: GroupProtocol) {
    let stack = Arc::new(Stack::new().await);
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let mut settings = stack.writer_settings();
    settings.kafka.group_protocol = protocol;
    let first = stack.spawn_writer_process_with(settings.clone());
    let second = stack.spawn_writer_process_with(settings.clone());

    let feeder = Feeder::start(stack.clone(), gateway.clone(), |round| {
        (0..100)
            .map(|n| event(&format!("w{}", n % 50), round * 1000 + n))
            .collect()
    });
    let ledger = feeder.ledger();
    eventually(DRAIN, "both writers storing", || async {
        (stack.shard_rows().await.len() > 500).then_some(())
    })
    .await;
    first.kill().await;
    let third = stack.spawn_writer_process_with(settings);
    // The group rebalances twice (one member gone, one joined) while events keep coming.
    feeder.more(3000, DRAIN).await;
    // Mid-rebalance, much of it in flight: every event answered once.
    ledger
        .assert_readable(&stack, &query, |_| true, DRAIN)
        .await;
    feeder.stop().await;

    stack.drained(DRAIN).await;
    ledger.assert_stored(&stack).await;
    ledger
        .assert_readable(&stack, &query, |_| true, DRAIN)
        .await;
    // What an operator sees: the writers alive and what each owns. On the consumer protocol
    // the group does not describe its members; the view has them from the writers' reports.
    writers_own_every_partition_once(&stack, &query, 2).await;
    assert!(second.terminate().await.success());
    writers_own_every_partition_once(&stack, &query, 1).await;
    if protocol == GroupProtocol::Consumer {
        // A replica that reads no notices cannot know a consumer-protocol group's writers:
        // it says so, rather than that nothing is being stored.
        let mut blind = stack.query_settings();
        blind.kafka.persisted_topic = String::new();
        let (blind, _stop) = stack.start_query_with(blind).await;
        eventually(
            DRAIN,
            "a replica without notices not knowing the writers",
            || async {
                let view = stack.pipeline_view(&blind).await?;
                (view["writers"].as_array()?.is_empty() && view["writers_known"] == false)
                    .then_some(())
            },
        )
        .await;
    }
    assert!(third.terminate().await.success());
    // None left: known to be none, on either protocol.
    eventually(DRAIN, "no writer in the view, known to be none", || async {
        let view = stack.pipeline_view(&query).await?;
        (view["writers"].as_array()?.is_empty() && view["writers_known"] == true).then_some(())
    })
    .await;
}

/// Waits until the pipeline view lists `writers` writers and, together, every partition of
/// both lanes, each once.
async fn writers_own_every_partition_once(stack: &Stack, query: &str, writers: usize) {
    let what = format!("{writers} writer(s) in the pipeline view owning every partition once");
    eventually(DRAIN, &what, || async {
        let view = stack.pipeline_view(query).await?;
        let listed = view["writers"].as_array()?;
        let mut owned: Vec<String> = listed
            .iter()
            .filter_map(|w| w["partitions"].as_array())
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        owned.sort();
        let mut every: Vec<String> = view["partitions"]
            .as_array()?
            .iter()
            .map(|p| format!("{}/{}", p["topic"].as_str().unwrap_or("?"), p["partition"]))
            .collect();
        every.sort();
        (listed.len() == writers
            && view["writers_known"] == true
            && !every.is_empty()
            && owned == every)
            .then_some(())
    })
    .await;
}
