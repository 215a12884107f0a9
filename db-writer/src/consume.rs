//! The group consumer, what it learns from rebalances, and how a message becomes a record.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{Headers, Message, OwnedMessage},
    ClientContext,
};
use schemas::{headers, EventCodec, LogClock, TickCodec};
use tracing::info;

use crate::{
    batch::{Poison, Raw, Record},
    settings::KafkaSettings,
};
use event_store::{KafkaPosition, StoredEvent};

/// Collects partitions taken away by a rebalance. The callback runs inside `recv()`, on the
/// writer's own task, so the run loop sees the list before it handles the next message.
#[derive(Default)]
pub struct WriterContext {
    revoked: Mutex<Vec<(String, i32)>>,
    /// Set once the group has handed this member an assignment (possibly empty).
    joined: AtomicBool,
}

impl WriterContext {
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
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
                info!(count = partitions.len(), "partitions revoked");
                if let Ok(mut revoked) = self.revoked.lock() {
                    revoked.extend(partitions);
                }
            }
            Rebalance::Assign(tpl) => info!(count = tpl.count(), "partitions assigned"),
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.joined.store(true, Ordering::Relaxed);
        }
    }
}

pub type WriterConsumer = StreamConsumer<WriterContext>;

/// `kafka`: the brokers and `kafka.security`, which every client starts from.
pub fn create(
    kafka: &ClientConfig,
    settings: &KafkaSettings,
) -> Result<Arc<WriterConsumer>, KafkaError> {
    let consumer: WriterConsumer = kafka
        .clone()
        .set("group.id", &settings.group_id)
        // Offsets are committed by hand, after the rows are in PostgreSQL.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Moving one partition does not stop the others.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set(
            "topic.metadata.refresh.interval.ms",
            settings.metadata_refresh.as_millis().to_string(),
        )
        // Bounds what librdkafka prefetches while a batch is being written.
        .set("queued.max.messages.kbytes", "65536")
        .create_with_context(WriterContext::default())?;
    consumer.subscribe(&[&settings.topic, &settings.critical_topic])?;
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
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        };
        let is_tick = message.headers().is_some_and(|h| {
            h.iter()
                .any(|h| h.key == headers::KIND && h.value == Some(headers::KIND_TICK.as_bytes()))
        });
        let decoded = match message.payload() {
            None => Err(("empty", "message has no value".to_owned())),
            Some(value) if is_tick => self
                .ticks
                .decode(value)
                .map(|tick| Err(tick.at))
                .map_err(|e| ("undecodable", format!("tick: {e}"))),
            Some(value) => self
                .events
                .decode(value)
                .map(Ok)
                .map_err(|e| ("undecodable", e.to_string())),
        };
        match decoded {
            Ok(Ok(event)) => {
                let ordered_at_micros = clock.observe(event.ingested_at_micros);
                Record::Event {
                    event: StoredEvent {
                        event,
                        position,
                        ordered_at_micros,
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
