//! Records that can never be stored go to the dead-letter topic, whole — original key, value
//! and headers (`traceparent` included) — plus `dlq.*` headers that say where they came from
//! and why they were refused.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::{
    config::ClientConfig,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::{batch::Poison, metrics};

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

/// Why a record was refused, beyond its class.
pub const HEADER_SQLSTATE: &str = "dlq.error.sqlstate";

impl DeadLetters {
    /// `kafka`: the brokers and `kafka.security`, which every client starts from.
    pub fn new(kafka: &ClientConfig, topic: &str) -> Result<Self, KafkaError> {
        let producer = kafka
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(DeadLetters {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Publishes every poison record and waits for the acknowledgements; only then may
    /// their offsets be committed.
    pub async fn publish(&self, poisons: &[(Poison, Option<String>)]) -> Result<(), KafkaError> {
        let sends = poisons.iter().map(|(p, sqlstate)| {
            let partition = p.position.partition.to_string();
            let offset = p.position.offset.to_string();
            let mut headers = OwnedHeaders::new_with_capacity(p.raw.headers.len() + 6);
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
            let mut record = FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = &p.raw.key {
                record = record.key(key.as_slice());
            }
            if let Some(value) = &p.raw.value {
                record = record.payload(value.as_slice());
            }
            let send = self.producer.send(record, Duration::from_secs(5));
            async move { send.await.map_err(|(e, _)| e) }
        });
        try_join_all(sends).await?;
        for (p, _) in poisons {
            metrics::DEAD_LETTERS
                .with_label_values(&[p.error_class])
                .inc();
        }
        Ok(())
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
