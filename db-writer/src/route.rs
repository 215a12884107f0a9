//! Splits a batch's events by the shard their client lives on, once, so the writes and the
//! persisted notice agree on where every event went.

use event_store::{ShardRouter, StoredEvent};

use crate::batch::Raw;

/// Events bound for one shard, with the records they came from (for dead letters).
#[derive(Debug, Default)]
pub struct ShardRows {
    pub events: Vec<StoredEvent>,
    pub raws: Vec<Raw>,
}

pub fn route(events: Vec<(StoredEvent, Raw)>, router: ShardRouter) -> Vec<ShardRows> {
    let mut shards: Vec<ShardRows> = (0..router.shard_count())
        .map(|_| ShardRows::default())
        .collect();
    for (event, raw) in events {
        let rows = &mut shards[router.shard_for(&event.event.client_id)];
        rows.events.push(event);
        rows.raws.push(raw);
    }
    shards
}
