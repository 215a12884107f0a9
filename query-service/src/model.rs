//! Property tests of the ordering logic against a model of everything around it: partitions
//! written by gateways whose clocks differ (events, retried copies of events in other
//! partitions, ticks), a writer that stores and commits at its own pace, and a replica that
//! consumes the partitions in any interleaving, learns the writer's commits late, answers
//! duplicate checks late, and serves a pager and streams meanwhile — with evictions racing
//! the pager's reads. Whatever the interleaving, every reader must see every event exactly
//! once, in the order a reader sees when it reads everything again at the end.
//!
//! Two lanes: each run goes once with records in any partition and the frontier of all
//! partitions, and once keyed (every record of a client in the partition its id maps to in
//! its lane, as the gateways write them) with per-client release.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use event_store::{ClientQuery, Direction, StoredCopy, StoredEvent};
use proptest::prelude::*;
use schemas::{Event, OrderKey, Priority};
use uuid::Uuid;

use crate::{
    history::{assemble, reach, Page},
    in_flight::{Held, InFlight},
    partitions::{OnRead, Partitions, Slot},
    progress::Progress,
    release::{Frontier, Release},
    streams::{Streams, Subscription},
};

/// The partitions of both lanes, by index.
const SLOTS: [(&str, i32); 5] = [
    ("critical", 0),
    ("critical", 1),
    ("events", 0),
    ("events", 1),
    ("events", 2),
];
const PARTITIONS: usize = SLOTS.len();
/// Attempts of a page read with forced races, then without, before it counts as stuck.
const ATTEMPTS_WITH_RACES: usize = 8;
const ATTEMPTS_SETTLED: usize = 100;
/// Pages one reader may read in a run: far more than a run's events at two per page.
const MAX_PAGES: usize = 100_000;
/// They share their critical partition and map to different ones of the other lane.
const CLIENTS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
struct Planned {
    client: usize,
    partition: usize,
    gateway: usize,
    /// A retry of an earlier event: same id and client, possibly another partition.
    copy_of: Option<usize>,
    producer_id: bool,
    /// Microseconds the clocks move before this event.
    step: i64,
    /// Gateways tick every partition after this event.
    ticks: bool,
}

#[derive(Debug, Clone)]
enum Record {
    Event { event: Event, id_assigned: bool },
    Tick(i64),
}

fn plan() -> impl Strategy<Value = (Vec<Planned>, i64, Vec<u8>)> {
    let planned = (
        0..CLIENTS.len(),
        0..PARTITIONS,
        0..2usize,
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
        any::<bool>(),
        1..30i64,
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(client, partition, gateway, copy, producer_id, step, ticks)| {
                (client, partition, gateway, copy, producer_id, step, ticks)
            },
        );
    (
        prop::collection::vec(planned, 1..40),
        0..80i64,
        prop::collection::vec(any::<u8>(), 50..400),
    )
        .prop_map(|(raw, skew, schedule)| {
            let mut events: Vec<Planned> = Vec::with_capacity(raw.len());
            for (client, partition, gateway, copy, producer_id, step, ticks) in raw {
                let copy_of = copy
                    .filter(|_| !events.is_empty())
                    .map(|i| i.index(events.len()));
                let client = copy_of.map_or(client, |j| events[j].client);
                events.push(Planned {
                    client,
                    partition,
                    gateway,
                    copy_of,
                    producer_id: producer_id || copy_of.is_some(),
                    step,
                    ticks,
                });
            }
            (events, skew, schedule)
        })
}

/// The partitions as the gateways wrote them.
fn write(events: &[Planned], skew: i64) -> Vec<Vec<Record>> {
    let offsets = [0, -skew];
    let mut now = 1_000_000_000i64;
    let mut ids: Vec<Uuid> = Vec::with_capacity(events.len());
    let mut logs: Vec<Vec<Record>> = vec![Vec::new(); PARTITIONS];
    for (n, planned) in events.iter().enumerate() {
        now += planned.step;
        let id = match planned.copy_of {
            Some(j) => ids[j],
            None => Uuid::from_u128(n as u128 + 1),
        };
        ids.push(id);
        logs[planned.partition].push(Record::Event {
            event: Event {
                event_id: id,
                client_id: CLIENTS[planned.client].into(),
                event_type: "t".into(),
                ts_micros: None,
                ingested_at_micros: now + offsets[planned.gateway],
                priority: Priority::Normal,
                payload: format!("{{\"n\":{n}}}"),
                sdk: None,
                id_origin: None,
            },
            id_assigned: !planned.producer_id,
        });
        if planned.ticks {
            for log in &mut logs {
                for offset in offsets {
                    log.push(Record::Tick(now + offset));
                }
            }
        }
    }
    // Gateways stopping: final ticks everywhere.
    for log in &mut logs {
        for offset in offsets {
            log.push(Record::Tick(now + 1_000 + offset));
        }
    }
    logs
}

fn slot(p: usize) -> Slot {
    (SLOTS[p].0.to_owned(), SLOTS[p].1)
}

/// The partition index of the same lane as `p` that `client`'s records land in.
fn keyed(p: usize, client: &str) -> usize {
    let topic = SLOTS[p].0;
    let lane: Vec<usize> = (0..PARTITIONS).filter(|q| SLOTS[*q].0 == topic).collect();
    let at = schemas::partitioning::partition_for(client.as_bytes(), lane.len())
        .expect("a lane has partitions");
    lane[at]
}

/// PostgreSQL as db-writer leaves it: per event id the copy that comes first.
#[derive(Default)]
struct Table {
    rows: HashMap<Uuid, Held>,
}

/// Pages of rows read earlier, as `page_cache` keeps them: rows and the eviction clock of the
/// snapshot taken before they were read.
type Cache = HashMap<(String, Option<OrderKey>), (Vec<Held>, u64)>;

impl Table {
    fn store(&mut self, copy: Held) {
        match self.rows.get(&copy.event.event_id) {
            Some(stored) if !copy.precedes(stored) => {}
            _ => {
                self.rows.insert(copy.event.event_id, copy);
            }
        }
    }

    fn page(
        &self,
        client: &str,
        from: Option<OrderKey>,
        limit: usize,
        direction: Direction,
    ) -> Vec<Held> {
        let beyond = |key: OrderKey| match (from, direction) {
            (None, _) => true,
            (Some(f), Direction::Forward) => key > f,
            (Some(f), Direction::Backward) => key < f,
        };
        let mut rows: Vec<Held> = self
            .rows
            .values()
            .filter(|r| r.event.client_id == client && beyond(r.order_key()))
            .cloned()
            .collect();
        rows.sort_by_key(|r| r.order_key());
        if direction == Direction::Backward {
            rows.reverse();
        }
        rows.truncate(limit);
        rows
    }
}

struct Reader {
    client: &'static str,
    last: Option<OrderKey>,
    seen: Vec<Uuid>,
    /// Pages read so far (bounded: a reader that never reaches the end is a bug).
    pages: usize,
}

struct Stream {
    reader: Reader,
    subscription: Subscription,
    replayed: bool,
}

struct World {
    logs: Vec<Vec<Record>>,
    next: Vec<usize>,
    written: Vec<usize>,
    table: Table,
    in_flight: Arc<InFlight>,
    frontier: Arc<Frontier>,
    streams: Arc<Streams>,
    partitions: Partitions,
    checks: Vec<Held>,
    cache: Cache,
    /// The model's clock for reads (micros): one step per operation.
    now: i64,
}

/// An in-flight set where the clients share one lock shard (`shared`) or not: sharing, they
/// share its bounded memory of evicted events and push each other's out.
fn in_flight(shared: bool) -> InFlight {
    (0u64..)
        .map(|seed| {
            let hasher = ahash::RandomState::with_seeds(seed, 1, 2, 3);
            InFlight::with_hasher(10_000, 1 << 30, 8, hasher)
        })
        .find(|set| (set.shard_of(CLIENTS[0]) == set.shard_of(CLIENTS[1])) == shared)
        .expect("some seed does either")
}

impl World {
    fn new(logs: Vec<Vec<Record>>, shared: bool, keyed: bool) -> Self {
        let in_flight = Arc::new(in_flight(shared));
        let frontier = Arc::new(Frontier::default());
        let streams = Arc::new(Streams::default());
        let release = Release::new(frontier.clone(), in_flight.clone(), streams.clone());
        let mut partitions = Partitions::new(
            in_flight.clone(),
            Arc::new(Progress::default()),
            release,
            i64::MAX / 4,
            keyed.then_some(0),
            i64::MIN,
            // Indexing on read, every client idle the moment after its read.
            Some(OnRead::new(0, 100)),
        );
        for p in 0..PARTITIONS {
            partitions.assign(slot(p), 0, 0, None);
        }
        World {
            next: vec![0; logs.len()],
            written: vec![0; logs.len()],
            logs,
            table: Table::default(),
            in_flight,
            frontier,
            streams,
            partitions,
            checks: Vec::new(),
            cache: Cache::new(),
            now: 0,
        }
    }

    fn consume(&mut self, p: usize) -> bool {
        let Some(record) = self.logs[p].get(self.next[p]).cloned() else {
            return false;
        };
        let offset = self.next[p] as i64;
        self.next[p] += 1;
        if trace() {
            eprintln!("  consume {p}/{offset} {record:?}");
        }
        let slot = slot(p);
        let part = self
            .partitions
            .find(&slot.0, slot.1)
            .expect("every partition is assigned at start");
        match record {
            Record::Tick(at) => self.partitions.tick(part, offset, at),
            Record::Event { event, id_assigned } => {
                if let Some(held) = self.partitions.event(part, offset, event, id_assigned) {
                    self.checks.push(held);
                }
            }
        }
        self.partitions.advance();
        true
    }

    /// The writer stores `n` more records of partition `p` (it runs ahead of or behind the
    /// replica, as it likes).
    fn write(&mut self, p: usize, n: usize) -> bool {
        let end = (self.written[p] + n).min(self.logs[p].len());
        if end == self.written[p] {
            return false;
        }
        // The writer computes the same clock from the partition's records.
        let mut clock = schemas::LogClock::default();
        for (offset, record) in self.logs[p][..end].iter().enumerate() {
            match record {
                Record::Tick(at) => {
                    clock.observe(*at);
                }
                Record::Event { event, .. } => {
                    let ordered_at_micros = clock.observe(event.ingested_at_micros);
                    if offset >= self.written[p] {
                        self.table.store(Arc::new(StoredEvent {
                            event: event.clone(),
                            position: event_store::KafkaPosition {
                                topic: SLOTS[p].0.into(),
                                partition: SLOTS[p].1,
                                offset: offset as i64,
                            },
                            ordered_at_micros,
                            id_assigned: false,
                        }));
                    }
                }
            }
        }
        self.written[p] = end;
        true
    }

    /// A read of `client` begins: the tail indexes what it holds of it first (every other
    /// step together with the other client's, as reads that queued meanwhile are).
    fn reading(&mut self, client: &str) {
        self.now += 1;
        let mut clients = vec![client.to_owned()];
        if self.now % 2 == 0 {
            clients.extend(CLIENTS.iter().map(|c| c.to_string()));
        }
        let checks = self.partitions.index_clients(&clients, self.now);
        self.checks.extend(checks);
    }

    /// As `Indexing::before_page`: a client not indexed, of which nothing is held, is read
    /// without indexing, below the frontier read before its held events were counted
    /// (returned); any other client is indexed first.
    fn before_page(&mut self, client: &str) -> Option<OrderKey> {
        if !self.in_flight.touch(client, self.now) {
            let released = self.frontier.for_client(client);
            if !self.in_flight.may_hold(client) {
                if trace() {
                    eprintln!("  {client}: nothing held, read without indexing");
                }
                return Some(released);
            }
        }
        self.reading(client);
        None
    }

    /// Every client not read since the last step, and followed by no stream, stops being
    /// indexed.
    fn unindex_idle(&mut self) {
        self.now += 1;
        if trace() {
            eprintln!("  unindex idle clients");
        }
        self.partitions.unindex_idle(self.now);
    }

    /// The replica learns the writer's commits.
    fn observe(&mut self) {
        for p in 0..self.logs.len() {
            self.partitions.committed(&slot(p), self.written[p] as i64);
        }
    }

    fn answer_check(&mut self, pick: usize) -> bool {
        if self.checks.is_empty() {
            return false;
        }
        let held = self.checks.swap_remove(pick % self.checks.len());
        if trace() {
            eprintln!("  check {}", held.event.event_id);
        }
        let found = self
            .table
            .rows
            .get(&held.event.event_id)
            .map(|r| StoredCopy {
                event_id: r.event.event_id,
                client_id: r.event.client_id.clone(),
                rank: r.copy_rank(),
            });
        self.partitions.checked(&held, found.as_ref());
        true
    }

    /// One page after `from`, with the writer and the replica's refresh possibly running
    /// between the in-flight snapshot, the shard read and the verdicts.
    fn page(&mut self, client: &str, from: Option<OrderKey>, limit: usize, race: u8) -> Page {
        self.page_towards(client, from, limit, race, Direction::Forward)
    }

    fn page_towards(
        &mut self,
        client: &str,
        from: Option<OrderKey>,
        limit: usize,
        race: u8,
        direction: Direction,
    ) -> Page {
        // Like `history::page`, a read that keeps racing gives up; here it then reads again
        // without forcing races, and one that cannot settle even so is a bug, not a hang.
        let mut race = race;
        for attempt in 0..ATTEMPTS_WITH_RACES + ATTEMPTS_SETTLED {
            if attempt == ATTEMPTS_WITH_RACES {
                race = 0;
            }
            let nothing_held = self.before_page(client);
            let probe = ClientQuery {
                client_id: client,
                from,
                since_micros: None,
                until_micros: None,
                limit: limit + 1,
                direction,
            };
            let released = nothing_held.unwrap_or_else(|| self.frontier.for_client(client));
            let snapshot = self.in_flight.snapshot(&probe, released);
            let from = match direction {
                Direction::Forward => from,
                Direction::Backward => Some(from.map_or(snapshot.bound, |f| f.min(snapshot.bound))),
            };
            if race & 1 == 1 {
                for p in 0..self.logs.len() {
                    self.write(p, 2);
                }
            }
            if race & 2 == 2 {
                self.observe();
            }
            let probe_from = ClientQuery { from, ..probe };
            let cached = self
                .cache
                .get(&(client.to_owned(), from))
                .filter(|_| direction == Direction::Forward && nothing_held.is_none())
                .filter(|(rows, read_at)| {
                    let reach = reach(&probe_from, rows);
                    self.in_flight.rows_unchanged(client, *read_at, reach)
                })
                .map(|(rows, _)| rows.clone());
            let rows = match cached {
                Some(rows) => rows,
                None => {
                    let rows = self.table.page(client, from, limit + 1, direction);
                    if direction == Direction::Forward && nothing_held.is_none() {
                        self.in_flight.rows_read(client, snapshot.clock);
                        self.cache
                            .insert((client.to_owned(), from), (rows.clone(), snapshot.clock));
                    }
                    rows
                }
            };
            if race & 4 == 4 {
                self.observe();
            }
            if trace() {
                eprintln!(
                    "    snapshot {:?} bound {:?} rows {:?} from {:?}",
                    snapshot
                        .events
                        .iter()
                        .map(|e| e.event.event_id.as_u128())
                        .collect::<Vec<_>>(),
                    snapshot.bound.ordered_at_micros,
                    rows.iter()
                        .map(|e| e.event.event_id.as_u128())
                        .collect::<Vec<_>>(),
                    from.map(|f| f.event_id.as_u128())
                );
            }
            if let Ok(verdicts) = self.in_flight.judge(client, &rows, snapshot.clock) {
                let query = ClientQuery { limit, ..probe };
                return assemble(&query, snapshot, &rows, &verdicts);
            }
            // As `history::attempt`: stale rows are not served from the cache again.
            self.cache.remove(&(client.to_owned(), from));
        }
        panic!("a page of {client} from {from:?} never settled")
    }

    fn read_page(&mut self, reader: &mut Reader, race: u8) -> bool {
        reader.pages += 1;
        assert!(
            reader.pages <= MAX_PAGES,
            "{} kept paging: {} pages, {} events seen",
            reader.client,
            reader.pages,
            reader.seen.len()
        );
        let page = self.page(reader.client, reader.last, 2, race);
        for (_, event) in &page.events {
            if trace() {
                eprintln!(
                    "  page {} -> {} {:?} {:?}",
                    reader.client,
                    event.event.event_id,
                    event.order_key().ordered_at_micros,
                    event.position
                );
            }
            reader.seen.push(event.event.event_id);
        }
        reader.last = page.resume;
        page.next.is_some()
    }

    fn follow(&mut self, stream: &mut Stream, race: u8) {
        if !stream.replayed {
            if !self.frontier.started() {
                return;
            }
            while self.read_page(&mut stream.reader, race) {}
            stream.replayed = true;
        }
        while let Ok(event) = stream.subscription.events.try_recv() {
            let key = event.order_key();
            if stream.reader.last.is_some_and(|last| key <= last) {
                continue;
            }
            stream.reader.last = Some(key);
            if trace() {
                eprintln!(
                    "  live -> {} {:?}",
                    event.event.event_id, key.ordered_at_micros
                );
            }
            stream.reader.seen.push(event.event.event_id);
        }
        assert!(
            !stream
                .subscription
                .lagged
                .load(std::sync::atomic::Ordering::Relaxed),
            "stream cut off"
        );
    }

    /// The order a reader must see: per event id the first copy, by key.
    fn expected(&self, client: &str) -> Vec<Uuid> {
        let mut first: HashMap<Uuid, StoredEvent> = HashMap::new();
        for (p, log) in self.logs.iter().enumerate() {
            let mut clock = schemas::LogClock::default();
            for (offset, record) in log.iter().enumerate() {
                match record {
                    Record::Tick(at) => {
                        clock.observe(*at);
                    }
                    Record::Event { event, .. } => {
                        let copy = StoredEvent {
                            event: event.clone(),
                            position: event_store::KafkaPosition {
                                topic: SLOTS[p].0.into(),
                                partition: SLOTS[p].1,
                                offset: offset as i64,
                            },
                            ordered_at_micros: clock.observe(event.ingested_at_micros),
                            id_assigned: false,
                        };
                        if event.client_id != client {
                            continue;
                        }
                        match first.get(&event.event_id) {
                            Some(kept) if !copy.precedes(kept) => {}
                            _ => {
                                first.insert(event.event_id, copy);
                            }
                        }
                    }
                }
            }
        }
        let mut winners: Vec<&StoredEvent> = first.values().collect();
        winners.sort_by_key(|e| e.order_key());
        winners.iter().map(|e| e.event.event_id).collect()
    }
}

/// Runs the plan with the clients on separate lock shards and on one, with records in any
/// partition and keyed.
fn run(events: Vec<Planned>, skew: i64, schedule: Vec<u8>) {
    let keyed_events: Vec<Planned> = events
        .iter()
        .map(|e| Planned {
            partition: keyed(e.partition, CLIENTS[e.client]),
            ..e.clone()
        })
        .collect();
    for (keyed, events) in [(false, &events), (true, &keyed_events)] {
        for shared in [false, true] {
            if trace() {
                eprintln!("clients sharing a lock shard: {shared}, keyed: {keyed}");
            }
            run_once(events, skew, &schedule, shared, keyed);
        }
    }
}

fn run_once(events: &[Planned], skew: i64, schedule: &[u8], shared: bool, keyed: bool) {
    let mut world = World::new(write(events, skew), shared, keyed);
    let mut pagers: Vec<Reader> = CLIENTS
        .iter()
        .map(|client| Reader {
            client,
            last: None,
            seen: Vec::new(),
            pages: 0,
        })
        .collect();
    // As `api::stream`: the client is indexed before the stream subscribes.
    let subscribe = |world: &mut World, client: &'static str| {
        world.reading(client);
        Stream {
            reader: Reader {
                client,
                last: None,
                seen: Vec::new(),
                pages: 0,
            },
            subscription: world.streams.subscribe(client, 10_000),
            replayed: false,
        }
    };
    let mut streams: Vec<Stream> = vec![subscribe(&mut world, "a")];
    let mut late_stream_at = schedule.first().copied().unwrap_or(0) as usize;
    for (step, choice) in schedule.iter().enumerate() {
        if step == late_stream_at {
            streams.push(subscribe(&mut world, "a"));
            late_stream_at = usize::MAX;
        }
        let pick = (*choice >> 3) as usize;
        if trace() {
            eprintln!("op {} pick {pick}", choice % 8);
        }
        match choice % 8 {
            0..=2 => {
                world.consume(pick % PARTITIONS);
            }
            3 => {
                world.write(pick % PARTITIONS, 1 + pick % 3);
            }
            4 if pick % 2 == 1 => world.unindex_idle(),
            4 => world.observe(),
            5 => {
                world.answer_check(pick);
            }
            6 => {
                let n = pagers.len();
                let reader = &mut pagers[pick % n];
                world.read_page(reader, *choice);
            }
            _ => {
                let n = streams.len();
                let stream = &mut streams[pick % n];
                world.follow(stream, *choice);
            }
        }
    }
    // Quiescence: everything consumed, stored, committed, checked.
    for p in 0..PARTITIONS {
        while world.consume(p) {}
        world.write(p, usize::MAX / 2);
    }
    world.observe();
    while world.answer_check(0) {}
    world.observe();
    for pager in &mut pagers {
        while world.read_page(pager, 0) {}
        let expected = world.expected(pager.client);
        assert_eq!(pager.seen, expected, "pager of {}", pager.client);
    }
    for stream in &mut streams {
        world.follow(stream, 0);
        let expected = world.expected(stream.reader.client);
        assert_eq!(stream.reader.seen, expected, "stream");
    }
    // Re-reading from the start gives the same order.
    let mut again = Reader {
        client: "a",
        last: None,
        seen: Vec::new(),
        pages: 0,
    };
    while world.read_page(&mut again, 0) {}
    assert_eq!(again.seen, world.expected("a"));
    let unique: HashSet<&Uuid> = again.seen.iter().collect();
    assert_eq!(unique.len(), again.seen.len());
    // And newest first, the same events the other way round.
    let mut newest_first = Vec::new();
    let mut from = None;
    let mut ended = false;
    for _ in 0..MAX_PAGES {
        let page = world.page_towards("a", from, 2, 0, Direction::Backward);
        newest_first.extend(page.events.iter().map(|(_, e)| e.event.event_id));
        if page.next.is_none() {
            ended = true;
            break;
        }
        from = page.resume;
    }
    assert!(ended, "newest first kept paging");
    newest_first.reverse();
    assert_eq!(newest_first, world.expected("a"), "newest first");
}

fn trace() -> bool {
    std::env::var_os("MODEL_TRACE").is_some()
}

/// An event of the first gateway, one microsecond after the one before.
fn planned(
    client: usize,
    partition: usize,
    copy_of: Option<usize>,
    producer_id: bool,
    ticks: bool,
) -> Planned {
    event(client, partition, 0, copy_of, producer_id, ticks)
}

/// An event one microsecond after the one before (as in shrunk failing cases): client,
/// partition, gateway, the earlier event it copies, whether a producer chose its id, whether
/// gateways tick every partition after it.
fn event(
    client: usize,
    partition: usize,
    gateway: usize,
    copy_of: Option<usize>,
    producer_id: bool,
    ticks: bool,
) -> Planned {
    Planned {
        client,
        partition,
        gateway,
        copy_of,
        producer_id,
        step: 1,
        ticks,
    }
}

/// Found by the property below: the check of a copy finds an earlier copy the writer stored
/// before this replica consumed it; when the replica consumes that copy, streams must get it.
#[test]
fn a_stored_copy_the_check_found_is_delivered_once_consumed() {
    let p = planned;
    let events = vec![
        p(0, 0, None, true, false),
        p(0, 0, None, false, false),
        p(0, 1, None, true, true),
        p(0, 1, None, false, false),
        p(0, 2, None, true, false),
        p(0, 0, Some(3), true, false),
    ];
    let schedule = vec![
        0, 0, 0, 0, 0, 14, 30, 0, 0, 46, 14, 0, 6, 0, 22, 0, 0, 251, 0, 0, 227, 0, 11, 245, 0, 213,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 128, 0, 0, 0, 0, 0, 0, 0, 71, 0,
    ];
    run(events, 0, schedule);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_reader_sees_every_event_once_in_one_order((events, skew, schedule) in plan()) {
        run(events, skew, schedule);
    }
}
/// Found by the property below: two hidden copies filled the page's read of rows, and the
/// page went on past rows it had not read.
#[test]
fn hidden_copies_do_not_carry_a_page_past_rows_it_did_not_read() {
    let events = vec![
        Planned {
            client: 0,
            partition: 0,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 0,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 0,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 1,
            partition: 2,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 0,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 1,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 0,
            gateway: 1,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 0,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 0,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 2,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 2,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 1,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 1,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 1,
            partition: 0,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 2,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 1,
            partition: 0,
            gateway: 1,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: true,
        },
        Planned {
            client: 1,
            partition: 1,
            gateway: 0,
            copy_of: Some(15),
            producer_id: true,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 1,
            partition: 2,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 0,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 1,
            partition: 2,
            gateway: 0,
            copy_of: Some(13),
            producer_id: true,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 1,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 1,
            partition: 2,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 1,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 0,
            partition: 2,
            gateway: 0,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
        Planned {
            client: 1,
            partition: 2,
            gateway: 1,
            copy_of: None,
            producer_id: false,
            step: 1,
            ticks: false,
        },
    ];
    let schedule = vec![
        227, 72, 24, 120, 112, 120, 232, 32, 72, 87, 24, 40, 187, 208, 24, 120, 43, 232, 112, 208,
        216, 216, 208, 32, 176, 206, 208, 24, 128, 46, 0, 32, 72, 112, 152, 184, 32, 40, 176, 32,
        174, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    run(events, 1, schedule);
}

/// Found by the property above with more evictions than the in-flight set remembers: a retry
/// of an event evicted (and forgotten) long before waits for its shard check, and meanwhile
/// a page must still answer the stored first copy instead of hiding it behind the retry.
#[test]
fn a_stored_copy_forgotten_before_its_retry_arrived_is_not_hidden() {
    let events = [
        (0, None, false, true),
        (2, None, false, false),
        (0, None, false, false),
        (1, None, false, true),
        (0, None, false, false),
        (2, None, false, false),
        (1, None, false, true),
        (0, None, false, true),
        (2, None, false, false),
        (0, None, false, false),
        (2, None, false, false),
        (2, None, false, false),
        (2, None, false, false),
        (2, None, false, false),
        (1, None, false, false),
        (1, None, false, true),
        (1, None, false, false),
        (2, None, false, true),
        (0, None, false, true),
        (0, None, false, false),
        (2, None, false, false),
        (0, None, false, false),
        (0, None, false, false),
        (2, None, false, true),
        (0, None, false, false),
        (2, Some(3), true, false),
    ]
    .into_iter()
    .map(|(partition, copy_of, producer_id, ticks)| {
        planned(0, partition, copy_of, producer_id, ticks)
    })
    .collect();
    run(
        events,
        0,
        vec![
            140, 64, 16, 104, 184, 120, 0, 139, 155, 136, 176, 176, 19, 232, 7, 67, 0, 160, 0, 232,
            43, 115, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 107, 0, 0, 0, 0, 19, 115, 0, 0, 0, 179, 0, 88,
            0, 19, 0, 43, 0, 0, 0, 208, 0, 80, 136, 0, 88, 112, 0, 51, 115, 184, 0, 0, 16, 0, 43,
            136, 0, 136, 0, 0, 19, 176, 8, 40, 0, 0, 160, 0, 0, 0, 0, 136, 0, 0, 51, 0, 0, 171, 0,
            0, 0, 0, 248, 0, 0, 0, 227, 0, 40, 0, 0, 0, 0, 0, 208, 0, 0, 104, 32, 64, 19, 80, 0, 0,
            19, 115, 131, 19, 0, 0, 176, 19, 0, 8, 0, 0, 136, 0, 0, 0, 0, 0, 19, 0, 11, 67, 19, 0,
            0, 11, 0, 19, 123, 48, 0, 160, 0, 0, 0, 171, 0, 0, 136, 56, 248, 0, 0, 175, 19, 0, 0,
            160, 0, 22, 0, 6, 0, 0, 0, 0, 0, 0,
        ],
    );
}

/// Found by the property above with pending events grouped by partitions: a retry shown
/// first, then evicted (so only its key is left), then hidden by the earlier first copy: the
/// release must drop it wherever it waits, or streams get the event twice.
#[test]
fn a_retry_evicted_before_the_first_copy_arrived_is_not_released() {
    let p = planned;
    let mut events: Vec<Planned> = (0..15).map(|_| p(0, 0, None, false, false)).collect();
    events.push(Planned {
        gateway: 1,
        step: 13,
        ..p(0, 0, None, false, false)
    });
    events.push(Planned {
        step: 24,
        ..p(0, 0, None, false, false)
    });
    events.push(p(0, 1, Some(6), true, false));
    let schedule = vec![
        0, 0, 0, 0, 216, 0, 3, 3, 4, 128, 4, 4, 4, 4, 4, 4, 4, 72, 184, 39, 0, 4, 4, 4, 13, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    run(events, 0, schedule);
}

/// A client read, then idle (not indexed), then read again: of one event, the gateway's copy
/// was stored while nobody indexed the client, after an earlier producer's copy was; the
/// producer's copy read again later must be checked, not judged by what was known before.
#[test]
fn a_copy_indexed_again_is_checked_against_a_gateway_copy_stored_while_not_indexed() {
    let events = vec![
        event(1, 0, 1, None, false, false),
        event(0, 0, 0, None, false, false),
        event(1, 0, 0, Some(0), true, false),
        event(1, 2, 0, Some(0), true, false),
        event(0, 0, 0, None, false, false),
        event(0, 0, 0, None, false, false),
    ];
    run(
        events,
        0,
        vec![
            40, 136, 179, 120, 62, 120, 172, 120, 128, 32, 144, 0, 0, 4, 4, 59, 71, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 0, 0, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 16, 0, 48, 0, 126,
        ],
    );
}

/// A producer's copy indexed while its client's memory was partial starts a check, then is
/// stored before the check answers: what is remembered of it stays partial, so the next copy
/// is checked too and finds the gateway's copy stored while nobody indexed the client.
#[test]
fn a_copy_stored_before_its_check_answered_leaves_a_partial_memory() {
    let events = vec![
        event(1, 1, 0, None, false, false),
        event(1, 1, 0, Some(0), true, true),
        event(1, 0, 1, Some(0), true, false),
        event(0, 0, 0, None, false, false),
        event(1, 2, 0, Some(0), true, false),
        event(0, 0, 0, None, false, false),
        event(0, 2, 0, None, true, false),
        event(0, 0, 0, None, false, false),
    ];
    run(
        events,
        1,
        vec![
            179, 38, 14, 208, 192, 200, 204, 136, 184, 119, 96, 168, 4, 216, 176, 40, 190, 6, 6, 8,
            40, 0, 6, 8, 232, 6, 0, 6, 30, 184, 104, 0, 14, 208, 152, 0, 0, 0, 238, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0,
        ],
    );
}

/// A producer's copy of an event (producer-chosen id, later key) is consumed, checked and
/// stored before the gateway's copy (earlier key) arrives; the memory of the stored copy is
/// pushed out of the bounded memory of evictions (16 per lock shard here, the clients sharing
/// one) meanwhile, so the gateway's copy, unchecked by design, stands too. Both wait for the
/// same release: only the first by key may reach a stream. Found on 2026-12-05 (it fails on
/// the build before indexing on read too).
#[test]
fn copies_released_together_reach_a_stream_once() {
    let events = vec![
        event(0, 1, 0, None, false, false),
        event(0, 3, 0, None, false, false),
        event(1, 0, 0, None, false, false),
        event(0, 2, 0, None, false, true),
        event(0, 0, 0, None, false, true),
        event(0, 0, 0, None, false, false),
        event(0, 4, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 0, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 3, 0, None, false, false),
        event(1, 4, 0, None, true, false),
        event(0, 0, 0, None, true, false),
        event(0, 4, 0, None, false, true),
        event(0, 2, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 0, 0, None, false, false),
        event(0, 0, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 0, 0, None, false, false),
        event(0, 2, 0, None, false, false),
        event(0, 1, 0, Some(25), true, false),
        event(0, 0, 0, None, false, false),
    ];
    run(
        events,
        0,
        vec![
            248, 48, 128, 45, 131, 8, 131, 248, 51, 88, 168, 19, 248, 99, 0, 0, 0, 0, 0, 16, 211,
            0, 45, 78, 56, 123, 216, 216, 0, 0, 216, 163, 59, 115, 72, 224, 216, 176, 59, 176, 77,
            136, 112, 112, 219, 29, 24, 243, 0, 112, 0, 232, 16, 136, 104, 176, 16, 72, 8, 8, 8,
            104, 253, 109, 0, 55, 112, 0, 94,
        ],
    );
}
