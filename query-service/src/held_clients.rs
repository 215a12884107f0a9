//! Which clients the tail may hold events of: a counting filter over the hashes of the client
//! ids of every held event, written by the tail as it holds and drops events, read by readers
//! without asking the tail. A read of a client not indexed (`cache.index_on_read`) whose
//! count is zero has nothing in flight to index, so it skips the tail's queue, which is where
//! a cold read waits longest while ingest is heavy (docs/design.md, "A cold read of a client
//! with nothing in flight").
//!
//! Clients sharing a bucket only make a count larger: a read then waits for the tail as it
//! would without the filter, never the other way round.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    OnceLock,
};

/// Most buckets: 2^17 counters (512 KiB). With the ~1,000–6,000 events held at 20,000
/// events/s here, a client with nothing held finds its bucket empty 95–99 % of the time.
const MAX_BUCKETS: usize = 1 << 17;

pub struct HeldClients {
    hasher: ahash::RandomState,
    buckets: usize,
    /// Made at the first event held: a set that never holds one costs nothing.
    counts: OnceLock<Box<[AtomicU32]>>,
}

impl HeldClients {
    /// For a replica that holds at most `max_events` (`cache.max_in_flight_events`): more
    /// buckets than that would stay empty.
    pub fn new(max_events: usize) -> Self {
        HeldClients {
            hasher: ahash::RandomState::new(),
            buckets: max_events.clamp(1, MAX_BUCKETS).next_power_of_two(),
            counts: OnceLock::new(),
        }
    }

    /// The hash the tail keeps beside each held event (and indexes clients by).
    pub fn hash(&self, client: &str) -> u64 {
        self.hasher.hash_one(client)
    }

    fn at(&self, hash: u64) -> usize {
        // A power of two: the low bits of ahash's output are as good as any.
        (hash as usize) & (self.buckets - 1)
    }

    /// The tail holds an event of the client hashed `hash`. Called before the tail publishes
    /// a clock that passes the event (`Partitions::advance`, a release store): a reader that
    /// read that clock (an acquire load) then sees this count.
    pub fn add(&self, hash: u64) {
        let counts = self
            .counts
            .get_or_init(|| (0..self.buckets).map(|_| AtomicU32::new(0)).collect());
        counts[self.at(hash)].fetch_add(1, Ordering::Relaxed);
    }

    /// The tail dropped a held event of the client hashed `hash`: it is in PostgreSQL.
    pub fn remove(&self, hash: u64) {
        if let Some(counts) = self.counts.get() {
            // Saturating: a count never wraps round to look like many held events.
            let _ = counts[self.at(hash)]
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// False only if the tail holds no event of `client` now. Read after the release frontier
    /// the read answers by: every event of `client` below it was held before it was published,
    /// so it is counted here, or dropped, and so in PostgreSQL.
    pub fn may_hold(&self, client: &str) -> bool {
        self.counts
            .get()
            .is_some_and(|counts| counts[self.at(self.hash(client))].load(Ordering::Relaxed) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_held_from_its_first_event_until_its_last_is_dropped() {
        let held = HeldClients::new(1_000_000);
        assert!(!held.may_hold("device-1"));
        let h = held.hash("device-1");
        held.add(h);
        held.add(h);
        assert!(held.may_hold("device-1"));
        held.remove(h);
        assert!(held.may_hold("device-1"));
        held.remove(h);
        assert!(!held.may_hold("device-1"));
        // A stray drop does not wrap the count round.
        held.remove(h);
        assert!(!held.may_hold("device-1"));
    }

    #[test]
    fn clients_sharing_a_bucket_are_both_taken_as_held() {
        let held = HeldClients::new(1_000);
        let bucket = |c: &str| held.at(held.hash(c));
        let first = "device-0".to_owned();
        let other = (1..)
            .map(|n| format!("device-{n}"))
            .find(|c| bucket(c) == bucket(&first))
            .unwrap_or_default();
        held.add(held.hash(&first));
        assert!(held.may_hold(&other), "{other} shares {first}'s bucket");
    }
}
