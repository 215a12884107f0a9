//! Keeps every shard's day partitions (event_store::partitions): a pass at start, then one
//! every `partitions.interval`, beside the write loop and never in its way — a failed pass is
//! logged, counted and tried again at the next interval.

use std::time::Duration;

use event_store::{PartitionSettings, ShardSet};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics;

/// Runs passes until `shutdown`.
pub async fn maintain(shards: ShardSet, settings: PartitionSettings, shutdown: CancellationToken) {
    // Never a busy loop, whatever the configuration says.
    let interval = settings.interval.max(Duration::from_secs(1));
    loop {
        for shard in shards.shards() {
            let label = shard.index.to_string();
            let label = [label.as_str()];
            let pass = tokio::select! {
                _ = shutdown.cancelled() => return,
                pass = shard.maintain_partitions(&settings, OffsetDateTime::now_utc()) => pass,
            };
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
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
