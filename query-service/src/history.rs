//! One page of a client's history: persisted rows merged with in-flight events, each event
//! once (the copy that stands for it), in order, and only what the release frontier has
//! passed — so a reader that continues from the page's last position never misses an event
//! that becomes visible later, nor sees one twice.

use std::{cmp::Ordering, sync::Arc};

use event_store::{ClientQuery, Direction, ShardSet, StoreError};
use schemas::OrderKey;

use crate::{
    in_flight::{Held, InFlight, Snapshot, Verdict},
    indexing::{Indexing, Ready, TailStopped},
    metrics,
    page_cache::PageCache,
    release::Frontier,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Persisted,
    InFlight,
}

pub struct Page {
    pub events: Vec<(Status, Held)>,
    /// Set when more events follow this page now.
    pub next: Option<OrderKey>,
    /// Where to continue from later: after the last event returned (or where the request
    /// started when it returned none).
    pub resume: Option<OrderKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the client's events kept moving into PostgreSQL during the read")]
    Busy,
    #[error(transparent)]
    TailStopped(#[from] TailStopped),
}

/// What a page is read from.
pub struct Sources<'a> {
    pub shards: &'a ShardSet,
    pub in_flight: &'a InFlight,
    pub indexing: &'a Indexing,
    pub frontier: &'a Frontier,
    pub cache: &'a PageCache,
}

/// Attempts before a read that keeps racing with evictions gives up (each needs more
/// evictions during one shard read than `in_flight` remembers).
const ATTEMPTS: usize = 4;

pub async fn page(sources: &Sources<'_>, query: &ClientQuery<'_>) -> Result<Page, HistoryError> {
    for _ in 0..ATTEMPTS {
        // Each attempt asks again: a client with nothing held may have some by the next.
        let ready = sources
            .indexing
            .before_page(query.client_id, sources.frontier)
            .await?;
        if let Some(page) = attempt(sources, query, ready).await? {
            return Ok(page);
        }
        metrics::PAGE_RETRIES.inc();
    }
    Err(HistoryError::Busy)
}

async fn attempt(
    sources: &Sources<'_>,
    query: &ClientQuery<'_>,
    ready: Ready,
) -> Result<Option<Page>, HistoryError> {
    let client = query.client_id;
    // In-flight first, PostgreSQL second: an event leaves the in-flight set only after the
    // writer committed it, so one that moves in between is found by the database read.
    let probe = ClientQuery {
        limit: query.limit + 1,
        ..*query
    };
    let (released, cached) = match ready {
        Ready::Indexed => (sources.frontier.for_client(client), true),
        Ready::NothingHeld { released } => (released, false),
    };
    let snapshot = sources.in_flight.snapshot(&probe, released);
    // Newest first, the shard is read from the frontier down: rows above it are not answered
    // yet and would only take the places of rows that are.
    let probe = match query.direction {
        Direction::Forward => probe,
        Direction::Backward => ClientQuery {
            from: Some(query.from.map_or(snapshot.bound, |f| f.min(snapshot.bound))),
            ..probe
        },
    };
    let page = if cached {
        sources.cache.get(&probe).await.filter(|page| {
            sources
                .in_flight
                .rows_unchanged(client, page.read_at, reach(&probe, &page.rows))
        })
    } else {
        None
    };
    let rows = match page {
        Some(page) => {
            metrics::PAGE_CACHE.with_label_values(&["hit"]).inc();
            page.rows.clone()
        }
        None => {
            let source = if cached { "miss" } else { "bypassed" };
            metrics::PAGE_CACHE.with_label_values(&[source]).inc();
            let shard = sources.shards.shard_for(client);
            let timer = metrics::READ_STAGE_SECONDS
                .with_label_values(&["shard"])
                .start_timer();
            let read = shard.client_events(&probe).await;
            timer.observe_duration();
            let rows: Arc<Vec<Held>> = Arc::new(read?.into_iter().map(Arc::new).collect());
            if cached {
                sources.in_flight.rows_read(client, snapshot.clock);
                sources
                    .cache
                    .put(&probe, rows.clone(), snapshot.clock)
                    .await;
            }
            rows
        }
    };
    let Ok(verdicts) = sources.in_flight.judge(client, &rows, snapshot.clock) else {
        // A cached page would be stale on every retry until its TTL: read the shard again.
        sources.cache.forget(&probe).await;
        return Ok(None);
    };
    Ok(Some(assemble(query, snapshot, &rows, &verdicts)))
}

/// How far a read's rows reach when more rows follow them (oldest first, the probe's limit
/// filled): rows stored beyond the last one would not change what it returns.
pub(crate) fn reach(probe: &ClientQuery<'_>, rows: &[Held]) -> Option<OrderKey> {
    match probe.direction {
        Direction::Forward if rows.len() >= probe.limit => rows.last().map(|r| r.order_key()),
        _ => None,
    }
}

/// The page from a snapshot of the in-flight set and the shard's rows read after it
/// (`query.limit + 1` of each), with the verdict on each row.
pub(crate) fn assemble(
    query: &ClientQuery<'_>,
    snapshot: Snapshot,
    rows: &[Held],
    verdicts: &[Verdict],
) -> Page {
    // A full read of rows may have stopped short of rows that, once hidden copies are left
    // out, belong in this page: nothing past the last row read may be answered then, unless
    // the read went past the release frontier (forward; a backward read starts below it).
    let horizon = (rows.len() > query.limit)
        .then(|| rows.last().map(|r| r.order_key()))
        .flatten()
        .filter(|h| query.direction == Direction::Backward || *h < snapshot.bound);
    let within = |key: OrderKey| match (horizon, query.direction) {
        (None, _) => true,
        (Some(h), Direction::Forward) => key <= h,
        (Some(h), Direction::Backward) => key >= h,
    };
    let settled = rows
        .iter()
        .zip(verdicts)
        .filter(|(row, verdict)| {
            **verdict == Verdict::Keep
                && row.order_key() < snapshot.bound
                && within(row.order_key())
        })
        .map(|(row, _)| row.clone());
    let in_flight: Vec<Held> = snapshot
        .events
        .into_iter()
        .filter(|e| within(e.order_key()))
        .collect();
    let mut merged = merge(settled, in_flight, query.direction, query.limit + 1);
    let last = |merged: &[(Status, Held)]| merged.last().map(|(_, e)| e.order_key());
    let next = if merged.len() > query.limit {
        merged.truncate(query.limit);
        last(&merged)
    } else {
        // Cut at the horizon: more may follow it.
        horizon.map(|h| last(&merged).unwrap_or(h))
    };
    let resume = last(&merged).or(next).or(query.from);
    Page {
        events: merged,
        next,
        resume,
    }
}

/// Merges two lists sorted in `direction`; an event in both (persisted, not evicted yet) is
/// answered once, as persisted.
fn merge(
    rows: impl Iterator<Item = Held>,
    in_flight: Vec<Held>,
    direction: Direction,
    limit: usize,
) -> Vec<(Status, Held)> {
    let mut merged = Vec::with_capacity(limit);
    let mut db = rows.peekable();
    let mut mem = in_flight.into_iter().peekable();
    while merged.len() < limit {
        let order = match (db.peek(), mem.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(d), Some(m)) => {
                let order = d.order_key().cmp(&m.order_key());
                match direction {
                    Direction::Forward => order,
                    Direction::Backward => order.reverse(),
                }
            }
        };
        let next = match order {
            Ordering::Less => db.next().map(|e| (Status::Persisted, e)),
            Ordering::Greater => mem.next().map(|e| (Status::InFlight, e)),
            Ordering::Equal => {
                mem.next();
                db.next().map(|e| (Status::Persisted, e))
            }
        };
        merged.extend(next);
    }
    merged
}

#[cfg(test)]
mod tests {
    use event_store::{KafkaPosition, StoredEvent};
    use schemas::{Event, Priority};
    use uuid::Uuid;

    use super::*;

    fn event(id: u128, at: i64) -> Held {
        Arc::new(StoredEvent {
            event: Event {
                event_id: Uuid::from_u128(id),
                client_id: "c".into(),
                event_type: "t".into(),
                ts_micros: None,
                ingested_at_micros: at,
                priority: Priority::Normal,
                payload: "{}".into(),
                sdk: None,
                id_origin: None,
            },
            position: KafkaPosition {
                topic: "events".into(),
                partition: 0,
                offset: id as i64,
            },
            ordered_at_micros: at,
            id_assigned: false,
        })
    }

    fn ids(merged: &[(Status, Held)]) -> Vec<(u128, Status)> {
        merged
            .iter()
            .map(|(s, e)| (e.event.event_id.as_u128(), *s))
            .collect()
    }

    #[test]
    fn merges_in_either_direction_answering_a_shared_event_once_as_persisted() {
        let rows = vec![event(1, 10), event(3, 30)];
        let mem = vec![event(2, 20), event(3, 30), event(4, 40)];
        let forward = merge(
            rows.clone().into_iter(),
            mem.clone(),
            Direction::Forward,
            10,
        );
        assert_eq!(
            ids(&forward),
            vec![
                (1, Status::Persisted),
                (2, Status::InFlight),
                (3, Status::Persisted),
                (4, Status::InFlight)
            ]
        );
        let backward = merge(
            rows.into_iter().rev(),
            mem.into_iter().rev().collect(),
            Direction::Backward,
            3,
        );
        assert_eq!(
            ids(&backward),
            vec![
                (4, Status::InFlight),
                (3, Status::Persisted),
                (2, Status::InFlight)
            ]
        );
    }
}
