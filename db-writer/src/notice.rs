//! Builds the persisted notice of a batch from the rows its writes really stored.

use std::collections::BTreeSet;

use event_store::StoredEvent;
use schemas::{OffsetRange, PersistedBatch, ShardWrite};
use time::OffsetDateTime;

use crate::commit::Ranges;

/// A notice waiting for its batch's commit.
pub struct PendingNotice(PersistedBatch);

impl PendingNotice {
    /// Stamps the commit time.
    pub fn finish(mut self) -> PersistedBatch {
        self.0.persisted_at = now_micros();
        self.0
    }

    /// Rows the notice names.
    pub fn rows(&self) -> usize {
        self.0.shards.iter().map(|s| s.rows as usize).sum()
    }
}

/// `stored[i]`: the rows shard `i` stored from this batch (duplicates, refused rows and ids
/// taken by another client left out).
pub fn summarise(
    stored: &[Vec<&StoredEvent>],
    ranges: &Ranges,
    batch_size: usize,
    member: &str,
) -> PendingNotice {
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let shards = stored
        .iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(shard, rows)| {
            let mut clients = BTreeSet::new();
            let event_ids = rows
                .iter()
                .map(|row| {
                    clients.insert(row.event.client_id.as_str());
                    first = first.min(row.event.ingested_at_micros);
                    last = last.max(row.event.ingested_at_micros);
                    row.event.event_id.to_string()
                })
                .collect::<Vec<_>>();
            ShardWrite {
                shard: shard as i32,
                rows: event_ids.len() as i32,
                event_ids,
                client_ids: clients.into_iter().map(str::to_owned).collect(),
            }
        })
        .collect::<Vec<_>>();
    let any = first <= last;
    PendingNotice(PersistedBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        writer: member.to_owned(),
        shards,
        ranges: ranges
            .iter()
            .map(|((topic, partition), range)| OffsetRange {
                topic: topic.to_string(),
                partition: *partition,
                first_offset: range.first,
                last_offset: range.last,
            })
            .collect(),
        batch_size: batch_size as i32,
        first_ingested_at: if any { first } else { 0 },
        last_ingested_at: if any { last } else { 0 },
        persisted_at: 0,
    })
}

pub(crate) fn now_micros() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}
