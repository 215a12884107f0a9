//! Keeps every shard's day partitions (event_store::partitions): a pass at start, before
//! anything is consumed (so today's partition is not created while its rows arrive), then one
//! every `partitions.interval` beside the write loop and never in its way — a failed pass is
//! logged, counted and tried again at the next interval.

use std::time::Duration;

use event_store::{PartitionSettings, ShardSet};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics;

/// Runs a pass every `interval` until `shutdown` (the first one after an interval: the
/// writer ran one at start).
pub async fn maintain(shards: ShardSet, settings: PartitionSettings, shutdown: CancellationToken) {
    // Never a busy loop, whatever the configuration says.
    let interval = settings.interval.max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = pass(&shards, &settings) => {}
        }
    }
}

/// One pass over every shard; failures are logged and counted, never returned.
pub async fn pass(shards: &ShardSet, settings: &PartitionSettings) {
    for shard in shards.shards() {
        let label = shard.index.to_string();
        let label = [label.as_str()];
        let pass = shard
            .maintain_partitions(settings, OffsetDateTime::now_utc())
            .await;
        match pass {
            Ok(report) => {
                metrics::PARTITIONS_DROPPED
                    .with_label_values(&label)
                    .inc_by(report.dropped.len() as u64);
                if !report.postponed.is_empty() {
                    metrics::PARTITION_MAINTENANCE_FAILURES
                        .with_label_values(&label)
                        .inc();
                    warn!(shard = shard.index, postponed = ?report.postponed,
                        "partition steps postponed: the table lock was not granted in time");
                }
            }
            Err(e) => {
                metrics::PARTITION_MAINTENANCE_FAILURES
                    .with_label_values(&label)
                    .inc();
                warn!(shard = shard.index, error = %e, "partition maintenance failed; next pass at the next interval");
            }
        }
        if let Ok(partitions) = shard.partitions().await {
            metrics::PARTITIONS
                .with_label_values(&label)
                .set(partitions.len() as i64);
            let default_rows = partitions
                .iter()
                .filter(|p| p.is_default)
                .map(|p| p.rows_estimate.max(0))
                .sum();
            metrics::DEFAULT_PARTITION_ROWS
                .with_label_values(&label)
                .set(default_rows);
        }
    }
}
