//! Live streams by client: where the tail delivers each event once it is released.
//!
//! Delivery never waits for a reader: each stream has a bounded queue, and a stream whose
//! queue is full is cut off (it gets an `error` event and reconnects with `Last-Event-ID`),
//! so one slow reader costs nothing to the others or to the tail.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::mpsc;

use crate::{in_flight::Held, metrics};

struct Listener {
    id: u64,
    queue: mpsc::Sender<Held>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Streams {
    by_client: Mutex<HashMap<Arc<str>, Vec<Listener>>>,
    count: AtomicUsize,
    next_id: AtomicU64,
}

/// One stream's end of the delivery. Dropping it unregisters the stream.
pub struct Subscription {
    pub events: mpsc::Receiver<Held>,
    pub lagged: Arc<AtomicBool>,
    streams: Arc<Streams>,
    client: Arc<str>,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.streams.remove(&self.client, self.id);
    }
}

impl Streams {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Vec<Listener>>> {
        self.by_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(self: &Arc<Self>, client: &str, buffer: usize) -> Subscription {
        let (queue, events) = mpsc::channel(buffer.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client: Arc<str> = Arc::from(client);
        self.lock()
            .entry(client.clone())
            .or_default()
            .push(Listener {
                id,
                queue,
                lagged: lagged.clone(),
            });
        self.count.fetch_add(1, Ordering::Relaxed);
        metrics::STREAMS.inc();
        Subscription {
            events,
            lagged,
            streams: self.clone(),
            client,
            id,
        }
    }

    fn remove(&self, client: &str, id: u64) {
        let mut by_client = self.lock();
        if let Some(listeners) = by_client.get_mut(client) {
            let before = listeners.len();
            listeners.retain(|l| l.id != id);
            let removed = before - listeners.len();
            if listeners.is_empty() {
                by_client.remove(client);
            }
            if removed > 0 {
                self.count.fetch_sub(removed, Ordering::Relaxed);
                metrics::STREAMS.sub(removed as i64);
            }
        }
    }

    /// Open streams.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether any stream is open at all (the tail skips delivery work otherwise).
    pub fn any(&self) -> bool {
        self.count.load(Ordering::Relaxed) > 0
    }

    pub fn wants(&self, client: &str) -> bool {
        self.any() && self.lock().contains_key(client)
    }

    /// Hands a released event to its client's streams.
    pub fn deliver(&self, event: &Held) {
        let by_client = self.lock();
        let Some(listeners) = by_client.get(event.event.client_id.as_str()) else {
            return;
        };
        for listener in listeners {
            // A full queue cuts the stream off: it has missed this event. A closed one belongs
            // to a subscription being dropped, which unregisters it.
            if let Err(mpsc::error::TrySendError::Full(_)) = listener.queue.try_send(event.clone())
            {
                listener.lagged.store(true, Ordering::Relaxed);
            }
        }
    }
}
