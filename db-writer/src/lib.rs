//! db-writer: Kafka in, PostgreSQL shards out, offsets committed only after the rows are in.
//!
//! `consume` (group consumer, rebalance bookkeeping, decoding; `clocks` orders each
//! partition's records) → `batch` (count, bytes, time since the first event) → `sink`:
//! `route` (shard by client id) → `write` (bulk insert per shard concurrently, retry while
//! paused, bisect) → `dead_letter` (refused records, original bytes) → `commit` (next offset
//! and log clock per partition) → `notify` (a persisted notice, built by `notice`). Beside
//! it, `partitions` keeps the shards' day partitions (made ahead, dropped past the retention).
//!
//! Delivery is at-least-once from Kafka and idempotent in PostgreSQL (one row per event id,
//! the copy that comes first), so a crash or rebalance can repeat a write but never a row.

mod batch;
mod clocks;
mod commit;
mod committer;
mod consume;
mod dead_letter;
mod metrics;
mod notice;
mod notify;
mod partitions;
mod route;
pub mod settings;
mod sink;
mod write;

use std::{collections::VecDeque, net::SocketAddr, sync::Arc, time::Duration};

use chassis::{
    edge::{Edge, EdgeError},
    health::Readiness,
};
use event_store::{ShardSet, StoreError};
use futures::{stream::FuturesOrdered, StreamExt};
use rdkafka::{
    consumer::Consumer,
    error::KafkaError,
    message::{Message, OwnedMessage},
    Offset,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    batch::Batcher,
    clocks::{Admission, PartitionClocks},
    consume::{Decoder, WriterConsumer},
    dead_letter::DeadLetters,
    notify::Notifier,
    sink::Sinks,
    write::ShardWriter,
};
pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error("cannot start the offset committer: {0}")]
    Thread(std::io::Error),
    #[error(transparent)]
    KafkaSecurity(#[from] chassis::kafka_security::KafkaSecurityError),
    #[error("settings: {0}")]
    Settings(String),
}

const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// Readiness checks: every shard answers, and the group has handed this member its share.
const READY_SHARDS: &str = "shards";
const READY_GROUP: &str = "group";
/// Fails at SIGTERM, while the final flush runs.
const READY_RUNNING: &str = "running";

/// A db-writer connected to Kafka and its shards, ready to run.
pub struct DbWriter {
    settings: Settings,
    consumer: Arc<WriterConsumer>,
    writer: ShardWriter,
    dead_letters: DeadLetters,
    notifier: Option<Notifier>,
    metrics_edge: Edge,
    readiness: Readiness,
}

impl DbWriter {
    pub async fn connect(settings: Settings) -> Result<DbWriter, WriterError> {
        settings.kafka.check().map_err(WriterError::Settings)?;
        let kafka = settings
            .kafka
            .security
            .checked_client_config(&settings.kafka.brokers)
            .await?;
        let shards = ShardSet::connect(&settings.store).await?;
        let consumer = consume::create(&kafka, &settings.kafka)?;
        let dead_letters = DeadLetters::new(&kafka, &settings.kafka.dead_letter_topic)?;
        let notifier = Notifier::new(&kafka, &settings.kafka.persisted_topic)?;
        let metrics_edge = Edge::bind(settings.metrics_listen).await?;
        metrics::init(
            shards.shards().len(),
            &[&settings.kafka.topic, &settings.kafka.critical_topic],
        );
        partitions::pass(&shards, &settings.partitions).await;
        Ok(DbWriter {
            writer: ShardWriter::new(shards, settings.retry.clone(), settings.store.insert_method),
            settings,
            consumer,
            dead_letters,
            notifier,
            metrics_edge,
            readiness: Readiness::new(&[READY_SHARDS, READY_GROUP]),
        })
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        Some(self.metrics_edge.local_addr())
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
            metrics_edge,
            readiness,
        } = self;
        let (committer, mut commit_results) =
            committer::Committer::start(consumer.clone()).map_err(WriterError::Thread)?;
        let sinks = Sinks {
            committer: &committer,
            writer: &writer,
            dead_letters: &dead_letters,
            notifier: notifier.as_ref(),
            member: format!(
                "{}/{}",
                settings.kafka.group_id,
                uuid::Uuid::new_v4().simple()
            ),
        };
        // Metrics and health stay up through the final flush (readiness turns to 503 at
        // once): an operator can watch the shutdown; the edge stops after it.
        let edge_stop = CancellationToken::new();
        // Also on an early return with an error.
        let _edge_stopped = edge_stop.clone().drop_guard();
        let metrics_serving = metrics_edge.spawn(
            axum::Router::new(),
            readiness.clone(),
            edge_stop.clone(),
            Duration::from_secs(1),
        );
        {
            let (shutdown, stopped, readiness) =
                (shutdown.clone(), edge_stop.clone(), readiness.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => readiness.fail(READY_RUNNING, "shutting down: final flush"),
                    _ = stopped.cancelled() => {}
                }
            });
        }
        tokio::spawn(partitions::maintain(
            writer.shards().clone(),
            settings.partitions.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(watch_readiness(
            readiness,
            writer.shards().clone(),
            consumer.clone(),
            shutdown.clone(),
        ));
        info!(
            topic = %settings.kafka.topic,
            critical_topic = %settings.kafka.critical_topic,
            group = %settings.kafka.group_id,
            "db-writer consuming"
        );

        // Each lane batches, stores and commits on its own: a critical batch never waits for
        // a normal batch's timer, write slot or commit (offsets of different topics never
        // cover each other), and a normal lane that cannot keep up pauses its partitions
        // instead of stopping the consumer, so critical records keep coming.
        let mut lanes = [
            Lane::new(&settings.kafka.topic, &settings.batch),
            Lane::new(&settings.kafka.critical_topic, &settings.critical_batch),
        ];
        let mut clocks = PartitionClocks::default();
        let decoder = Decoder::default();
        // Batches being stored per lane, oldest first. Up to `max_in_flight_batches` are
        // written at once so that consuming and decoding overlap with the database; each
        // lane commits strictly in the order it took them, so a commit never covers an
        // unstored record.
        let depth = settings.max_in_flight_batches.max(1);
        let mut storing = [FuturesOrdered::new(), FuturesOrdered::new()];
        // Commits made and not yet acknowledged, oldest first (both lanes: the committer
        // answers in the order commits were made).
        let mut awaiting: VecDeque<sink::Committing> = VecDeque::new();
        loop {
            let now = tokio::time::Instant::now();
            for (lane, storing) in lanes.iter_mut().zip(storing.iter_mut()) {
                let due =
                    lane.batcher.is_full() || lane.batcher.deadline().is_some_and(|d| d <= now);
                if due && free(&lane.writes, depth) {
                    let batch = lane.batcher.take();
                    lane.writes.push_back(
                        batch
                            .iter()
                            .any(|r| matches!(r, batch::Record::Event { .. })),
                    );
                    storing.push_back(sinks.store(batch, &shutdown));
                }
                // A full batch that cannot start yet pauses its lane: memory stays bounded.
                lane.pause_while_full(&consumer);
            }
            let consuming = lanes.iter().any(|l| !l.paused);
            let deadline = lanes
                .iter()
                .filter(|l| free(&l.writes, depth))
                .filter_map(|l| l.batcher.deadline())
                .min();
            let [normal_storing, critical_storing] = &mut storing;
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(outcome) = critical_storing.next() => {
                    lanes[1].settle(&sinks, outcome?, &mut awaiting);
                }
                Some(outcome) = normal_storing.next() => {
                    lanes[0].settle(&sinks, outcome?, &mut awaiting);
                }
                Some(result) = commit_results.recv() => {
                    if let Some(commit) = awaiting.pop_front() {
                        sinks.committed(commit, result);
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => {}
                message = consumer.recv(), if consuming => {
                    forget_revoked(&consumer, &mut lanes, &mut clocks);
                    if consumer.context().take_assigned() {
                        for lane in &mut lanes {
                            lane.reapply_pause(&consumer);
                        }
                    }
                    let message = match message {
                        Ok(message) => message.detach(),
                        Err(e) => {
                            warn!(error = %e, "consumer error");
                            continue;
                        }
                    };
                    let Some(clock) = admit(&consumer, &mut clocks, &message, &shutdown).await else {
                        continue;
                    };
                    let bytes = message.payload().map_or(0, <[u8]>::len);
                    let record = decoder.record(message, clock);
                    let topic = record.position().topic.as_str();
                    if let Some(lane) = lanes.iter_mut().find(|l| l.topic == topic) {
                        // A paused lane still takes what a rebalance handed over before it
                        // was paused too (bounded by the prefetch), and pauses that as well.
                        lane.batcher.push(record, bytes);
                        if lane.paused {
                            lane.reapply_pause(&consumer);
                        }
                    }
                }
            }
        }
        // Shutdown: batches being stored finish and are committed, then what was consumed is
        // written and committed too (a write gives up if its shard stays down; then nothing
        // is committed and the next owner re-reads), all within the shutdown deadline.
        let deadline = settings.shutdown_timeout;
        let flush_began = tokio::time::Instant::now();
        let last = async {
            for (lane, storing) in lanes.iter_mut().zip(storing.iter_mut()) {
                while let Some(outcome) = storing.next().await {
                    lane.settle(&sinks, outcome?, &mut awaiting);
                }
            }
            let in_flight_stored = flush_began.elapsed();
            forget_revoked(&consumer, &mut lanes, &mut clocks);
            let drain = CancellationToken::new();
            for lane in &mut lanes {
                let outcome = sinks.store(lane.batcher.take(), &drain).await?;
                lane.settle(&sinks, outcome, &mut awaiting);
            }
            let consumed_stored = flush_began.elapsed();
            // The acknowledgements come while the consumer is polled; what it delivers now
            // stays uncommitted, for the next owner.
            while !awaiting.is_empty() {
                tokio::select! {
                    Some(result) = commit_results.recv() => {
                        if let Some(commit) = awaiting.pop_front() {
                            sinks.committed(commit, result);
                        }
                    }
                    _ = consumer.recv() => {}
                }
            }
            info!(
                in_flight_stored_ms = in_flight_stored.as_millis() as u64,
                consumed_stored_ms = consumed_stored.as_millis() as u64,
                committed_ms = flush_began.elapsed().as_millis() as u64,
                "final flush done"
            );
            Ok::<(), WriterError>(())
        };
        match tokio::time::timeout(deadline, last).await {
            Ok(result) => result?,
            Err(_) => warn!(
                ?deadline,
                "final flush did not finish in time; what it did not commit is re-read by the next owner"
            ),
        }
        if let Some(notifier) = sinks.notifier {
            notifier.flush();
        }
        let notices_flushed = flush_began.elapsed();
        drop(storing);
        drop(sinks);
        committer.close(awaiting.is_empty());
        consumer.unsubscribe();
        edge_stop.cancel();
        metrics_serving.join().await;
        info!(
            notices_flushed_ms = notices_flushed.as_millis() as u64,
            total_ms = flush_began.elapsed().as_millis() as u64,
            "db-writer stopped"
        );
        Ok(())
    }
}

/// Batches of ticks alone queued behind a stuck batch of their lane, at most: their commits
/// wait for it, and memory stays bounded (a tick-only batch forms about every `idle_wait`).
const MAX_QUEUED_TICK_BATCHES: usize = 256;

/// Whether another batch may start: fewer than `depth` batches that write rows, and the queue
/// of batches waiting for their turn to commit bounded.
fn free(writes: &VecDeque<bool>, depth: usize) -> bool {
    writes.iter().filter(|w| **w).count() < depth && writes.len() < depth + MAX_QUEUED_TICK_BATCHES
}

/// The clock of the message's partition, once the writer knows where it stands there; `None`
/// when the message is not this writer's to handle (see `clocks`) or shutdown came first.
async fn admit<'c>(
    consumer: &Arc<WriterConsumer>,
    clocks: &'c mut PartitionClocks,
    message: &OwnedMessage,
    shutdown: &CancellationToken,
) -> Option<&'c mut schemas::LogClock> {
    let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
    if !clocks.knows(topic, partition) {
        let commit = read_commit(consumer, topic, partition, shutdown).await?;
        if let Some(to) = clocks.resume(topic, partition, offset, commit) {
            seek(consumer, topic, partition, to).await;
        }
    }
    match clocks.admit(topic, partition, offset) {
        Admission::Take(clock) => Some(clock),
        Admission::Drop { seek_to } => {
            if let Some(to) = seek_to {
                seek(consumer, topic, partition, to).await;
            }
            None
        }
        Admission::Unknown => None,
    }
}

/// The group's commit of one partition, retried until it can be read: without it the
/// partition's records cannot be ordered (fail closed). `None` at shutdown.
async fn read_commit(
    consumer: &Arc<WriterConsumer>,
    topic: &str,
    partition: i32,
    shutdown: &CancellationToken,
) -> Option<Option<clocks::Commit>> {
    let slot = (topic.to_owned(), partition);
    let mut backoff = Duration::from_millis(100);
    loop {
        let reader = consumer.clone();
        let wanted = [slot.clone()];
        let read = tokio::task::spawn_blocking(move || {
            clocks::read_commits(&reader, &wanted, KAFKA_TIMEOUT)
        })
        .await;
        match read {
            Ok(Ok(mut commits)) => return Some(commits.remove(&slot).flatten()),
            Ok(Err(e)) => {
                warn!(topic, partition, error = %e, "cannot read the group's commit; retrying")
            }
            Err(e) => warn!(topic, partition, error = %e, "commit reader failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn seek(consumer: &Arc<WriterConsumer>, topic: &str, partition: i32, offset: i64) {
    let (seeker, topic_owned) = (consumer.clone(), topic.to_owned());
    let sought = tokio::task::spawn_blocking(move || {
        seeker.seek(
            &topic_owned,
            partition,
            Offset::Offset(offset),
            KAFKA_TIMEOUT,
        )
    })
    .await;
    if !matches!(sought, Ok(Ok(()))) {
        warn!(
            topic,
            partition, offset, "seek to the group commit failed; will retry"
        );
    }
}

/// Keeps the readiness checks current until shutdown.
async fn watch_readiness(
    readiness: Readiness,
    shards: ShardSet,
    consumer: Arc<WriterConsumer>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if consumer.context().joined() {
            readiness.pass(READY_GROUP);
        }
        let mut down = Vec::new();
        for shard in shards.shards() {
            if shard.ping().await.is_err() {
                down.push(shard.index.to_string());
            }
        }
        if down.is_empty() {
            readiness.pass(READY_SHARDS);
        } else {
            readiness.fail(
                READY_SHARDS,
                format!("shard(s) {} unreachable", down.join(", ")),
            );
        }
    }
}

/// A topic, the batch being built from it, and its batches being stored.
struct Lane {
    topic: String,
    batcher: Batcher,
    /// Whether each batch being stored writes rows. Only those count against the depth: a
    /// batch of ticks alone writes nothing, and letting it take a slot behind a batch stuck
    /// on a down shard would stop the other shards' rows too.
    writes: VecDeque<bool>,
    /// Once a batch is abandoned (shutdown while its shard was down), no later batch of the
    /// lane may commit: its offsets would cover the abandoned records.
    committing: bool,
    /// The lane's partitions are paused (its batch is full and cannot start yet).
    paused: bool,
}

impl Lane {
    fn new(topic: &str, settings: &settings::BatchSettings) -> Self {
        Lane {
            topic: topic.to_owned(),
            batcher: Batcher::new(settings),
            writes: VecDeque::new(),
            committing: true,
            paused: false,
        }
    }

    /// A batch of the lane is stored: commits it (in the lane's order) while allowed.
    fn settle(
        &mut self,
        sinks: &sink::Sinks<'_>,
        outcome: sink::Outcome,
        awaiting: &mut VecDeque<sink::Committing>,
    ) {
        self.writes.pop_front();
        let (still, commit) = sinks.settle(outcome, self.committing);
        self.committing = still;
        awaiting.extend(commit);
    }

    /// Pauses the lane's assigned partitions while its batch is full (librdkafka drops what
    /// it prefetched for them and fetches again from the next undelivered offset on
    /// resume), and resumes them once it is not.
    fn pause_while_full(&mut self, consumer: &WriterConsumer) {
        let full = self.batcher.is_full();
        if full != self.paused {
            self.apply_pause(consumer, full);
        }
    }

    /// Applies the lane's state again to everything assigned now: a partition paused, revoked
    /// and assigned back stays paused in librdkafka, and a newly assigned one starts resumed.
    fn reapply_pause(&mut self, consumer: &WriterConsumer) {
        self.apply_pause(consumer, self.paused);
    }

    fn apply_pause(&mut self, consumer: &WriterConsumer, full: bool) {
        let assigned = match consumer.assignment() {
            Ok(assigned) => assigned,
            Err(e) => {
                warn!(topic = %self.topic, error = %e, "cannot read the assignment");
                return;
            }
        };
        let mut mine = rdkafka::TopicPartitionList::new();
        for element in assigned.elements_for_topic(&self.topic) {
            mine.add_partition(element.topic(), element.partition());
        }
        let changed = if full {
            consumer.pause(&mine)
        } else {
            consumer.resume(&mine)
        };
        match changed {
            Ok(()) => {
                self.paused = full;
                metrics::LANE_PAUSED
                    .with_label_values(&[&self.topic])
                    .set(i64::from(full));
            }
            Err(e) => warn!(topic = %self.topic, error = %e, "cannot pause or resume the lane"),
        }
    }
}

fn forget_revoked(consumer: &WriterConsumer, lanes: &mut [Lane], clocks: &mut PartitionClocks) {
    let revoked = consumer.context().take_revoked();
    if !revoked.is_empty() {
        clocks.forget(&revoked);
        let dropped: usize = lanes.iter_mut().map(|l| l.batcher.forget(&revoked)).sum();
        if dropped > 0 {
            info!(dropped, "dropped buffered records of revoked partitions");
        }
    }
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), WriterError> {
    DbWriter::connect(settings).await?.run(shutdown).await
}
