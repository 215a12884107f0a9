//! Garbage written straight into the event topics, around the gateway, between good events:
//! every garbage record ends in the dead-letter topic whole, with headers that say where it
//! came from and why; every good event is stored once; the writer commits to the end of both
//! lanes; query-service keeps answering, before and after the writer ran, with exactly the
//! good events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pipeline_tests::{eventually, header, Stack};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rdkafka::{
    config::ClientConfig,
    message::{Header, Message, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use schemas::{headers, Event, EventCodec, Priority, Tick, TickCodec};
use serde_json::{json, Value};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(90);
const CLIENTS: [&str; 3] = ["good-a", "good-b", "good-c"];
/// The brokers' default `max.message.bytes`, which the test topics keep.
const TOPIC_MAX_BYTES: usize = 1_048_588;

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// An event as the gateway builds it, ingested now.
fn event(client: &str) -> Event {
    Event {
        event_id: Uuid::now_v7(),
        client_id: client.into(),
        event_type: "direct".into(),
        ts_micros: Some(1_763_000_000_000_000),
        ingested_at_micros: now_micros(),
        priority: Priority::Normal,
        payload: r#"{"n":1}"#.into(),
        sdk: Some("direct/1".into()),
        id_origin: None,
    }
}

/// One record written around the gateway.
struct Record {
    what: &'static str,
    topic: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
    /// The record's create time; the producer's clock when `None`.
    timestamp_ms: Option<i64>,
}

/// What must become of a garbage record: its `dlq.error.class`, words of its message, and
/// whether the dead letter keeps its value (one too large for the dead-letter topic with the
/// `dlq.*` headers added is sent without it, saying so).
struct Expected {
    class: &'static str,
    reason: &'static str,
    value_kept: bool,
}

const fn dead(class: &'static str, reason: &'static str) -> Expected {
    Expected {
        class,
        reason,
        value_kept: true,
    }
}

struct Writer {
    producer: FutureProducer,
}

impl Writer {
    fn new(brokers: &str) -> Writer {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Keyed records land in their client's partitions, as the gateway's do.
            .set("partitioner", "murmur2_random")
            // Up to what the brokers take, not librdkafka's lower default.
            .set("message.max.bytes", "2000000")
            .create()
            .expect("producer");
        Writer { producer }
    }

    async fn produce(&self, record: &Record) -> (i32, i64) {
        let mut owned = OwnedHeaders::new();
        for (key, value) in &record.headers {
            owned = owned.insert(Header {
                key,
                value: Some(value.as_slice()),
            });
        }
        let mut kafka = FutureRecord::<[u8], [u8]>::to(&record.topic).headers(owned);
        if let Some(key) = &record.key {
            kafka = kafka.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            kafka = kafka.payload(value.as_slice());
        }
        if let Some(at) = record.timestamp_ms {
            kafka = kafka.timestamp(at);
        }
        let delivery = self
            .producer
            .send(kafka, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap_or_else(|e| panic!("{}: not acknowledged: {e}", record.what));
        (delivery.partition, delivery.offset)
    }
}

/// A good event written directly, exactly as the gateway writes one: keyed by its client,
/// create time = ingest time.
fn good_record(topic: &str, event: &Event, bytes: Vec<u8>) -> Record {
    Record {
        what: "a good event written directly",
        topic: topic.into(),
        key: Some(event.client_id.clone().into_bytes()),
        value: Some(bytes),
        headers: Vec::new(),
        timestamp_ms: Some(event.ingested_at_micros / 1_000),
    }
}

/// What a garbage record is, its key, value and headers, and what must become of it.
type Case = (
    &'static str,
    Option<&'static str>,
    Option<Vec<u8>>,
    Vec<(&'static str, Vec<u8>)>,
    Expected,
);

/// Every kind of garbage, each for a good client's key where it has one (so it shares the
/// good events' partitions), alternating between the lanes.
fn garbage(stack: &Stack) -> Vec<(Record, Expected)> {
    let codec = EventCodec::new();
    let lanes = [stack.topic.clone(), stack.critical_topic.clone()];
    let mut rng = StdRng::seed_from_u64(11);
    let random: Vec<u8> = (0..300).map(|_| rng.random()).collect();
    let valid = codec.encode(&event("good-a")).unwrap();
    let mut wrong_magic = valid.clone();
    wrong_magic[0] = 0xC4;
    let mut unknown_fingerprint = valid.clone();
    unknown_fingerprint[2..10].copy_from_slice(&[0xEE; 8]);
    let truncated = valid[..valid.len() - 7].to_vec();
    let mut trailing = valid.clone();
    trailing.extend_from_slice(b"\x00garbage");
    // Near the topic's limit: with the `dlq.*` headers added the first still fits, the
    // second, 120 bytes short of the limit with its framing, does not.
    let mut huge = vec![0u8; TOPIC_MAX_BYTES - 120];
    rng.fill(&mut huge[..]);
    huge[0] = 0;
    let large = huge[..TOPIC_MAX_BYTES - 1_000].to_vec();
    let encoded = |e: Event| codec.encode(&e).unwrap();
    let invalid = |field: fn(&mut Event)| {
        let mut e = event("good-a");
        field(&mut e);
        e
    };
    let traceparent = (
        "traceparent",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec(),
    );
    let tick_header = (headers::KIND, headers::KIND_TICK.as_bytes().to_vec());
    let far_future = invalid(|e| e.ingested_at_micros = 253_402_300_799_000_000);
    let cases: Vec<Case> = vec![
        (
            "no value at all",
            Some("good-a"),
            None,
            vec![],
            dead("empty", "no value"),
        ),
        (
            "an empty value",
            Some("good-b"),
            Some(Vec::new()),
            vec![],
            dead("empty", "no value"),
        ),
        (
            "random bytes",
            Some("good-a"),
            Some(random.clone()),
            vec![traceparent.clone()],
            dead("undecodable", ""),
        ),
        (
            "wrong magic bytes",
            Some("good-a"),
            Some(wrong_magic),
            vec![],
            dead("undecodable", "missing single-object marker"),
        ),
        (
            "an unknown schema fingerprint",
            Some("good-a"),
            Some(unknown_fingerprint),
            vec![],
            dead(
                "undecodable",
                "unknown writer schema fingerprint eeeeeeeeeeeeeeee",
            ),
        ),
        (
            "a known fingerprint with a truncated body",
            Some("good-a"),
            Some(truncated),
            vec![],
            dead("undecodable", "malformed"),
        ),
        (
            "a known fingerprint with trailing garbage",
            Some("good-a"),
            Some(trailing),
            vec![],
            dead("undecodable", "8 bytes follow the datum"),
        ),
        (
            "an empty client id",
            Some(""),
            Some(encoded(invalid(|e| e.client_id.clear()))),
            vec![],
            dead("invalid-record", "client_id: must be 1 to 128 characters"),
        ),
        (
            "a client id the API cannot be asked for",
            Some("good a"),
            Some(encoded(invalid(|e| e.client_id = "good a".into()))),
            vec![],
            dead("invalid-record", "client_id: character ' ' is not allowed"),
        ),
        (
            "an empty type",
            Some("good-a"),
            Some(encoded(invalid(|e| e.event_type.clear()))),
            vec![],
            dead("invalid-record", "type: must be 1 to 64 characters"),
        ),
        (
            "a NUL in the type",
            Some("good-a"),
            Some(encoded(invalid(|e| e.event_type = "t\0".into()))),
            vec![],
            dead("invalid-record", "type: control characters are not allowed"),
        ),
        (
            "a payload that is not JSON",
            Some("good-a"),
            Some(encoded(invalid(|e| e.payload = "not json".into()))),
            vec![],
            dead("invalid-record", "payload: not JSON"),
        ),
        (
            "\\u0000 in the payload",
            Some("good-b"),
            Some(encoded(invalid(|e| {
                e.client_id = "good-b".into();
                e.payload = r#"{"s":"a\u0000b"}"#.into();
            }))),
            vec![],
            dead("invalid-record", r"payload: \u0000 is not allowed"),
        ),
        (
            "a payload nesting 30,000 levels (PostgreSQL's stack depth error is retried)",
            Some("good-a"),
            Some(encoded(invalid(|e| {
                e.payload = format!("{}1{}", "[".repeat(30_000), "]".repeat(30_000));
            }))),
            vec![],
            dead("invalid-record", "payload: nests deeper than 128 levels"),
        ),
        (
            "a number jsonb cannot store",
            Some("good-a"),
            Some(encoded(invalid(|e| e.payload = r#"{"n":1e999999}"#.into()))),
            vec![],
            dead("invalid-record", "payload: number 1e999999 is beyond"),
        ),
        (
            "an empty sdk",
            Some("good-a"),
            Some(encoded(invalid(|e| e.sdk = Some(String::new())))),
            vec![],
            dead(
                "invalid-record",
                "sdk: must be a string of 1 to 64 characters",
            ),
        ),
        (
            "a device time no timestamp can hold",
            Some("good-a"),
            Some(encoded(invalid(|e| e.ts_micros = Some(i64::MAX)))),
            vec![],
            dead("invalid-record", "ts: outside the years"),
        ),
        (
            "an ingest time far after the record was written (would hold the partition's clock)",
            Some("good-a"),
            Some(encoded(far_future)),
            vec![],
            dead("invalid-record", "ingested_at:"),
        ),
        (
            "no key",
            None,
            Some(valid.clone()),
            vec![],
            dead("invalid-record", "key: the record has no key"),
        ),
        (
            "a key that is not the client id",
            Some("good-b"),
            Some(encoded(event("good-a"))),
            vec![],
            dead(
                "invalid-record",
                r#"key: the record's key "good-b" is not the event's client id"#,
            ),
        ),
        (
            "a tick header on random bytes",
            None,
            Some(random),
            vec![tick_header, traceparent],
            dead("undecodable", "missing single-object marker"),
        ),
        (
            "a tick without its header",
            None,
            Some(
                TickCodec::default()
                    .encode(&Tick {
                        at: now_micros(),
                        gateway: "rogue".into(),
                    })
                    .unwrap(),
            ),
            vec![],
            dead("undecodable", "unknown writer schema fingerprint"),
        ),
        (
            "random bytes near the topic's size limit",
            Some("good-c"),
            Some(large),
            vec![],
            dead("undecodable", "missing single-object marker"),
        ),
        (
            "random bytes so near the topic's size limit that the dead letter cannot carry them",
            Some("good-c"),
            Some(huge),
            vec![],
            Expected {
                value_kept: false,
                ..dead("undecodable", "missing single-object marker")
            },
        ),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(n, (what, key, value, headers, expected))| {
            let record = Record {
                what,
                topic: lanes[n % 2].clone(),
                key: key.map(|k| k.as_bytes().to_vec()),
                value,
                headers,
                timestamp_ms: None,
            };
            (record, expected)
        })
        .collect()
}

/// Every event of `client` query-service answers, with its status; panics on any answer but
/// 200 (a garbage record must not break a good client's history).
async fn answered(stack: &Stack, query: &str, client: &str) -> Vec<(Uuid, String)> {
    let (status, page, _) = stack
        .get(query, &[("clientId", client), ("limit", "1000")])
        .await;
    assert_eq!(status, 200, "GET /events?clientId={client}: {page}");
    assert!(
        page["next_cursor"].is_null(),
        "{client}: one page holds all"
    );
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_id"].as_str().unwrap().parse().unwrap(),
                e["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits until every client's answer lists exactly its good events, all with `status`.
async fn wait_for_exactly(
    stack: &Stack,
    query: &str,
    good: &BTreeMap<&str, BTreeSet<Uuid>>,
    status: &str,
) {
    for (client, ids) in good {
        let answer = eventually(DEADLINE, &format!("{client}'s {status} events"), || async {
            let answer = answered(stack, query, client).await;
            let listed: BTreeSet<Uuid> = answer.iter().map(|(id, _)| *id).collect();
            (ids.is_subset(&listed) && answer.iter().all(|(_, s)| s == status)).then_some(answer)
        })
        .await;
        let listed: Vec<Uuid> = answer.iter().map(|(id, _)| *id).collect();
        assert_eq!(
            listed.len(),
            ids.len(),
            "{client}: garbage or a duplicate shown beside the good events"
        );
        assert_eq!(&listed.into_iter().collect::<BTreeSet<_>>(), ids);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_in_the_event_topics_is_dead_lettered_whole_and_good_events_around_it_are_stored_and_served(
) {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let writer = Writer::new(&stack.brokers);
    let codec = EventCodec::new();
    // query-service tails everything below while nothing is stored yet: the garbage is in
    // flight beside the good events.
    let query = stack.start_query().await;
    stack.ready(&query, DEADLINE).await;

    let mut good: BTreeMap<&str, BTreeSet<Uuid>> = BTreeMap::new();
    let mut garbage_sent = Vec::new();
    for (n, (record, expected)) in garbage(&stack).into_iter().enumerate() {
        let client = CLIENTS[n % CLIENTS.len()];
        let priority = if n % 2 == 0 { "normal" } else { "critical" };
        let posted = stack
            .post_events(
                &gateway,
                &[
                    json!({"client_id": client, "type": "good", "priority": priority,
                         "payload": {"n": n}}),
                ],
            )
            .await;
        good.entry(client).or_default().extend(&posted.event_ids);
        let (partition, offset) = writer.produce(&record).await;
        garbage_sent.push((record, expected, partition, offset));
    }
    // Good events from producers other than the gateway, written as it writes them: an older
    // producer's v1 encoding, and a critical event on the normal lane (the lane is a route,
    // the priority is the event's: both consumers take it as it is).
    let v1 = event("good-b");
    let v1_bytes = codec.encode_as(&v1, codec.version(1).unwrap()).unwrap();
    let critical = Event {
        priority: Priority::Critical,
        ..event("good-c")
    };
    // And an event with a tick's header: a tick is a tick's value marked as one, so a header
    // does not make an event's value a tick (readers look at the value first).
    let marked = event("good-a");
    for (e, bytes, topic, headers) in [
        (&v1, v1_bytes, &stack.critical_topic, vec![]),
        (
            &critical,
            codec.encode(&critical).unwrap(),
            &stack.topic,
            vec![],
        ),
        (
            &marked,
            codec.encode(&marked).unwrap(),
            &stack.critical_topic,
            vec![(headers::KIND, headers::KIND_TICK.as_bytes().to_vec())],
        ),
    ] {
        let record = Record {
            headers,
            ..good_record(topic, e, bytes)
        };
        writer.produce(&record).await;
        good.entry(e.client_id.as_str())
            .or_default()
            .insert(e.event_id);
    }
    let last = stack
        .post_events(
            &gateway,
            &CLIENTS
                .iter()
                .map(|c| json!({"client_id": c, "type": "last"}))
                .collect::<Vec<Value>>(),
        )
        .await;
    for (client, id) in CLIENTS.iter().zip(&last.event_ids) {
        good.entry(client).or_default().insert(*id);
    }

    // In flight: exactly the good events, every answer 200.
    wait_for_exactly(&stack, &query, &good, "in_flight").await;

    let (_writer_stop, writer_url) = stack.start_writer_with(stack.writer_settings()).await;
    // Not stuck: the writer's commits reach the end of both lanes.
    stack.drained(DEADLINE).await;

    let counts = stack.row_counts().await;
    let good_ids: BTreeSet<Uuid> = good.values().flatten().copied().collect();
    for id in &good_ids {
        assert_eq!(counts.get(id), Some(&1), "good event {id} stored once");
    }
    assert_eq!(
        counts.len(),
        good_ids.len(),
        "only good events are stored: {:?}",
        counts
            .keys()
            .filter(|id| !good_ids.contains(id))
            .collect::<Vec<_>>()
    );

    let dead = stack
        .kafka
        .read_all(&stack.dead_letter_topic, Duration::from_secs(30));
    assert_eq!(
        dead.len(),
        garbage_sent.len(),
        "each garbage record dead-lettered once"
    );
    for (record, expected, partition, offset) in &garbage_sent {
        let what = record.what;
        let letter = dead
            .iter()
            .find(|m| {
                header(m, "dlq.source.topic").as_deref() == Some(record.topic.as_str())
                    && header(m, "dlq.source.partition") == Some(partition.to_string())
                    && header(m, "dlq.source.offset") == Some(offset.to_string())
            })
            .unwrap_or_else(|| panic!("{what}: no dead letter names {partition}:{offset}"));
        assert_eq!(
            header(letter, "dlq.error.class").as_deref(),
            Some(expected.class),
            "{what}: {:?}",
            header(letter, "dlq.error.message")
        );
        let message = header(letter, "dlq.error.message").unwrap();
        assert!(!message.is_empty(), "{what}: says why");
        assert!(
            message.contains(expected.reason),
            "{what}: {message:?} should say {:?}",
            expected.reason
        );
        let original = record.value.as_deref().filter(|v| !v.is_empty());
        let kept = letter.payload().filter(|v| !v.is_empty());
        if expected.value_kept {
            assert!(
                kept == original,
                "{what}: original bytes ({:?} bytes kept of {:?})",
                kept.map(<[u8]>::len),
                original.map(<[u8]>::len)
            );
            assert_eq!(header(letter, "dlq.value.omitted"), None, "{what}");
        } else {
            assert!(
                kept.is_none(),
                "{what}: sent without its value, not {:?} bytes",
                kept.map(<[u8]>::len)
            );
            assert_eq!(
                header(letter, "dlq.value.omitted"),
                original.map(|v| v.len().to_string()),
                "{what}: says how large the value was"
            );
        }
        assert_eq!(
            letter.key().filter(|k| !k.is_empty()),
            record.key.as_deref().filter(|k| !k.is_empty()),
            "{what}: original key"
        );
        for (name, value) in &record.headers {
            assert_eq!(
                header(letter, name).map(String::into_bytes).as_ref(),
                Some(value),
                "{what}: original header {name}"
            );
        }
    }
    for class in ["empty", "undecodable", "invalid-record"] {
        let sent = garbage_sent
            .iter()
            .filter(|(_, e, _, _)| e.class == class)
            .count();
        let counted = stack
            .metric(
                &writer_url,
                &format!("db_writer_dead_letters_total{{error_class=\"{class}\"}}"),
            )
            .await;
        assert_eq!(
            counted, sent as f64,
            "dead letters of class {class} counted"
        );
    }

    // Stored: the same answers, now from the shards.
    wait_for_exactly(&stack, &query, &good, "persisted").await;
    assert!(stack.service_failures().is_empty());
}
