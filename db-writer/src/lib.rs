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
use futures::{stream::FuturesOrdered, StreamExt};
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
        // Batches being stored, oldest first. Up to `max_in_flight_batches` are written at
        // once so that consuming and decoding overlap with the database; they are committed
        // strictly in the order they were taken, so a commit never covers an unstored record.
        let depth = settings.max_in_flight_batches.max(1);
        let mut storing = FuturesOrdered::new();
        // Once a batch is abandoned (shutdown while its shard was down), no later batch may
        // commit: its offsets would cover the abandoned records.
        let mut committing = true;
        loop {
            let now = tokio::time::Instant::now();
            for lane in &mut lanes {
                let due =
                    lane.batcher.is_full() || lane.batcher.deadline().is_some_and(|d| d <= now);
                if due && storing.len() < depth {
                    storing.push_back(sinks.store(lane.batcher.take(), &shutdown));
                }
            }
            // A full batch that cannot start yet stops consumption: memory stays bounded.
            let blocked = lanes.iter().any(|l| l.batcher.is_full());
            let deadline = lanes
                .iter()
                .filter_map(|l| l.batcher.deadline())
                .min()
                .filter(|_| storing.len() < depth);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(outcome) = storing.next() => {
                    committing = sinks.settle(outcome?, committing);
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => {}
                message = consumer.recv(), if !blocked => {
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
                    if let Some(lane) = lanes.iter_mut().find(|l| l.topic == topic) {
                        lane.batcher.push(record, bytes);
                    }
                }
            }
        }
        // Shutdown: batches being stored finish and are committed, then what was consumed is
        // written and committed too (a write gives up if its shard stays down; then nothing
        // is committed and the next owner re-reads), all within the shutdown deadline.
        let deadline = settings.shutdown_timeout;
        let last = async {
            while let Some(outcome) = storing.next().await {
                committing = sinks.settle(outcome?, committing);
            }
            forget_revoked(&consumer, &mut lanes);
            let drain = CancellationToken::new();
            for lane in &mut lanes {
                let outcome = sinks.store(lane.batcher.take(), &drain).await?;
                committing = sinks.settle(outcome, committing);
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

/// A batch whose records are all stored (or dead-lettered), waiting for its commit.
struct Stored {
    ranges: commit::Ranges,
    records: usize,
    notice: Option<notice::PendingNotice>,
}

/// How storing a batch ended.
enum Outcome {
    Stored(Stored),
    Empty,
    /// Given up at shutdown while a shard was down: nothing of it, nor after it, may commit.
    Abandoned,
}

impl Sinks<'_> {
    /// Writes a batch and dead-letters what can never be stored.
    async fn store(
        &self,
        records: Vec<Record>,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, WriterError> {
        if records.is_empty() {
            return Ok(Outcome::Empty);
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
                return Ok(Outcome::Abandoned);
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
        Ok(Outcome::Stored(Stored {
            ranges,
            records: batch_size,
            notice,
        }))
    }

    /// Commits a stored batch while commits are allowed; returns whether they still are.
    fn settle(&self, outcome: Outcome, committing: bool) -> bool {
        match outcome {
            Outcome::Stored(stored) if committing => {
                self.commit(stored);
                true
            }
            Outcome::Stored(_) => false,
            Outcome::Empty => committing,
            Outcome::Abandoned => false,
        }
    }

    /// Commits a stored batch's offsets, then announces it.
    fn commit(&self, stored: Stored) {
        let tpl = match commit::to_list(&stored.ranges) {
            Ok(tpl) => tpl,
            Err(e) => {
                warn!(error = %e, "cannot build the offsets to commit");
                return;
            }
        };
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                metrics::BATCHES_COMMITTED.inc();
                debug!(
                    records = stored.records,
                    partitions = stored.ranges.len(),
                    "batch committed"
                );
                if let (Some(notifier), Some(notice)) = (self.notifier, stored.notice) {
                    notifier.batch_persisted(&notice.finish());
                }
            }
            // Lost partitions: their new owner re-reads from the previous commit and the
            // idempotent insert absorbs the repeat.
            Err(e) => warn!(error = %e, "offset commit failed; the records will be re-delivered"),
        }
    }
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), WriterError> {
    DbWriter::connect(settings).await?.run(shutdown).await
}
