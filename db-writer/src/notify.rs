//! After a commit, tells the read side and dashboards which events are now in PostgreSQL.
//! Advisory: readers also follow the committed offsets, so a lost notice delays nothing
//! beyond their next offset poll. It is therefore sent without waiting, from a bounded queue.

use std::time::Duration;

use rdkafka::{
    config::ClientConfig,
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
};
use schemas::{PersistedBatch, PersistedCodec};
use tracing::warn;

use crate::metrics;

pub struct Notifier {
    producer: FutureProducer,
    topic: String,
    codec: PersistedCodec,
}

impl Notifier {
    /// `None` when `topic` is empty: notifications are off.
    /// `kafka`: the brokers and `kafka.security`, which every client starts from.
    pub fn new(
        kafka: &ClientConfig,
        topic: &str,
        linger: Duration,
    ) -> Result<Option<Self>, KafkaError> {
        if topic.is_empty() {
            return Ok(None);
        }
        let producer = kafka
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", linger.as_millis().to_string())
            .set("queue.buffering.max.messages", "10000")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Some(Notifier {
            producer,
            topic: topic.to_owned(),
            codec: PersistedCodec::default(),
        }))
    }

    pub fn batch_persisted(&self, batch: &PersistedBatch) {
        let payload = match self.codec.encode(batch) {
            Ok(payload) => payload,
            Err(e) => {
                warn!(error = %e, "persisted notice could not be encoded");
                return;
            }
        };
        let record = FutureRecord::to(&self.topic)
            .key(batch.batch_id.as_str())
            .payload(payload.as_slice());
        match self.producer.send_result(record) {
            Ok(delivery) => {
                tokio::spawn(async move {
                    if !matches!(delivery.await, Ok(Ok(_))) {
                        metrics::NOTICES_LOST.inc();
                    }
                });
            }
            Err((e, _)) => {
                metrics::NOTICES_LOST.inc();
                warn!(error = %e, "persisted notice dropped");
            }
        }
    }

    pub fn flush(&self) {
        let _ = rdkafka::producer::Producer::flush(&self.producer, Duration::from_secs(5));
    }
}
