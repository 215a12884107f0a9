//! Where a complete batch goes: routed and written to the shards, what can never be stored to
//! the dead-letter topic, then — in batch order — confirmed flushed (a lane that does not wait
//! for the flush), its offsets committed and a notice sent.

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    batch::{Poison, Record},
    commit,
    committer::Committer,
    dead_letter::DeadLetters,
    metrics,
    notice::{self, PendingNotice},
    notify::Notifier,
    route::route,
    write::{Fate, ShardWriter, Written},
    WriterError,
};

pub struct Sinks<'a> {
    pub committer: &'a Committer,
    pub writer: &'a ShardWriter,
    pub dead_letters: &'a DeadLetters,
    pub notifier: Option<&'a Notifier>,
    /// Names this process in persisted notices.
    pub member: String,
}

/// A batch whose records are all stored (or dead-lettered), waiting for its commit.
pub struct Stored {
    ranges: commit::Ranges,
    records: usize,
    notice: Option<PendingNotice>,
    /// Rows written without waiting for the flush, per shard, until `confirm`.
    unconfirmed: Option<Box<(Vec<Vec<event_store::StoredEvent>>, Written)>>,
}

/// A commit made and not yet acknowledged; acknowledgements come in the order commits were
/// made.
pub struct Committing {
    records: usize,
    partitions: usize,
    notice: Option<PendingNotice>,
}

/// How storing a batch ended.
pub enum Outcome {
    Stored(Stored),
    Empty,
    /// Given up at shutdown while a shard was down: nothing of it, nor after it, may commit.
    Abandoned,
}

impl Outcome {
    /// The records of a stored batch (events, refused records and ticks).
    pub fn records(&self) -> usize {
        match self {
            Outcome::Stored(stored) => stored.records,
            Outcome::Empty | Outcome::Abandoned => 0,
        }
    }
}

impl Sinks<'_> {
    /// Writes a batch and dead-letters what can never be stored.
    pub async fn store(
        &self,
        records: Vec<Record>,
        shutdown: &CancellationToken,
    ) -> Result<Outcome, WriterError> {
        if records.is_empty() {
            return Ok(Outcome::Empty);
        }
        let ranges = commit::ranges(&records);
        let batch_size = records.len();
        let started = std::time::Instant::now();
        // A batch holds one lane's records: its topic labels the batch metrics.
        let topic = ranges
            .keys()
            .next()
            .map(|(topic, _)| topic.clone())
            .unwrap_or_default();
        let mut events = Vec::with_capacity(records.len());
        let mut poisons: Vec<(Poison, Option<String>)> = Vec::new();
        for record in records {
            match record {
                Record::Event { event, raw } => events.push((event, raw)),
                Record::Poison { poison, .. } => poisons.push((poison, None)),
                Record::Tick { .. } => {}
            }
        }
        let routed = route(events, self.writer.router());
        let per_shard: Vec<&[event_store::StoredEvent]> =
            routed.iter().map(|rows| rows.events.as_slice()).collect();
        let (fates, written) = match self.writer.write(&per_shard, shutdown).await {
            Ok(written) => written,
            Err(abandoned) => {
                warn!(%abandoned, "batch not written; offsets not committed");
                return Ok(Outcome::Abandoned);
            }
        };
        let mut stored: Vec<Vec<&event_store::StoredEvent>> = Vec::with_capacity(routed.len());
        for (rows, fates) in routed.iter().zip(&fates) {
            let mut kept = Vec::new();
            for ((event, raw), fate) in rows.events.iter().zip(&rows.raws).zip(fates) {
                let (error_class, error, sqlstate) = match fate {
                    Fate::Stored => {
                        kept.push(event);
                        continue;
                    }
                    Fate::Duplicate => continue,
                    Fate::Taken => {
                        metrics::EVENT_ID_CONFLICTS.inc();
                        (
                            "event-id-conflict",
                            format!(
                                "event_id {} belongs to another client's event",
                                event.event.event_id
                            ),
                            None,
                        )
                    }
                    Fate::Refused { error, sqlstate } => {
                        ("rejected-by-database", error.clone(), sqlstate.clone())
                    }
                };
                poisons.push((
                    Poison {
                        position: event.position.clone(),
                        raw: raw.clone(),
                        error_class,
                        error,
                    },
                    sqlstate,
                ));
            }
            stored.push(kept);
        }
        let notice = self
            .notifier
            .map(|_| notice::summarise(&stored, &ranges, batch_size, &self.member))
            .filter(|notice| notice.rows() > 0);
        if !poisons.is_empty() {
            warn!(
                count = poisons.len(),
                "sending records to the dead-letter topic"
            );
            // Without the dead-letter acknowledgement the offsets must not move: the records
            // would be lost. Failing here restarts from the last commit.
            self.dead_letters.publish(&poisons).await?;
        }
        metrics::BATCH_RECORDS
            .with_label_values(&[&topic])
            .observe(batch_size as f64);
        metrics::BATCH_FLUSH_SECONDS
            .with_label_values(&[&topic])
            .observe(started.elapsed().as_secs_f64());
        drop(stored);
        let unconfirmed = self.writer.needs_confirming().then(|| {
            Box::new((
                routed.into_iter().map(|rows| rows.events).collect(),
                written,
            ))
        });
        Ok(Outcome::Stored(Stored {
            ranges,
            records: batch_size,
            notice,
            unconfirmed,
        }))
    }

    /// Waits until a stored batch's rows are flushed on their shards (at once when the lane
    /// waits for the flush in its writes), writing again what no session saw flushed.
    /// Returns the outcome and the records the batch held meanwhile.
    pub async fn confirm(
        &self,
        outcome: Outcome,
        shutdown: &CancellationToken,
    ) -> (Outcome, usize) {
        let records = outcome.records();
        let Outcome::Stored(mut stored) = outcome else {
            return (outcome, records);
        };
        if let Some(unconfirmed) = stored.unconfirmed.take() {
            let (rows, written) = *unconfirmed;
            if let Err(abandoned) = self.writer.confirm(&rows, &written, shutdown).await {
                warn!(%abandoned, "batch not confirmed flushed; offsets not committed");
                return (Outcome::Abandoned, records);
            }
        }
        (Outcome::Stored(stored), records)
    }

    /// Commits a stored batch while commits are allowed; returns whether they still are, and
    /// the commit to wait for.
    pub fn settle(&self, outcome: Outcome, committing: bool) -> (bool, Option<Committing>) {
        match outcome {
            Outcome::Stored(stored) if committing => (true, self.commit(stored)),
            Outcome::Stored(_) => (false, None),
            Outcome::Empty => (committing, None),
            Outcome::Abandoned => (false, None),
        }
    }

    /// Commits a stored batch's offsets (with each partition's clock), on the committer's
    /// thread; results come in order.
    fn commit(&self, stored: Stored) -> Option<Committing> {
        let tpl = match commit::to_list(&stored.ranges) {
            Ok(tpl) => tpl,
            Err(e) => {
                warn!(error = %e, "cannot build the offsets to commit");
                return None;
            }
        };
        match self.committer.commit(tpl) {
            Ok(()) => Some(Committing {
                records: stored.records,
                partitions: stored.ranges.len(),
                notice: stored.notice,
            }),
            Err(e) => {
                warn!(error = %e, "offset commit refused; the records will be re-delivered");
                None
            }
        }
    }

    /// The broker's answer to the oldest commit not yet acknowledged: then the batch is
    /// announced.
    pub fn committed(&self, committing: Committing, result: rdkafka::error::KafkaResult<()>) {
        match result {
            Ok(()) => {
                metrics::BATCHES_COMMITTED.inc();
                debug!(
                    records = committing.records,
                    partitions = committing.partitions,
                    "batch committed"
                );
                if let (Some(notifier), Some(notice)) = (self.notifier, committing.notice) {
                    notifier.batch_persisted(&notice.finish());
                }
            }
            // Lost partitions: their new owner re-reads from the previous commit and the
            // idempotent insert absorbs the repeat.
            Err(e) => warn!(error = %e, "offset commit failed; the records will be re-delivered"),
        }
    }
}
