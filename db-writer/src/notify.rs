//! After a commit, tells the read side and dashboards which events are now in PostgreSQL.
//! Advisory: readers also follow the committed offsets, so a lost notice delays nothing
//! beyond their next offset poll. It is therefore sent without waiting, from a bounded queue.

use std::time::Duration;

use rdkafka::{
    config::ClientConfig,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use schemas::{headers, PersistedBatch, PersistedCodec, WriterReport, WriterReportCodec};
use tracing::warn;

use crate::metrics;

pub struct Notifier {
    producer: FutureProducer,
    topic: String,
    codec: PersistedCodec,
    reports: WriterReportCodec,
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
            reports: WriterReportCodec::default(),
        }))
    }

    pub fn batch_persisted(&self, batch: &PersistedBatch) {
        match self.codec.encode(batch) {
            Ok(payload) => self.send(
                FutureRecord::to(&self.topic).key(batch.batch_id.as_str()),
                &payload,
            ),
            Err(e) => warn!(error = %e, "persisted notice could not be encoded"),
        }
    }

    /// The partitions this writer owns, on the same topic (keyed by the writer, so a
    /// writer's reports stay in order).
    pub fn writer_report(&self, report: &WriterReport) {
        match self.reports.encode(report) {
            Ok(payload) => {
                let kind = OwnedHeaders::new().insert(Header {
                    key: headers::KIND,
                    value: Some(headers::KIND_WRITER_REPORT),
                });
                let record = FutureRecord::to(&self.topic)
                    .key(report.writer.as_str())
                    .headers(kind);
                self.send(record, &payload)
            }
            Err(e) => warn!(error = %e, "writer report could not be encoded"),
        }
    }

    fn send(&self, record: FutureRecord<'_, str, [u8]>, payload: &[u8]) {
        match self.producer.send_result(record.payload(payload)) {
            Ok(delivery) => {
                tokio::spawn(async move {
                    if !matches!(delivery.await, Ok(Ok(_))) {
                        metrics::NOTICES_LOST.inc();
                    }
                });
            }
            Err((e, _)) => {
                metrics::NOTICES_LOST.inc();
                warn!(error = %e, "notice dropped");
            }
        }
    }

    pub fn flush(&self) {
        let _ = rdkafka::producer::Producer::flush(&self.producer, Duration::from_secs(5));
    }
}
