//! The duplicate check of producer-chosen ids: is a copy of this event already stored?
//!
//! A gateway-assigned id is a fresh UUIDv7 and never needs it. A producer's own id may repeat
//! an event stored before this replica started (a device retrying hours later), which nothing
//! in memory can rule out, so each such id is looked up in its client's shard once, in
//! batches. Until the answer comes the copy is unverified (`in_flight`).

use std::{collections::HashMap, time::Duration};

use event_store::{ShardSet, StoredCopy};
use futures::future::join_all;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use crate::{in_flight::Held, metrics};

/// Ids looked up in one statement at most.
const BATCH: usize = 1000;

/// The shard's answer for one copy.
pub struct Checked {
    pub held: Held,
    pub found: Option<StoredCopy>,
}

/// Starts the checker. Requests are bounded by `capacity`; answers can only be as many as
/// the requests taken, so their channel needs no bound of its own.
pub fn spawn(
    shards: ShardSet,
    capacity: usize,
    shutdown: CancellationToken,
) -> (mpsc::Sender<Held>, mpsc::UnboundedReceiver<Checked>) {
    let (requests, mut inbox) = mpsc::channel::<Held>(capacity.max(1));
    let (answers, outbox) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                first = inbox.recv() => match first {
                    Some(held) => batch.push(held),
                    None => return,
                },
            }
            while batch.len() < BATCH {
                match inbox.try_recv() {
                    Ok(held) => batch.push(held),
                    Err(_) => break,
                }
            }
            let Some(checked) = check(&shards, std::mem::take(&mut batch), &shutdown).await else {
                return;
            };
            for answer in checked {
                if answers.send(answer).is_err() {
                    return;
                }
            }
        }
    });
    (requests, outbox)
}

/// Looks every id up in its shard, retrying a shard that fails until it answers; `None` at
/// shutdown.
async fn check(
    shards: &ShardSet,
    batch: Vec<Held>,
    shutdown: &CancellationToken,
) -> Option<Vec<Checked>> {
    let started = std::time::Instant::now();
    let mut per_shard: Vec<Vec<Held>> = vec![Vec::new(); shards.shards().len()];
    let router = shards.router();
    for held in batch {
        per_shard[router.shard_for(&held.event.client_id)].push(held);
    }
    let lookups = shards
        .shards()
        .iter()
        .zip(&per_shard)
        .filter(|(_, held)| !held.is_empty())
        .map(|(shard, held)| async move {
            let ids: Vec<Uuid> = held.iter().map(|h| h.event.event_id).collect();
            let mut backoff = Duration::from_millis(50);
            loop {
                match shard.stored_copies(&ids).await {
                    Ok(copies) => return Some(copies),
                    Err(e) => {
                        warn!(shard = shard.index, error = %e, "duplicate check failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return None,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
    let mut found: HashMap<Uuid, StoredCopy> = HashMap::new();
    for copies in join_all(lookups).await {
        found.extend(copies?.into_iter().map(|c| (c.event_id, c)));
    }
    metrics::CHECK_SECONDS.observe(started.elapsed().as_secs_f64());
    Some(
        per_shard
            .into_iter()
            .flatten()
            .map(|held| Checked {
                found: found.get(&held.event.event_id).cloned(),
                held,
            })
            .collect(),
    )
}
