//! Where a complete batch goes: routed and written to the shards, what can never be stored to
//! the dead-letter topic, then — in batch order — its offsets committed and a notice sent.

use rdkafka::consumer::{CommitMode, Consumer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    batch::{Poison, Record},
    commit,
    consume::WriterConsumer,
    dead_letter::DeadLetters,
    metrics,
    notice::{self, PendingNotice},
    notify::Notifier,
    route::route,
    write::{Fate, ShardWriter},
    WriterError,
};

pub struct Sinks<'a> {
    pub consumer: &'a WriterConsumer,
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
}

/// How storing a batch ended.
pub enum Outcome {
    Stored(Stored),
    Empty,
    /// Given up at shutdown while a shard was down: nothing of it, nor after it, may commit.
    Abandoned,
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
        let fates = match self.writer.write(&per_shard, shutdown).await {
            Ok(fates) => fates,
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
        Ok(Outcome::Stored(Stored {
            ranges,
            records: batch_size,
            notice,
        }))
    }

    /// Commits a stored batch while commits are allowed; returns whether they still are.
    pub fn settle(&self, outcome: Outcome, committing: bool) -> bool {
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

    /// Commits a stored batch's offsets (with each partition's clock), then announces it.
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
