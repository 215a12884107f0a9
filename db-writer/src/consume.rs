//! The group consumer and what it learns from rebalances.

use std::sync::{Arc, Mutex};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Message},
    ClientContext,
};
use schemas::EventCodec;
use tracing::info;

use crate::{
    batch::{Poison, Record},
    settings::KafkaSettings,
};
use event_store::{KafkaPosition, StoredEvent};

/// Collects partitions taken away by a rebalance. The callback runs inside `recv()`, on the
/// writer's own task, so the run loop sees the list before it handles the next message.
#[derive(Default)]
pub struct WriterContext {
    revoked: Mutex<Vec<(String, i32)>>,
}

impl WriterContext {
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        self.revoked
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
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
}

pub type WriterConsumer = StreamConsumer<WriterContext>;

pub fn create(settings: &KafkaSettings) -> Result<Arc<WriterConsumer>, KafkaError> {
    let consumer: WriterConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
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

/// Decodes a message into a row, or keeps it whole for the dead-letter topic.
pub fn to_record(codec: &EventCodec, message: &BorrowedMessage<'_>) -> Record {
    let position = KafkaPosition {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    };
    let decoded = match message.payload() {
        Some(value) => codec
            .decode(value)
            .map_err(|e| ("undecodable", e.to_string())),
        None => Err(("empty", "message has no value".to_owned())),
    };
    match decoded {
        Ok(event) => Record::Event(StoredEvent { event, position }),
        Err((error_class, error)) => Record::Poison(Poison {
            topic: position.topic,
            partition: position.partition,
            offset: position.offset,
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            error_class,
            error,
        }),
    }
}
