//! Records that can never be stored go to the dead-letter topic, whole — original key, value
//! and headers (`traceparent` included) — plus `dlq.*` headers that say where they came from
//! and why they were refused.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::{
    config::ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use tracing::warn;

use crate::{batch::Poison, metrics};

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

/// Why a record was refused, beyond its class.
pub const HEADER_SQLSTATE: &str = "dlq.error.sqlstate";
/// Set (to the value's size in bytes) on a dead letter that carries no value because the
/// dead-letter topic refused it as too large.
pub const HEADER_VALUE_OMITTED: &str = "dlq.value.omitted";

impl DeadLetters {
    /// `kafka`: the brokers and `kafka.security`, which every client starts from.
    pub fn new(kafka: &ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        let producer = kafka
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            // The topic's limit decides what is too large (`publish_one`), not librdkafka's
            // lower default: records of the event topics may be as large as those allow.
            .set("message.max.bytes", "67108864")
            .create()?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Publishes every poison record and waits for the acknowledgements; only then may
    /// their offsets be committed.
    pub async fn publish(&self, poisons: &[(Poison, Option<String>)]) -> Result<(), KafkaError> {
        let sends = poisons
            .iter()
            .map(|(poison, sqlstate)| self.publish_one(poison, sqlstate.as_deref()));
        try_join_all(sends).await?;
        for (p, _) in poisons {
            metrics::DEAD_LETTERS
                .with_label_values(&[p.error_class])
                .inc();
        }
        Ok(())
    }

    /// A record that fits its own topic can be too large for this one once the `dlq.*`
    /// headers are added. Refusing it would stop the writer at that record for good (it is
    /// re-read after every restart), so it is dead-lettered without its value, with a header
    /// saying so: the source position still finds it while its topic retains it.
    async fn publish_one(&self, p: &Poison, sqlstate: Option<&str>) -> Result<(), KafkaError> {
        match self.send(p, sqlstate, false).await {
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                warn!(
                    topic = %p.position.topic,
                    partition = p.position.partition,
                    offset = p.position.offset,
                    "record too large for the dead-letter topic; dead-lettered without its value"
                );
                self.send(p, sqlstate, true).await
            }
            sent => sent,
        }
    }

    async fn send(
        &self,
        p: &Poison,
        sqlstate: Option<&str>,
        omit_value: bool,
    ) -> Result<(), KafkaError> {
        let partition = p.position.partition.to_string();
        let offset = p.position.offset.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(p.raw.headers.len() + 7);
        for (key, value) in &p.raw.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        headers = headers
            .insert(header("dlq.source.topic", &p.position.topic))
            .insert(header("dlq.source.partition", &partition))
            .insert(header("dlq.source.offset", &offset))
            .insert(header("dlq.error.class", p.error_class))
            .insert(header("dlq.error.message", &p.error));
        if let Some(sqlstate) = sqlstate {
            headers = headers.insert(header(HEADER_SQLSTATE, sqlstate));
        }
        let omitted = p.raw.value.as_ref().map(|v| v.len().to_string());
        if let (true, Some(bytes)) = (omit_value, &omitted) {
            headers = headers.insert(header(HEADER_VALUE_OMITTED, bytes));
        }
        let mut record = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = &p.raw.key {
            record = record.key(key.as_slice());
        }
        if let (false, Some(value)) = (omit_value, &p.raw.value) {
            record = record.payload(value.as_slice());
        }
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
