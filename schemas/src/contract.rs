//! What an event on the event topics must be beyond matching its Avro schema.
//!
//! The gateway refuses (`422`) any event that breaks these rules, so everything it publishes
//! keeps them. Anything can write to a topic, though: a producer built against an old copy of
//! this crate, a tool, a test, an attacker. A record that decodes but breaks the rules would
//! otherwise be stored with fields no reader can ask for (an empty client id), stall db-writer
//! (a payload PostgreSQL's JSON parser recurses on until `max_stack_depth`, SQLSTATE 54001,
//! which is retried for ever), break every answer of its client's history (a payload that is
//! not JSON), or push its partition's log clock (`crate::order`) far into the future, so that
//! readers never release the events after it. db-writer dead-letters such a record and
//! query-service never serves it: both call [`check_record`], so they agree on every record.
//!
//! The lane a record travels is a route, not part of the event: a `critical` event on the
//! normal lane breaks nothing downstream and is stored as `critical`.

use serde_json::value::RawValue;

use crate::Event;

/// Longest client id, in bytes (the id is ASCII).
pub const CLIENT_ID_MAX: usize = 128;
/// Longest event type, in characters.
pub const TYPE_MAX: usize = 64;
/// Longest `sdk`, in characters.
pub const SDK_MAX: usize = 64;

/// The times an event can carry (`ts`, `ingested_at`): the years -9999 to 9999, what the
/// services' time library represents. PostgreSQL's `timestamptz` holds all of them; a time
/// beyond would be written as something else than what was sent.
pub const MIN_MICROS: i64 = -377_705_116_800_000_000;
/// The last microsecond of 9999-12-31 (UTC).
pub const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// The first rule a record breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Violation {
    /// The event field (or `key`, `timestamp` of the Kafka record) at fault.
    pub field: &'static str,
    pub reason: String,
}

impl Violation {
    fn new(field: &'static str, reason: String) -> Self {
        Violation { field, reason }
    }
}

/// Why `id` is not a client id: 1 to [`CLIENT_ID_MAX`] of `A-Z a-z 0-9 . _ : -`.
pub fn client_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > CLIENT_ID_MAX {
        return Some(format!("must be 1 to {CLIENT_ID_MAX} characters"));
    }
    id.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        .map(|c| format!("character {c:?} is not allowed; use A-Z a-z 0-9 . _ : -"))
}

/// Why `event_type` is not an event type: 1 to [`TYPE_MAX`] characters, no control
/// characters (PostgreSQL's `text` refuses NUL; the others have no place in a type name).
pub fn type_problem(event_type: &str) -> Option<String> {
    let len = event_type.chars().count();
    if len == 0 || len > TYPE_MAX {
        return Some(format!("must be 1 to {TYPE_MAX} characters"));
    }
    event_type
        .chars()
        .any(char::is_control)
        .then(|| "control characters are not allowed".to_owned())
}

/// Why `sdk` is not an SDK version: 1 to [`SDK_MAX`] characters, no control characters.
pub fn sdk_problem(sdk: &str) -> Option<String> {
    if sdk.chars().any(char::is_control) {
        return Some("control characters are not allowed".into());
    }
    let len = sdk.chars().count();
    (len == 0 || len > SDK_MAX).then(|| format!("must be a string of 1 to {SDK_MAX} characters"))
}

/// Why `payload`, JSON text, cannot be stored in PostgreSQL's `jsonb` (see `payload`). The
/// gateway has checked the syntax already; this does not.
pub fn payload_problem(payload: &str) -> Option<String> {
    crate::payload::storable(payload).err()
}

/// Checks the fields of a decoded event against the rules the gateway applies.
pub fn check(event: &Event) -> Result<(), Violation> {
    if let Some(reason) = client_id_problem(&event.client_id) {
        return Err(Violation::new("client_id", reason));
    }
    if let Some(reason) = type_problem(&event.event_type) {
        return Err(Violation::new("type", reason));
    }
    // The depth and number checks first: they name the problem, where a JSON parser that
    // stops at its recursion limit would only say the text is not JSON.
    if let Some(reason) = payload_problem(&event.payload) {
        return Err(Violation::new("payload", reason));
    }
    if let Err(e) = serde_json::from_str::<&RawValue>(&event.payload) {
        return Err(Violation::new("payload", format!("not JSON: {e}")));
    }
    if let Some(reason) = event.sdk.as_deref().and_then(sdk_problem) {
        return Err(Violation::new("sdk", reason));
    }
    let in_range = |micros: i64| (MIN_MICROS..=MAX_MICROS).contains(&micros);
    if event.ts_micros.is_some_and(|ts| !in_range(ts)) {
        return Err(Violation::new(
            "ts",
            "outside the years -9999 to 9999".into(),
        ));
    }
    if !in_range(event.ingested_at_micros) {
        return Err(Violation::new(
            "ingested_at",
            "outside the years -9999 to 9999".into(),
        ));
    }
    Ok(())
}

/// Checks an event together with the Kafka record that carried it: its fields ([`check`]),
/// its key (the gateway keys every event by its client id, which places a client's events in
/// its partitions) and its time. The gateway sets the record's create time to the event's
/// `ingested_at` (in milliseconds), and brokers refuse a create time further ahead of their
/// clocks than the topic's `message.timestamp.after.max.ms`: an `ingested_at` after its
/// record's create time escapes that bound and would move the partition's log clock ahead
/// for everyone. `create_time_ms` is `None` when the topic stamps records itself
/// (`LogAppendTime`): then the record's time says nothing about the producer's.
pub fn check_record(
    event: &Event,
    key: Option<&[u8]>,
    create_time_ms: Option<i64>,
) -> Result<(), Violation> {
    check(event)?;
    match key {
        None => {
            return Err(Violation::new(
                "key",
                "the record has no key; events are keyed by client id".into(),
            ))
        }
        Some(key) if key != event.client_id.as_bytes() => {
            return Err(Violation::new(
                "key",
                format!(
                    "the record's key {:?} is not the event's client id",
                    String::from_utf8_lossy(key)
                ),
            ))
        }
        Some(_) => {}
    }
    if let Some(created) = create_time_ms {
        // The gateway's truncating division, so its own records pass exactly.
        let ingested_ms = event.ingested_at_micros / 1_000;
        if ingested_ms > created {
            return Err(Violation::new(
                "ingested_at",
                format!(
                    "{ingested_ms} ms is after the record's create time {created} ms: \
                     an ingest time the brokers did not bound"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::Priority;

    fn event() -> Event {
        Event {
            event_id: Uuid::now_v7(),
            client_id: "device-1".into(),
            event_type: "t".into(),
            ts_micros: Some(1_763_000_000_000_000),
            ingested_at_micros: 1_763_000_000_123_456,
            priority: Priority::Normal,
            payload: r#"{"a":[1,2]}"#.into(),
            sdk: Some("ios/1".into()),
            id_origin: None,
        }
    }

    fn field(event: &Event) -> Option<&'static str> {
        check(event).err().map(|v| v.field)
    }

    #[test]
    fn an_event_as_the_gateway_writes_it_passes() {
        let e = event();
        assert_eq!(check(&e), Ok(()));
        assert_eq!(
            check_record(&e, Some(b"device-1"), Some(1_763_000_000_123)),
            Ok(())
        );
        assert_eq!(check_record(&e, Some(b"device-1"), None), Ok(()));
    }

    #[test]
    fn each_field_rule_is_enforced() {
        let cases: Vec<(Event, &str)> = vec![
            (
                Event {
                    client_id: String::new(),
                    ..event()
                },
                "client_id",
            ),
            (
                Event {
                    client_id: "a b".into(),
                    ..event()
                },
                "client_id",
            ),
            (
                Event {
                    client_id: "x".repeat(129),
                    ..event()
                },
                "client_id",
            ),
            (
                Event {
                    event_type: String::new(),
                    ..event()
                },
                "type",
            ),
            (
                Event {
                    event_type: "t\u{0}".into(),
                    ..event()
                },
                "type",
            ),
            (
                Event {
                    payload: "not json".into(),
                    ..event()
                },
                "payload",
            ),
            (
                Event {
                    payload: String::new(),
                    ..event()
                },
                "payload",
            ),
            (
                Event {
                    payload: r#"{"s":"\u0000"}"#.into(),
                    ..event()
                },
                "payload",
            ),
            (
                Event {
                    payload: "[".repeat(30_000),
                    ..event()
                },
                "payload",
            ),
            (
                Event {
                    payload: r#"{"n":1e999999}"#.into(),
                    ..event()
                },
                "payload",
            ),
            (
                Event {
                    payload: r#"{"a":1} junk"#.into(),
                    ..event()
                },
                "payload",
            ),
            (
                Event {
                    sdk: Some(String::new()),
                    ..event()
                },
                "sdk",
            ),
            (
                Event {
                    sdk: Some("a\nb".into()),
                    ..event()
                },
                "sdk",
            ),
            (
                Event {
                    ts_micros: Some(i64::MAX),
                    ..event()
                },
                "ts",
            ),
            (
                Event {
                    ts_micros: Some(MIN_MICROS - 1),
                    ..event()
                },
                "ts",
            ),
            (
                Event {
                    ingested_at_micros: MAX_MICROS + 1,
                    ..event()
                },
                "ingested_at",
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(field(&event), Some(expected), "{event:?}");
        }
        for ok in [
            Event {
                ts_micros: Some(MIN_MICROS),
                ..event()
            },
            Event {
                ts_micros: None,
                sdk: None,
                ..event()
            },
            Event {
                ingested_at_micros: MAX_MICROS,
                ..event()
            },
            Event {
                payload: "[".repeat(128) + &"]".repeat(128),
                ..event()
            },
            Event {
                client_id: "A-z.0_9:x".into(),
                ..event()
            },
        ] {
            assert_eq!(check(&ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn the_record_must_be_keyed_by_the_client_and_not_stamped_after_it_was_written() {
        let e = event();
        let created = e.ingested_at_micros / 1_000;
        let field =
            |key: Option<&[u8]>, at: Option<i64>| check_record(&e, key, at).err().map(|v| v.field);
        assert_eq!(field(None, Some(created)), Some("key"));
        assert_eq!(field(Some(b"device-2"), Some(created)), Some("key"));
        assert_eq!(field(Some(b""), Some(created)), Some("key"));
        assert_eq!(
            field(Some(b"device-1"), Some(created - 1)),
            Some("ingested_at")
        );
        assert_eq!(field(Some(b"device-1"), Some(created + 60_000)), None);
        let far = Event {
            ingested_at_micros: MAX_MICROS,
            ..event()
        };
        assert!(check_record(&far, Some(b"device-1"), Some(created)).is_err());
    }
}
