//! What the tail knows of every partition — its log clock, the events it holds in offset
//! order, the writer's commit, when it was last consumed to its end — and what follows from
//! each record, commit and duplicate check: the in-flight set, the release frontier, and
//! read-your-writes progress. Kafka-free, so the whole ordering logic can be driven by a
//! model in tests.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use event_store::{KafkaPosition, StoredCopy, StoredEvent};
use schemas::{Event, LogClock};

use crate::{
    in_flight::{Held, InFlight},
    metrics,
    progress::Progress,
    release::Release,
    wall_clock::now_micros,
};

pub use lag::Slot;

struct Partition {
    /// Shared by every event held from it.
    topic: Arc<str>,
    number: i32,
    /// Its lane's index in the release frontier.
    lane: usize,
    clock: LogClock,
    /// The clock last handed to the release frontier (micros).
    published: i64,
    /// The writer's committed offset: everything below is in PostgreSQL.
    committed: i64,
    /// When (micros) this replica last knew it had consumed the partition to its end.
    caught_up_at: Option<i64>,
    /// Held events in offset order, for eviction.
    held: HeldEvents,
    /// Committed events still waiting for their duplicate check.
    deferred: Vec<Held>,
    /// Events consumed so far (for rates).
    consumed: u64,
    /// Next offset to consume, once records were consumed since [`Partitions::advance`] last
    /// told `Progress`.
    unreported: Option<i64>,
    /// The offset after the last event of that batch and the clock after it, when the batch
    /// went on with ticks: a read-your-writes token for the event waits for its own clock,
    /// not for the ticks' (docs/design.md, "Read-your-writes").
    unreported_event: Option<(i64, Option<i64>)>,
}

/// A partition followed by [`Partitions`]: found once per record by [`Partitions::find`],
/// without building a [`Slot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartIndex(usize);

pub struct Partitions {
    parts: Vec<Partition>,
    /// Topic → partition number → index into `parts`.
    index: HashMap<String, Vec<Option<usize>>>,
    in_flight: Arc<InFlight>,
    progress: Arc<Progress>,
    release: Release,
    quiet_bound_micros: i64,
    /// `order.growth_settle`; `None`: per-client release off.
    growth_settle_micros: Option<i64>,
    /// `cache.index_on_read`; `None`: every client's events are indexed as consumed.
    on_read: Option<OnRead>,
}

/// Which clients' events are indexed when only read clients' are
/// (docs/design.md, "Indexing on read").
pub struct OnRead {
    /// The hashes of the clients indexed (how many clients share each): a record of a client
    /// not indexed costs one probe of it, no lock, no string compared.
    hashes: HashMap<u64, u32, BuildPassThrough>,
    /// The clients indexed, as `InFlight` has them: the tail's own copy.
    clients: HashSet<Arc<str>, ahash::RandomState>,
    /// `cache.read_client_ttl`.
    pub ttl_micros: i64,
    /// `cache.max_read_clients`.
    pub max_clients: usize,
}

impl OnRead {
    pub fn new(ttl_micros: i64, max_clients: usize) -> Self {
        OnRead {
            hashes: HashMap::default(),
            clients: HashSet::default(),
            ttl_micros,
            max_clients,
        }
    }

    fn indexes(&self, hash: u64, client: &str) -> bool {
        self.hashes.contains_key(&hash) && self.clients.contains(client)
    }

    fn add(&mut self, hash: u64, client: &str) {
        if self.clients.insert(Arc::from(client)) {
            *self.hashes.entry(hash).or_default() += 1;
        }
    }

    fn remove(&mut self, hash: u64, client: &str) {
        if self.clients.remove(client) {
            if let Some(n) = self.hashes.get_mut(&hash) {
                *n -= 1;
                if *n == 0 {
                    self.hashes.remove(&hash);
                }
            }
        }
    }
}

/// Keys that are hashes already (ahash's) need no hashing again.
#[derive(Default, Clone, Copy)]
struct BuildPassThrough;

#[derive(Default)]
struct PassThrough(u64);

impl std::hash::BuildHasher for BuildPassThrough {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys come here (`write_u64`); anything else is folded in, still correct.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A partition's held events in offset order, each with its client's hash
/// ([`InFlight::client_hash`]) beside it: indexing a client scans the
/// hashes, contiguous, and looks at an event only when its hash matches.
#[derive(Default)]
struct HeldEvents {
    events: VecDeque<Held>,
    clients: VecDeque<u64>,
}

impl HeldEvents {
    fn push(&mut self, held: Held, client: u64) {
        self.events.push_back(held);
        self.clients.push_back(client);
    }

    fn front(&self) -> Option<&Held> {
        self.events.front()
    }

    fn pop_front(&mut self) -> Option<(Held, u64)> {
        let held = self.events.pop_front()?;
        Some((held, self.clients.pop_front().unwrap_or(0)))
    }
}

/// Indexes a held event and hands the change to the release: as it is consumed
/// (`consumed_now`), or later, when its client is first read. True when a producer chose its
/// id and the shard must be asked whether a copy is stored already (its check is counted as
/// started).
fn index(
    in_flight: &InFlight,
    release: &mut Release,
    held: &Held,
    id_assigned: bool,
    consumed_now: bool,
) -> bool {
    let (needs_check, change) = in_flight.insert(held.clone(), id_assigned);
    if consumed_now {
        release.apply(change);
    } else {
        release.apply_indexed(change);
    }
    if needs_check {
        release.check_started(&held.event.client_id);
        metrics::UNVERIFIED.inc();
    }
    needs_check
}

/// However many clients are indexed, one read this recently stays so: a read under way then
/// still finds its evictions followed (answers wait at most `api.max_wait`, 10 s).
const READ_GRACE_MICROS: i64 = 30_000_000;

impl Partitions {
    /// `growth_settle_micros`: per-client release (`release`) holds once the frontier of all
    /// partitions has passed `started_at` plus this; `None` turns it off.
    pub fn new(
        in_flight: Arc<InFlight>,
        progress: Arc<Progress>,
        mut release: Release,
        quiet_bound_micros: i64,
        growth_settle_micros: Option<i64>,
        started_at: i64,
        on_read: Option<OnRead>,
    ) -> Self {
        match growth_settle_micros {
            // Records sent before this replica started may follow an older mapping.
            Some(settle) => release.per_client_after(started_at.saturating_add(settle)),
            None => release.global_only(),
        }
        Partitions {
            parts: Vec::new(),
            index: HashMap::new(),
            in_flight,
            progress,
            release,
            quiet_bound_micros,
            growth_settle_micros,
            on_read,
        }
    }

    /// Whether the events of `client` (hashed `hash`) are indexed as they are consumed.
    fn indexes(on_read: &Option<OnRead>, hash: u64, client: &str) -> bool {
        on_read.as_ref().is_none_or(|r| r.indexes(hash, client))
    }

    /// `clients` are read at `now` (micros): from here on their events are indexed as
    /// consumed, and the ones held already are indexed now, in one pass over what is held,
    /// before `InFlight` says so to readers. Returns the events whose duplicate check must
    /// start (as [`Partitions::event`]).
    pub fn index_clients(&mut self, clients: &[String], now: i64) -> Vec<Held> {
        let Some(on_read) = self.on_read.as_mut() else {
            return Vec::new();
        };
        let mut wanted: Vec<(u64, &str)> = Vec::new();
        for client in clients {
            if on_read.clients.contains(client.as_str()) {
                self.in_flight.mark_indexed(client, now);
            } else if !wanted.iter().any(|(_, w)| w == client) {
                wanted.push((self.in_flight.client_hash(client), client));
            }
        }
        if wanted.is_empty() {
            return Vec::new();
        }
        for (hash, client) in &wanted {
            on_read.add(*hash, client);
        }
        // Most held events are rejected by one bit of this mask, the rest by a search of the
        // wanted hashes; only a matching hash has its event looked at.
        let mask = wanted.iter().fold(0u64, |m, (h, _)| m | 1 << (h & 63));
        let mut hashes: Vec<u64> = wanted.iter().map(|(h, _)| *h).collect();
        hashes.sort_unstable();
        let mut checks = Vec::new();
        for partition in &self.parts {
            let held = &partition.held;
            for (hash, event) in held.clients.iter().zip(held.events.iter()) {
                if mask >> (hash & 63) & 1 == 0
                    || hashes.binary_search(hash).is_err()
                    || !wanted
                        .iter()
                        .any(|(h, c)| h == hash && *c == event.event.client_id)
                {
                    continue;
                }
                // Released already, most of them: readers find them in pages, not streams.
                if index(
                    &self.in_flight,
                    &mut self.release,
                    event,
                    event.id_assigned,
                    false,
                ) {
                    checks.push(event.clone());
                }
            }
        }
        for (_, client) in &wanted {
            self.in_flight.mark_indexed(client, now);
        }
        metrics::INDEXED_CLIENTS.set(self.in_flight.indexed_clients() as i64);
        checks
    }

    /// Stops indexing the clients not read for the TTL (or the longest unread beyond the
    /// bound), unless a stream follows one or a duplicate check of one is outstanding.
    pub fn unindex_idle(&mut self, now: i64) {
        let Some(on_read) = self.on_read.as_mut() else {
            return;
        };
        let idle_since = now.saturating_sub(on_read.ttl_micros);
        let grace_since = now.saturating_sub(READ_GRACE_MICROS);
        for client in self
            .in_flight
            .idle_clients(idle_since, grace_since, on_read.max_clients)
        {
            if self.release.holds(&client) {
                self.in_flight.mark_indexed(&client, now);
            } else if self.in_flight.unindex(&client, grace_since.max(idle_since)) {
                on_read.remove(self.in_flight.client_hash(&client), &client);
            }
        }
        metrics::INDEXED_CLIENTS.set(self.in_flight.indexed_clients() as i64);
    }

    /// A lane grew at `at` (micros): gateways may map clients the old way until their
    /// metadata refresh, so per-client release waits for the settle time again.
    pub fn grown(&mut self, at: i64) {
        if let Some(settle) = self.growth_settle_micros {
            self.release.per_client_after(at.saturating_add(settle));
        }
    }

    /// The partition `partition` of `topic`, if it is followed.
    pub fn find(&self, topic: &str, partition: i32) -> Option<PartIndex> {
        let numbers = self.index.get(topic)?;
        let at = usize::try_from(partition).ok()?;
        numbers.get(at).copied().flatten().map(PartIndex)
    }

    pub fn contains(&self, slot: &Slot) -> bool {
        self.find(&slot.0, slot.1).is_some()
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Starts following a partition from `next`, where its clock is `clock` and the writer
    /// has committed up to `committed`. A partition followed already is left as it is.
    pub fn assign(&mut self, slot: Slot, next: i64, committed: i64, clock: Option<i64>) {
        let Ok(number) = usize::try_from(slot.1) else {
            return;
        };
        if self.contains(&slot) {
            return;
        }
        // Everything below `next` is in PostgreSQL (or will be read): consumed, in effect.
        self.progress.advance(&slot.0, slot.1, next, clock);
        if let Some(clock) = clock {
            self.release.started_at(clock);
        }
        let lane = self.release.add_partition(&slot.0, number);
        let at = self.parts.len();
        let numbers = self.index.entry(slot.0.clone()).or_default();
        if numbers.len() <= number {
            numbers.resize(number + 1, None);
        }
        numbers[number] = Some(at);
        self.parts.push(Partition {
            topic: Arc::from(slot.0.as_str()),
            number: slot.1,
            lane,
            clock: LogClock::resume(clock),
            published: i64::MIN,
            committed,
            caught_up_at: None,
            held: HeldEvents::default(),
            deferred: Vec::new(),
            consumed: 0,
            unreported: None,
            unreported_event: None,
        });
    }

    /// A tick at `offset`: the partition's clock moves.
    pub fn tick(&mut self, at_index: PartIndex, offset: i64, at: i64) {
        if let Some(partition) = self.parts.get_mut(at_index.0) {
            partition.clock.observe(at);
            partition.unreported = Some(offset + 1);
        }
    }

    /// A record that is neither an event nor a tick: the writer dead-letters it; the clock
    /// stays, as it does for every other consumer.
    pub fn unreadable(&mut self, at_index: PartIndex, offset: i64) {
        metrics::UNDECODABLE.inc();
        if let Some(partition) = self.parts.get_mut(at_index.0) {
            partition.unreported = Some(offset + 1);
        }
    }

    /// An event at `offset`. Returns it when a producer chose its id and the shard must be
    /// asked whether a copy is stored already (answer with [`Partitions::checked`]).
    ///
    /// Its position reaches `Progress` (and readers wake) at [`Partitions::advance`], once
    /// per batch of records the tail has drained, not per record: after the insert, so a
    /// reader woken then finds the event.
    pub fn event(
        &mut self,
        at_index: PartIndex,
        offset: i64,
        event: Event,
        id_assigned: bool,
    ) -> Option<Held> {
        let partition = self.parts.get_mut(at_index.0)?;
        partition.consumed += 1;
        partition.unreported = Some(offset + 1);
        let ordered_at_micros = partition.clock.observe(event.ingested_at_micros);
        partition.unreported_event = Some((offset + 1, partition.clock.latest()));
        let held = Arc::new(StoredEvent {
            event,
            position: KafkaPosition {
                topic: partition.topic.clone(),
                partition: partition.number,
                offset,
            },
            ordered_at_micros,
            id_assigned,
        });
        let hash = self.in_flight.client_hash(&held.event.client_id);
        self.in_flight.count_in(&held, hash);
        partition.held.push(held.clone(), hash);
        if !Self::indexes(&self.on_read, hash, &held.event.client_id) {
            return None;
        }
        index(&self.in_flight, &mut self.release, &held, id_assigned, true).then_some(held)
    }

    /// The shard's answer to a duplicate check.
    pub fn checked(&mut self, held: &Held, found: Option<&StoredCopy>) {
        metrics::UNVERIFIED.dec();
        let change = self.in_flight.verified(held, found);
        self.release.apply(change);
        self.release.check_done(&held.event.client_id);
        if let Some(partition) = self
            .find(&held.position.topic, held.position.partition)
            .and_then(|at| self.parts.get_mut(at.0))
        {
            if held.position.offset < partition.committed {
                if let Some(at) = partition.deferred.iter().position(|d| Arc::ptr_eq(d, held)) {
                    partition.deferred.swap_remove(at);
                    self.in_flight.evict(held);
                    let hash = self.in_flight.client_hash(&held.event.client_id);
                    self.in_flight.count_out(held, hash);
                }
            }
        }
        self.progress.notify();
    }

    /// The writer has committed the partition up to `committed`: what it holds below is in
    /// PostgreSQL now.
    pub fn committed(&mut self, slot: &Slot, committed: i64) {
        let Some(at) = self.find(&slot.0, slot.1) else {
            return;
        };
        let Some(partition) = self.parts.get_mut(at.0) else {
            return;
        };
        partition.committed = partition.committed.max(committed);
        while partition
            .held
            .front()
            .is_some_and(|h| h.position.offset < partition.committed)
        {
            let Some((held, hash)) = partition.held.pop_front() else {
                break;
            };
            // Until its duplicate check answers, the copy stays.
            if !Self::indexes(&self.on_read, hash, &held.event.client_id) {
                self.in_flight.stored_unindexed(&held);
                self.in_flight.count_out(&held, hash);
            } else if self.in_flight.evict_checked(&held) {
                self.in_flight.count_out(&held, hash);
            } else {
                partition.deferred.push(held);
            }
        }
    }

    /// Events consumed so far, per topic.
    pub fn consumed_counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for partition in &self.parts {
            *counts.entry(partition.topic.to_string()).or_default() += partition.consumed;
        }
        counts
    }

    /// `ingested_at` of the oldest event held (consumed, not yet stored).
    pub fn oldest_held(&self) -> Option<i64> {
        self.parts
            .iter()
            .flat_map(|p| p.held.front().into_iter().chain(p.deferred.iter()))
            .map(|h| h.event.ingested_at_micros)
            .min()
    }

    /// This replica had consumed the partition to its end at `at` (micros).
    pub fn caught_up(&mut self, slot: &Slot, at: i64) {
        if let Some(partition) = self
            .find(&slot.0, slot.1)
            .and_then(|at| self.parts.get_mut(at.0))
        {
            partition.caught_up_at = Some(at);
        }
    }

    /// Tells `Progress` how far each partition is consumed, then moves the release frontier
    /// to the smallest clock over all partitions, a partition consumed to its end counting as
    /// `caught_up_at - quiet_bound` at least (each partition's own such clock goes to the
    /// per-client release).
    pub fn advance(&mut self) {
        self.progress
            .advance_all(self.parts.iter_mut().flat_map(|p| {
                let next = p.unreported.take();
                // Only when records followed the event in the batch: otherwise the batch's own
                // step is the event's.
                let event = p
                    .unreported_event
                    .take()
                    .filter(|(after, _)| next.is_some_and(|next| *after < next));
                let p = &*p;
                event
                    .map(|(after, clock)| (&*p.topic, p.number, after, clock))
                    .into_iter()
                    .chain(next.map(|next| (&*p.topic, p.number, next, p.clock.latest())))
            }));
        let mut frontier = Some(i64::MAX);
        let mut clocks_moved = false;
        for partition in &mut self.parts {
            let idle = partition
                .caught_up_at
                .map(|at| at.saturating_sub(self.quiet_bound_micros));
            let clock = partition.clock.latest().max(idle);
            frontier = frontier.zip(clock).map(|(f, c)| f.min(c));
            let clock = clock.unwrap_or(i64::MIN);
            if clock > partition.published {
                partition.published = clock;
                clocks_moved = true;
                let number = usize::try_from(partition.number).unwrap_or(usize::MAX);
                self.release.clock(partition.lane, number, clock);
            }
        }
        // A partition without a clock yet holds the frontier of all partitions where it was.
        let frontier = frontier.filter(|f| *f != i64::MAX).unwrap_or(i64::MIN);
        let moved = self.release.advance(frontier);
        if moved {
            metrics::FRONTIER_LAG.set((now_micros() - frontier) as f64 / 1e6);
        }
        if moved || clocks_moved {
            self.progress.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use schemas::ReadToken;

    use super::*;
    use crate::{release::Frontier, streams::Streams};

    fn event(at: i64) -> Event {
        crate::in_flight::tests::copy("a", at as u128, at, "events", 0)
            .event
            .clone()
    }

    fn token(offset: i64) -> ReadToken {
        let mut token = ReadToken::default();
        token.observe("events", 0, offset);
        token
    }

    #[test]
    fn a_token_is_covered_by_its_events_clock_though_ticks_came_in_the_same_batch() {
        let in_flight = Arc::new(InFlight::new(1000, 1 << 20, 64));
        let progress = Arc::new(Progress::default());
        let release = Release::new(
            Arc::new(Frontier::default()),
            in_flight.clone(),
            Arc::new(Streams::default()),
        );
        let mut partitions = Partitions::new(
            in_flight,
            progress.clone(),
            release,
            i64::MAX / 4,
            None,
            0,
            None,
        );
        partitions.assign(("events".into(), 0), 0, 0, None);
        let at = partitions.find("events", 0).expect("assigned");

        // One drained batch: two events, then ticks that moved the clock on.
        partitions.event(at, 0, event(1_000), true);
        partitions.event(at, 1, event(2_000), true);
        partitions.tick(at, 2, 5_000);
        partitions.tick(at, 3, 9_000);
        partitions.advance();
        assert_eq!(progress.covered_until(&token(0)), Some(2_000));
        assert_eq!(progress.covered_until(&token(1)), Some(2_000));
        assert_eq!(progress.covered_until(&token(3)), Some(9_000));
        assert_eq!(progress.covered_until(&token(4)), None);

        // A batch that ends with its event has one step.
        partitions.event(at, 4, event(10_000), true);
        partitions.advance();
        assert_eq!(progress.covered_until(&token(4)), Some(10_000));
        assert_eq!(progress.covered_until(&token(3)), Some(9_000));
    }
}
