//! Recently read pages of clients' persisted rows (moka, bounded in bytes, with a TTL), so a
//! hot client's history is served from memory. A page is used only while a read now would
//! return the same rows: rows change exactly when in-flight events of that client are evicted
//! (they became rows), which the in-flight set records on its clock (`InFlight::rows_unchanged`).
//! Partitions added after the replica started are read from their beginning, so events the
//! writer stored there before the replica saw them pass through the in-flight set too.

use std::{sync::Arc, time::Duration};

use event_store::{ClientQuery, Direction};
use moka::future::Cache;
use schemas::OrderKey;

use crate::in_flight::{weight, Held};

#[derive(Clone, PartialEq, Eq, Hash)]
struct PageKey {
    client_id: String,
    from: Option<OrderKey>,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
    direction: Direction,
}

impl PageKey {
    fn of(query: &ClientQuery<'_>) -> Self {
        PageKey {
            client_id: query.client_id.to_owned(),
            from: query.from,
            since: query.since_micros,
            until: query.until_micros,
            limit: query.limit,
            direction: query.direction,
        }
    }
}

pub type Rows = Arc<Vec<Held>>;

pub struct CachedPage {
    pub rows: Rows,
    /// In-flight clock of the snapshot taken before the rows were read.
    pub read_at: u64,
}

pub struct PageCache {
    pages: Cache<PageKey, Arc<CachedPage>>,
}

impl PageCache {
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        PageCache {
            pages: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, page: &Arc<CachedPage>| {
                    let bytes: usize = 64 + page.rows.iter().map(|r| weight(r)).sum::<usize>();
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The page last read for `query`, whether or not its rows changed since.
    pub async fn get(&self, query: &ClientQuery<'_>) -> Option<Arc<CachedPage>> {
        self.pages.get(&PageKey::of(query)).await
    }

    /// Forgets a page whose rows turned out stale (an earlier copy replaced one of them).
    pub async fn forget(&self, query: &ClientQuery<'_>) {
        self.pages.invalidate(&PageKey::of(query)).await;
    }

    pub async fn put(&self, query: &ClientQuery<'_>, rows: Rows, read_at: u64) {
        self.pages
            .insert(PageKey::of(query), Arc::new(CachedPage { rows, read_at }))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(client_id: &str) -> ClientQuery<'_> {
        ClientQuery {
            client_id,
            from: None,
            since_micros: None,
            until_micros: None,
            limit: 10,
            direction: Direction::Forward,
        }
    }

    #[tokio::test]
    async fn keeps_a_page_per_client_and_query() {
        let cache = PageCache::new(1 << 20, Duration::from_secs(60));
        cache.put(&query("a"), Arc::new(Vec::new()), 5).await;
        assert_eq!(cache.get(&query("a")).await.map(|p| p.read_at), Some(5));
        assert!(cache.get(&query("b")).await.is_none(), "another client");
        let other_page = ClientQuery {
            limit: 11,
            ..query("a")
        };
        assert!(cache.get(&other_page).await.is_none(), "another page");
        let backwards = ClientQuery {
            direction: Direction::Backward,
            ..query("a")
        };
        assert!(cache.get(&backwards).await.is_none(), "the other way");
        cache.forget(&query("a")).await;
        assert!(cache.get(&query("a")).await.is_none(), "forgotten");
    }
}
