//! Recently read pages of clients' persisted rows (moka, bounded in bytes, with a TTL), so a
//! hot client's history is served from memory. A page is used only while the client's rows
//! have not changed since it was read: rows change exactly when in-flight events of that
//! client are evicted (they became rows), which the in-flight set records on its clock.
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
    rows: Rows,
    /// In-flight clock of the snapshot taken before the rows were read.
    read_at: u64,
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

    /// The page, if it was read after the client's rows last changed.
    pub async fn get(&self, query: &ClientQuery<'_>, rows_changed_at: u64) -> Option<Rows> {
        let page = self.pages.get(&PageKey::of(query)).await?;
        (page.read_at >= rows_changed_at).then(|| page.rows.clone())
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
    async fn serves_a_page_only_while_the_clients_rows_are_unchanged() {
        let cache = PageCache::new(1 << 20, Duration::from_secs(60));
        cache.put(&query("a"), Arc::new(Vec::new()), 5).await;
        assert!(
            cache.get(&query("a"), 5).await.is_some(),
            "changed before the read"
        );
        assert!(
            cache.get(&query("a"), 6).await.is_none(),
            "changed after the read"
        );
        assert!(cache.get(&query("b"), 0).await.is_none(), "another client");
        let other_page = ClientQuery {
            limit: 11,
            ..query("a")
        };
        assert!(cache.get(&other_page, 0).await.is_none(), "another page");
        let backwards = ClientQuery {
            direction: Direction::Backward,
            ..query("a")
        };
        assert!(cache.get(&backwards, 0).await.is_none(), "the other way");
    }
}
