//! Recently read pages of clients' persisted rows (moka, bounded by rows, with a TTL), so a
//! hot client's history is served from memory. A page is used only while the client's rows
//! have not changed since it was read: rows change exactly when in-flight events of that
//! client are evicted (they became rows), which the in-flight set records on its clock.

use std::{sync::Arc, time::Duration};

use event_store::{ClientQuery, IngestKey, StoredEvent};
use moka::future::Cache;

#[derive(Clone, PartialEq, Eq, Hash)]
struct PageKey {
    client_id: String,
    after: Option<IngestKey>,
    since: Option<i64>,
    until: Option<i64>,
    limit: usize,
}

impl PageKey {
    fn of(query: &ClientQuery<'_>) -> Self {
        PageKey {
            client_id: query.client_id.to_owned(),
            after: query.after,
            since: query.since_micros,
            until: query.until_micros,
            limit: query.limit,
        }
    }
}

pub struct CachedPage {
    pub rows: Arc<Vec<Arc<StoredEvent>>>,
    /// In-flight clock of the snapshot taken before the rows were read.
    read_at: u64,
}

pub struct PageCache {
    pages: Cache<PageKey, Arc<CachedPage>>,
}

impl PageCache {
    pub fn new(max_rows: u64, ttl: Duration) -> Self {
        PageCache {
            pages: Cache::builder()
                .max_capacity(max_rows)
                .weigher(|_, page: &Arc<CachedPage>| {
                    u32::try_from(page.rows.len() + 1).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The page, if it was read after the client's rows last changed.
    pub async fn get(
        &self,
        query: &ClientQuery<'_>,
        rows_changed_at: u64,
    ) -> Option<Arc<Vec<Arc<StoredEvent>>>> {
        let page = self.pages.get(&PageKey::of(query)).await?;
        (page.read_at >= rows_changed_at).then(|| page.rows.clone())
    }

    pub async fn put(
        &self,
        query: &ClientQuery<'_>,
        rows: Arc<Vec<Arc<StoredEvent>>>,
        read_at: u64,
    ) {
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
            after: None,
            since_micros: None,
            until_micros: None,
            limit: 10,
        }
    }

    #[tokio::test]
    async fn serves_a_page_only_while_the_clients_rows_are_unchanged() {
        let cache = PageCache::new(1000, Duration::from_secs(60));
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
    }
}
