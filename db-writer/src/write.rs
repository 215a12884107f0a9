//! Routes a batch to its shards and writes them concurrently. Transient errors are retried
//! with exponential backoff and jitter; rows the database refuses are isolated by bisection.

use std::{
    ops::Range,
    time::{Duration, Instant},
};

use event_store::{InsertMethod, RetryHint, Shard, ShardSet, StoreError, StoredEvent};
use futures::future::join_all;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{batch::Poison, metrics, settings::RetrySettings};

/// Shutdown arrived while a shard was still failing: nothing may be committed.
#[derive(Debug, thiserror::Error)]
#[error("write abandoned at shutdown while shard {shard} was unavailable")]
pub struct Abandoned {
    pub shard: usize,
}

pub struct ShardWriter {
    shards: ShardSet,
    retry: RetrySettings,
    method: InsertMethod,
    /// Re-encodes refused rows for the dead-letter topic.
    codec: schemas::EventCodec,
}

impl ShardWriter {
    pub fn new(shards: ShardSet, retry: RetrySettings, method: InsertMethod) -> Self {
        ShardWriter {
            shards,
            retry,
            method,
            codec: schemas::EventCodec::new(),
        }
    }

    pub fn router(&self) -> event_store::ShardRouter {
        self.shards.router()
    }

    /// Writes every event to the shard its client maps to. Returns the events the database
    /// refused as data (to be dead-lettered); everything else is stored when this returns Ok.
    pub async fn write(
        &self,
        events: Vec<StoredEvent>,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Poison>, Abandoned> {
        let mut per_shard: Vec<Vec<StoredEvent>> = vec![Vec::new(); self.shards.shards().len()];
        let router = self.shards.router();
        for event in events {
            per_shard[router.shard_for(&event.event.client_id)].push(event);
        }
        let writes = self
            .shards
            .shards()
            .iter()
            .zip(&per_shard)
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(shard, rows)| self.write_shard(shard, rows, shutdown));
        let mut refused = Vec::new();
        for result in join_all(writes).await {
            refused.extend(result?);
        }
        Ok(refused)
    }

    /// Writes one shard's rows; on a data error splits the failing range in halves until
    /// each refused row stands alone.
    async fn write_shard(
        &self,
        shard: &Shard,
        rows: &[StoredEvent],
        shutdown: &CancellationToken,
    ) -> Result<Vec<Poison>, Abandoned> {
        let mut refused = Vec::new();
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(8);
        pending.push(0..rows.len());
        while let Some(range) = pending.pop() {
            match self
                .insert_retrying(shard, &rows[range.clone()], shutdown)
                .await?
            {
                Ok(()) => {}
                Err(error) if range.len() == 1 => {
                    refused.push(self.refused_row(&rows[range.start], &error));
                }
                Err(_) => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
        }
        Ok(refused)
    }

    fn refused_row(&self, row: &StoredEvent, error: &StoreError) -> Poison {
        // The record was decoded from this very encoding, so re-encoding restores its value.
        let value = self.codec.encode(&row.event).ok();
        Poison {
            topic: row.position.topic.clone(),
            partition: row.position.partition,
            offset: row.position.offset,
            key: Some(row.event.client_id.clone().into_bytes()),
            value,
            error_class: "rejected-by-database",
            error: error.to_string(),
        }
    }

    /// Ok(Ok) stored, Ok(Err) refused as data, Err abandoned at shutdown.
    async fn insert_retrying(
        &self,
        shard: &Shard,
        rows: &[StoredEvent],
        shutdown: &CancellationToken,
    ) -> Result<Result<(), StoreError>, Abandoned> {
        let label = shard.index.to_string();
        let mut backoff = self.retry.initial_backoff;
        loop {
            let started = Instant::now();
            match shard.insert_events(rows, self.method).await {
                Ok(inserted) => {
                    metrics::WRITE_SECONDS
                        .with_label_values(&[&label])
                        .observe(started.elapsed().as_secs_f64());
                    metrics::ROWS_WRITTEN
                        .with_label_values(&[&label])
                        .inc_by(inserted);
                    metrics::ROWS_DUPLICATE
                        .with_label_values(&[&label])
                        .inc_by(rows.len() as u64 - inserted);
                    return Ok(Ok(()));
                }
                Err(e) if e.retry_hint() == RetryHint::DeadLetter => return Ok(Err(e)),
                Err(e) => {
                    metrics::WRITE_RETRIES.with_label_values(&[&label]).inc();
                    let wait = jittered(backoff);
                    warn!(shard = shard.index, error = %e, retry_in = ?wait, "shard write failed, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(Abandoned { shard: shard.index }),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
            }
        }
    }
}

/// "Full jitter" keeps writers that failed together from retrying together.
fn jittered(backoff: Duration) -> Duration {
    let max = backoff.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(max / 2..=max))
}
