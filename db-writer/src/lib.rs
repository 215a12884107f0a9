//! db-writer: Kafka in, PostgreSQL shards out, offsets committed only after the rows are in.
//!
//! `consume` (group consumer, rebalance bookkeeping) → `batch` (count, bytes, time since the
//! first record) → `write` (route by client id, bulk insert per shard concurrently, retry,
//! bisect) → `dead_letter` (refused records) → `commit` (next offset per partition).
//!
//! Delivery is at-least-once from Kafka and idempotent in PostgreSQL (`ON CONFLICT
//! (event_id) DO NOTHING`), so a crash or rebalance can repeat a write but never a row.

mod batch;
mod commit;
mod consume;
mod dead_letter;
mod metrics;
pub mod settings;
mod write;

use std::{net::SocketAddr, sync::Arc};

use event_store::{ShardSet, StoreError};
use rdkafka::{
    consumer::{CommitMode, Consumer},
    error::KafkaError,
};
use schemas::EventCodec;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    batch::{Batcher, Record},
    consume::WriterConsumer,
    dead_letter::DeadLetters,
    write::ShardWriter,
};
pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A db-writer connected to Kafka and its shards, ready to run.
pub struct DbWriter {
    settings: Settings,
    consumer: Arc<WriterConsumer>,
    writer: ShardWriter,
    dead_letters: DeadLetters,
    codec: EventCodec,
    metrics_listener: TcpListener,
}

impl DbWriter {
    pub async fn connect(settings: Settings) -> Result<DbWriter, WriterError> {
        let shards = ShardSet::connect(&settings.store).await?;
        let consumer = consume::create(&settings.kafka)?;
        let dead_letters =
            DeadLetters::new(&settings.kafka.brokers, &settings.kafka.dead_letter_topic)?;
        let metrics_listener =
            TcpListener::bind(settings.metrics_listen)
                .await
                .map_err(|source| WriterError::Bind {
                    addr: settings.metrics_listen,
                    source,
                })?;
        Ok(DbWriter {
            writer: ShardWriter::new(shards, settings.retry.clone()),
            settings,
            consumer,
            dead_letters,
            codec: EventCodec::new(),
            metrics_listener,
        })
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.local_addr().ok()
    }

    /// Consumes, writes and commits until `shutdown`; then writes and commits what it holds
    /// and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WriterError> {
        let DbWriter {
            settings,
            consumer,
            writer,
            dead_letters,
            codec,
            metrics_listener,
        } = self;
        let metrics_app =
            chassis::metrics::router().route("/health/live", axum::routing::get(|| async { "ok" }));
        let metrics_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(metrics_listener, metrics_app)
                .with_graceful_shutdown(metrics_shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                warn!(error = %e, "metrics endpoint stopped");
            }
        });
        info!(
            topic = %settings.kafka.topic,
            critical_topic = %settings.kafka.critical_topic,
            group = %settings.kafka.group_id,
            "db-writer consuming"
        );

        // One batcher per lane: critical events never wait for a large normal batch's timer.
        let mut lanes = [
            Lane::new(&settings.kafka.topic, &settings.batch),
            Lane::new(&settings.kafka.critical_topic, &settings.critical_batch),
        ];
        loop {
            let deadline = lanes.iter().filter_map(|l| l.batcher.deadline()).min();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                    let now = tokio::time::Instant::now();
                    for lane in &mut lanes {
                        if lane.batcher.deadline().is_some_and(|d| d <= now) {
                            flush(&consumer, &writer, &dead_letters, lane.batcher.take(), &shutdown).await?;
                        }
                    }
                }
                message = consumer.recv() => {
                    forget_revoked(&consumer, &mut lanes);
                    let message = match message {
                        Ok(message) => message,
                        Err(e) => {
                            warn!(error = %e, "consumer error");
                            continue;
                        }
                    };
                    let bytes = message.payload_len();
                    let record = consume::to_record(&codec, &message);
                    drop(message);
                    let topic = record.topic_partition().0;
                    let Some(lane) = lanes.iter_mut().find(|l| l.topic == topic) else {
                        continue;
                    };
                    if lane.batcher.push(record, bytes) {
                        flush(&consumer, &writer, &dead_letters, lane.batcher.take(), &shutdown).await?;
                    }
                }
            }
        }
        // Shutdown: what was consumed is written and committed (the write itself gives up
        // if a shard stays down; then nothing is committed and the next owner re-reads).
        forget_revoked(&consumer, &mut lanes);
        let drain = CancellationToken::new();
        let deadline = settings.shutdown_timeout;
        let last = async {
            for lane in &mut lanes {
                flush(
                    &consumer,
                    &writer,
                    &dead_letters,
                    lane.batcher.take(),
                    &drain,
                )
                .await?;
            }
            Ok::<(), WriterError>(())
        };
        match tokio::time::timeout(deadline, last).await {
            Ok(result) => result?,
            Err(_) => warn!(
                ?deadline,
                "final flush did not finish in time; its offsets stay uncommitted"
            ),
        }
        consumer.unsubscribe();
        info!("db-writer stopped");
        Ok(())
    }
}

/// A topic and the batch being built from it.
struct Lane {
    topic: String,
    batcher: Batcher,
}

impl Lane {
    fn new(topic: &str, settings: &settings::BatchSettings) -> Self {
        Lane {
            topic: topic.to_owned(),
            batcher: Batcher::new(settings),
        }
    }
}

fn forget_revoked(consumer: &WriterConsumer, lanes: &mut [Lane]) {
    let revoked = consumer.context().take_revoked();
    if !revoked.is_empty() {
        let dropped: usize = lanes.iter_mut().map(|l| l.batcher.forget(&revoked)).sum();
        if dropped > 0 {
            info!(dropped, "dropped buffered records of revoked partitions");
        }
    }
}

/// Writes a batch, dead-letters what can never be stored, then commits its offsets.
async fn flush(
    consumer: &WriterConsumer,
    writer: &ShardWriter,
    dead_letters: &DeadLetters,
    records: Vec<Record>,
    shutdown: &CancellationToken,
) -> Result<(), WriterError> {
    if records.is_empty() {
        return Ok(());
    }
    let next = commit::next_offsets(&records);
    let mut events = Vec::with_capacity(records.len());
    let mut poisons = Vec::new();
    for record in records {
        match record {
            Record::Event(e) => events.push(e),
            Record::Poison(p) => poisons.push(p),
        }
    }
    let count = events.len();
    match writer.write(events, shutdown).await {
        Ok(refused) => poisons.extend(refused),
        Err(abandoned) => {
            warn!(%abandoned, "batch not written; offsets not committed");
            return Ok(());
        }
    }
    if !poisons.is_empty() {
        warn!(
            count = poisons.len(),
            "sending records to the dead-letter topic"
        );
        // Without the dead-letter acknowledgement the offsets must not move: the records
        // would be lost. Failing here restarts from the last commit.
        dead_letters.publish(&poisons).await?;
    }
    let tpl = commit::to_list(&next)?;
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {
            metrics::BATCHES_COMMITTED.inc();
            debug!(rows = count, partitions = next.len(), "batch committed");
        }
        // Lost partitions: their new owner re-reads from the previous commit and the
        // idempotent insert absorbs the repeat.
        Err(e) => warn!(error = %e, "offset commit failed; the records will be re-delivered"),
    }
    Ok(())
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), WriterError> {
    DbWriter::connect(settings).await?.run(shutdown).await
}
