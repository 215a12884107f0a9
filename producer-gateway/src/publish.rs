//! Publishing validated events to Kafka and waiting for the brokers' acknowledgements.

use std::time::Duration;

use futures::future::join_all;
use rdkafka::{
    config::ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};
use schemas::{Event, EventCodec, Priority};
use tracing::warn;

use crate::settings::KafkaSettings;

/// Where the brokers stored one event.
#[derive(Debug, Clone)]
pub struct Ack {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The local producer queue is full: the brokers are slower than the producers.
    #[error("producer queue is full")]
    QueueFull,
    /// The brokers did not acknowledge within the delivery timeout.
    #[error("brokers did not acknowledge in time: {0}")]
    NotAcknowledged(KafkaError),
    #[error("event could not be encoded: {0}")]
    Encode(#[from] schemas::EncodeError),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}")]
pub struct ProducerError(#[from] KafkaError);

/// One urgency lane: its topic and a producer tuned for it.
struct Lane {
    topic: String,
    producer: FutureProducer,
}

pub struct Publisher {
    normal: Lane,
    critical: Lane,
    codec: EventCodec,
    /// Upper bound on waiting for acknowledgements: librdkafka fails a message after
    /// `message.timeout.ms`; this margin only guards against a lost callback.
    ack_deadline: Duration,
}

impl Publisher {
    pub fn new(settings: &KafkaSettings) -> Result<Self, ProducerError> {
        Ok(Publisher {
            normal: Lane {
                topic: settings.topic.clone(),
                producer: producer(settings, settings.linger)?,
            },
            critical: Lane {
                topic: settings.critical_topic.clone(),
                producer: producer(settings, settings.critical_linger)?,
            },
            codec: EventCodec::new(),
            ack_deadline: settings.delivery_timeout + Duration::from_secs(2),
        })
    }

    fn lane(&self, priority: Priority) -> &Lane {
        match priority {
            Priority::Normal => &self.normal,
            Priority::Critical => &self.critical,
        }
    }

    /// Enqueues every event, then waits until the brokers acknowledged all of them.
    /// On error some events may still be stored: producers retry with their own `event_id`
    /// to stay exactly-once.
    pub async fn publish(
        &self,
        events: &[Event],
        traceparent: Option<&str>,
    ) -> Result<Vec<Ack>, PublishError> {
        let mut pending = Vec::with_capacity(events.len());
        let mut value = Vec::new();
        for event in events {
            value.clear();
            self.codec.encode_into(event, &mut value)?;
            let lane = self.lane(event.priority);
            let topic = lane.topic.as_str();
            let mut record = FutureRecord::to(topic)
                .key(event.client_id.as_str())
                .payload(value.as_slice())
                .timestamp(event.ingested_at_micros / 1_000);
            if let Some(traceparent) = traceparent {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "traceparent",
                    value: Some(traceparent),
                }));
            }
            match lane.producer.send_result(record) {
                Ok(delivery) => pending.push((topic, delivery)),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(PublishError::QueueFull)
                }
                Err((e, _)) => return Err(PublishError::NotAcknowledged(e)),
            }
        }
        let (topics, deliveries): (Vec<&str>, Vec<_>) = pending.into_iter().unzip();
        let results = tokio::time::timeout(self.ack_deadline, join_all(deliveries))
            .await
            .map_err(|_| PublishError::NotAcknowledged(KafkaError::Canceled))?;
        topics
            .into_iter()
            .zip(results)
            .map(|(topic, result)| match result {
                Ok(Ok(delivery)) => Ok(Ack {
                    topic: topic.to_owned(),
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Ok(Err((e, _))) => Err(PublishError::NotAcknowledged(e)),
                Err(_canceled) => Err(PublishError::NotAcknowledged(KafkaError::Canceled)),
            })
            .collect()
    }

    /// Waits for every queued message to be acknowledged, up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        for lane in [&self.normal, &self.critical] {
            if let Err(e) = lane.producer.flush(timeout) {
                warn!(topic = %lane.topic, error = %e, "producer flush at shutdown did not complete");
            }
        }
    }
}

fn producer(settings: &KafkaSettings, linger: Duration) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        // Exactly-once per partition from the producer: retries never duplicate or reorder.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Same placement as Kafka's Java clients for the same key.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", linger.as_millis().to_string())
        .set(
            "queue.buffering.max.messages",
            settings.queue_max_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            settings.queue_max_kbytes.to_string(),
        )
        .set(
            "message.timeout.ms",
            settings.delivery_timeout.as_millis().to_string(),
        )
        .set("compression.type", &settings.compression)
        .set(
            "topic.metadata.refresh.interval.ms",
            settings.metadata_refresh.as_millis().to_string(),
        )
        .set("batch.num.messages", "10000")
        .create()
}
