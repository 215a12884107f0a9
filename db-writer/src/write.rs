//! Writes each shard's rows concurrently. Transient and operational errors are retried with
//! exponential backoff and jitter while the loop stops consuming (the shard is "paused");
//! rows the database refuses as data are isolated by bisection. A writer for a lane whose
//! `synchronous_commit` is off writes without waiting for the WAL flush and then, apart,
//! `confirm`s each write through the shard's `FlushWatch`, writing it again (waiting for the
//! flush) when no session could see it flushed.

use std::{
    ops::Range,
    time::{Duration, Instant},
};

use event_store::{
    Began, FlushWatch, InsertMethod, RetryHint, RowOutcome, Shard, ShardSet, StoreError,
    StoreSettings, StoredEvent,
};
use futures::future::join_all;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::{metrics, settings::RetrySettings};

/// Shutdown arrived while a shard was still failing: nothing may be committed.
#[derive(Debug, thiserror::Error)]
#[error("write abandoned at shutdown while shard {shard} was unavailable")]
pub struct Abandoned {
    pub shard: usize,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Inserted, or replaced a copy of the same event that comes after it.
    Stored,
    /// A copy that comes first is stored.
    Duplicate,
    /// Another client's event has this id.
    Taken,
    /// The database refused the row itself (SQLSTATE class 22 or 23).
    Refused {
        error: String,
        sqlstate: Option<String>,
    },
}

pub struct ShardWriter {
    shards: ShardSet,
    retry: RetrySettings,
    method: InsertMethod,
    /// Set when `shards` commit without waiting for the WAL flush.
    unflushed: Option<Unflushed>,
}

/// What confirms the writes of sessions with `synchronous_commit` off.
struct Unflushed {
    /// One per shard.
    watches: Vec<FlushWatch>,
    /// Sessions that wait for the flush, for writing again what no session saw flushed.
    flushed: ShardSet,
}

/// Per shard, when the write of its rows began by its flush watch (`None` for a shard without
/// rows); empty for a writer that waits for the flush, which has no watches.
pub type Written = Vec<Option<Began>>;

impl ShardWriter {
    pub fn new(shards: ShardSet, retry: RetrySettings, method: InsertMethod) -> Self {
        ShardWriter {
            shards,
            retry,
            method,
            unflushed: None,
        }
    }

    /// A writer whose sessions do not wait for the WAL flush, with a flush watch per shard
    /// (rounds at least `flush_interval` apart) to confirm its writes; `flushed` writes again
    /// what they cannot confirm.
    pub fn unflushed(
        store: &StoreSettings,
        flushed: ShardSet,
        flush_interval: Duration,
        retry: RetrySettings,
    ) -> Result<Self, StoreError> {
        let watches = store
            .shards
            .iter()
            .enumerate()
            .map(|(index, url)| FlushWatch::start(store, index, url, flush_interval))
            .collect();
        Ok(ShardWriter {
            shards: ShardSet::connect_unflushed(store)?,
            retry,
            method: store.insert_method,
            unflushed: Some(Unflushed { watches, flushed }),
        })
    }

    pub fn router(&self) -> event_store::ShardRouter {
        self.shards.router()
    }

    /// Writes every shard's rows (`per_shard[i]` to shard `i`) concurrently; returns each
    /// row's fate, in the same shape, and what `confirm` needs.
    pub async fn write(
        &self,
        per_shard: &[&[StoredEvent]],
        shutdown: &CancellationToken,
    ) -> Result<(Vec<Vec<Fate>>, Written), Abandoned> {
        let watches = self.unflushed.as_ref().map(|u| u.watches.as_slice());
        let began: Written = per_shard
            .iter()
            .zip(watches.into_iter().flatten())
            .map(|(rows, watch)| (!rows.is_empty()).then(|| watch.began()))
            .collect();
        let writes = self
            .shards
            .shards()
            .iter()
            .zip(per_shard)
            .map(|(shard, rows)| self.write_shard(shard, rows, shutdown));
        let fates = join_all(writes)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        Ok((fates, began))
    }

    /// Whether `write` returns before the rows are flushed, so that they need `confirm`.
    pub fn needs_confirming(&self) -> bool {
        self.unflushed.is_some()
    }

    /// Returns once every shard's WAL is flushed past the rows `write` wrote there
    /// (`per_shard`, as written). A shard whose flush no session saw gets its rows again,
    /// waiting for the flush: if the shard lost them in a crash they are back, and if not
    /// the event id absorbs the repeat.
    pub async fn confirm(
        &self,
        per_shard: &[Vec<StoredEvent>],
        written: &Written,
        shutdown: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let Some(unflushed) = &self.unflushed else {
            return Ok(());
        };
        let confirms = per_shard
            .iter()
            .zip(written)
            .zip(unflushed.watches.iter().zip(unflushed.flushed.shards()))
            .enumerate()
            .filter_map(|(index, ((rows, began), (watch, shard)))| {
                Some((index, rows, (*began)?, watch, shard))
            })
            .map(|(index, rows, began, watch, shard)| async move {
                let label = index.to_string();
                let waited = Instant::now();
                match watch.flushed(began).await {
                    Ok(()) => {
                        metrics::FLUSH_WAIT_SECONDS
                            .with_label_values(&[&label])
                            .observe(waited.elapsed().as_secs_f64());
                        Ok(())
                    }
                    Err(unconfirmed) => {
                        metrics::UNCONFIRMED_WRITES
                            .with_label_values(&[&label])
                            .inc();
                        warn!(%unconfirmed, rows = rows.len(), "writing the rows again, waiting for the flush");
                        // Their fates were settled by the first write.
                        self.write_shard(shard, rows, shutdown).await.map(|_| ())
                    }
                }
            });
        join_all(confirms).await.into_iter().collect()
    }

    /// Writes one shard's rows; on a data error splits the failing range in halves until
    /// each refused row stands alone.
    async fn write_shard(
        &self,
        shard: &Shard,
        rows: &[StoredEvent],
        shutdown: &CancellationToken,
    ) -> Result<Vec<Fate>, Abandoned> {
        let mut fates: Vec<Option<Fate>> = vec![None; rows.len()];
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(8);
        if !rows.is_empty() {
            pending.push(0..rows.len());
        }
        while let Some(range) = pending.pop() {
            match self
                .insert_retrying(shard, &rows[range.clone()], shutdown)
                .await?
            {
                Ok(outcomes) => {
                    for (slot, outcome) in fates[range].iter_mut().zip(outcomes) {
                        *slot = Some(match outcome {
                            RowOutcome::Inserted | RowOutcome::Replaced => Fate::Stored,
                            RowOutcome::Duplicate => Fate::Duplicate,
                            RowOutcome::Taken => Fate::Taken,
                        });
                    }
                }
                Err(error) if range.len() == 1 => {
                    fates[range.start] = Some(Fate::Refused {
                        sqlstate: error.sqlstate().map(str::to_owned),
                        error: error.to_string(),
                    });
                }
                Err(_) => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
        }
        Ok(fates
            .into_iter()
            .map(|fate| fate.unwrap_or(Fate::Duplicate))
            .collect())
    }

    /// Ok(Ok) written, Ok(Err) refused as data, Err abandoned at shutdown. Every other error
    /// is retried here, however long it lasts: the batch and everything after it wait.
    async fn insert_retrying(
        &self,
        shard: &Shard,
        rows: &[StoredEvent],
        shutdown: &CancellationToken,
    ) -> Result<Result<Vec<RowOutcome>, StoreError>, Abandoned> {
        let label = shard.index.to_string();
        let mut backoff = self.retry.initial_backoff;
        let mut attempts = 0u32;
        let paused = metrics::SHARD_PAUSED.with_label_values(&[&label]);
        let result = loop {
            let started = Instant::now();
            match shard.insert_events(rows, self.method).await {
                Ok(outcomes) => {
                    metrics::WRITE_SECONDS
                        .with_label_values(&[&label])
                        .observe(started.elapsed().as_secs_f64());
                    let stored = outcomes.iter().filter(|o| o.is_stored()).count() as u64;
                    metrics::ROWS_WRITTEN
                        .with_label_values(&[&label])
                        .inc_by(stored);
                    metrics::ROWS_DUPLICATE
                        .with_label_values(&[&label])
                        .inc_by(outcomes.len() as u64 - stored);
                    break Ok(Ok(outcomes));
                }
                Err(e) if e.retry_hint() == RetryHint::DeadLetter => break Ok(Err(e)),
                Err(e) => {
                    if attempts == 0 {
                        paused.inc();
                    }
                    attempts += 1;
                    metrics::WRITE_RETRIES.with_label_values(&[&label]).inc();
                    let wait = jittered(backoff);
                    let sqlstate = e.sqlstate().unwrap_or("none");
                    // An operator must act when a shard keeps refusing (read-only, missing
                    // privilege or table): say so loudly, but not on every attempt.
                    if attempts % 10 == 0 {
                        error!(shard = shard.index, attempts, sqlstate, error = %e, "shard keeps failing; consumption is paused, nothing is committed");
                    } else {
                        warn!(shard = shard.index, attempts, sqlstate, error = %e, retry_in = ?wait, "shard write failed, retrying");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break Err(Abandoned { shard: shard.index }),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
            }
        };
        if attempts > 0 {
            paused.dec();
        }
        result
    }
}

/// "Full jitter" keeps writers that failed together from retrying together.
fn jittered(backoff: Duration) -> Duration {
    let max = backoff.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(max / 2..=max))
}
