use std::{fmt, str::FromStr};

use uuid::Uuid;

/// One accepted event, as every service sees it after decoding.
///
/// Times are microseconds since the Unix epoch, the precision of both Avro's
/// `timestamp-micros` and PostgreSQL's `timestamptz`, so a value survives the trip unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Idempotency key: one row per id, however often it is delivered.
    pub event_id: Uuid,
    /// Kafka message key and shard key.
    pub client_id: String,
    pub event_type: String,
    /// Device time as the producer reported it.
    pub ts_micros: Option<i64>,
    /// Gateway time of acceptance; the base of the order key (`order::LogClock`).
    pub ingested_at_micros: i64,
    pub priority: Priority,
    /// The producer's payload, JSON text validated by the gateway.
    pub payload: String,
    /// Producer SDK or app version (schema v2; `None` when written with v1).
    pub sdk: Option<String>,
    /// Who chose `event_id` (schema v3). `None` for a record written with v1 or v2, which
    /// carries it in the `eventpipe-id-origin` header instead (`headers::ID_ORIGIN`), and for
    /// an event read from a shard, which does not keep it.
    pub id_origin: Option<IdOrigin>,
}

/// Who chose an event's id. A gateway-assigned id is a fresh UUIDv7 and cannot repeat an
/// earlier event, so readers skip the duplicate check for it; a producer's own id may repeat
/// one stored long ago (a device retrying), so readers check it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IdOrigin {
    #[default]
    Producer,
    Gateway,
}

impl Event {
    /// Whether the gateway assigned `event_id`: from the value where its schema has the field
    /// (v3), else from the `eventpipe-id-origin` header, which `header_says_gateway` reads
    /// only then. Consumers ask the value first because parsing a record's headers
    /// (librdkafka allocates them on the first look) cost readers ~6 % of their CPU per event.
    pub fn id_assigned(&self, header_says_gateway: impl FnOnce() -> bool) -> bool {
        match self.id_origin {
            Some(origin) => origin == IdOrigin::Gateway,
            None => header_says_gateway(),
        }
    }
}

/// Urgency lane of an event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Normal,
    Critical,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown priority {0:?}: expected \"normal\" or \"critical\"")]
pub struct PriorityParseError(String);

impl FromStr for Priority {
    type Err = PriorityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(Priority::Normal),
            "critical" => Ok(Priority::Critical),
            other => Err(PriorityParseError(other.to_owned())),
        }
    }
}

/// Events of any shape for the property tests: `text` for every string field, any id, any
/// times, either priority.
#[cfg(test)]
pub(crate) fn arbitrary_events<T>(text: T) -> impl proptest::strategy::Strategy<Value = Event>
where
    T: proptest::strategy::Strategy<Value = String> + Clone,
{
    use proptest::prelude::*;
    (
        any::<u128>(),
        text.clone(),
        text.clone(),
        proptest::option::of(any::<i64>()),
        any::<i64>(),
        any::<bool>(),
        text.clone(),
        proptest::option::of(text),
        any::<bool>(),
    )
        .prop_map(
            |(id, client, kind, ts, at, critical, payload, sdk, assigned)| Event {
                event_id: Uuid::from_u128(id),
                client_id: client,
                event_type: kind,
                ts_micros: ts,
                ingested_at_micros: at,
                priority: if critical {
                    Priority::Critical
                } else {
                    Priority::Normal
                },
                payload,
                sdk,
                id_origin: Some(if assigned {
                    IdOrigin::Gateway
                } else {
                    IdOrigin::Producer
                }),
            },
        )
}
