//! One lane (one topic) from end to end: its own consumer → `clocks` → decode → `batch` →
//! `sink` (store, dead-letter, confirm flushed) → commit, in the order the batches were taken.
//!
//! Each lane has a consumer of its own in the writer's group, and its own committer. With one
//! consumer for both topics, librdkafka's prefetch queue was shared: a critical record
//! fetched behind a backlog of normal ones waited for all of them to be decoded and batched
//! (critical stored p50 1.7 s, p99 3.5 s here while the normal lane drained a backlog), and
//! its commit waited behind the normal lane's on one committer thread.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use futures::{stream::FuturesOrdered, StreamExt};
use rdkafka::{
    consumer::Consumer,
    message::{Message, OwnedMessage},
    Offset,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    batch::{self, Batcher},
    clocks::{self, Admission, PartitionClocks},
    committer::Committer,
    consume::{Decoder, WriterConsumer},
    dead_letter::DeadLetters,
    metrics,
    notify::Notifier,
    priority::Pace,
    settings::BatchSettings,
    sink::{self, Sinks},
    write::ShardWriter,
    WriterError,
};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a full lane only stops taking records before it pauses its partitions. Pausing
/// drops librdkafka's prefetch, and the first record after the resume came 0.4-0.8 s later
/// here (a fetch position to set again), so a lane paused for each batch it waited on stored
/// a backlog at 15,000 events/s with one batch in flight and 41,000 with four. Not taking
/// records leaves the prefetch in place (bounded by `queued.max.messages.kbytes`); a lane
/// full for longer than this (a shard down) pauses, so that `recv` serves rebalances again.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// Batches of ticks alone queued behind a stuck batch of their lane, at most: their commits
/// wait for it, and memory stays bounded (a tick-only batch forms about every `idle_wait`).
const MAX_QUEUED_TICK_BATCHES: usize = 256;

/// Stored batches waiting for their flush to be confirmed, at most, and the records they hold at
/// most: their rows stay in memory until then. A flush that stalls stops the lane from starting
/// batches once either is reached. A lane that waits for the flush in its writes confirms at
/// once.
const MAX_CONFIRMING_BATCHES: usize = 1024;
const MAX_CONFIRMING_RECORDS: usize = 50_000;

/// What the lanes of one writer process share.
pub struct Shared {
    pub dead_letters: DeadLetters,
    pub notifier: Option<Arc<Notifier>>,
    /// Names this process in persisted notices.
    pub member: String,
    /// Batches being stored at once per lane.
    pub depth: usize,
    /// The final flush's deadline.
    pub shutdown_timeout: Duration,
    /// Least time between a lane's offset commits (`kafka.commit_interval`).
    pub commit_interval: Duration,
}

/// A topic, its consumer, the batch being built from it, and its batches being stored.
pub struct Lane {
    topic: String,
    consumer: Arc<WriterConsumer>,
    /// Writes with or without waiting for the WAL flush (the lane's `synchronous_commit`).
    writer: Arc<ShardWriter>,
    batcher: Batcher,
    /// Whether each batch being stored writes rows. Only those count against the depth: a
    /// batch of ticks alone writes nothing, and letting it take a slot behind a batch stuck
    /// on a down shard would stop the other shards' rows too.
    writes: VecDeque<bool>,
    /// Once a batch is abandoned (shutdown while its shard was down), no later batch of the
    /// lane may commit: its offsets would cover the abandoned records.
    committing: bool,
    /// The lane's partitions are paused (its batch has been full and unable to start for
    /// `PAUSE_AFTER`).
    paused: bool,
    /// Since when the batch has been full and unable to start.
    full_since: Option<tokio::time::Instant>,
    /// The normal lane yields while the critical lane is busy; the critical lane says when.
    pace: Pace,
    /// `db_writer_lane_yielding` of this lane, set on every turn of its loop.
    yielding: prometheus::IntGauge,
}

impl Lane {
    /// `consumer` is subscribed to `topic` alone.
    pub fn new(
        topic: &str,
        consumer: Arc<WriterConsumer>,
        writer: Arc<ShardWriter>,
        settings: &BatchSettings,
        pace: Pace,
    ) -> Self {
        Lane {
            topic: topic.to_owned(),
            consumer,
            writer,
            batcher: Batcher::new(settings),
            writes: VecDeque::new(),
            committing: true,
            paused: false,
            full_since: None,
            pace,
            yielding: metrics::LANE_YIELDING.with_label_values(&[topic]),
        }
    }

    /// Consumes, stores and commits until `shutdown`; then stores and commits what it holds
    /// (within `shutdown_timeout`) and leaves the group.
    pub async fn run(
        mut self,
        shared: Arc<Shared>,
        shutdown: CancellationToken,
    ) -> Result<(), WriterError> {
        // A handle of its own: `recv` borrows it across the select, whose arms change `self`.
        let consumer = self.consumer.clone();
        let writer = self.writer.clone();
        let (committer, mut commit_results) =
            Committer::start(consumer.clone(), shared.commit_interval)
                .map_err(WriterError::Thread)?;
        let sinks = Sinks {
            committer: &committer,
            writer: &writer,
            dead_letters: &shared.dead_letters,
            notifier: shared.notifier.as_deref(),
            member: shared.member.clone(),
        };
        let mut clocks = PartitionClocks::default();
        let decoder = Decoder::default();
        let depth = shared.depth.max(1);
        // For the confirmations of the final flush, which come after `shutdown`.
        let drain = CancellationToken::new();
        // Batches being stored, oldest first. Up to `depth` are written at once so that
        // consuming and decoding overlap with the database; the lane commits strictly in the
        // order it took them, so a commit never covers an unstored record.
        let mut storing = FuturesOrdered::new();
        // Stored batches waiting for their rows' flush, oldest first. They hold no write slot:
        // a slow flush does not keep the next batches from being written (and visible).
        let mut confirming = FuturesOrdered::new();
        // The records of the batches in `confirming`.
        let mut held_records = 0usize;
        // Commits made and not yet acknowledged, oldest first (the committer answers in the
        // order commits were made).
        let mut awaiting: VecDeque<sink::Committing> = VecDeque::new();
        loop {
            let now = tokio::time::Instant::now();
            let limits = self.pace.limits(depth, now);
            self.yielding.set(i64::from(limits.yielding()));
            let due = self.batcher.holds(limits.rows)
                || self.batcher.deadline().is_some_and(|d| d <= now);
            let room =
                confirming.len() < MAX_CONFIRMING_BATCHES && held_records < MAX_CONFIRMING_RECORDS;
            if due && room && free(&self.writes, limits.depth) {
                let batch = self.batcher.take();
                self.writes.push_back(
                    batch
                        .iter()
                        .any(|r| matches!(r, batch::Record::Event { .. })),
                );
                storing.push_back(sinks.store(batch, &shutdown));
            }
            // A full batch that cannot start yet stops the lane taking records (memory stays
            // bounded), and pauses it if that lasts.
            let waited_out = self.pause_while_full(now, limits.rows);
            let deadline = if room && free(&self.writes, limits.depth) {
                self.batcher.deadline()
            } else {
                None
            };
            // Past `PAUSE_AFTER` the lane polls again whether or not the pause took: a
            // failed pause must not leave the loop waking on a timer already due.
            let taking = self.full_since.is_none() || waited_out;
            let pause_at = self
                .full_since
                .filter(|_| !waited_out)
                .map(|since| since + PAUSE_AFTER);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(outcome) = storing.next() => {
                    self.writes.pop_front();
                    let outcome = outcome?;
                    held_records += outcome.records();
                    confirming.push_back(sinks.confirm(outcome, &shutdown));
                }
                Some((outcome, records)) = confirming.next() => {
                    held_records = held_records.saturating_sub(records);
                    self.settle(&sinks, outcome, &mut awaiting);
                }
                Some(result) = commit_results.recv() => {
                    if let Some(commit) = awaiting.pop_front() {
                        sinks.committed(commit, result);
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => {}
                _ = tokio::time::sleep_until(pause_at.unwrap_or(now)), if pause_at.is_some() => {}
                // Polled while paused too: rebalances are served inside `recv`, and a paused
                // partition delivers nothing.
                message = consumer.recv(), if taking => {
                    self.forget_revoked(&mut clocks);
                    if consumer.context().take_assigned() {
                        self.reapply_pause();
                    }
                    let message = match message {
                        Ok(message) => message.detach(),
                        Err(e) => {
                            warn!(topic = %self.topic, error = %e, "consumer error");
                            continue;
                        }
                    };
                    let Some(clock) = admit(&consumer, &mut clocks, &message, &shutdown).await else {
                        continue;
                    };
                    let bytes = message.payload().map_or(0, <[u8]>::len);
                    // A paused lane still takes what a rebalance handed over before it was
                    // paused too (bounded by the prefetch), and pauses that as well.
                    let record = decoder.record(message, clock);
                    if matches!(record, batch::Record::Event { .. }) {
                        self.pace.took_event();
                    }
                    self.batcher.push(record, bytes);
                    if self.paused {
                        self.reapply_pause();
                    }
                }
            }
        }
        // Shutdown: batches being stored finish and are committed, then what was consumed is
        // written and committed too (a write gives up if its shard stays down; then nothing
        // is committed and the next owner re-reads), all within the shutdown deadline.
        let flush_began = tokio::time::Instant::now();
        let last = async {
            while let Some(outcome) = storing.next().await {
                self.writes.pop_front();
                confirming.push_back(sinks.confirm(outcome?, &drain));
            }
            let in_flight_stored = flush_began.elapsed();
            self.forget_revoked(&mut clocks);
            let outcome = sinks.store(self.batcher.take(), &drain).await?;
            confirming.push_back(sinks.confirm(outcome, &drain));
            while let Some((outcome, _)) = confirming.next().await {
                self.settle(&sinks, outcome, &mut awaiting);
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
                topic = %self.topic,
                in_flight_stored_ms = in_flight_stored.as_millis() as u64,
                consumed_stored_ms = consumed_stored.as_millis() as u64,
                committed_ms = flush_began.elapsed().as_millis() as u64,
                "final flush done"
            );
            Ok::<(), WriterError>(())
        };
        let deadline = shared.shutdown_timeout;
        match tokio::time::timeout(deadline, last).await {
            Ok(result) => result?,
            Err(_) => warn!(
                topic = %self.topic,
                ?deadline,
                "final flush did not finish in time; what it did not commit is re-read by the next owner"
            ),
        }
        drop(storing);
        drop(confirming);
        drop(sinks);
        committer.close(awaiting.is_empty());
        consumer.unsubscribe();
        Ok(())
    }

    /// A batch of the lane is stored and flushed: commits it (in the lane's order) while
    /// allowed.
    fn settle(
        &mut self,
        sinks: &Sinks<'_>,
        outcome: sink::Outcome,
        awaiting: &mut VecDeque<sink::Committing>,
    ) {
        let (still, commit) = sinks.settle(outcome, self.committing);
        self.committing = still;
        awaiting.extend(commit);
    }

    /// Notes when the batch became full, pauses the lane's assigned partitions once it has
    /// been full for `PAUSE_AFTER` (librdkafka drops what it prefetched for them and fetches
    /// again from the next undelivered offset on resume), and resumes them once it is not.
    /// Returns whether the batch has been full for `PAUSE_AFTER`. A yielding lane's batch is
    /// full at `rows`: it takes no more while its one write is busy, so that its next write is
    /// as small as the last.
    fn pause_while_full(&mut self, now: tokio::time::Instant, rows: usize) -> bool {
        let full = self.batcher.holds(rows);
        self.full_since = match (full, self.full_since) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, since) => since,
        };
        let pause = self
            .full_since
            .is_some_and(|since| now.duration_since(since) >= PAUSE_AFTER);
        if pause != self.paused {
            self.apply_pause(pause);
        }
        pause
    }

    /// Applies the lane's state again to everything assigned now: a partition paused, revoked
    /// and assigned back stays paused in librdkafka, and a newly assigned one starts resumed.
    fn reapply_pause(&mut self) {
        self.apply_pause(self.paused);
    }

    fn apply_pause(&mut self, full: bool) {
        let consumer = &self.consumer;
        let assigned = match consumer.assignment() {
            Ok(assigned) => assigned,
            Err(e) => {
                warn!(topic = %self.topic, error = %e, "cannot read the assignment");
                return;
            }
        };
        let changed = if full {
            consumer.pause(&assigned)
        } else {
            consumer.resume(&assigned)
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

    /// Drops what this lane holds of partitions a rebalance took away: their new owner reads
    /// them again from the last commit.
    fn forget_revoked(&mut self, clocks: &mut PartitionClocks) {
        let revoked = self.consumer.context().take_revoked();
        if !revoked.is_empty() {
            clocks.forget(&revoked);
            let dropped = self.batcher.forget(&revoked);
            if dropped > 0 {
                info!(topic = %self.topic, dropped, "dropped buffered records of revoked partitions");
            }
        }
    }
}

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
