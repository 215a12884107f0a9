//! Events consumed from Kafka that the writer has not committed yet: per client in order and
//! by event id (copies of one event), bounded in count and bytes.
//!
//! Locks are sharded by client, and every operation touches one client's entry for a bounded
//! amount of work, so a client with 100,000 events in flight slows neither other clients'
//! reads nor the tail: a snapshot copies at most the page it serves.
//!
//! Copies of one event (`event_store::CopyRank`): the copy that comes first stands for the
//! event, in flight and in PostgreSQL. An event whose id a producer chose may repeat one
//! stored before this replica saw it; it stays *unverified* (hidden from answers, holding back
//! its client's later events) until `verify` has looked the id up in the shard.

use std::{
    collections::{hash_map::Entry, BTreeMap, BTreeSet, HashMap},
    ops::Bound,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use event_store::{ClientQuery, CopyRank, Direction, StoredCopy, StoredEvent};
use schemas::OrderKey;
use smallvec::SmallVec;
use uuid::Uuid;

use crate::{held_clients::HeldClients, recent_ids::RecentIds};

const SHARDS: usize = 64;

/// Hash maps keyed by client ids and event ids, which producers choose: a keyed, fast hash
/// (SipHash was a tenth of the tail's CPU under load).
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

pub type Held = Arc<StoredEvent>;

/// Every in-flight copy of one event id of one client, and what is known of stored copies.
#[derive(Debug, Default)]
struct Copies {
    /// Nearly always one: inline, so holding an event allocates no list.
    held: SmallVec<[Held; 1]>,
    /// The first stored copy known (from an eviction or from the shard).
    stored: Option<CopyRank>,
    /// The id belongs to another client's event: none of these copies will be stored.
    taken: bool,
    /// The shard has not answered yet whether it stores a copy: the visible copy is
    /// unverified.
    checking: bool,
    /// `stored` came from a partial memory (see `Recent::partial`) and no check has
    /// answered since: an earlier copy may be stored unknown to this set.
    partial: bool,
}

enum Winner<'a> {
    Held(&'a Held),
    Stored(&'a CopyRank),
    Nobody,
}

impl Copies {
    fn winner(&self) -> Winner<'_> {
        if self.taken {
            return Winner::Nobody;
        }
        let held = self
            .held
            .iter()
            .reduce(|a, b| if b.precedes(a) { b } else { a });
        match (held, &self.stored) {
            (Some(h), Some(s)) if *s < h.copy_rank() => Winner::Stored(s),
            (Some(h), _) => Winner::Held(h),
            (None, Some(s)) => Winner::Stored(s),
            (None, None) => Winner::Nobody,
        }
    }

    /// What to remember of the event once its copies are no longer held here: its first
    /// stored copy, unless the id is another client's.
    fn memory(&self, clock: u64, client: &Arc<str>, partial: bool) -> Option<Recent> {
        match (self.taken, &self.stored) {
            (false, Some(rank)) => Some(Recent {
                clock,
                client: client.clone(),
                rank: rank.clone(),
                // A check still under way would have settled it: until then, partial.
                partial: partial || self.partial || self.checking,
            }),
            _ => None,
        }
    }

    fn standing(&self, id: Uuid) -> Standing {
        match self.winner() {
            Winner::Held(h) => Standing::Held(h.clone()),
            Winner::Stored(s) => Standing::Stored(OrderKey {
                ordered_at_micros: s.ordered_at_micros,
                event_id: id,
            }),
            Winner::Nobody => Standing::Nobody,
        }
    }
}

/// The copy that stands for an event: held here, or stored (then only its key is known).
#[derive(Debug, Clone)]
enum Standing {
    Held(Held),
    Stored(OrderKey),
    Nobody,
}

impl Standing {
    fn key(&self) -> Option<OrderKey> {
        match self {
            Standing::Held(h) => Some(h.order_key()),
            Standing::Stored(key) => Some(*key),
            Standing::Nobody => None,
        }
    }

    fn held(&self) -> Option<&Held> {
        match self {
            Standing::Held(h) => Some(h),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
struct Client {
    /// The held copy that stands for each event still in flight, in order.
    visible: BTreeMap<OrderKey, Held>,
    ids: Map<Uuid, Copies>,
    /// Keys of visible copies whose id awaits the shard check.
    unverified: BTreeSet<OrderKey>,
}

impl Client {
    fn standing(&self, id: Uuid) -> Standing {
        self.ids
            .get(&id)
            .map_or(Standing::Nobody, |copies| copies.standing(id))
    }

    /// Re-derives what stands for `id` after its copies changed. The visible map follows the
    /// held copy. Readers follow the key: a held copy that starts standing for the event is
    /// shown (also when the shard already stored it: this replica had not released it yet,
    /// since it had not consumed it), and a key that stops standing for it is hidden. A
    /// standing copy being stored changes neither.
    fn refresh(&mut self, client_id: &str, id: Uuid, before: Standing) -> Change {
        let after = self.standing(id);
        let same_held = match (before.held(), after.held()) {
            (Some(b), Some(a)) => Arc::ptr_eq(b, a),
            (None, None) => true,
            _ => false,
        };
        if !same_held {
            if let Some(b) = before.held() {
                self.visible.remove(&b.order_key());
                self.unverified.remove(&b.order_key());
            }
            if let Some(a) = after.held() {
                self.visible.insert(a.order_key(), a.clone());
                if self.ids.get(&id).is_some_and(|c| c.checking) {
                    self.unverified.insert(a.order_key());
                }
            }
        }
        let hidden = before
            .key()
            .filter(|key| after.key() != Some(*key))
            .map(|key| (client_id.to_owned(), key));
        let shown = match (before.held(), after.held()) {
            (Some(b), Some(a)) if Arc::ptr_eq(b, a) => None,
            (_, Some(a)) => Some(a.clone()),
            (_, None) => None,
        };
        let replaced = if same_held {
            None
        } else {
            before.held().cloned()
        };
        Change {
            hidden,
            shown,
            replaced,
        }
    }
}

/// Which copy stopped or started standing for an event.
#[derive(Debug, Default)]
pub struct Change {
    /// The client and key of the copy that no longer stands for its event (held here or
    /// already stored): readers must not get it.
    pub hidden: Option<(String, OrderKey)>,
    /// The held copy that now stands for it.
    pub shown: Option<Held>,
    /// The held copy that stood for it before, whatever its key (copies may share one).
    pub replaced: Option<Held>,
}

/// An evicted event, remembered for a while: a copy arriving later is judged against it
/// without a database round trip, and a page whose rows were read before the eviction is
/// judged correctly (see `judge`).
struct Recent {
    clock: u64,
    client: Arc<str>,
    rank: CopyRank,
    /// Remembered while the client was not indexed: only copies whose id a producer chose
    /// were, so an earlier copy with the gateway's id may be stored too. A producer's copy
    /// consumed later is checked still.
    partial: bool,
}

struct Shard {
    clients: Map<Arc<str>, Client>,
    /// Versioning of the persisted side, for the page cache: how each client's rows changed
    /// (`Moved`); `floor` stands for the clients not remembered.
    moved: Map<Arc<str>, Moved>,
    floor: u64,
    recent: RecentIds<Recent>,
    /// Clock of the newest entry dropped from `recent`.
    recent_floor: u64,
    /// Clients whose events are indexed (`cache.index_on_read`: read lately), with when
    /// (micros) they were last read. Set only by the tail, after it indexed what it holds.
    indexed: Map<Arc<str>, i64>,
}

impl Shard {
    fn with_recent(bound: usize) -> Self {
        Shard {
            clients: Map::default(),
            moved: Map::default(),
            floor: 0,
            recent: RecentIds::new(bound),
            recent_floor: 0,
            indexed: Map::default(),
        }
    }
}

/// How a client's persisted rows changed, on the eviction clock: rows change exactly when the
/// client's in-flight events are evicted (they became rows).
#[derive(Debug, Clone, Copy)]
struct Moved {
    /// The client's last eviction.
    last: u64,
    /// Every eviction of the client after clock `since` had a key at or above `low` (none
    /// had, when `None`). A page read after `since` that ends below `low` is still what a
    /// read now returns, so a client whose new events keep being stored still has its
    /// older pages served from memory.
    since: u64,
    low: Option<OrderKey>,
}

/// A client's settled in-flight events for one page.
pub struct Snapshot {
    pub events: Vec<Held>,
    /// The eviction clock when the snapshot was taken.
    pub clock: u64,
    /// Only events below this key may be answered: the release frontier, lowered to the
    /// client's first unverified event.
    pub bound: OrderKey,
}

/// What a page may do with a row it read from the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Another copy stands for this event.
    Hide,
}

/// The rows were read before a change this set can no longer account for: read again.
#[derive(Debug)]
pub struct Stale;

/// Remembers an evicted copy; `floor` rises to the clock of any it forgets.
fn remember(recent: &mut RecentIds<Recent>, floor: &mut u64, id: Uuid, entry: Recent) {
    recent.insert(id, entry, |dropped| *floor = (*floor).max(dropped.clock));
}

/// Clients remembered in `moved` per shard before they are folded into `floor`.
const MOVED_BOUND: usize = 4096;

/// Beyond its bound, `moved` is forgotten and `floor` raised to `clock`: every page read
/// before counts as changed.
fn bound_moved(moved: &mut Map<Arc<str>, Moved>, floor: &mut u64, clock: u64) {
    if moved.len() > MOVED_BOUND {
        *floor = clock;
        moved.clear();
    }
}

pub struct InFlight {
    shards: Box<[Mutex<Shard>]>,
    hasher: ahash::RandomState,
    clock: AtomicU64,
    /// Clients indexed (`Shard::indexed`).
    indexed: AtomicUsize,
    events: AtomicUsize,
    bytes: AtomicUsize,
    max_events: usize,
    max_bytes: usize,
    /// The clients of the events counted in, indexed or not.
    held: HeldClients,
}

/// What an event costs in memory, roughly: its text plus the index entries that point at it.
pub fn weight(event: &StoredEvent) -> usize {
    const OVERHEAD: usize = 320;
    OVERHEAD
        + event.event.payload.len()
        + event.event.client_id.len()
        + event.event.event_type.len()
        + event.event.sdk.as_ref().map_or(0, String::len)
        + event.position.topic.len()
}

impl InFlight {
    pub fn new(max_events: usize, max_bytes: usize, recent: usize) -> Self {
        Self::with_hasher(max_events, max_bytes, recent, ahash::RandomState::new())
    }

    /// A set whose clients land on lock shards fixed by `hasher`: tests choose whether two
    /// clients share a shard (and so its bounded memory of evicted events).
    pub(crate) fn with_hasher(
        max_events: usize,
        max_bytes: usize,
        recent: usize,
        hasher: ahash::RandomState,
    ) -> Self {
        let recent_per_shard = (recent / SHARDS).max(16);
        InFlight {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::with_recent(recent_per_shard)))
                .collect(),
            hasher,
            clock: AtomicU64::new(1),
            indexed: AtomicUsize::new(0),
            events: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_events: max_events.max(1),
            max_bytes: max_bytes.max(1),
            held: HeldClients::new(max_events),
        }
    }

    pub(crate) fn shard_of(&self, client_id: &str) -> usize {
        (self.hasher.hash_one(client_id) as usize) % SHARDS
    }

    fn shard(&self, client_id: &str) -> MutexGuard<'_, Shard> {
        let index = self.shard_of(client_id);
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True while the set holds its bound of events or bytes: the tail stops consuming until
    /// the writer's commits make room, so nothing consumed is ever dropped.
    pub fn is_full(&self) -> bool {
        self.events.load(Ordering::Relaxed) >= self.max_events
            || self.bytes.load(Ordering::Relaxed) >= self.max_bytes
    }

    pub fn len(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }

    /// A consumed event is held (indexed or not): it counts towards the bounds until
    /// [`InFlight::count_out`].
    /// `client_hash`: [`InFlight::client_hash`] of its client.
    pub fn count_in(&self, event: &StoredEvent, client_hash: u64) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(weight(event), Ordering::Relaxed);
        self.held.add(client_hash);
    }

    /// A held event is gone (evicted, or dropped unindexed once stored).
    pub fn count_out(&self, event: &StoredEvent, client_hash: u64) {
        self.events.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(weight(event), Ordering::Relaxed);
        self.held.remove(client_hash);
    }

    /// The hash of a client id that the tail keeps beside each held event.
    pub fn client_hash(&self, client_id: &str) -> u64 {
        self.held.hash(client_id)
    }

    /// False only if no event of `client_id` is counted in now (see [`HeldClients::may_hold`]).
    pub fn may_hold(&self, client_id: &str) -> bool {
        self.held.may_hold(client_id)
    }

    /// A read of `client` at `now` (micros): true if its events are indexed (and it stays so
    /// for the read-client TTL from now); false if the tail must index them first.
    pub fn touch(&self, client_id: &str, now: i64) -> bool {
        let mut shard = self.shard(client_id);
        match shard.indexed.get_mut(client_id) {
            Some(read_at) => {
                *read_at = (*read_at).max(now);
                true
            }
            None => false,
        }
    }

    /// The tail has indexed what it holds of `client` (or is told it was read again).
    pub(crate) fn mark_indexed(&self, client_id: &str, now: i64) {
        let mut shard = self.shard(client_id);
        match shard.indexed.get_mut(client_id) {
            Some(read_at) => *read_at = (*read_at).max(now),
            None => {
                shard.indexed.insert(Arc::from(client_id), now);
                self.indexed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Clients indexed for their reads.
    pub fn indexed_clients(&self) -> usize {
        self.indexed.load(Ordering::Relaxed)
    }

    /// Indexed clients last read before `idle_since`, and, while more than `max` clients are
    /// indexed, the longest unread of the others last read before `grace_since`.
    pub(crate) fn idle_clients(
        &self,
        idle_since: i64,
        grace_since: i64,
        max: usize,
    ) -> Vec<Arc<str>> {
        let mut idle = Vec::new();
        let mut others = Vec::new();
        let over = self.indexed_clients().saturating_sub(max);
        for shard in self.shards.iter() {
            let shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (client, read_at) in &shard.indexed {
                if *read_at < idle_since {
                    idle.push(client.clone());
                } else if over > 0 && *read_at < grace_since {
                    others.push((*read_at, client.clone()));
                }
            }
        }
        let beyond = over.saturating_sub(idle.len());
        if beyond > 0 {
            others.sort_unstable_by_key(|(read_at, _)| *read_at);
            idle.extend(others.into_iter().take(beyond).map(|(_, client)| client));
        }
        idle
    }

    /// Stops indexing `client`'s events, unless it was read at or after `read_before` or a
    /// duplicate check of one of them is outstanding. Its held events stay held (and
    /// counted); pages of its rows read before are stale from now on, since its evictions
    /// are no longer followed. True if it is no longer indexed.
    pub(crate) fn unindex(&self, client_id: &str, read_before: i64) -> bool {
        let mut shard = self.shard(client_id);
        if shard
            .indexed
            .get(client_id)
            .is_none_or(|read_at| *read_at >= read_before)
        {
            return false;
        }
        if shard.clients.get(client_id).is_some_and(|c| {
            !c.unverified.is_empty() || c.ids.values().any(|copies| copies.checking)
        }) {
            return false;
        }
        let Some((key, _)) = shard.indexed.remove_entry(client_id) else {
            return false;
        };
        self.indexed.fetch_sub(1, Ordering::Relaxed);
        let clock = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        // What the entry knows of stored copies of events still held outlives it: a copy
        // indexed again later is judged against it. Partial from now on: the gateway's copy
        // of such an id may be stored unindexed (and unremembered) later.
        let removed = shard.clients.remove(client_id);
        let Shard {
            recent,
            recent_floor,
            ..
        } = &mut *shard;
        // So are the evictions remembered before: a gateway copy of one of their ids
        // may be stored unremembered from now on.
        for entry in recent.values_mut() {
            if *entry.client == *key {
                entry.partial = true;
            }
        }
        if let Some(client) = removed {
            for (id, copies) in client.ids {
                if let Some(entry) = copies.memory(clock, &key, true) {
                    remember(recent, recent_floor, id, entry);
                }
            }
        }
        shard.moved.insert(
            key,
            Moved {
                last: clock,
                since: clock,
                low: None,
            },
        );
        let Shard { moved, floor, .. } = &mut *shard;
        bound_moved(moved, floor, clock);
        true
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Holds a consumed copy. `checked` is false when a producer chose the id and nothing
    /// this replica knows settles whether the event was stored before: then the copy is
    /// unverified until [`InFlight::verified`]. Returns whether it must be checked, and which
    /// copy stopped or started standing for its event.
    pub fn insert(&self, event: Held, id_assigned: bool) -> (bool, Change) {
        let id = event.event.event_id;
        let mut shard = self.shard(&event.event.client_id);
        let Shard {
            clients, recent, ..
        } = &mut *shard;
        let client_id: Arc<str> = match clients.get_key_value(event.event.client_id.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(event.event.client_id.as_str()),
        };
        let client = clients.entry(client_id.clone()).or_default();
        match client.ids.entry(id) {
            Entry::Occupied(mut copies) => {
                let before = copies.get().standing(id);
                copies.get_mut().held.push(event);
                (false, client.refresh(&client_id, id, before))
            }
            Entry::Vacant(slot) => {
                // An evicted copy remembered here stands for the event until this one, if it
                // comes first, takes over (readers then must not get the evicted one).
                let known = recent.get(&id);
                let mut copies = Copies::default();
                match known {
                    Some(r) if *r.client == *client_id => {
                        copies.stored = Some(r.rank.clone());
                        copies.partial = r.partial;
                    }
                    Some(_) => copies.taken = true,
                    None => {}
                }
                let before = copies.standing(id);
                let check = !id_assigned && known.is_none_or(|r| r.partial);
                copies.checking = check;
                copies.held.push(event);
                slot.insert(copies);
                (check, client.refresh(&client_id, id, before))
            }
        }
    }

    /// The shard's answer for an unverified copy: the stored copy of its id, if any.
    pub fn verified(&self, held: &Held, found: Option<&StoredCopy>) -> Change {
        let id = held.event.event_id;
        let mut shard = self.shard(&held.event.client_id);
        let Some(client) = shard.clients.get_mut(held.event.client_id.as_str()) else {
            return Change::default();
        };
        let Some(copies) = client.ids.get_mut(&id) else {
            return Change::default();
        };
        let before = copies.standing(id);
        copies.checking = false;
        copies.partial = false;
        if let Some(b) = before.held() {
            client.unverified.remove(&b.order_key());
        }
        let Some(copies) = client.ids.get_mut(&id) else {
            return Change::default();
        };
        let mut stored_key = None;
        match found {
            Some(copy) if copy.client_id == held.event.client_id => {
                let rank = copy.rank.clone();
                stored_key = Some(OrderKey {
                    ordered_at_micros: rank.ordered_at_micros,
                    event_id: id,
                });
                copies.stored = Some(copies.stored.take().map_or(rank.clone(), |s| s.min(rank)));
            }
            Some(_) => copies.taken = true,
            None => {}
        }
        let mut change = client.refresh(&held.event.client_id, id, before);
        // The stored copy may be one this replica consumed and evicted, its memory pushed out
        // before this copy arrived, while it still waited for release (or is held back by this
        // very check): nothing else hides it then. When a copy before it stands, readers must
        // not get it (the model test found a stream given both).
        if change.hidden.is_none() {
            change.hidden = stored_key
                .filter(|key| client.standing(id).key().is_some_and(|s| s != *key))
                .map(|key| (held.event.client_id.clone(), key));
        }
        change
    }

    /// Forgets a copy the writer has committed: it is in PostgreSQL now (or was refused).
    pub fn evict(&self, held: &Held) {
        self.evict_if(held, false);
    }

    /// As [`InFlight::evict`], unless the copy still waits for its duplicate check: it cannot
    /// be evicted before, since the check decides whether the stored row is this copy or an
    /// earlier one. Returns whether it was evicted (or was not held).
    pub fn evict_checked(&self, held: &Held) -> bool {
        self.evict_if(held, true)
    }

    fn evict_if(&self, held: &Held, checked_only: bool) -> bool {
        let id = held.event.event_id;
        let client_id = held.event.client_id.as_str();
        let mut shard = self.shard(client_id);
        let Shard {
            clients,
            moved,
            floor,
            recent,
            recent_floor,
            ..
        } = &mut *shard;
        let Some((client_key, _)) = clients.get_key_value(client_id) else {
            return true;
        };
        let client_key = client_key.clone();
        let Some(client) = clients.get_mut(client_id) else {
            return true;
        };
        if checked_only && client.unverified.contains(&held.order_key()) {
            return false;
        }
        let clock = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(copies) = client.ids.get_mut(&id) else {
            return true;
        };
        let before = copies.standing(id);
        let Some(at) = copies.held.iter().position(|c| Arc::ptr_eq(c, held)) else {
            return true;
        };
        copies.held.swap_remove(at);
        if !copies.taken {
            let rank = held.copy_rank();
            copies.stored = Some(match copies.stored.take() {
                Some(stored) => stored.min(rank),
                None => rank,
            });
        }
        client.unverified.remove(&held.order_key());
        if copies.held.is_empty() {
            let copies = client.ids.remove(&id).unwrap_or_default();
            if let Some(b) = before.held() {
                client.visible.remove(&b.order_key());
            }
            if let Some(entry) = copies.memory(clock, &client_key, false) {
                remember(recent, recent_floor, id, entry);
            }
        } else {
            // Storing a copy never changes which copy comes first, so readers need no word.
            client.refresh(client_id, id, before);
        }
        if client.ids.is_empty() {
            clients.remove(client_id);
        }
        let key = held.order_key();
        match moved.get_mut(client_id) {
            Some(m) => {
                m.last = clock;
                m.low = Some(m.low.map_or(key, |low| low.min(key)));
            }
            // Not remembered: none of the client's events was evicted after `floor`.
            None => {
                moved.insert(
                    client_key,
                    Moved {
                        last: clock,
                        since: *floor,
                        low: Some(key),
                    },
                );
            }
        }
        bound_moved(moved, floor, clock);
        true
    }

    /// A copy of a client not indexed is stored: remembered like an evicted one when a
    /// producer chose its id, since a copy consumed later may carry the id without a check
    /// (the gateway's copy of an id a producer reused) and must find this one. Ids the
    /// gateway assigned need no memory: any other copy is a producer's, and checked.
    pub fn stored_unindexed(&self, held: &Held) {
        if held.id_assigned {
            return;
        }
        let clock = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let mut shard = self.shard(&held.event.client_id);
        let Shard {
            recent,
            recent_floor,
            ..
        } = &mut *shard;
        let id = held.event.event_id;
        let rank = held.copy_rank();
        if let Some(known) = recent.get_mut(&id) {
            if *known.client == *held.event.client_id {
                if rank < known.rank {
                    known.rank = rank;
                }
                return;
            }
        }
        let entry = Recent {
            clock,
            client: Arc::from(held.event.client_id.as_str()),
            rank,
            partial: true,
        };
        remember(recent, recent_floor, id, entry);
    }

    /// Whether `client`'s persisted rows read at eviction clock `read_at` are still what a
    /// read now returns (conservatively). `reach`: the key of the last row of a read oldest
    /// first that filled its limit. Rows stored beyond it change nothing such a read returns,
    /// nor replace a row in it: a copy that comes first orders no later than the others.
    pub fn rows_unchanged(&self, client_id: &str, read_at: u64, reach: Option<OrderKey>) -> bool {
        let shard = self.shard(client_id);
        if shard.floor > read_at {
            return false;
        }
        shard.moved.get(client_id).is_none_or(|m| {
            m.last <= read_at
                || (m.since <= read_at && reach.is_some_and(|k| m.low.is_none_or(|low| k < low)))
        })
    }

    /// A page of `client`'s rows was read after the snapshot at `read_at`: if nothing of the
    /// client's was evicted since, evictions are watched from there on (pages read before
    /// then are then unchanged only while nothing of the client's is evicted).
    pub fn rows_read(&self, client_id: &str, read_at: u64) {
        let mut shard = self.shard(client_id);
        if let Some(m) = shard.moved.get_mut(client_id) {
            if m.last <= read_at && m.since < read_at {
                m.since = read_at;
                m.low = None;
            }
        }
    }

    /// The key below which `client`'s events may be answered, given the release frontier.
    pub fn bound(&self, client_id: &str, released: OrderKey) -> OrderKey {
        let shard = self.shard(client_id);
        shard
            .clients
            .get(client_id)
            .and_then(|c| c.unverified.first().copied())
            .map_or(released, |first| first.min(released))
    }

    /// At most `query.limit` of the client's visible events strictly beyond `query.from` in
    /// its direction, ordered in `[since, until)`, below the release frontier `released`.
    pub fn snapshot(&self, query: &ClientQuery<'_>, released: OrderKey) -> Snapshot {
        let ClientQuery {
            client_id,
            from,
            since_micros: since,
            until_micros: until,
            limit,
            direction,
        } = *query;
        let shard = self.shard(client_id);
        let client = shard.clients.get(client_id);
        let bound = client
            .and_then(|c| c.unverified.first().copied())
            .map_or(released, |first| first.min(released));
        let upper = until.map_or(bound, |u| bound.min(OrderKey::floor(u)));
        let lower = since.map(OrderKey::floor);
        let events = match client {
            None => Vec::new(),
            Some(client) => {
                let (lo, hi) = match direction {
                    Direction::Forward => (
                        match (from, lower) {
                            (Some(f), Some(l)) if l > f => Bound::Included(l),
                            (Some(f), _) => Bound::Excluded(f),
                            (None, Some(l)) => Bound::Included(l),
                            (None, None) => Bound::Unbounded,
                        },
                        Bound::Excluded(upper),
                    ),
                    Direction::Backward => (
                        lower.map_or(Bound::Unbounded, Bound::Included),
                        match from {
                            Some(f) if f < upper => Bound::Excluded(f),
                            _ => Bound::Excluded(upper),
                        },
                    ),
                };
                if matches!((&lo, &hi), (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(h)) if l >= h)
                {
                    Vec::new()
                } else {
                    let range = client.visible.range((lo, hi));
                    match direction {
                        Direction::Forward => range.take(limit).map(|(_, e)| e.clone()).collect(),
                        Direction::Backward => {
                            range.rev().take(limit).map(|(_, e)| e.clone()).collect()
                        }
                    }
                }
            }
        };
        Snapshot {
            events,
            clock: self.clock.load(Ordering::Relaxed),
            bound,
        }
    }

    /// Decides, for rows of `client` read from its shard after a snapshot taken at
    /// `since_clock`, whether each row is the copy that stands for its event.
    pub fn judge(
        &self,
        client_id: &str,
        rows: &[Held],
        since_clock: u64,
    ) -> Result<Vec<Verdict>, Stale> {
        let shard = self.shard(client_id);
        if shard.recent_floor > since_clock {
            return Err(Stale);
        }
        let client = shard.clients.get(client_id);
        rows.iter()
            .map(|row| {
                let id = row.event.event_id;
                let rank = row.copy_rank();
                // The row is the first copy the shard held when it was read, which this set
                // may not know of: a copy consumed after the stored one's eviction was
                // forgotten (or before the writer stored it) still awaits its check. So the
                // row stands unless a copy known here comes before it.
                if let Some(copies) = client.and_then(|c| c.ids.get(&id)) {
                    return match copies.winner() {
                        Winner::Held(h) if h.copy_rank() < rank => Ok(Verdict::Hide),
                        Winner::Held(_) => Ok(Verdict::Keep),
                        // The row was read before an earlier copy replaced it.
                        Winner::Stored(s) if *s < rank => Err(Stale),
                        Winner::Stored(_) => Ok(Verdict::Keep),
                        Winner::Nobody => Ok(Verdict::Hide),
                    };
                }
                match shard.recent.get(&id) {
                    Some(r) if r.clock > since_clock && r.rank < rank => Err(Stale),
                    _ => Ok(Verdict::Keep),
                }
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use event_store::KafkaPosition;
    use schemas::{Event, Priority};

    use super::*;

    /// A copy of event `id` of `client` at `at`, at `offset` of partition 0 of `topic`, with
    /// a producer-chosen id.
    pub(crate) fn copy(client: &str, id: u128, at: i64, topic: &str, offset: i64) -> Held {
        Arc::new(StoredEvent {
            event: Event {
                event_id: Uuid::from_u128(id),
                client_id: client.into(),
                event_type: "t".into(),
                ts_micros: None,
                ingested_at_micros: at,
                priority: Priority::Normal,
                payload: "{}".into(),
                sdk: None,
                id_origin: None,
            },
            position: KafkaPosition {
                topic: topic.into(),
                partition: 0,
                offset,
            },
            ordered_at_micros: at,
            id_assigned: false,
        })
    }

    fn query(client: &str) -> ClientQuery<'_> {
        ClientQuery {
            client_id: client,
            from: None,
            since_micros: None,
            until_micros: None,
            limit: 100,
            direction: Direction::Forward,
        }
    }

    fn all(set: &InFlight, client: &str) -> Vec<u128> {
        set.snapshot(&query(client), OrderKey::MAX)
            .events
            .iter()
            .map(|e| e.event.event_id.as_u128())
            .collect()
    }

    #[test]
    fn serves_a_client_in_order_either_way_from_a_cursor() {
        let set = InFlight::new(100, 1 << 20, 100);
        for (id, at) in [(1, 300), (2, 100), (3, 400), (4, 200)] {
            set.insert(copy("a", id, at, "events", id as i64), true);
        }
        set.insert(copy("b", 9, 150, "events", 9), true);
        assert_eq!(all(&set, "a"), vec![2, 4, 1, 3]);
        let from = Some(copy("a", 4, 200, "events", 4).order_key());
        let back = set.snapshot(
            &ClientQuery {
                from,
                direction: Direction::Backward,
                ..query("a")
            },
            OrderKey::MAX,
        );
        assert_eq!(back.events.len(), 1);
        assert_eq!(back.events[0].event.event_id.as_u128(), 2);
        let below = set.snapshot(&query("a"), OrderKey::floor(300));
        assert_eq!(below.events.len(), 2, "only what the frontier released");
        let window = set.snapshot(
            &ClientQuery {
                since_micros: Some(200),
                until_micros: Some(400),
                ..query("a")
            },
            OrderKey::MAX,
        );
        assert_eq!(window.events.len(), 2, "since inclusive, until exclusive");
    }

    #[test]
    fn the_first_copy_stands_for_the_event_and_later_ones_are_hidden() {
        let set = InFlight::new(100, 1 << 20, 100);
        let later = copy("a", 1, 200, "events", 5);
        let earlier = copy("a", 1, 100, "events-critical", 2);
        let (_, change) = set.insert(later.clone(), true);
        assert!(change.shown.is_some());
        let (check, change) = set.insert(earlier.clone(), false);
        assert!(
            !check,
            "the id is known: no shard check for the second copy"
        );
        assert_eq!(change.hidden, Some(("a".to_owned(), later.order_key())));
        assert!(Arc::ptr_eq(change.shown.as_ref().unwrap(), &earlier));
        assert_eq!(all(&set, "a"), vec![1]);
        // A shard row of the later copy (stored before the earlier one was) is hidden.
        let verdicts = set.judge("a", std::slice::from_ref(&later), 0).unwrap();
        assert_eq!(verdicts, vec![Verdict::Hide]);
        // Once the earlier copy is evicted, a row read before that eviction is stale.
        let clock = set.snapshot(&query("a"), OrderKey::MAX).clock;
        set.evict(&later);
        set.evict(&earlier);
        assert!(set.judge("a", &[later], clock).is_err());
        assert_eq!(
            set.judge("a", std::slice::from_ref(&earlier), clock)
                .unwrap(),
            vec![Verdict::Keep]
        );
        // A copy arriving after the eviction is judged against the remembered one.
        let (check, change) = set.insert(copy("a", 1, 300, "events", 9), false);
        assert!(!check && change.shown.is_none());
        assert!(all(&set, "a").is_empty());
    }

    #[test]
    fn a_stored_row_stands_while_a_copy_arriving_after_its_memory_is_checked() {
        let set = InFlight::new(100, 1 << 20, 0);
        let stored = copy("a", 1, 100, "events", 1);
        set.insert(stored.clone(), false);
        set.evict(&stored);
        // Enough evictions on the same client push the stored copy out of the memory.
        for n in 2..40 {
            let other = copy("a", n, 100 + n as i64, "events", n as i64);
            set.insert(other.clone(), true);
            set.evict(&other);
        }
        let clock = set.snapshot(&query("a"), OrderKey::MAX).clock;
        let (check, _) = set.insert(copy("a", 1, 500, "events-critical", 7), false);
        assert!(check, "nothing here says the id was stored");
        assert_eq!(
            set.judge("a", std::slice::from_ref(&stored), clock)
                .unwrap(),
            vec![Verdict::Keep],
            "the shard's earlier copy stands for the event until the check says so too"
        );
        assert!(
            all(&set, "a").is_empty(),
            "the retried copy is not answered"
        );
    }

    #[test]
    fn a_producer_id_waits_for_the_shard_check_and_holds_back_later_events() {
        let set = InFlight::new(100, 1 << 20, 100);
        let first = copy("a", 1, 100, "events", 1);
        let (check, _) = set.insert(first.clone(), false);
        assert!(check);
        set.insert(copy("a", 2, 200, "events", 2), true);
        assert_eq!(set.bound("a", OrderKey::MAX), first.order_key());
        assert!(
            all(&set, "a").is_empty(),
            "nothing at or after an unverified event"
        );
        // The shard holds an earlier copy: this one is a duplicate.
        let stored = StoredCopy {
            event_id: first.event.event_id,
            client_id: "a".into(),
            rank: CopyRank {
                ordered_at_micros: 50,
                topic: "events".into(),
                partition: 0,
                offset: 0,
            },
        };
        let change = set.verified(&first, Some(&stored));
        assert!(change.hidden.is_some());
        assert_eq!(all(&set, "a"), vec![2]);
        assert_eq!(set.bound("a", OrderKey::MAX), OrderKey::MAX);
    }

    #[test]
    fn an_id_of_another_client_is_hidden() {
        let set = InFlight::new(100, 1 << 20, 100);
        let mine = copy("a", 1, 100, "events", 1);
        set.insert(mine.clone(), false);
        let theirs = StoredCopy {
            event_id: mine.event.event_id,
            client_id: "b".into(),
            rank: mine.copy_rank(),
        };
        set.verified(&mine, Some(&theirs));
        assert!(all(&set, "a").is_empty());
    }

    #[test]
    fn bounded_by_count_and_bytes_and_freed_by_eviction() {
        let set = InFlight::new(2, 1 << 20, 100);
        let (a, b) = (copy("a", 1, 1, "events", 1), copy("a", 2, 2, "events", 2));
        set.count_in(&a, set.client_hash("a"));
        set.insert(a.clone(), true);
        assert!(!set.is_full());
        // Held but not indexed counts too.
        set.count_in(&b, set.client_hash("a"));
        assert!(set.is_full());
        let read_at = set.snapshot(&query("a"), OrderKey::floor(i64::MAX)).clock;
        set.evict(&a);
        set.count_out(&a, set.client_hash("a"));
        assert!(!set.is_full());
        assert!(!set.rows_unchanged("a", read_at, None));
        assert!(set.rows_unchanged("z", read_at, None));

        let small = InFlight::new(100, 2 * weight(&a), 100);
        small.count_in(&a, 0);
        assert!(!small.is_full());
        small.count_in(&b, 0);
        assert!(small.is_full());
    }

    #[test]
    fn a_client_read_stays_indexed_until_idle_and_its_older_pages_go_stale() {
        let set = InFlight::new(100, 1 << 20, 100);
        assert!(!set.touch("a", 10), "never read: not indexed");
        set.mark_indexed("a", 10);
        set.mark_indexed("b", 10);
        assert_eq!(set.indexed_clients(), 2);
        assert!(set.touch("a", 50));
        set.insert(copy("a", 1, 1, "events", 1), true);
        let read_at = set.snapshot(&query("a"), OrderKey::floor(i64::MAX)).clock;
        set.rows_read("a", read_at);
        assert!(set.rows_unchanged("a", read_at, None));

        let idle: Vec<String> = set
            .idle_clients(30, 0, 100)
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(idle, vec!["b".to_string()], "a was read at 50");
        assert!(!set.unindex("a", 30), "read since");
        assert!(set.unindex("a", 60));
        assert!(!set.touch("a", 70));
        assert!(all(&set, "a").is_empty(), "no longer indexed");
        assert!(
            !set.rows_unchanged("a", read_at, None),
            "its evictions are not followed any more"
        );
        assert_eq!(set.indexed_clients(), 1);
    }

    #[test]
    fn beyond_the_bound_the_longest_unread_clients_go_first_but_not_within_grace() {
        let set = InFlight::new(100, 1 << 20, 100);
        for (n, client) in ["a", "b", "c", "d"].iter().enumerate() {
            set.mark_indexed(client, 10 * (n as i64 + 1));
        }
        let mut over: Vec<String> = set
            .idle_clients(0, 35, 2)
            .iter()
            .map(|c| c.to_string())
            .collect();
        over.sort();
        assert_eq!(over, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            set.idle_clients(0, 15, 2).len(),
            1,
            "b, c, d read within grace"
        );
    }

    #[test]
    fn a_client_with_a_check_outstanding_stays_indexed() {
        let set = InFlight::new(100, 1 << 20, 100);
        set.mark_indexed("a", 10);
        let (check, _) = set.insert(copy("a", 1, 1, "events", 1), false);
        assert!(check);
        assert!(!set.unindex("a", 100));
    }

    #[test]
    fn a_page_ending_below_what_was_stored_since_stays_as_read() {
        let set = InFlight::new(100, 1 << 20, 100);
        let (old, new) = (
            copy("a", 1, 100, "events", 1),
            copy("a", 2, 200, "events", 2),
        );
        set.insert(old.clone(), true);
        set.insert(new.clone(), true);
        set.evict(&old);
        let read_at = set.snapshot(&query("a"), OrderKey::floor(i64::MAX)).clock;
        set.rows_read("a", read_at);
        let below_new = Some(OrderKey::floor(150));
        assert!(set.rows_unchanged("a", read_at, below_new));

        set.evict(&new);
        assert!(set.rows_unchanged("a", read_at, below_new));
        assert!(
            !set.rows_unchanged("a", read_at, Some(new.order_key())),
            "the page reaches the stored event"
        );
        assert!(
            !set.rows_unchanged("a", read_at, None),
            "a page that did not fill its limit"
        );

        // An older event stored later changes every page from then on.
        let late = copy("a", 3, 50, "events", 3);
        set.insert(late.clone(), true);
        set.evict(&late);
        assert!(!set.rows_unchanged("a", read_at, below_new));
    }
}
