//! Properties of the input path as a whole — bytes → `body::split` → `Rules::events`, what
//! `http::post_events` runs before anything is published: whatever a client sends is accepted
//! or refused, never a panic; one invalid item refuses the whole request; what is accepted
//! keeps the topics' contract (`schemas::contract`), so db-writer stores it and query-service
//! serves it.

use std::time::Duration;

use proptest::prelude::*;
use schemas::{contract, Event};

use crate::{
    body::{self, Format},
    validate::{Rules, Valid},
};

const MAX_EVENTS: usize = 20;
/// An ingest time, as `publish` stamps one just before the events are queued.
const INGESTED_AT: i64 = 1_763_000_000_000_000;

/// The gateway's verdict on a body: the events it would publish, or the status it answers.
fn answer(format: Format, body: &[u8]) -> Result<Valid, u16> {
    let items = body::split(format, body, MAX_EVENTS)
        .map_err(|p| p.status)?
        .items;
    Rules {
        max_payload_bytes: 64 * 1024,
    }
    .events(&items)
    .map_err(|_| 422)
}

/// Checks what an accepted body became; returns the events.
fn accepted_events_keep_the_contract(valid: Valid) -> Vec<Event> {
    assert!(valid.events.iter().all(|e| e.id_origin.is_some()));
    assert!((1..=MAX_EVENTS).contains(&valid.events.len()));
    valid
        .events
        .into_iter()
        .map(|mut event| {
            event.ingested_at_micros = INGESTED_AT;
            if let Err(violation) = contract::check(&event) {
                panic!("accepted an event the writer would refuse: {violation}: {event:?}");
            }
            event
        })
        .collect()
}

/// One field of a generated item: its JSON text (`"name":value`, or nothing when absent) and
/// whether the gateway must accept it.
type Field = (String, bool);

fn field(
    name: &'static str,
    good: Vec<&'static str>,
    bad: Vec<&'static str>,
) -> impl Strategy<Value = Field> {
    let text = move |value: &str| {
        if value.is_empty() {
            String::new()
        } else {
            format!("{name:?}:{value}")
        }
    };
    // Mostly valid, so that whole requests of valid items come up often too.
    prop_oneof![
        8 => prop::sample::select(good).prop_map(move |v| (text(v), true)),
        1 => prop::sample::select(bad).prop_map(move |v| (text(v), false)),
    ]
}

/// Event objects mixing valid and invalid values of every field the gateway reads, as JSON
/// text, with whether the gateway must accept the object.
fn items() -> impl Strategy<Value = (String, bool)> {
    let long_client = format!("{:?}", "c".repeat(129));
    let long_type = format!("{:?}", "t".repeat(65));
    let long_sdk = format!("{:?}", "s".repeat(65));
    let deep_ok = format!("{}1{}", "[".repeat(128), "]".repeat(128));
    let deep_bad = format!("{}1{}", "[".repeat(129), "]".repeat(129));
    // Leaked once per strategy: `select` wants 'static values.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    (
        field(
            "client_id",
            vec![r#""dev-1""#, r#""a:b.c_d-9""#],
            vec![
                "",
                r#""""#,
                r#""a b""#,
                r#""é""#,
                leak(long_client),
                "5",
                "null",
            ],
        ),
        field(
            "type",
            vec![r#""click""#, r#""t é ✓""#],
            vec![
                "",
                r#""""#,
                r#""t\u0000""#,
                r#""t\u0001""#,
                leak(long_type),
                "[]",
            ],
        ),
        field(
            "payload",
            vec![
                "",
                "{}",
                r#"{"a":[1,2,{"b":null}]}"#,
                r#""text""#,
                "1e131071",
                r#""\ud83d\ude00""#,
                leak(deep_ok),
            ],
            vec![
                r#"{"s":"\u0000"}"#,
                "1e999999",
                r#""\ud800""#,
                leak(deep_bad),
            ],
        ),
        field(
            "event_id",
            vec!["", r#""0190a5e4-7b6c-7cde-8f00-123456789abc""#],
            vec![r#""nope""#, "7"],
        ),
        field(
            "ts",
            vec![
                "",
                r#""2026-11-23T10:00:00.5Z""#,
                r#""0000-01-01T00:00:00+01:00""#,
            ],
            vec![r#""yesterday""#, "1763000000"],
        ),
        field(
            "priority",
            vec!["", r#""normal""#, r#""critical""#],
            vec![r#""urgent""#, "1"],
        ),
        field(
            "sdk",
            vec!["", r#""ios/3.2.1""#],
            vec![r#""""#, r#""a\nb""#, leak(long_sdk)],
        ),
        any::<bool>(),
    )
        .prop_map(|(c, t, p, i, ts, pr, s, unknown)| {
            let mut fields: Vec<Field> = vec![c, t, p, i, ts, pr, s];
            if unknown {
                // Newer SDKs send fields this gateway does not know: ignored.
                fields.push((r#""extra":{"x":1}"#.into(), true));
            }
            let valid = fields.iter().all(|(_, ok)| *ok);
            let text: Vec<String> = fields
                .into_iter()
                .map(|(text, _)| text)
                .filter(|text| !text.is_empty())
                .collect();
            (format!("{{{}}}", text.join(",")), valid)
        })
}

proptest! {
    #[test]
    fn a_request_is_accepted_exactly_when_every_item_is_valid(
        items in prop::collection::vec(items(), 1..6),
        ndjson in any::<bool>(),
    ) {
        let (body, format) = if ndjson {
            let lines: Vec<&str> = items.iter().map(|(text, _)| text.as_str()).collect();
            (lines.join("\n"), Format::Ndjson)
        } else {
            let texts: Vec<&str> = items.iter().map(|(text, _)| text.as_str()).collect();
            (format!("[{}]", texts.join(",")), Format::Json)
        };
        let all_valid = items.iter().all(|(_, ok)| *ok);
        match answer(format, body.as_bytes()) {
            Ok(valid) => {
                prop_assert!(all_valid, "accepted an invalid item: {}", body);
                let events = accepted_events_keep_the_contract(valid);
                prop_assert_eq!(events.len(), items.len());
            }
            Err(status) => {
                prop_assert!(!all_valid, "refused ({}) a valid request: {}", status, body);
                prop_assert_eq!(status, 422);
            }
        }
        // A single object is judged like an array of one.
        let (first, ok) = &items[0];
        prop_assert_eq!(answer(Format::Json, first.as_bytes()).is_ok(), *ok, "{}", first);
    }

    #[test]
    fn any_bytes_are_accepted_or_refused_without_panicking(
        body in prop::collection::vec(any::<u8>(), 0..300),
        ndjson in any::<bool>(),
    ) {
        let format = if ndjson { Format::Ndjson } else { Format::Json };
        if let Ok(valid) = answer(format, &body) {
            accepted_events_keep_the_contract(valid);
        }
    }

    #[test]
    fn any_json_like_text_is_accepted_or_refused_without_panicking(
        body in r#"[\[\]{}",:\n a-z0-9_\\.\-eE+]{0,120}"#,
        ndjson in any::<bool>(),
    ) {
        let format = if ndjson { Format::Ndjson } else { Format::Json };
        if let Ok(valid) = answer(format, body.as_bytes()) {
            accepted_events_keep_the_contract(valid);
        }
    }
}

/// Fuzz target of the request path. Under `cargo test` it runs a bounded number of random
/// inputs; `cargo bolero test` runs it under libFuzzer (README, "Tests").
#[test]
fn fuzz_request_body() {
    bolero::check!()
        .with_type::<(bool, Vec<u8>)>()
        .with_iterations(20_000)
        .with_test_time(Duration::from_secs(3))
        .for_each(|(ndjson, body)| {
            let format = if *ndjson {
                Format::Ndjson
            } else {
                Format::Json
            };
            if let Ok(valid) = answer(format, body) {
                accepted_events_keep_the_contract(valid);
            }
        });
}
