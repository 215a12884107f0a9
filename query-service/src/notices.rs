//! Follows db-writer's persisted notices (`events-persisted`) from now on, for the pipeline
//! view: the latest batches as they land and rows stored per shard. Advisory, like the
//! notices themselves: nothing else depends on them.

use std::sync::Arc;

use rdkafka::{
    config::ClientConfig,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    Message,
};
use schemas::PersistedCodec;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{pipeline::Pipeline, settings::KafkaSettings};

/// Starts following the notices topic; `None` when notices are off (empty topic name).
/// `base`: the brokers and `kafka.security`, which every client starts from.
pub fn follow(
    base: &ClientConfig,
    kafka: &KafkaSettings,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, KafkaError> {
    if kafka.persisted_topic.is_empty() {
        return Ok(None);
    }
    // A group of its own that never commits: every replica sees every notice from now on.
    let consumer: StreamConsumer = base
        .clone()
        .set(
            "group.id",
            format!(
                "{}-notices-{}",
                kafka.group_prefix,
                uuid::Uuid::new_v4().simple()
            ),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .create()?;
    consumer.subscribe(&[&kafka.persisted_topic])?;
    Ok(Some(tokio::spawn(async move {
        let codec = PersistedCodec::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                message = consumer.recv() => match message {
                    Ok(message) => match message.payload().map(|p| codec.decode(p)) {
                        Some(Ok(batch)) => pipeline.batch_persisted(&batch),
                        _ => warn!("unreadable persisted notice"),
                    },
                    Err(e) => warn!(error = %e, "persisted notices unavailable"),
                },
            }
        }
    })))
}
