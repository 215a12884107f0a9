//! Releases events in their stable order.
//!
//! An event becomes answerable — to pages and to streams — once the *release frontier* has
//! passed its key: every partition's log clock (`schemas::order`) has moved beyond its
//! `ordered_at`, so no event consumed later can sort before it, and a reader that has seen
//! everything below the frontier never has to look back. The frontier is the smallest clock
//! over all partitions; gateways tick idle partitions to keep their clocks moving, and a
//! partition this replica has consumed to its end counts as `now - quiet_bound` (the safety
//! net when no gateway runs). A client's event whose id awaits the duplicate check (`verify`)
//! holds back that client's later events until the check answers.
//!
//! Streams get each released event here, in key order; pages read the frontier from
//! [`Frontier`] and the rest from `in_flight`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
};

use schemas::OrderKey;
use tracing::error;

use crate::{
    in_flight::{Change, Held, InFlight},
    metrics,
    streams::Streams,
    wall_clock::{now_micros, seconds_since},
};

/// The release frontier, as readers see it.
#[derive(Debug)]
pub struct Frontier {
    /// Events ordered before this time (micros) are released, subject to the per-client
    /// duplicate check.
    released: AtomicI64,
    /// The largest clock of the commits this replica started from: events stored before it
    /// started are ordered at or before it.
    start: AtomicI64,
}

impl Default for Frontier {
    fn default() -> Self {
        Frontier {
            released: AtomicI64::new(i64::MIN),
            start: AtomicI64::new(i64::MIN),
        }
    }
}

impl Frontier {
    /// Every key below this is released.
    pub fn released(&self) -> OrderKey {
        OrderKey::floor(self.released.load(Ordering::Acquire))
    }

    /// True once the frontier has passed every event stored before this replica started.
    /// Before, a stream's replay could stop short of events this replica never consumed
    /// and so would never deliver live.
    pub fn started(&self) -> bool {
        self.released.load(Ordering::Acquire) > self.start.load(Ordering::Acquire)
    }
}

/// The tail's side: events consumed but not released yet, and delivery to streams.
pub struct Release {
    frontier: Arc<Frontier>,
    in_flight: Arc<InFlight>,
    streams: Arc<Streams>,
    /// Visible events not released yet, in order.
    pending: BTreeMap<OrderKey, Held>,
    /// Released events of clients with an unverified event before them, in order.
    blocked: HashMap<String, BTreeMap<OrderKey, Held>>,
    /// Duplicate checks outstanding per client.
    checking: HashMap<String, usize>,
    released: i64,
}

impl Release {
    pub fn new(frontier: Arc<Frontier>, in_flight: Arc<InFlight>, streams: Arc<Streams>) -> Self {
        Release {
            frontier,
            in_flight,
            streams,
            pending: BTreeMap::new(),
            blocked: HashMap::new(),
            checking: HashMap::new(),
            released: i64::MIN,
        }
    }

    /// Follows a change of which copy stands for an event.
    pub fn apply(&mut self, change: Change) {
        if let Some((client, key)) = change.hidden {
            self.pending.remove(&key);
            if let Some(blocked) = self.blocked.get_mut(client.as_str()) {
                blocked.remove(&key);
            }
        }
        if let Some(shown) = change.shown {
            let key = shown.order_key();
            if key < OrderKey::floor(self.released) {
                // Only when no tick or record moved this partition for `quiet_bound` and
                // then an older record arrived (a gateway whose acknowledgements took longer
                // than the bound). Readers that passed its place miss it; say so loudly.
                metrics::LATE_EVENTS.inc();
                error!(
                    event_id = %shown.event.event_id,
                    topic = %shown.position.topic,
                    partition = shown.position.partition,
                    offset = shown.position.offset,
                    "event arrived after the release frontier passed its place; raise order.quiet_bound"
                );
                self.deliver(shown);
            } else {
                self.pending.insert(key, shown);
            }
        }
        metrics::UNRELEASED.set(self.pending.len() as i64);
    }

    /// A partition was assigned at a commit carrying this clock.
    pub fn started_at(&mut self, clock: i64) {
        self.frontier.start.fetch_max(clock, Ordering::AcqRel);
    }

    pub fn check_started(&mut self, client: &str) {
        *self.checking.entry(client.to_owned()).or_default() += 1;
    }

    /// A duplicate check of `client` answered: deliver what it held back.
    pub fn check_done(&mut self, client: &str) {
        if let Some(n) = self.checking.get_mut(client) {
            *n -= 1;
            if *n == 0 {
                self.checking.remove(client);
            }
        }
        self.unblock(client);
    }

    /// Moves the frontier to `micros` (never back) and releases what it passed.
    pub fn advance(&mut self, micros: i64) -> bool {
        if micros <= self.released {
            return false;
        }
        self.released = micros;
        self.frontier.released.store(micros, Ordering::Release);
        let bound = OrderKey::floor(micros);
        let now = now_micros();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= bound {
                break;
            }
            let held = entry.remove();
            // From the gateway's acknowledgement to release: the cost of the stable order.
            metrics::RELEASE_DELAY.observe(seconds_since(now, held.event.ingested_at_micros));
            self.deliver(held);
        }
        metrics::UNRELEASED.set(self.pending.len() as i64);
        true
    }

    fn deliver(&mut self, held: Held) {
        let client = held.event.client_id.as_str();
        if let Some(blocked) = self.blocked.get_mut(client) {
            blocked.insert(held.order_key(), held);
            return;
        }
        if self.checking.contains_key(client)
            && self.in_flight.bound(client, OrderKey::MAX) <= held.order_key()
        {
            self.blocked
                .entry(client.to_owned())
                .or_default()
                .insert(held.order_key(), held);
            return;
        }
        if self.streams.wants(client) {
            self.streams.deliver(&held);
        }
    }

    fn unblock(&mut self, client: &str) {
        let Some(mut blocked) = self.blocked.remove(client) else {
            return;
        };
        let bound = self.in_flight.bound(client, OrderKey::floor(self.released));
        let wants = self.streams.wants(client);
        while let Some(entry) = blocked.first_entry() {
            if *entry.key() >= bound {
                break;
            }
            let held = entry.remove();
            if wants {
                self.streams.deliver(&held);
            }
        }
        if !blocked.is_empty() {
            self.blocked.insert(client.to_owned(), blocked);
        }
    }
}
