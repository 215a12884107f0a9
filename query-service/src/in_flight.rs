//! Events consumed from Kafka that the writer has not committed yet, indexed by client in
//! ingest order and by partition in offset order (for eviction).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use event_store::{IngestKey, StoredEvent};

/// `(offset, ingest key, client id)` of a held event, in offset order per partition.
type PartitionQueue = VecDeque<(i64, IngestKey, String)>;

#[derive(Default)]
struct Inner {
    by_client: HashMap<String, BTreeMap<IngestKey, Arc<StoredEvent>>>,
    by_partition: HashMap<(String, i32), PartitionQueue>,
    len: usize,
    /// Per partition, one past the highest offset not held because the bound was reached.
    /// Answers are incomplete until the writer has committed past every such offset.
    dropped_until: HashMap<(String, i32), i64>,
    /// Versioning of the persisted side, for the page cache: `clock` advances on every
    /// eviction; `moved[client]` is the clock of the last eviction of that client's events
    /// (they just became rows); `floor` stands for every client not in `moved`.
    clock: u64,
    moved: HashMap<String, u64>,
    floor: u64,
}

/// Clients remembered in `moved` before it is folded into `floor`.
const MOVED_BOUND: usize = 100_000;

pub struct InFlight {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// A client's in-flight events at one instant, plus whether the set may be missing some.
pub struct Snapshot {
    pub events: Vec<Arc<StoredEvent>>,
    pub complete: bool,
    /// The eviction clock when the snapshot was taken. A read of the client's rows made after
    /// this snapshot is current until an eviction later than `clock` moves its events.
    pub clock: u64,
}

impl InFlight {
    pub fn new(capacity: usize) -> Self {
        InFlight {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds a consumed event until the writer commits past it. Returns false if the bound
    /// was reached and the event was not kept.
    pub fn insert(&self, event: Arc<StoredEvent>) -> bool {
        let mut inner = self.lock();
        if inner.len >= self.capacity {
            let slot = (event.position.topic.clone(), event.position.partition);
            let until = inner.dropped_until.entry(slot).or_insert(0);
            *until = (*until).max(event.position.offset + 1);
            return false;
        }
        let key = IngestKey::of(&event.event);
        let client = event.event.client_id.clone();
        let slot = (event.position.topic.clone(), event.position.partition);
        let offset = event.position.offset;
        let previous = inner
            .by_client
            .entry(client.clone())
            .or_default()
            .insert(key, event);
        if previous.is_none() {
            inner.len += 1;
        }
        inner
            .by_partition
            .entry(slot)
            .or_default()
            .push_back((offset, key, client));
        true
    }

    /// Forgets every event of `topic`/`partition` below `committed`: they are in PostgreSQL.
    pub fn evict_below(&self, topic: &str, partition: i32, committed: i64) -> usize {
        let mut inner = self.lock();
        let Inner {
            by_client,
            by_partition,
            len,
            dropped_until,
            clock,
            moved,
            floor,
        } = &mut *inner;
        *clock += 1;
        let slot = (topic.to_owned(), partition);
        if dropped_until
            .get(&slot)
            .is_some_and(|until| committed >= *until)
        {
            dropped_until.remove(&slot);
            if dropped_until.is_empty() {
                // Events that were never held reached PostgreSQL unseen: no cached page of
                // any client can be trusted any more.
                *floor = *clock;
                moved.clear();
            }
        }
        let Some(queue) = by_partition.get_mut(&slot) else {
            return 0;
        };
        let mut evicted = 0;
        while queue
            .front()
            .is_some_and(|(offset, _, _)| *offset < committed)
        {
            let Some((_, key, client)) = queue.pop_front() else {
                break;
            };
            if let Some(events) = by_client.get_mut(&client) {
                if events.remove(&key).is_some() {
                    *len -= 1;
                    evicted += 1;
                }
                if events.is_empty() {
                    by_client.remove(&client);
                }
            }
            moved.insert(client, *clock);
        }
        if moved.len() > MOVED_BOUND {
            *floor = *clock;
            moved.clear();
        }
        evicted
    }

    /// The eviction clock at which `client`'s persisted rows last changed (conservatively).
    pub fn rows_changed_at(&self, client_id: &str) -> u64 {
        let inner = self.lock();
        inner
            .moved
            .get(client_id)
            .copied()
            .unwrap_or(0)
            .max(inner.floor)
    }

    /// The client's in-flight events after `after`, in ingest order.
    pub fn snapshot(&self, client_id: &str, after: Option<IngestKey>) -> Snapshot {
        let inner = self.lock();
        let events = inner
            .by_client
            .get(client_id)
            .map(|events| match after {
                Some(after) => events
                    .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                    .map(|(_, e)| e.clone())
                    .collect(),
                None => events.values().cloned().collect(),
            })
            .unwrap_or_default();
        Snapshot {
            events,
            complete: inner.dropped_until.is_empty(),
            clock: inner.clock,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }
}

#[cfg(test)]
mod tests {
    use event_store::KafkaPosition;
    use schemas::{Event, Priority};
    use uuid::Uuid;

    use super::*;

    fn event(client: &str, partition: i32, offset: i64, at: i64) -> StoredEvent {
        StoredEvent {
            event: Event {
                event_id: Uuid::new_v4(),
                client_id: client.into(),
                event_type: "t".into(),
                ts_micros: None,
                ingested_at_micros: at,
                priority: Priority::Normal,
                payload: "{}".into(),
                sdk: None,
            },
            position: KafkaPosition {
                topic: "events".into(),
                partition,
                offset,
            },
        }
    }

    #[test]
    fn serves_a_client_in_ingest_order_and_evicts_by_offset() {
        let cache = InFlight::new(100);
        cache.insert(Arc::new(event("a", 0, 10, 300)));
        cache.insert(Arc::new(event("a", 1, 5, 100)));
        cache.insert(Arc::new(event("b", 0, 11, 200)));
        cache.insert(Arc::new(event("a", 0, 12, 400)));
        let times: Vec<i64> = cache
            .snapshot("a", None)
            .events
            .iter()
            .map(|e| e.event.ingested_at_micros)
            .collect();
        assert_eq!(times, vec![100, 300, 400]);

        assert_eq!(cache.evict_below("events", 0, 12), 2);
        let left: Vec<i64> = cache
            .snapshot("a", None)
            .events
            .iter()
            .map(|e| e.event.ingested_at_micros)
            .collect();
        assert_eq!(left, vec![100, 400]);
        assert!(cache.snapshot("b", None).events.is_empty());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn reports_incomplete_when_full_until_drained() {
        let cache = InFlight::new(1);
        assert!(cache.insert(Arc::new(event("a", 0, 0, 1))));
        assert!(!cache.insert(Arc::new(event("a", 0, 1, 2))));
        assert!(!cache.snapshot("a", None).complete);
        cache.evict_below("events", 0, 1);
        assert!(
            !cache.snapshot("a", None).complete,
            "offset 1 is not persisted yet"
        );
        cache.evict_below("events", 0, 2);
        assert!(cache.snapshot("a", None).complete);
    }

    #[test]
    fn tells_when_a_clients_rows_changed() {
        let cache = InFlight::new(100);
        cache.insert(Arc::new(event("a", 0, 0, 1)));
        cache.insert(Arc::new(event("b", 1, 0, 1)));
        let before = cache.snapshot("a", None).clock;
        assert!(cache.rows_changed_at("a") <= before);
        cache.evict_below("events", 0, 1);
        assert!(
            cache.rows_changed_at("a") > before,
            "a's event became a row"
        );
        assert!(
            cache.rows_changed_at("b") <= before,
            "b's rows did not change"
        );
    }
}
