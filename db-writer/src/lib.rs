//! db-writer: Kafka in, PostgreSQL shards out, offsets committed only after the rows are in.
//!
//! `consume` (group consumer, rebalance bookkeeping) → `batch` (count, bytes, time since the
//! first record) → `write` (route by client id, bulk insert per shard concurrently, retry,
//! bisect) → `dead_letter` (refused records) → `commit` (next offset per partition) →
//! `notify` (a persisted notice, built by `notice`).
//!
//! Delivery is at-least-once from Kafka and idempotent in PostgreSQL (`ON CONFLICT
//! (event_id) DO NOTHING`), so a crash or rebalance can repeat a write but never a row.

mod batch;
mod commit;
mod consume;
mod dead_letter;
mod metrics;
mod notice;
mod notify;
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
    notify::Notifier,
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
    notifier: Option<Notifier>,
    codec: EventCodec,
    metrics_listener: TcpListener,
}

impl DbWriter {
    pub async fn connect(settings: Settings) -> Result<DbWriter, WriterError> {
        let shards = ShardSet::connect(&settings.store).await?;
        let consumer = consume::create(&settings.kafka)?;
        let dead_letters =
            DeadLetters::new(&settings.kafka.brokers, &settings.kafka.dead_letter_topic)?;
        let notifier = Notifier::new(&settings.kafka.brokers, &settings.kafka.persisted_topic)?;
        let metrics_listener =
            TcpListener::bind(settings.metrics_listen)
                .await
                .map_err(|source| WriterError::Bind {
                    addr: settings.metrics_listen,
                    source,
                })?;
        Ok(DbWriter {
            writer: ShardWriter::new(shards, settings.retry.clone(), settings.store.insert_method),
            settings,
            consumer,
            dead_letters,
            notifier,
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
            notifier,
            codec,
            metrics_listener,
        } = self;
        let sinks = Sinks {
            consumer: &consumer,
            writer: &writer,
            dead_letters: &dead_letters,
            notifier: notifier.as_ref(),
            member: format!(
                "{}/{}",
                settings.kafka.group_id,
                uuid::Uuid::new_v4().simple()
            ),
        };
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
                            sinks.flush(lane.batcher.take(), &shutdown).await?;
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
                        sinks.flush(lane.batcher.take(), &shutdown).await?;
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
                sinks.flush(lane.batcher.take(), &drain).await?;
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
        if let Some(notifier) = sinks.notifier {
            notifier.flush();
        }
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

/// Everything a batch flows into once it is complete.
struct Sinks<'a> {
    consumer: &'a WriterConsumer,
    writer: &'a ShardWriter,
    dead_letters: &'a DeadLetters,
    notifier: Option<&'a Notifier>,
    /// Names this process in persisted notices.
    member: String,
}

impl Sinks<'_> {
    /// Writes a batch, dead-letters what can never be stored, commits its offsets, then
    /// announces it.
    async fn flush(
        &self,
        records: Vec<Record>,
        shutdown: &CancellationToken,
    ) -> Result<(), WriterError> {
        if records.is_empty() {
            return Ok(());
        }
        let ranges = commit::ranges(&records);
        let batch_size = records.len();
        let mut events = Vec::with_capacity(records.len());
        let mut poisons = Vec::new();
        for record in records {
            match record {
                Record::Event(e) => events.push(e),
                Record::Poison(p) => poisons.push(p),
            }
        }
        let notice = self.notifier.map(|_| {
            notice::summarise(
                &events,
                &ranges,
                batch_size,
                &self.member,
                self.writer.router(),
            )
        });
        match self.writer.write(events, shutdown).await {
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
            self.dead_letters.publish(&poisons).await?;
        }
        let tpl = commit::to_list(&ranges)?;
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                metrics::BATCHES_COMMITTED.inc();
                debug!(
                    records = batch_size,
                    partitions = ranges.len(),
                    "batch committed"
                );
                if let (Some(notifier), Some(notice)) = (self.notifier, notice) {
                    notifier.batch_persisted(&notice.finish());
                }
            }
            // Lost partitions: their new owner re-reads from the previous commit and the
            // idempotent insert absorbs the repeat.
            Err(e) => warn!(error = %e, "offset commit failed; the records will be re-delivered"),
        }
        Ok(())
    }
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), WriterError> {
    DbWriter::connect(settings).await?.run(shutdown).await
}
