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
//! *Per-client release*: a client's records are keyed by its id, so they land in one
//! partition per lane (`schemas::partitioning`). Below the smallest clock of those partitions
//! nothing new of that client can appear, so its events are released there, without waiting
//! for the slowest of all partitions. That holds only while every gateway maps the client as
//! this replica does: after the replica starts or sees a lane grow, it releases by the frontier
//! of all partitions until that frontier has passed `order.growth_settle` (gateways learn of
//! new partitions within their metadata refresh; a record they sent with the old mapping is
//! appended within their delivery timeout).
//!
//! Streams get each released event here, in each client's key order; pages read the frontier
//! from [`Frontier`] and the rest from `in_flight`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, RwLock, RwLockReadGuard,
    },
};

use schemas::{partitioning::partition_for, OrderKey};
use tracing::error;

use crate::{
    in_flight::{Change, Held, InFlight},
    metrics,
    recent_ids::RecentIds,
    streams::Streams,
    wall_clock::{now_micros, seconds_since},
};

/// One lane's partitions as the frontier takes them.
#[derive(Debug)]
struct Lane {
    topic: Arc<str>,
    /// Per partition: nothing consumed later is ordered before this (micros).
    clocks: Vec<AtomicI64>,
}

/// The release frontier, as readers see it.
#[derive(Debug)]
pub struct Frontier {
    /// Events ordered before this time (micros) are released, subject to the per-client
    /// duplicate check.
    released: AtomicI64,
    /// The largest clock of the commits this replica started from: events stored before it
    /// started are ordered at or before it.
    start: AtomicI64,
    /// Per-client release holds once `released` has passed this (micros); `i64::MAX`: never
    /// ([`Release::global_only`]).
    per_client_after: AtomicI64,
    /// The lanes in the order the tail first followed them.
    lanes: RwLock<Vec<Lane>>,
}

impl Default for Frontier {
    fn default() -> Self {
        Frontier {
            released: AtomicI64::new(i64::MIN),
            start: AtomicI64::new(i64::MIN),
            // Without lanes (a replica that follows none) it changes nothing.
            per_client_after: AtomicI64::new(i64::MIN),
            lanes: RwLock::default(),
        }
    }
}

impl Frontier {
    /// Every key below this is released, for every client.
    pub fn released(&self) -> OrderKey {
        OrderKey::floor(self.released.load(Ordering::Acquire))
    }

    /// Every key of `client` below this is released: the frontier of all partitions, or
    /// once per-client release holds, the smallest clock of the partitions the client maps to.
    pub fn for_client(&self, client: &str) -> OrderKey {
        OrderKey::floor(self.client_micros(client))
    }

    fn client_micros(&self, client: &str) -> i64 {
        // One read of the lanes for both: a lane growing in between would decode the group
        // by other partition counts than it was numbered by.
        let lanes = self.lanes();
        self.bound_in(&lanes, group_of(&lanes, client, None))
    }

    fn lanes(&self) -> RwLockReadGuard<'_, Vec<Lane>> {
        // Plain numbers: a panic elsewhere leaves nothing half-written worth refusing.
        self.lanes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether per-client release holds now.
    fn per_client(&self) -> bool {
        self.released.load(Ordering::Acquire) > self.per_client_after.load(Ordering::Acquire)
    }

    /// Follows partition `number` of `topic`; returns its lane's index, and whether the
    /// lane's partition count grew.
    fn add_partition(&self, topic: &str, number: usize) -> (usize, bool) {
        let mut lanes = self
            .lanes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let at = match lanes.iter().position(|l| &*l.topic == topic) {
            Some(at) => at,
            None => {
                lanes.push(Lane {
                    topic: Arc::from(topic),
                    clocks: Vec::new(),
                });
                lanes.len() - 1
            }
        };
        let clocks = &mut lanes[at].clocks;
        let grew = clocks.len() <= number;
        while clocks.len() <= number {
            clocks.push(AtomicI64::new(i64::MIN));
        }
        (at, grew)
    }

    /// The group of `held`'s client (see [`group_of`]), with `held`'s own partition in its
    /// own lane.
    fn group_of_held(&self, held: &Held) -> usize {
        let own = (&*held.position.topic, held.position.partition);
        group_of(&self.lanes(), &held.event.client_id, Some(own))
    }

    /// How far `group` may be released now (micros): the frontier of all partitions, or with
    /// per-client release the smallest clock of the group's partitions if that is later.
    fn group_bound(&self, group: usize) -> i64 {
        self.bound_in(&self.lanes(), group)
    }

    /// [`Frontier::group_bound`] with the lanes read already.
    fn bound_in(&self, lanes: &[Lane], mut group: usize) -> i64 {
        let released = self.released.load(Ordering::Acquire);
        if !self.per_client() {
            return released;
        }
        let mut smallest = i64::MAX;
        for lane in lanes.iter().rev() {
            let count = lane.clocks.len().max(1);
            let p = group % count;
            group /= count;
            smallest = smallest.min(
                lane.clocks
                    .get(p)
                    .map_or(i64::MIN, |c| c.load(Ordering::Acquire)),
            );
        }
        // Without lanes a replica follows nothing: nothing to release beyond the frontier.
        if lanes.is_empty() {
            released
        } else {
            released.max(smallest)
        }
    }

    /// True once the frontier has passed every event stored before this replica started.
    /// Before, a stream's replay could stop short of events this replica never consumed
    /// and so would never deliver live.
    pub fn started(&self) -> bool {
        self.released.load(Ordering::Acquire) > self.start.load(Ordering::Acquire)
    }
}

/// The group of clients whose records of every lane land in the same partitions as
/// `client`'s, numbered in mixed radix by the lanes' partition counts: the partition `client`
/// maps to in each lane (Kafka's partitioner), or in the lane of `own` (topic, partition),
/// that partition (a record placed by an older partition count lands in another group).
fn group_of(lanes: &[Lane], client: &str, own: Option<(&str, i32)>) -> usize {
    let mut group = 0;
    for lane in lanes {
        let count = lane.clocks.len().max(1);
        let p = match own {
            Some((topic, partition)) if topic == &*lane.topic => {
                usize::try_from(partition).unwrap_or(0)
            }
            _ => partition_for(client.as_bytes(), count).unwrap_or(0),
        };
        group = group * count + p.min(count - 1);
    }
    group
}

/// The tail's side: events consumed but not released yet, and delivery to streams.
pub struct Release {
    frontier: Arc<Frontier>,
    in_flight: Arc<InFlight>,
    streams: Arc<Streams>,
    /// Visible events not released yet, in order, per group of clients that map to the same
    /// partitions (`Frontier::group_of`): a group is released by its own partitions' clocks.
    /// Only groups with events are kept: there are as many groups as the lanes' partition
    /// counts multiplied.
    pending: HashMap<usize, BTreeMap<OrderKey, Held>>,
    /// Events in `pending`.
    unreleased: usize,
    /// Released events of clients with an unverified event before them, in order.
    blocked: HashMap<String, BTreeMap<OrderKey, Held>>,
    /// Duplicate checks outstanding per client.
    checking: HashMap<String, usize>,
    released: i64,
    /// Producer-chosen ids released lately.
    handed: HandedIds,
}

/// Producer-chosen ids released lately (with their client's hash), so that a second copy of
/// one event released in another round is not handed to streams again (a stream opened after
/// the first copy's release has it from its replay). The in-flight set hides such a copy when
/// it knows both, but its memory of a copy that was stored and evicted is bounded: a later
/// copy consumed, evicted and forgotten before the earlier copy arrived stayed pending here,
/// nothing hid it, and a stream got the event twice (the model test found it, 2026-12-06).
/// The first copy handed is the one streams keep: the earlier key when both are held back
/// together (blocked copies go in key order); otherwise the position a stream already has (as
/// a reader's cursor keeps it). A copy whose id the gateway assigned is not remembered (that
/// would be every event): a producer that resends the id the gateway gave it makes a pair of
/// which only the resent copy is, so such a pair is kept to one copy only where the in-flight
/// set (with the resent copy's duplicate check) or one round's release ([`Release::advance`])
/// sees both.
struct HandedIds {
    /// The hash of each id's client.
    clients: RecentIds<u64>,
    hasher: ahash::RandomState,
}

/// Ids remembered by [`HandedIds`] (~4 MB): at 20,000 producer-chosen ids a second the last
/// ~3 s of releases. Two copies released further apart than that still both reach a stream
/// when the in-flight set forgot the later one too.
const HANDED_IDS: usize = 65_536;

impl Default for HandedIds {
    fn default() -> Self {
        HandedIds {
            clients: RecentIds::new(HANDED_IDS),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl HandedIds {
    /// Whether a copy of `held`'s event may go to streams: not when one was released already.
    fn first(&mut self, held: &Held) -> bool {
        if held.id_assigned {
            return true;
        }
        let id = held.event.event_id;
        let client = self.hasher.hash_one(held.event.client_id.as_str());
        match self.clients.get(&id) {
            Some(handed) => *handed != client,
            None => {
                self.clients.insert(id, client, drop);
                true
            }
        }
    }
}

impl Release {
    pub fn new(frontier: Arc<Frontier>, in_flight: Arc<InFlight>, streams: Arc<Streams>) -> Self {
        Release {
            frontier,
            in_flight,
            streams,
            pending: HashMap::new(),
            unreleased: 0,
            blocked: HashMap::new(),
            checking: HashMap::new(),
            released: i64::MIN,
            handed: HandedIds::default(),
        }
    }

    /// Follows partition `number` of `topic`; returns its lane's index.
    pub fn add_partition(&mut self, topic: &str, number: usize) -> usize {
        let (lane, grew) = self.frontier.add_partition(topic, number);
        if grew {
            self.regroup();
        }
        lane
    }

    /// Per-client release holds once the frontier of all partitions has passed `micros`
    /// (never before an earlier such instruction: a lane that grew again restarts the wait).
    pub fn per_client_after(&mut self, micros: i64) {
        self.frontier
            .per_client_after
            .fetch_max(micros, Ordering::AcqRel);
    }

    /// Per-client release never holds.
    pub fn global_only(&mut self) {
        self.frontier
            .per_client_after
            .store(i64::MAX, Ordering::Release);
    }

    /// A partition's clock as the frontier takes it (set before [`Release::advance`]).
    pub fn clock(&mut self, lane: usize, number: usize, micros: i64) {
        let lanes = self.frontier.lanes();
        if let Some(clock) = lanes.get(lane).and_then(|l| l.clocks.get(number)) {
            clock.store(micros, Ordering::Release);
        }
    }

    /// The lanes' partition counts changed: pending events are grouped anew.
    fn regroup(&mut self) {
        let old = std::mem::take(&mut self.pending);
        for held in old.into_values().flat_map(BTreeMap::into_values) {
            let group = self.frontier.group_of_held(&held);
            self.pending
                .entry(group)
                .or_default()
                .insert(held.order_key(), held);
        }
    }

    /// Takes `key` out of `group`'s unreleased events.
    fn unpend(&mut self, group: usize, key: &OrderKey) {
        if let Some(pending) = self.pending.get_mut(&group) {
            if pending.remove(key).is_some() {
                self.unreleased -= 1;
            }
            if pending.is_empty() {
                self.pending.remove(&group);
            }
        }
    }

    /// Follows a change of which copy stands for an event.
    pub fn apply(&mut self, change: Change) {
        self.follow(change, true);
    }

    /// As [`Release::apply`], for an event indexed after it was consumed (its client was not
    /// read before): released already, most likely, which is no late arrival.
    pub fn apply_indexed(&mut self, change: Change) {
        self.follow(change, false);
    }

    /// Whether `client` must stay indexed: a stream follows it, or its releases wait for a
    /// duplicate check.
    pub fn holds(&self, client: &str) -> bool {
        self.streams.wants(client)
            || self.checking.contains_key(client)
            || self.blocked.contains_key(client)
    }

    fn follow(&mut self, change: Change, consumed_now: bool) {
        if let Some(replaced) = change.replaced {
            let group = self.frontier.group_of_held(&replaced);
            self.unpend(group, &replaced.order_key());
        }
        if let Some((client, key)) = change.hidden {
            // A copy evicted since it was shown is only a key now, in the group of a
            // partition not at hand. Rare (copies of one event), so every group is looked at.
            let groups: Vec<usize> = self.pending.keys().copied().collect();
            for group in groups {
                self.unpend(group, &key);
            }
            if let Some(blocked) = self.blocked.get_mut(client.as_str()) {
                blocked.remove(&key);
            }
        }
        if let Some(shown) = change.shown {
            let key = shown.order_key();
            let group = self.frontier.group_of_held(&shown);
            let passed = key < OrderKey::floor(self.frontier.group_bound(group));
            if passed && !consumed_now {
                self.deliver(shown);
            } else if passed {
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
            } else if self
                .pending
                .entry(group)
                .or_default()
                .insert(key, shown)
                .is_none()
            {
                self.unreleased += 1;
            }
        }
        metrics::UNRELEASED.set(self.unreleased as i64);
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

    /// Moves the frontier of all partitions to `micros` (never back), then releases what
    /// each group's bound passed: that frontier, or with per-client release the smallest
    /// clock of the group's partitions ([`Release::clock`]). True if the frontier of all
    /// partitions moved.
    pub fn advance(&mut self, micros: i64) -> bool {
        let moved = micros > self.released;
        if moved {
            self.released = micros;
            self.frontier.released.store(micros, Ordering::Release);
        }
        metrics::PER_CLIENT_RELEASE.set(i64::from(self.frontier.per_client()));
        if self.unreleased == 0 {
            return moved;
        }
        let mut passed = Vec::new();
        let frontier = &self.frontier;
        self.pending.retain(|group, pending| {
            let bound = OrderKey::floor(frontier.group_bound(*group));
            while let Some(entry) = pending.first_entry() {
                if *entry.key() >= bound {
                    break;
                }
                passed.push(entry.remove());
            }
            !pending.is_empty()
        });
        // In key order across groups: a client's records are in one group only once every
        // gateway maps it as this replica does; before, they are released by the frontier of
        // all partitions, from several groups at once.
        passed.sort_unstable_by_key(|held| held.order_key());
        self.unreleased -= passed.len();
        // Two copies of one event released together: the in-flight set stood for the later
        // one until its memory of it was pushed out (bounded), then the earlier arrived. The
        // first by key is the event (the shard keeps it); the other is not delivered.
        if passed.len() > 1 {
            let mut ids = HashSet::with_capacity(passed.len());
            passed.retain(|held| ids.insert(held.event.event_id));
        }
        let now = now_micros();
        for held in passed {
            // From the gateway's acknowledgement to release: the cost of the stable order.
            metrics::RELEASE_DELAY.observe(seconds_since(now, held.event.ingested_at_micros));
            self.deliver(held);
        }
        metrics::UNRELEASED.set(self.unreleased as i64);
        moved
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
        if self.handed.first(&held) && self.streams.wants(client) {
            self.streams.deliver(&held);
        }
    }

    fn unblock(&mut self, client: &str) {
        let Some(mut blocked) = self.blocked.remove(client) else {
            return;
        };
        let bound = self
            .in_flight
            .bound(client, self.frontier.for_client(client));
        let wants = self.streams.wants(client);
        while let Some(entry) = blocked.first_entry() {
            if *entry.key() >= bound {
                break;
            }
            let held = entry.remove();
            if self.handed.first(&held) && wants {
                self.streams.deliver(&held);
            }
        }
        if !blocked.is_empty() {
            self.blocked.insert(client.to_owned(), blocked);
        }
    }
}

#[cfg(test)]
mod tests {
    use event_store::StoredEvent;
    use schemas::{Event, Priority};
    use uuid::Uuid;

    use super::*;
    use crate::{partitions::Partitions, progress::Progress, streams::Subscription};

    /// "a" maps to partition 0 of a two-partition lane and 1 of a three-partition one.
    const CLIENT: &str = "a";
    const LANES: [(&str, i32); 2] = [("critical", 2), ("events", 3)];

    struct Replica {
        partitions: Partitions,
        frontier: Arc<Frontier>,
        stream: Subscription,
    }

    /// A replica following both lanes from their start; `settle`: per-client release.
    fn replica(settle: Option<i64>, started_at: i64) -> Replica {
        let in_flight = Arc::new(InFlight::new(1000, 1 << 20, 64));
        let frontier = Arc::new(Frontier::default());
        let streams = Arc::new(Streams::default());
        let stream = streams.subscribe(CLIENT, 100);
        let release = Release::new(frontier.clone(), in_flight.clone(), streams);
        let mut partitions = Partitions::new(
            in_flight,
            Arc::new(Progress::default()),
            release,
            i64::MAX / 4,
            settle,
            started_at,
            None,
        );
        for (topic, count) in LANES {
            for p in 0..count {
                partitions.assign((topic.to_owned(), p), 0, 0, None);
            }
        }
        Replica {
            partitions,
            frontier,
            stream,
        }
    }

    impl Replica {
        fn tick(&mut self, topic: &str, partition: i32, offset: i64, at: i64) {
            let at_index = self.partitions.find(topic, partition).expect("assigned");
            self.partitions.tick(at_index, offset, at);
            self.partitions.advance();
        }

        fn event(&mut self, topic: &str, partition: i32, offset: i64, at: i64) {
            let at_index = self.partitions.find(topic, partition).expect("assigned");
            let event = Event {
                event_id: Uuid::from_u128(at as u128),
                client_id: CLIENT.into(),
                event_type: "t".into(),
                ts_micros: None,
                ingested_at_micros: at,
                priority: Priority::Critical,
                payload: "{}".into(),
                sdk: None,
                id_origin: None,
            };
            self.partitions.event(at_index, offset, event, true);
            self.partitions.advance();
        }

        /// Every partition ticked at `at`, but partition 0 of the second lane (not the
        /// client's) only at `slow`.
        fn tick_all_but_one(&mut self, offset: i64, at: i64, slow: i64) {
            for (topic, count) in LANES {
                for p in 0..count {
                    let at = if (topic, p) == ("events", 0) {
                        slow
                    } else {
                        at
                    };
                    self.tick(topic, p, offset, at);
                }
            }
        }

        /// An event of the client at 150, then every partition past it but one that is not
        /// the client's, which stays at 120.
        fn event_beside_a_slow_partition(&mut self) {
            self.tick_all_but_one(0, 100, 100);
            self.event("critical", 0, 1, 150);
            self.tick_all_but_one(2, 200, 120);
        }

        fn delivered(&mut self) -> Vec<i64> {
            let mut keys = Vec::new();
            while let Ok(held) = self.stream.events.try_recv() {
                keys.push(held.order_key().ordered_at_micros);
            }
            keys
        }
    }

    #[test]
    fn the_client_map_is_kafkas() {
        let partition = |count| schemas::partitioning::partition_for(CLIENT.as_bytes(), count);
        assert_eq!((partition(2), partition(3)), (Some(0), Some(1)));
    }

    #[test]
    fn a_clients_events_are_released_once_its_own_partitions_passed_them() {
        let mut replica = replica(Some(0), 0);
        replica.event_beside_a_slow_partition();
        assert_eq!(replica.frontier.released(), OrderKey::floor(120));
        assert_eq!(replica.frontier.for_client(CLIENT), OrderKey::floor(200));
        assert_eq!(replica.delivered(), vec![150]);
    }

    #[test]
    fn without_per_client_release_the_slowest_partition_holds_every_client() {
        let mut replica = replica(None, 0);
        replica.event_beside_a_slow_partition();
        assert_eq!(replica.frontier.for_client(CLIENT), OrderKey::floor(120));
        assert_eq!(replica.delivered(), Vec::<i64>::new());
        replica.tick("events", 0, 3, 160);
        assert_eq!(replica.delivered(), vec![150]);
    }

    #[test]
    fn per_client_release_waits_until_the_frontier_passed_the_settle_time() {
        // Started at 0 with a settle time of 130: until every partition passed 130, a record
        // sent with an older partition count may still come.
        let mut replica = replica(Some(130), 0);
        replica.event_beside_a_slow_partition();
        assert_eq!(replica.frontier.for_client(CLIENT), OrderKey::floor(120));
        assert_eq!(replica.delivered(), Vec::<i64>::new());
        replica.tick("events", 0, 3, 140);
        assert_eq!(replica.frontier.for_client(CLIENT), OrderKey::floor(200));
        assert_eq!(replica.delivered(), vec![150]);
    }

    #[test]
    fn a_lane_that_grew_stops_per_client_release_for_the_settle_time() {
        let mut replica = replica(Some(50), 0);
        replica.tick_all_but_one(0, 100, 100);
        replica.tick_all_but_one(1, 200, 120);
        assert_eq!(replica.frontier.for_client(CLIENT), OrderKey::floor(200));
        // The second lane grows at 150: "a" may now land in partition 3 too.
        replica.partitions.grown(150);
        replica
            .partitions
            .assign(("events".to_owned(), 3), 0, 0, None);
        replica.tick("events", 3, 0, 210);
        replica.event("critical", 0, 2, 205);
        replica.tick_all_but_one(3, 250, 180);
        assert_eq!(replica.frontier.for_client(CLIENT), OrderKey::floor(180));
        assert_eq!(replica.delivered(), Vec::<i64>::new());
        replica.tick("events", 0, 4, 260);
        assert_eq!(replica.frontier.for_client(CLIENT), OrderKey::floor(250));
        assert_eq!(replica.delivered(), vec![205]);
    }

    fn copy(id: u128, client: &str, id_assigned: bool) -> Held {
        let copy = crate::in_flight::tests::copy(client, id, 0, "events", 0);
        Arc::new(StoredEvent {
            id_assigned,
            ..StoredEvent::clone(&copy)
        })
    }

    #[test]
    fn a_producer_chosen_id_goes_to_streams_once() {
        let mut handed = HandedIds::default();
        assert!(handed.first(&copy(1, "a", false)));
        assert!(!handed.first(&copy(1, "a", false)), "a second copy");
        assert!(
            handed.first(&copy(1, "b", false)),
            "another client's event with the same id"
        );
        assert!(handed.first(&copy(2, "a", true)));
        assert!(
            handed.first(&copy(2, "a", true)),
            "gateway-assigned ids never repeat: not remembered"
        );
        for id in 3..3 + HANDED_IDS as u128 {
            assert!(handed.first(&copy(id, "a", false)));
        }
        assert!(
            handed.first(&copy(1, "a", false)),
            "forgotten past the bound"
        );
        assert!(
            !handed.first(&copy(2 + HANDED_IDS as u128, "a", false)),
            "the newest still remembered"
        );
    }
}
