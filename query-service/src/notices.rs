//! Follows db-writer's persisted notices (`events-persisted`) from the replica's start on, for
//! the pipeline view: the latest batches as they land, rows stored per shard, and the
//! writers' reports of the partitions they own. Advisory, like the notices themselves:
//! nothing else depends on them.
//!
//! The partitions are assigned, not subscribed to, at the end offsets read before `follow`
//! returns: a subscription starts where the group's first assignment finds the ends, which on
//! a loaded broker can be seconds later, and the notices of those seconds were never seen
//! (their rows missing from the view for good). Partitions added later are followed from
//! their beginning.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use rdkafka::{
    config::ClientConfig,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    Message, Offset, TopicPartitionList,
};
use schemas::{PersistedCodec, WriterReportCodec};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{pipeline::Pipeline, settings::KafkaSettings};

/// How long a metadata or offsets request may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the topic's partitions are read again (partitions added by an operator).
const PARTITIONS_EVERY: Duration = Duration::from_secs(30);
/// Notices reach the pipeline view within about this (librdkafka `fetch.wait.max.ms`)...
const NOTICES_FETCH_WAIT_MS: u32 = 250;
/// ... or as soon as this many bytes of them wait (`fetch.min.bytes`).
const NOTICES_FETCH_MIN_BYTES: u32 = 1 << 20;

/// Starts following the notices topic; `None` when notices are off (empty topic name).
/// `base`: the brokers and `kafka.security`, which every client starts from.
pub async fn follow(
    base: &ClientConfig,
    kafka: &KafkaSettings,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, KafkaError> {
    if kafka.persisted_topic.is_empty() {
        return Ok(None);
    }
    // Never joins its group (assigned) nor commits: the id only names the client.
    let consumer: Arc<StreamConsumer> = Arc::new(
        base.clone()
            .set(
                "group.id",
                format!(
                    "{}-notices-{}",
                    kafka.group_prefix,
                    uuid::Uuid::new_v4().simple()
                ),
            )
            .set("enable.auto.commit", "false")
            // The view is advisory: a fetch answered per notice (one per committed batch, a
            // few hundred a second) was work for the broker and this replica that no reader
            // needs. The broker holds a fetch until it has this much or this long passed.
            .set("fetch.min.bytes", NOTICES_FETCH_MIN_BYTES.to_string())
            .set("fetch.wait.max.ms", NOTICES_FETCH_WAIT_MS.to_string())
            .create()?,
    );
    let topic = kafka.persisted_topic.clone();
    let mut followed = BTreeSet::new();
    // A failure here leaves it to the next reading of the partitions, from the ends then.
    if let Err(e) = assign_new(&consumer, &topic, &mut followed).await {
        warn!(error = %e, "persisted notices not followed yet");
    }
    if !followed.is_empty() {
        pipeline.following_reports();
    }
    Ok(Some(tokio::spawn(async move {
        let codec = PersistedCodec::default();
        let reports = WriterReportCodec::default();
        let mut partitions_due = tokio::time::interval(PARTITIONS_EVERY);
        partitions_due.reset();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = partitions_due.tick() => {
                    if let Err(e) = assign_new(&consumer, &topic, &mut followed).await {
                        warn!(error = %e, "cannot read the persisted notices' partitions");
                    }
                    if !followed.is_empty() {
                        pipeline.following_reports();
                    }
                }
                message = consumer.recv() => match message {
                    Ok(message) => match message.payload() {
                        Some(value) if reports.is_report(value) => match reports.decode(value) {
                            Ok(report) => pipeline.writer_reported(report),
                            Err(e) => warn!(error = %e, "unreadable writer report"),
                        },
                        Some(value) => match codec.decode(value) {
                            Ok(batch) => pipeline.batch_persisted(&batch),
                            Err(e) => warn!(error = %e, "unreadable persisted notice"),
                        },
                        None => warn!("empty persisted notice"),
                    },
                    Err(e) => warn!(error = %e, "persisted notices unavailable"),
                },
            }
        }
    })))
}

/// Assigns the partitions of `topic` not `followed` yet: at their end offsets now when none
/// is followed (the start), from their beginning when they were added since.
async fn assign_new(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    followed: &mut BTreeSet<i32>,
) -> Result<(), KafkaError> {
    let (consumer_now, topic_now, known) = (consumer.clone(), topic.to_owned(), followed.clone());
    let new =
        tokio::task::spawn_blocking(move || new_partitions(&consumer_now, &topic_now, &known))
            .await
            .map_err(|_| KafkaError::Canceled)??;
    if new.count() == 0 {
        return Ok(());
    }
    consumer.incremental_assign(&new)?;
    followed.extend(new.elements().iter().map(|e| e.partition()));
    Ok(())
}

/// The partitions of `topic` not in `known`, each with the offset to start from. Blocking.
fn new_partitions(
    consumer: &StreamConsumer,
    topic: &str,
    known: &BTreeSet<i32>,
) -> Result<TopicPartitionList, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
    let from = if known.is_empty() {
        Offset::End
    } else {
        Offset::Beginning
    };
    let mut new = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        if !known.contains(&partition.id()) {
            new.add_partition_offset(topic, partition.id(), from)?;
        }
    }
    if from == Offset::End && new.count() > 0 {
        // The ends as they are now, not when a first fetch would resolve `End`.
        new = consumer.offsets_for_times(new, KAFKA_TIMEOUT)?;
    }
    Ok(new)
}
