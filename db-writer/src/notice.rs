//! Builds the persisted notice of a batch before its events move into the shard writes.

use std::collections::BTreeSet;

use event_store::{ShardRouter, StoredEvent};
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
}

pub fn summarise(
    events: &[StoredEvent],
    ranges: &Ranges,
    batch_size: usize,
    member: &str,
    router: ShardRouter,
) -> PendingNotice {
    let mut shards: Vec<(Vec<String>, BTreeSet<&str>)> =
        vec![(Vec::new(), BTreeSet::new()); router.shard_count()];
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for stored in events {
        let event = &stored.event;
        let (ids, clients) = &mut shards[router.shard_for(&event.client_id)];
        ids.push(event.event_id.to_string());
        clients.insert(&event.client_id);
        first = first.min(event.ingested_at_micros);
        last = last.max(event.ingested_at_micros);
    }
    PendingNotice(PersistedBatch {
        batch_id: uuid::Uuid::now_v7().to_string(),
        writer: member.to_owned(),
        shards: shards
            .into_iter()
            .enumerate()
            .filter(|(_, (ids, _))| !ids.is_empty())
            .map(|(shard, (event_ids, clients))| ShardWrite {
                shard: shard as i32,
                rows: event_ids.len() as i32,
                event_ids,
                client_ids: clients.into_iter().map(str::to_owned).collect(),
            })
            .collect(),
        ranges: ranges
            .iter()
            .map(
                |((topic, partition), (first_offset, last_offset))| OffsetRange {
                    topic: topic.clone(),
                    partition: *partition,
                    first_offset: *first_offset,
                    last_offset: *last_offset,
                },
            )
            .collect(),
        batch_size: batch_size as i32,
        first_ingested_at: if events.is_empty() { 0 } else { first },
        last_ingested_at: if events.is_empty() { 0 } else { last },
        persisted_at: 0,
    })
}

fn now_micros() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}
