//! Field rules of one incoming event, and the event the gateway makes of it.

use chassis::problem::FieldError;
use schemas::{Event, IdOrigin, Priority};
use serde::Deserialize;
use serde_json::{value::RawValue, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use uuid::Uuid;

use crate::EVENTS_PER_TURN;

// The field rules are the topics' contract: db-writer and query-service check decoded
// records against the same functions.
use schemas::contract::{client_id_problem, payload_problem, sdk_problem, type_problem, SDK_MAX};

/// An event as producers send it. Unknown fields are ignored so that newer SDKs can talk
/// to older gateways; `null` counts as absent.
#[derive(Deserialize)]
struct Incoming<'a> {
    client_id: Option<Value>,
    #[serde(rename = "type")]
    event_type: Option<Value>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    event_id: Option<Value>,
    ts: Option<Value>,
    priority: Option<Value>,
    sdk: Option<Value>,
}

// What `Incoming` accepts, for the OpenAPI document (validation reads `Incoming` itself, to
// name every bad field instead of failing on the first).
/// An event as producers send it. Unknown fields are ignored; `null` counts as absent.
#[derive(utoipa::ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)] // documentation only: never built
pub struct EventInput {
    /// The device or app the event belongs to; events are ordered and routed per client.
    #[schema(max_length = 128, min_length = 1, pattern = "^[A-Za-z0-9._:-]+$")]
    client_id: String,
    #[serde(rename = "type")]
    #[schema(max_length = 64, min_length = 1)]
    event_type: String,
    /// Any JSON PostgreSQL's jsonb accepts (no `\u0000`, numbers in its range), up to
    /// `limits.max_payload_bytes` serialized.
    #[schema(value_type = Option<Value>)]
    payload: Option<()>,
    /// The producer's own id, a UUID (v7 keeps the shard index append-mostly); a retry with the
    /// same id is stored and answered once. Assigned (UUIDv7) when absent.
    event_id: Option<uuid::Uuid>,
    /// When the event happened on the device, RFC 3339.
    #[schema(format = DateTime)]
    ts: Option<String>,
    /// `normal` (default) or `critical` (a lane of its own with its own writer batches).
    #[schema(pattern = "^(normal|critical)$")]
    priority: Option<String>,
    #[schema(max_length = 64)]
    sdk: Option<String>,
}

/// One event object, or an array of them.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documentation only: never built
pub enum EventsBody {
    One(EventInput),
    Many(Vec<EventInput>),
}

pub struct Rules {
    pub max_payload_bytes: usize,
}

/// The events of a valid request. Their ingest time is stamped when they are published
/// (`publish`), as close to the broker as possible.
#[derive(Debug)]
pub struct Valid {
    /// Each with its `id_origin`: whether the gateway chose its id (the producer sent none).
    pub events: Vec<Event>,
}

/// What a request's items came to so far.
struct Checked {
    valid: Valid,
    errors: Vec<FieldError>,
}

impl Checked {
    fn with_capacity(items: usize) -> Self {
        Checked {
            valid: Valid {
                events: Vec::with_capacity(items),
            },
            errors: Vec::new(),
        }
    }

    fn into_result(self) -> Result<Valid, Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(self.valid)
        } else {
            Err(self.errors)
        }
    }
}

impl Rules {
    /// Validates every item; the request is all-or-nothing, so every error of every item is
    /// collected for the answer. At once: requests use [`Rules::events_in_turns`].
    #[cfg(test)]
    pub fn events(&self, items: &[&RawValue]) -> Result<Valid, Vec<FieldError>> {
        let mut checked = Checked::with_capacity(items.len());
        self.check(0, items, &mut checked);
        checked.into_result()
    }

    /// As [`Rules::events`], giving the worker back to the runtime after every
    /// [`EVENTS_PER_TURN`] items.
    pub async fn events_in_turns(&self, items: &[&RawValue]) -> Result<Valid, Vec<FieldError>> {
        let mut checked = Checked::with_capacity(items.len());
        for (turn, chunk) in items.chunks(EVENTS_PER_TURN).enumerate() {
            if turn > 0 {
                tokio::task::yield_now().await;
            }
            self.check(turn * EVENTS_PER_TURN, chunk, &mut checked);
        }
        checked.into_result()
    }

    /// Checks `items`, the first of them at request index `first`.
    fn check(&self, first: usize, items: &[&RawValue], checked: &mut Checked) {
        for (index, item) in (first..).zip(items) {
            match self.event(index, item) {
                Ok(event) => checked.valid.events.push(event),
                Err(mut item_errors) => checked.errors.append(&mut item_errors),
            }
        }
    }

    fn event(&self, index: usize, item: &RawValue) -> Result<Event, Vec<FieldError>> {
        let error = |field: &str, reason: String| FieldError {
            index,
            field: field.to_owned(),
            reason,
        };
        let incoming: Incoming = serde_json::from_str(item.get()).map_err(|e| {
            let reason = if item.get().trim_start().starts_with('{') {
                e.to_string()
            } else {
                "an event must be a JSON object".to_owned()
            };
            vec![error("", reason)]
        })?;
        let mut errors = Vec::new();
        let client_id = required_string(incoming.client_id, "client_id", &mut errors, index)
            .filter(|id| check(&mut errors, index, "client_id", client_id_problem(id)));
        let event_type = required_string(incoming.event_type, "type", &mut errors, index)
            .filter(|t| check(&mut errors, index, "type", type_problem(t)));
        let payload = match incoming.payload {
            None => "{}".to_owned(),
            Some(raw) if raw.get().len() > self.max_payload_bytes => {
                errors.push(error(
                    "payload",
                    format!(
                        "payload is {} bytes; at most {} are accepted",
                        raw.get().len(),
                        self.max_payload_bytes
                    ),
                ));
                String::new()
            }
            Some(raw) => match payload_problem(raw.get()) {
                None => raw.get().to_owned(),
                Some(reason) => {
                    errors.push(error("payload", reason));
                    String::new()
                }
            },
        };
        let id_origin = match incoming.event_id {
            None => IdOrigin::Gateway,
            Some(_) => IdOrigin::Producer,
        };
        let event_id = match incoming.event_id {
            None => Some(Uuid::now_v7()),
            Some(Value::String(s)) => match Uuid::parse_str(&s) {
                // An id field left uninitialised holds one of these: every event carrying it
                // would be taken for a retry of the first and dropped as its duplicate.
                Ok(id) if id.is_nil() || id.is_max() => {
                    errors.push(error(
                        "event_id",
                        format!("{s:?} is the nil or max UUID, not an id of one event"),
                    ));
                    None
                }
                Ok(id) => Some(id),
                Err(_) => {
                    errors.push(error("event_id", format!("{s:?} is not a UUID")));
                    None
                }
            },
            Some(_) => {
                errors.push(error("event_id", "must be a UUID string".into()));
                None
            }
        };
        let ts_micros = match incoming.ts {
            None => Some(None),
            Some(Value::String(s)) => OffsetDateTime::parse(&s, &Rfc3339)
                .ok()
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000).ok())
                .map(Some)
                .or_else(|| {
                    errors.push(error("ts", format!("{s:?} is not an RFC 3339 timestamp")));
                    None
                }),
            Some(_) => {
                errors.push(error("ts", "must be an RFC 3339 timestamp string".into()));
                None
            }
        };
        let priority = match incoming.priority {
            None => Some(Priority::Normal),
            Some(Value::String(s)) => s
                .parse::<Priority>()
                .map_err(|e| errors.push(error("priority", e.to_string())))
                .ok(),
            Some(_) => {
                errors.push(error(
                    "priority",
                    "must be \"normal\" or \"critical\"".into(),
                ));
                None
            }
        };
        let sdk = match incoming.sdk {
            None => None,
            // A `text` column: PostgreSQL refuses NUL, and like `type` the rest of the control
            // characters have no place in a version string.
            Some(Value::String(s)) => match sdk_problem(&s) {
                None => Some(s),
                Some(reason) => {
                    errors.push(error("sdk", reason));
                    None
                }
            },
            Some(_) => {
                errors.push(error(
                    "sdk",
                    format!("must be a string of 1 to {SDK_MAX} characters"),
                ));
                None
            }
        };
        match (client_id, event_type, event_id, ts_micros, priority) {
            (
                Some(client_id),
                Some(event_type),
                Some(event_id),
                Some(ts_micros),
                Some(priority),
            ) if errors.is_empty() => Ok(Event {
                event_id,
                client_id,
                event_type,
                ts_micros,
                ingested_at_micros: 0,
                priority,
                payload,
                sdk,
                id_origin: Some(id_origin),
            }),
            _ => Err(errors),
        }
    }
}

fn required_string(
    value: Option<Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
    index: usize,
) -> Option<String> {
    let reason = match value {
        Some(Value::String(s)) => return Some(s),
        None => "is required",
        Some(_) => "must be a string",
    };
    errors.push(FieldError {
        index,
        field: field.to_owned(),
        reason: reason.to_owned(),
    });
    None
}

fn check(errors: &mut Vec<FieldError>, index: usize, field: &str, problem: Option<String>) -> bool {
    match problem {
        None => true,
        Some(reason) => {
            errors.push(FieldError {
                index,
                field: field.to_owned(),
                reason,
            });
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(json: &str) -> Result<Vec<Event>, Vec<FieldError>> {
        let items: Vec<&RawValue> = serde_json::from_str(json).unwrap();
        Rules {
            max_payload_bytes: 32,
        }
        .events(&items)
        .map(|valid| valid.events)
    }

    fn fields(errors: Vec<FieldError>) -> Vec<(usize, String)> {
        errors.into_iter().map(|e| (e.index, e.field)).collect()
    }

    #[test]
    fn accepts_a_full_event() {
        let events = validate(
            r#"[{"client_id":"dev-1:a.b_c","type":"click","payload":{"x":[1,2]},
                "event_id":"0190a5e4-7b6c-7cde-8f00-123456789abc","ts":"2026-11-23T10:00:00.5Z",
                "priority":"critical","sdk":"ios/3.2.1","extra":"ignored"}]"#,
        )
        .unwrap();
        let e = &events[0];
        assert_eq!(e.client_id, "dev-1:a.b_c");
        assert_eq!(e.payload, r#"{"x":[1,2]}"#);
        assert_eq!(
            e.event_id.to_string(),
            "0190a5e4-7b6c-7cde-8f00-123456789abc"
        );
        assert_eq!(e.ts_micros, Some(1_795_428_000_500_000));
        assert_eq!(e.priority, Priority::Critical);
        assert_eq!(e.sdk.as_deref(), Some("ios/3.2.1"));
    }

    #[test]
    fn assigns_ids_and_says_which_it_assigned() {
        let items: Vec<&RawValue> = serde_json::from_str(
            r#"[{"client_id":"a","type":"t"},{"client_id":"a","type":"t"},
                {"client_id":"a","type":"t","event_id":"0190a5e4-7b6c-7cde-8f00-123456789abc"}]"#,
        )
        .unwrap();
        let valid = Rules {
            max_payload_bytes: 32,
        }
        .events(&items)
        .unwrap();
        let events = &valid.events;
        assert_eq!(events[0].event_id.get_version_num(), 7);
        assert_ne!(events[0].event_id, events[1].event_id);
        let origins: Vec<_> = events.iter().map(|e| e.id_origin).collect();
        let (gateway, producer) = (Some(IdOrigin::Gateway), Some(IdOrigin::Producer));
        assert_eq!(origins, vec![gateway, gateway, producer]);
        assert_eq!(events[0].payload, "{}");
        assert_eq!(events[0].priority, Priority::Normal);
    }

    #[test]
    fn reports_every_bad_field_of_every_item() {
        let errors = validate(
            r#"[{"client_id":"ok","type":"t"},
                {"type":"t"},
                {"client_id":"bad id!","type":"","event_id":"nope","ts":"yesterday","priority":"urgent"},
                {"client_id":"x","type":"t","payload":{"big":"0123456789012345678901234567890"}},
                42]"#,
        )
        .unwrap_err();
        assert_eq!(
            fields(errors),
            vec![
                (1, "client_id".into()),
                (2, "client_id".into()),
                (2, "type".into()),
                (2, "event_id".into()),
                (2, "ts".into()),
                (2, "priority".into()),
                (3, "payload".into()),
                (4, "".into()),
            ]
        );
    }

    #[test]
    fn the_nil_and_max_uuids_are_not_event_ids() {
        let errors = validate(
            r#"[{"client_id":"a","type":"t","event_id":"00000000-0000-0000-0000-000000000000"},
                {"client_id":"a","type":"t","event_id":"FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"},
                {"client_id":"a","type":"t","event_id":"00000000-0000-0000-0000-000000000001"}]"#,
        )
        .unwrap_err();
        assert_eq!(
            fields(errors),
            vec![(0, "event_id".into()), (1, "event_id".into())]
        );
    }

    #[tokio::test]
    async fn a_batch_checked_in_turns_names_each_item_by_its_place_in_the_request() {
        let bad = [EVENTS_PER_TURN + 1, 2 * EVENTS_PER_TURN + 3];
        let items: Vec<String> = (0..2 * EVENTS_PER_TURN + 5)
            .map(|i| {
                let kind = if bad.contains(&i) { "" } else { "t" };
                format!(r#"{{"client_id":"c{i}","type":"{kind}"}}"#)
            })
            .collect();
        let json = format!("[{}]", items.join(","));
        let items: Vec<&RawValue> = serde_json::from_str(&json).unwrap();
        let rules = Rules {
            max_payload_bytes: 32,
        };
        let errors = rules.events_in_turns(&items).await.unwrap_err();
        assert_eq!(
            fields(errors),
            vec![(bad[0], "type".into()), (bad[1], "type".into())]
        );
        let good: Vec<&RawValue> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| !bad.contains(i))
            .map(|(_, item)| *item)
            .collect();
        let valid = rules.events_in_turns(&good).await.unwrap();
        let clients: Vec<&str> = valid.events.iter().map(|e| e.client_id.as_str()).collect();
        let expected: Vec<String> = (0..2 * EVENTS_PER_TURN + 5)
            .filter(|i| !bad.contains(i))
            .map(|i| format!("c{i}"))
            .collect();
        assert_eq!(clients, expected);
    }

    fn validate_payload(payload: &str) -> Result<Vec<Event>, Vec<FieldError>> {
        let json = format!(
            r#"[{{"client_id":"ok","type":"t"}},{{"client_id":"h","type":"t","payload":{payload}}}]"#
        );
        let items: Vec<&RawValue> = serde_json::from_str(&json).unwrap();
        Rules {
            max_payload_bytes: 65_536,
        }
        .events(&items)
        .map(|valid| valid.events)
    }

    #[test]
    fn refuses_payloads_postgresql_jsonb_would_refuse() {
        for (refused, reason) in [
            (
                r#"{"n":1e999999}"#,
                "number 1e999999 is beyond PostgreSQL's numeric range",
            ),
            (
                r#"{"n":1e131072}"#,
                "number 1e131072 is beyond PostgreSQL's numeric range",
            ),
            (
                r#"{"n":-1e131072}"#,
                "number -1e131072 is beyond PostgreSQL's numeric range",
            ),
            (
                r#"{"n":1e-16384}"#,
                "number 1e-16384 is beyond PostgreSQL's numeric range",
            ),
            (
                r#"{"n":1e-999999}"#,
                "number 1e-999999 is beyond PostgreSQL's numeric range",
            ),
            (
                r#"{"n":0e1073741823}"#,
                "number 0e1073741823 is beyond PostgreSQL's numeric range",
            ),
            (
                r#"{"s":"a\u0000b"}"#,
                r"\u0000 is not allowed in JSON strings (PostgreSQL jsonb cannot store it)",
            ),
            (
                r#"{"\u0000":1}"#,
                r"\u0000 is not allowed in JSON strings (PostgreSQL jsonb cannot store it)",
            ),
            (r#"{"s":"\ud800"}"#, r"unpaired UTF-16 surrogate \ud800"),
            (r#"{"s":"\udc00"}"#, r"unpaired UTF-16 surrogate \udc00"),
            (r#""\u0000""#, r"\u0000 is not allowed"),
        ] {
            let errors = validate_payload(refused).expect_err(refused);
            assert_eq!(
                fields(errors.clone()),
                vec![(1, "payload".into())],
                "{refused}"
            );
            assert!(
                errors[0].reason.starts_with(reason),
                "{refused}: {}",
                errors[0].reason
            );
        }
    }

    #[test]
    fn accepts_payloads_just_inside_postgresql_limits() {
        for accepted in [
            r#"{"n":1e131071}"#,
            r#"{"n":-1e131071}"#,
            r#"{"n":1E+131071}"#,
            r#"{"n":1e-16383}"#,
            r#"{"n":0e1073741822}"#,
            r#"{"n":-0}"#,
            r#"{"s":"\ud83d\ude00","\u0001":"\\u0000"}"#,
        ] {
            let events = validate_payload(accepted).unwrap();
            assert_eq!(events[1].payload, accepted, "stored as sent");
        }
    }

    #[test]
    fn refuses_control_characters_in_sdk() {
        for sdk in [r#""ios\u0000""#, r#""\u001f""#, "\"a\\nb\""] {
            let json = format!(r#"[{{"client_id":"a","type":"t","sdk":{sdk}}}]"#);
            let errors = validate(&json).unwrap_err();
            assert_eq!(errors[0].field, "sdk", "{sdk}");
            assert_eq!(errors[0].reason, "control characters are not allowed");
        }
        // serde_json cannot make a Rust string of a lone surrogate: the item is refused whole.
        let errors = validate(r#"[{"client_id":"a","type":"t","sdk":"\ud800"}]"#).unwrap_err();
        assert_eq!(fields(errors), vec![(0, "".into())]);
        let events =
            validate(r#"[{"client_id":"a","type":"t","sdk":"ios/\u00e9 \ud83d\ude00"}]"#).unwrap();
        assert_eq!(events[0].sdk.as_deref(), Some("ios/é 😀"));
    }

    #[test]
    fn limits_client_id_length() {
        let long = "a".repeat(129);
        let errors = validate(&format!(r#"[{{"client_id":"{long}","type":"t"}}]"#)).unwrap_err();
        assert_eq!(errors[0].reason, "must be 1 to 128 characters");
    }
}
