//! The group consumer, what it learns from rebalances, and how a message becomes a record.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use chassis::kafka_headers;
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{Headers, Message, OwnedMessage, Timestamp},
    ClientContext,
};
use schemas::{contract, headers, EventCodec, LogClock, TickCodec};
use tracing::info;

use crate::{
    batch::{Poison, Raw, Record},
    settings::{GroupProtocol, KafkaSettings},
};
use event_store::{KafkaPosition, StoredEvent};

/// Collects partitions taken away by a rebalance. The callback runs inside `recv()`, on the
/// writer's own task, so the run loop sees the list before it handles the next message.
#[derive(Default)]
pub struct WriterContext {
    revoked: Mutex<Vec<(String, i32)>>,
    /// Set once the group has handed this member an assignment (possibly empty).
    joined: AtomicBool,
    /// Set by every assignment, until the run loop has seen it.
    assigned: AtomicBool,
}

impl WriterContext {
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Whether partitions were assigned since the last call.
    pub fn take_assigned(&self) -> bool {
        self.assigned.swap(false, Ordering::Relaxed)
    }

    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }
}

impl ClientContext for WriterContext {}

impl ConsumerContext for WriterContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let partitions: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                info!(
                    count = partitions.len(),
                    topic = partitions.first().map_or("", |(t, _)| t.as_str()),
                    "partitions revoked"
                );
                if let Ok(mut revoked) = self.revoked.lock() {
                    revoked.extend(partitions);
                }
            }
            // Each lane's member subscribes to one topic: the topic names the lane.
            Rebalance::Assign(tpl) => info!(
                count = tpl.count(),
                topic = tpl.elements().first().map_or("", |e| e.topic()),
                "partitions assigned"
            ),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.joined.store(true, Ordering::Relaxed);
            self.assigned.store(true, Ordering::Relaxed);
        }
    }
}

pub type WriterConsumer = StreamConsumer<WriterContext>;

/// When the broker answers a lane's fetch: once `min_bytes` are ready, or after `wait`.
#[derive(Debug, Clone, Copy)]
pub struct FetchWait {
    pub min_bytes: u32,
    pub wait: Duration,
}

impl FetchWait {
    /// The critical lane's: whatever arrived, at once.
    pub const AT_ONCE: FetchWait = FetchWait {
        min_bytes: 1,
        wait: Duration::from_millis(500),
    };
}

/// A member of the writer's group subscribed to `topic` alone (one per lane). `kafka`: the
/// brokers and `kafka.security`, which every client starts from. `client_id` names the
/// process, so that its lanes' members show as one writer (unless `kafka.security.properties`
/// sets one).
pub fn create(
    kafka: &ClientConfig,
    settings: &KafkaSettings,
    topic: &str,
    client_id: &str,
    fetch: FetchWait,
) -> Result<Arc<WriterConsumer>, KafkaError> {
    let mut config = kafka.clone();
    if config.get("client.id").is_none() {
        config.set("client.id", client_id);
    }
    config
        .set("group.id", &settings.group_id)
        // Offsets are committed by hand, after the rows are in PostgreSQL.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    match settings.group_protocol {
        GroupProtocol::Classic => {
            config
                // Moving one partition does not stop the others.
                .set("partition.assignment.strategy", "cooperative-sticky")
                .set(
                    "session.timeout.ms",
                    settings.session_timeout.as_millis().to_string(),
                )
                .set(
                    "heartbeat.interval.ms",
                    settings.heartbeat_interval.as_millis().to_string(),
                );
        }
        // The broker assigns, incrementally; librdkafka refuses the classic properties.
        GroupProtocol::Consumer => {
            config.set("group.protocol", "consumer");
        }
    }
    let consumer: WriterConsumer = config
        .set(
            "topic.metadata.refresh.interval.ms",
            settings.metadata_refresh.as_millis().to_string(),
        )
        // Bounds what librdkafka prefetches while a batch is being written.
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.min.bytes", fetch.min_bytes.to_string())
        .set("fetch.wait.max.ms", fetch.wait.as_millis().to_string())
        .create_with_context(WriterContext::default())?;
    consumer.subscribe(&[topic])?;
    Ok(Arc::new(consumer))
}

/// Decoders of what the event topics carry.
#[derive(Default)]
pub struct Decoder {
    events: EventCodec,
    ticks: TickCodec,
}

impl Decoder {
    /// Decodes a message into a record and advances its partition's clock over it. What
    /// cannot be decoded is kept whole for the dead-letter topic and leaves the clock alone,
    /// as it does for every other consumer.
    pub fn record(&self, message: OwnedMessage, clock: &mut LogClock) -> Record {
        let position = KafkaPosition {
            topic: message.topic().into(),
            partition: message.partition(),
            offset: message.offset(),
        };
        // Only for a tick's value or an event older than v3 (`kafka_headers::pairs`).
        let header_pairs = || kafka_headers::pairs(&message);
        let decoded = match message.payload() {
            None | Some([]) => Err(("empty", "message has no value".to_owned())),
            Some(value)
                if self
                    .ticks
                    .is_tick(value, || headers::marks_tick(header_pairs())) =>
            {
                self.ticks
                    .decode(value)
                    .map(|tick| Err(tick.at))
                    .map_err(|e| ("undecodable", format!("tick: {e}")))
            }
            Some(value) => match self.events.decode(value) {
                // Checked before anything of it is stored or moves the clock: query-service
                // skips the same records (`contract`).
                Ok(event) => contract::check_record(&event, message.key(), create_time(&message))
                    .map(|()| Ok(event))
                    .map_err(|v| (INVALID, v.to_string())),
                Err(e) => Err(("undecodable", e.to_string())),
            },
        };
        match decoded {
            Ok(Ok(event)) => {
                let id_assigned = event.id_assigned(|| headers::marks_gateway_id(header_pairs()));
                let ordered_at_micros = clock.observe(event.ingested_at_micros);
                Record::Event {
                    event: StoredEvent {
                        event,
                        position,
                        ordered_at_micros,
                        id_assigned,
                    },
                    raw: raw(message),
                }
            }
            Ok(Err(tick_at)) => Record::Tick {
                position,
                clock: clock.observe(tick_at),
            },
            Err((error_class, error)) => Record::Poison {
                poison: Poison {
                    position,
                    raw: raw(message),
                    error_class,
                    error,
                },
                clock: clock.latest(),
            },
        }
    }
}

/// `dlq.error.class` of a record that decodes but breaks the topics' contract.
pub const INVALID: &str = "invalid-record";

/// The producer's time of the record; `None` when the topic stamps records itself.
fn create_time(message: &OwnedMessage) -> Option<i64> {
    match message.timestamp() {
        Timestamp::CreateTime(ms) => Some(ms),
        Timestamp::LogAppendTime(_) | Timestamp::NotAvailable => None,
    }
}

fn raw(message: OwnedMessage) -> Raw {
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    Raw {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders};
    use schemas::{Event, IdOrigin, Priority};
    use uuid::Uuid;

    use super::*;

    const AT: i64 = 1_763_000_000_123_456;

    fn event(payload: &str, ingested_at_micros: i64) -> Event {
        Event {
            event_id: Uuid::now_v7(),
            client_id: "c".into(),
            event_type: "t".into(),
            ts_micros: None,
            ingested_at_micros,
            priority: Priority::Normal,
            payload: payload.into(),
            sdk: None,
            id_origin: None,
        }
    }

    fn message(event: &Event, key: Option<&str>) -> OwnedMessage {
        OwnedMessage::new(
            Some(EventCodec::new().encode(event).unwrap()),
            key.map(|k| k.as_bytes().to_vec()),
            "events".into(),
            Timestamp::CreateTime(AT / 1_000),
            0,
            7,
            None,
        )
    }

    /// The class and message of a poison record, and the clock after it.
    fn refused(message: OwnedMessage, clock: &mut LogClock) -> (&'static str, String) {
        match Decoder::default().record(message, clock) {
            Record::Poison { poison, .. } => (poison.error_class, poison.error),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn an_event_as_the_gateway_writes_it_is_taken() {
        let mut clock = LogClock::default();
        let record = Decoder::default().record(message(&event("{}", AT), Some("c")), &mut clock);
        assert!(matches!(record, Record::Event { .. }), "{record:?}");
        assert_eq!(clock.latest(), Some(AT));
    }

    /// Written around the gateway, each of these was stored, or stalled the writer on
    /// PostgreSQL's stack depth error (54001, retried for ever), or held the partition's clock
    /// in the year 9999.
    #[test]
    fn records_that_break_the_contract_are_refused_and_leave_the_clock_alone() {
        let deep = format!("{}1{}", "[".repeat(30_000), "]".repeat(30_000));
        for (message, reason) in [
            (
                message(&event(&deep, AT), Some("c")),
                "payload: nests deeper",
            ),
            (message(&event("{}", AT), Some("d")), "key:"),
            (message(&event("{}", AT), None), "key:"),
            (
                message(&event("{}", 253_402_300_799_000_000), Some("c")),
                "ingested_at:",
            ),
        ] {
            let mut clock = LogClock::resume(Some(AT - 1));
            let (class, error) = refused(message, &mut clock);
            assert_eq!(class, INVALID);
            assert!(error.starts_with(reason), "{error}");
            assert_eq!(clock.latest(), Some(AT - 1), "{error}");
        }
    }

    /// A v3 value says who chose the id; a record written before v3 says it in a header.
    #[test]
    fn the_value_says_who_chose_the_id_and_an_older_record_its_header() {
        let id_assigned = |value: Vec<u8>, mark: bool| {
            let headers = mark.then(|| {
                OwnedHeaders::new().insert(Header {
                    key: headers::ID_ORIGIN,
                    value: Some(headers::ID_ORIGIN_GATEWAY),
                })
            });
            let message = OwnedMessage::new(
                Some(value),
                Some(b"c".to_vec()),
                "events".into(),
                Timestamp::CreateTime(AT / 1_000),
                0,
                7,
                headers,
            );
            match Decoder::default().record(message, &mut LogClock::default()) {
                Record::Event { event, .. } => event.id_assigned,
                other => panic!("not an event: {other:?}"),
            }
        };
        let codec = EventCodec::new();
        let gateway = Event {
            id_origin: Some(IdOrigin::Gateway),
            ..event("{}", AT)
        };
        let producer = Event {
            id_origin: Some(IdOrigin::Producer),
            ..event("{}", AT)
        };
        assert!(id_assigned(codec.encode(&gateway).unwrap(), false));
        assert!(
            !id_assigned(codec.encode(&producer).unwrap(), true),
            "a v3 value decides, not a header"
        );
        let v2 = codec.version(2).unwrap();
        assert!(id_assigned(codec.encode_as(&producer, v2).unwrap(), true));
        assert!(!id_assigned(codec.encode_as(&gateway, v2).unwrap(), false));
    }

    /// A tick value marked as one moves the clock; unmarked, it is no event either.
    #[test]
    fn a_tick_is_a_tick_value_marked_as_one() {
        let value = TickCodec::default()
            .encode(&schemas::Tick {
                at: AT,
                gateway: "gw".into(),
            })
            .unwrap();
        let message = |marked: bool| {
            OwnedMessage::new(
                Some(value.clone()),
                None,
                "events".into(),
                Timestamp::CreateTime(AT / 1_000),
                0,
                7,
                marked.then(|| {
                    OwnedHeaders::new().insert(Header {
                        key: headers::KIND,
                        value: Some(headers::KIND_TICK),
                    })
                }),
            )
        };
        let mut clock = LogClock::default();
        let record = Decoder::default().record(message(true), &mut clock);
        assert!(matches!(record, Record::Tick { .. }), "{record:?}");
        assert_eq!(clock.latest(), Some(AT));
        let (class, error) = refused(message(false), &mut clock);
        assert_eq!(class, "undecodable");
        assert!(
            error.contains("unknown writer schema fingerprint"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_value_is_empty() {
        let empty = OwnedMessage::new(
            Some(Vec::new()),
            None,
            "events".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        assert_eq!(refused(empty, &mut LogClock::default()).0, "empty");
    }
}
