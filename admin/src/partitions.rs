//! `partitions list` and `partitions maintain`: the day partitions of every shard's `events`
//! table, and one maintenance pass with db-writer's `partitions` settings (what the writer
//! runs every `partitions.interval`), e.g. after changing the retention or before a holiday.

use std::time::Duration;

use event_store::{PartitionInfo, ShardSet};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{error::AdminError, migrate::redact, services::Configs};

#[derive(clap::Args)]
pub struct MaintainArgs {
    /// Override db-writer's `partitions.retention` for this pass (e.g. `30days`; `0s` keeps
    /// everything).
    #[arg(long, value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
}

pub async fn list(configs: &Configs) -> Result<(), AdminError> {
    let writer = configs.writer()?;
    let shards = ShardSet::connect(&event_store::StoreSettings {
        migrate_on_start: false,
        ..writer.store.clone()
    })
    .await?;
    for (shard, url) in shards.shards().iter().zip(&writer.store.shards) {
        println!("shard {} ({})", shard.index, redact(url));
        println!(
            "  {:<20} {:<25} {:<25} {:>12} {:>10}",
            "partition", "from", "to", "rows (est.)", "MiB"
        );
        for partition in shard.partitions().await? {
            println!("  {}", row(&partition));
        }
    }
    Ok(())
}

pub async fn maintain(configs: &Configs, args: MaintainArgs) -> Result<(), AdminError> {
    let writer = configs.writer()?;
    let mut settings = writer.partitions.clone();
    if let Some(retention) = args.retention {
        settings.retention = retention;
    }
    let shards = ShardSet::connect(&event_store::StoreSettings {
        migrate_on_start: false,
        ..writer.store.clone()
    })
    .await?;
    let mut postponed = Vec::new();
    for shard in shards.shards() {
        let report = shard
            .maintain_partitions(&settings, OffsetDateTime::now_utc())
            .await?;
        if report.skipped {
            println!(
                "shard {}: skipped, another process is maintaining it",
                shard.index
            );
            continue;
        }
        println!(
            "shard {}: created {:?}, kept in the default partition {:?}, dropped {:?}, \
             deleted {} expired rows of the default partition, forgot {} ids",
            shard.index,
            report.created,
            report.kept_in_default,
            report.dropped,
            report.expired_rows,
            report.forgotten_ids
        );
        postponed.extend(
            report
                .postponed
                .iter()
                .map(|step| format!("shard {}: {step}", shard.index)),
        );
    }
    if postponed.is_empty() {
        Ok(())
    } else {
        Err(AdminError::CheckFailed(format!(
            "postponed (table lock not granted within partitions.lock_timeout): {}",
            postponed.join(", ")
        )))
    }
}

fn row(p: &PartitionInfo) -> String {
    let bound = |micros: Option<i64>, open: &str| match micros {
        Some(micros) => OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .ok()
            .and_then(|at| at.format(&Rfc3339).ok())
            .unwrap_or_else(|| micros.to_string()),
        None => open.to_owned(),
    };
    let (from, to) = if p.is_default {
        ("(default)".to_owned(), "(any other day)".to_owned())
    } else {
        (bound(p.from_micros, "(oldest)"), bound(p.to_micros, ""))
    };
    format!(
        "{:<20} {:<25} {:<25} {:>12} {:>10.1}",
        p.name,
        from,
        to,
        p.rows_estimate.max(0),
        p.bytes as f64 / (1024.0 * 1024.0)
    )
}
