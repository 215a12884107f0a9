//! Day partitions of `events` (migration V5): created ahead of time and dropped whole once
//! older than the retention.
//!
//! Rows are never moved between partitions: a read planned just before a move would miss the
//! moved rows, and an insert routed to the default partition just before a day is attached
//! fails its partition check. So a day is only created while nothing of it is stored (ahead of
//! time, or while the default partition holds none of it), and rows that did land in the
//! default partition (a gateway clock far behind, or days nobody created) stay there until
//! the retention deletes them row by row. Every shard runs this under an advisory lock, so
//! several writers (or a writer and `eventpipe-admin partitions maintain`) never race on the
//! same table. Days are UTC days of `ordered_at`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tracing::{info, warn};

use crate::{
    timestamps::{from_micros, to_micros},
    Shard, StoreError,
};

const DAY_MICROS: i64 = 86_400_000_000;
/// Serialises maintenance on one shard across processes.
const MAINTENANCE_LOCK: i64 = 0x6576_5f70_6172_7473; // "ev_parts"
/// Rows deleted per statement (expired rows of the default partition, forgotten ids), and
/// statements per pass: a backlog takes several passes instead of one long transaction.
const DELETE_BATCH: i64 = 10_000;
const DELETE_STATEMENTS_PER_PASS: usize = 100;

/// How the day partitions are kept. db-writer runs the maintenance; the admin tool can too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartitionSettings {
    /// Days after today that have their partition ready. Rows of a day without one land in
    /// the default partition (never refused) and stay there. Default 3.
    pub premake_days: u32,
    /// Rows ordered longer ago than this are dropped, a whole day's partition at a time once
    /// its last row is older (the `events_legacy` partition of a migrated table too; rows in
    /// the default partition one by one), and their producer-chosen ids forgotten: a copy
    /// arriving after that is stored as new. `0s` keeps everything. Default 0s.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often db-writer runs a pass (the first at start). Default 1h.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Creating or dropping a partition locks `events` briefly; this long it may wait for
    /// running statements before the step is left to the next pass (writes and reads queue
    /// behind a waiting lock, so keep it short). Default 1s.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
}

impl Default for PartitionSettings {
    fn default() -> Self {
        PartitionSettings {
            premake_days: 3,
            retention: Duration::ZERO,
            interval: Duration::from_secs(3600),
            lock_timeout: Duration::from_secs(1),
        }
    }
}

/// One partition of `events`, as PostgreSQL describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub name: String,
    /// Inclusive lower bound (micros); `None` is MINVALUE, or the default partition.
    pub from_micros: Option<i64>,
    /// Exclusive upper bound (micros); `None` is the default partition.
    pub to_micros: Option<i64>,
    pub is_default: bool,
    /// The planner's row estimate (exact after ANALYZE; -1 before the first).
    pub rows_estimate: i64,
    pub bytes: i64,
}

/// What one pass did on one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Another process held the shard's maintenance lock; nothing was done.
    pub skipped: bool,
    pub created: Vec<String>,
    /// Days not created because the default partition holds rows of them (they stay there).
    pub kept_in_default: Vec<String>,
    pub dropped: Vec<String>,
    /// Rows of the default partition deleted because they were past the retention.
    pub expired_rows: u64,
    /// Producer-chosen ids forgotten with their rows.
    pub forgotten_ids: u64,
    /// Steps left to the next pass because the table lock was not granted in time.
    pub postponed: Vec<String>,
}

impl Shard {
    /// The partitions of `events`, oldest first, the default one last.
    pub async fn partitions(&self) -> Result<Vec<PartitionInfo>, StoreError> {
        let client = self.client().await?;
        list(&client, self).await
    }

    /// One maintenance pass at `now`: partitions for today and `premake_days` after it (those
    /// the default partition holds nothing of), partitions past the retention dropped and the
    /// default partition's expired rows deleted, with their ids.
    pub async fn maintain_partitions(
        &self,
        settings: &PartitionSettings,
        now: OffsetDateTime,
    ) -> Result<MaintenanceReport, StoreError> {
        let mut client = self.client().await?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&MAINTENANCE_LOCK])
            .await
            .map_err(self.pg())?
            .get(0);
        if !locked {
            return Ok(MaintenanceReport {
                skipped: true,
                ..MaintenanceReport::default()
            });
        }
        let outcome = self.maintain_locked(&mut client, settings, now).await;
        // The pooled connection lives on: the session lock must not.
        if let Err(e) = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MAINTENANCE_LOCK])
            .await
        {
            warn!(shard = self.index, error = %e, "releasing the partition maintenance lock failed");
        }
        let report = outcome?;
        if !report.created.is_empty() || !report.dropped.is_empty() || !report.postponed.is_empty()
        {
            info!(
                shard = self.index,
                created = ?report.created,
                kept_in_default = ?report.kept_in_default,
                dropped = ?report.dropped,
                expired_rows = report.expired_rows,
                forgotten_ids = report.forgotten_ids,
                postponed = ?report.postponed,
                "partitions maintained"
            );
        }
        Ok(report)
    }

    async fn maintain_locked(
        &self,
        client: &mut deadpool_postgres::Object,
        settings: &PartitionSettings,
        now: OffsetDateTime,
    ) -> Result<MaintenanceReport, StoreError> {
        let mut report = MaintenanceReport::default();
        let now_micros = to_micros(now)?;
        let today = now_micros.div_euclid(DAY_MICROS) * DAY_MICROS;
        let days = (0..=i64::from(settings.premake_days)).map(|ahead| today + ahead * DAY_MICROS);
        let mut existing = list(client, self).await?;
        for day in days {
            if covered(&existing, day) {
                continue;
            }
            let name = day_partition_name(day);
            match self.create_day(client, settings, &name, day).await {
                Ok(true) => {
                    // The maintenance lock keeps other passes out: the list stays true
                    // without reading it again.
                    existing.push(PartitionInfo {
                        name: name.clone(),
                        from_micros: Some(day),
                        to_micros: Some(day + DAY_MICROS),
                        is_default: false,
                        rows_estimate: 0,
                        bytes: 0,
                    });
                    report.created.push(name);
                }
                Ok(false) => report.kept_in_default.push(name),
                Err(e) if lock_not_granted(&e) => report.postponed.push(format!("create {name}")),
                Err(e) => return Err(e),
            }
        }
        if settings.retention.is_zero() {
            return Ok(report);
        }
        let retention = i64::try_from(settings.retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff = now_micros.saturating_sub(retention);
        for partition in &existing {
            let expired =
                !partition.is_default && partition.to_micros.is_some_and(|to| to <= cutoff);
            if !expired {
                continue;
            }
            match self.drop_partition(client, settings, &partition.name).await {
                Ok(()) => report.dropped.push(partition.name.clone()),
                Err(e) if lock_not_granted(&e) => {
                    report.postponed.push(format!("drop {}", partition.name))
                }
                Err(e) => return Err(e),
            }
        }
        report.expired_rows = delete_in_batches(
            client,
            self,
            "DELETE FROM events_default WHERE ctid IN \
             (SELECT ctid FROM events_default WHERE ordered_at < $1 LIMIT $2)",
            from_micros(cutoff),
        )
        .await?;
        existing.retain(|p| !report.dropped.contains(&p.name));
        report.forgotten_ids = self.forget_ids(client, &existing, cutoff).await?;
        Ok(report)
    }

    /// Creates the partition of one day unless the default partition holds rows of it
    /// (then the day stays in the default partition: `false`). The lock on the default
    /// partition keeps inserts of that day out until the day exists.
    async fn create_day(
        &self,
        client: &mut deadpool_postgres::Object,
        settings: &PartitionSettings,
        name: &str,
        day: i64,
    ) -> Result<bool, StoreError> {
        let (from, to) = (from_micros(day), from_micros(day + DAY_MICROS));
        let tx = client.transaction().await.map_err(self.pg())?;
        // The parent first, as every read and insert locks it before its partitions: the
        // default partition first and the parent (which CREATE … PARTITION OF needs) second
        // deadlocked with a read holding the parent and wanting the default partition.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}; LOCK TABLE ONLY events IN ACCESS EXCLUSIVE MODE; \
             LOCK TABLE events_default IN ACCESS EXCLUSIVE MODE",
            settings.lock_timeout.as_millis().max(1)
        ))
        .await
        .map_err(self.pg())?;
        let held: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM events_default \
                 WHERE ordered_at >= $1 AND ordered_at < $2)",
                &[&from, &to],
            )
            .await
            .map_err(self.pg())?
            .get(0);
        if held {
            return Ok(false);
        }
        // Bounds as literals: DDL takes no parameters. Micros in UTC are exact.
        tx.batch_execute(&format!(
            "CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ('{}') TO ('{}')",
            literal(day),
            literal(day + DAY_MICROS)
        ))
        .await
        .map_err(self.pg())?;
        // PostgreSQL gives a new partition the default statistics target on every column, not
        // the parent's: copy the parent's, so ANALYZE of the day gathers only what reads are
        // planned by (migration V6).
        let targets = tx
            .query(
                "SELECT attname::text, attstattarget::int FROM pg_attribute \
                 WHERE attrelid = 'events'::regclass AND attnum > 0 AND NOT attisdropped \
                 AND coalesce(attstattarget::int, -1) >= 0 ORDER BY attnum",
                &[],
            )
            .await
            .map_err(self.pg())?;
        if !targets.is_empty() {
            let corrupt = |e: tokio_postgres::Error| StoreError::CorruptRow(e.to_string());
            let columns = targets
                .iter()
                .map(|row| {
                    let column: &str = row.try_get(0).map_err(corrupt)?;
                    let target: i32 = row.try_get(1).map_err(corrupt)?;
                    Ok(format!(
                        "ALTER COLUMN {} SET STATISTICS {target}",
                        quote_ident(column)
                    ))
                })
                .collect::<Result<Vec<String>, StoreError>>()?;
            tx.batch_execute(&format!("ALTER TABLE {name} {}", columns.join(", ")))
                .await
                .map_err(self.pg())?;
        }
        tx.commit().await.map_err(self.pg())?;
        Ok(true)
    }

    async fn drop_partition(
        &self,
        client: &mut deadpool_postgres::Object,
        settings: &PartitionSettings,
        name: &str,
    ) -> Result<(), StoreError> {
        let tx = client.transaction().await.map_err(self.pg())?;
        // The parent first, for the same reason as in `create_day`: DROP TABLE locks the
        // partition before the parent.
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {}; LOCK TABLE ONLY events IN ACCESS EXCLUSIVE MODE; \
             DROP TABLE {}",
            settings.lock_timeout.as_millis().max(1),
            quote_ident(name)
        ))
        .await
        .map_err(self.pg())?;
        tx.commit().await.map_err(self.pg())
    }

    /// Deletes the `event_ids` rows of copies no partition holds any more: below the lowest
    /// bound still stored (and the retention cutoff), in bounded statements.
    async fn forget_ids(
        &self,
        client: &deadpool_postgres::Object,
        remaining: &[PartitionInfo],
        cutoff: i64,
    ) -> Result<u64, StoreError> {
        let mut below = cutoff;
        for partition in remaining.iter().filter(|p| !p.is_default) {
            match partition.from_micros {
                // MINVALUE: a legacy partition still holds the oldest rows.
                None => return Ok(0),
                Some(from) => below = below.min(from),
            }
        }
        let oldest_default: Option<OffsetDateTime> = client
            .query_one("SELECT min(ordered_at) FROM events_default", &[])
            .await
            .map_err(self.pg())?
            .get(0);
        if let Some(oldest) = oldest_default {
            below = below.min(to_micros(oldest)?);
        }
        delete_in_batches(
            client,
            self,
            "DELETE FROM event_ids WHERE event_id IN \
             (SELECT event_id FROM event_ids WHERE ordered_at < $1 LIMIT $2)",
            from_micros(below),
        )
        .await
    }
}

/// Runs `sql` (parameters: a time bound and the batch size) until it deletes less than a
/// batch, at most `DELETE_STATEMENTS_PER_PASS` times. Returns the rows deleted.
async fn delete_in_batches(
    client: &deadpool_postgres::Object,
    shard: &Shard,
    sql: &str,
    below: OffsetDateTime,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for _ in 0..DELETE_STATEMENTS_PER_PASS {
        let n = client
            .execute(sql, &[&below, &DELETE_BATCH])
            .await
            .map_err(shard.pg())?;
        deleted += n;
        if n < DELETE_BATCH as u64 {
            break;
        }
    }
    Ok(deleted)
}

async fn list(
    client: &deadpool_postgres::Object,
    shard: &Shard,
) -> Result<Vec<PartitionInfo>, StoreError> {
    let rows = client
        .query(include_str!("sql/list_partitions.sql"), &[])
        .await
        .map_err(shard.pg())?;
    let corrupt = |e: tokio_postgres::Error| StoreError::CorruptRow(e.to_string());
    let mut partitions = rows
        .iter()
        .map(|row| {
            let from: Option<OffsetDateTime> = row.try_get("from_at").map_err(corrupt)?;
            let to: Option<OffsetDateTime> = row.try_get("to_at").map_err(corrupt)?;
            Ok(PartitionInfo {
                name: row.try_get("name").map_err(corrupt)?,
                from_micros: from.map(to_micros).transpose()?,
                to_micros: to.map(to_micros).transpose()?,
                is_default: row.try_get("is_default").map_err(corrupt)?,
                rows_estimate: row.try_get("rows_estimate").map_err(corrupt)?,
                bytes: row.try_get("bytes").map_err(corrupt)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    partitions.sort_by_key(|p| (p.is_default, p.to_micros, p.from_micros));
    Ok(partitions)
}

/// Whether a non-default partition already holds `day`'s start (`[from, to)` ranges never
/// overlap, and day partitions start on day boundaries).
fn covered(partitions: &[PartitionInfo], day: i64) -> bool {
    partitions.iter().any(|p| {
        !p.is_default
            && p.from_micros.is_none_or(|from| from <= day)
            && p.to_micros.is_some_and(|to| day < to)
    })
}

/// `events_pYYYYMMDD`.
fn day_partition_name(day: i64) -> String {
    let at = from_micros(day);
    format!(
        "events_p{:04}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}

/// A UTC timestamp literal PostgreSQL reads back exactly.
fn literal(micros: i64) -> String {
    let at = from_micros(micros);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn lock_not_granted(e: &StoreError) -> bool {
    match e {
        StoreError::Postgres { source, .. } => source.code() == Some(&SqlState::LOCK_NOT_AVAILABLE),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(from: Option<i64>, to: Option<i64>, is_default: bool) -> PartitionInfo {
        PartitionInfo {
            name: "p".into(),
            from_micros: from,
            to_micros: to,
            is_default,
            rows_estimate: 0,
            bytes: 0,
        }
    }

    #[test]
    fn a_day_is_covered_by_the_partition_holding_its_start() {
        let day = 20_000 * DAY_MICROS;
        let legacy = partition(None, Some(day + DAY_MICROS), false);
        let next = partition(Some(day + DAY_MICROS), Some(day + 2 * DAY_MICROS), false);
        let default = partition(None, None, true);
        let all = [legacy, next, default.clone()];
        assert!(covered(&all, day));
        assert!(
            covered(&all, day - 40 * DAY_MICROS),
            "MINVALUE covers the past"
        );
        assert!(covered(&all, day + DAY_MICROS));
        assert!(!covered(&all, day + 2 * DAY_MICROS));
        assert!(
            !covered(&[default], day),
            "the default partition covers no day"
        );
    }

    #[test]
    fn names_and_literals_are_utc_days() {
        // 2026-12-01T00:00:00Z
        let day = 1_796_083_200_000_000;
        assert_eq!(day % DAY_MICROS, 0);
        assert_eq!(day_partition_name(day), "events_p20261201");
        assert_eq!(literal(day), "2026-12-01 00:00:00.000000+00");
        assert_eq!(literal(day + 1), "2026-12-01 00:00:00.000001+00");
        assert_eq!(day_partition_name(-DAY_MICROS), "events_p19691231");
    }
}
