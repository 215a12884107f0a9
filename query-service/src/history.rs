//! One page of a client's history: persisted rows merged with in-flight events, each event
//! once, in ingest order.

use std::sync::Arc;

use event_store::{ClientQuery, IngestKey, ShardSet, StoreError, StoredEvent};

use crate::{in_flight::InFlight, metrics, page_cache::PageCache};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Persisted,
    InFlight,
}

pub struct Page {
    pub events: Vec<(Status, Arc<StoredEvent>)>,
    /// Set when more events follow this page.
    pub next: Option<IngestKey>,
    pub complete: bool,
}

pub async fn page(
    shards: &ShardSet,
    in_flight: &InFlight,
    cache: &PageCache,
    query: &ClientQuery<'_>,
) -> Result<Page, StoreError> {
    // In-flight first, PostgreSQL second: an event leaves the in-flight set only after the
    // writer committed it, so one that moves in between is found by the database read.
    let snapshot = in_flight.snapshot(query.client_id, query.after);
    let probe = ClientQuery {
        limit: query.limit + 1,
        ..query.clone()
    };
    // While the in-flight set is incomplete, rows may change unseen: no cache then.
    let cached = if snapshot.complete {
        cache
            .get(&probe, in_flight.rows_changed_at(query.client_id))
            .await
    } else {
        None
    };
    let persisted = match cached {
        Some(rows) => {
            metrics::PAGE_CACHE.with_label_values(&["hit"]).inc();
            rows
        }
        None => {
            metrics::PAGE_CACHE.with_label_values(&["miss"]).inc();
            let shard = shards.shard_for(query.client_id);
            let rows: Arc<Vec<Arc<StoredEvent>>> = Arc::new(
                shard
                    .client_events(&probe)
                    .await?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            );
            if snapshot.complete {
                cache.put(&probe, rows.clone(), snapshot.clock).await;
            }
            rows
        }
    };

    let in_range = |e: &StoredEvent| {
        let at = e.event.ingested_at_micros;
        query.since_micros.is_none_or(|s| at >= s) && query.until_micros.is_none_or(|u| at < u)
    };
    let mut merged: Vec<(Status, Arc<StoredEvent>)> = Vec::with_capacity(probe.limit);
    let mut db = persisted.iter().cloned().peekable();
    let mut mem = snapshot
        .events
        .into_iter()
        .filter(|e| in_range(e))
        .peekable();
    while merged.len() < probe.limit {
        let next = match (db.peek(), mem.peek()) {
            (None, None) => break,
            (Some(_), None) => (Status::Persisted, db.next()),
            (None, Some(_)) => (Status::InFlight, mem.next()),
            (Some(d), Some(m)) => {
                let (dk, mk) = (IngestKey::of(&d.event), IngestKey::of(&m.event));
                if dk == mk {
                    // The same event in both places: the row wins.
                    mem.next();
                    (Status::Persisted, db.next())
                } else if dk < mk {
                    (Status::Persisted, db.next())
                } else {
                    (Status::InFlight, mem.next())
                }
            }
        };
        if let (status, Some(event)) = next {
            merged.push((status, event));
        }
    }
    let next = (merged.len() > query.limit).then(|| {
        merged.truncate(query.limit);
        merged.last().map(|(_, e)| IngestKey::of(&e.event))
    });
    Ok(Page {
        events: merged,
        next: next.flatten(),
        complete: snapshot.complete,
    })
}
