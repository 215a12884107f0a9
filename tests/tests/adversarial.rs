//! An adversarial consistency check, the Jepsen way: record every operation while the
//! pipeline is attacked, then check invariants over the whole record.
//!
//! Attacks: two gateways (the binary as its own process, and one in this process whose clock
//! runs 400 ms behind); concurrent posters whose requests mix both lanes and several clients;
//! producer-chosen ids, repeated inside one body and retried with the identical body to
//! either gateway; requests abandoned by the client mid-flight (their events may or may not
//! land); db-writer SIGKILLed mid-run and replaced. Meanwhile, per client, a pager follows
//! `resume_cursor` three events at a time, and a stream hangs up every few events and resumes
//! with `Last-Event-ID`.
//!
//! The ledger: an event of a `202` is *acknowledged* (it must appear, once); an event of a
//! request that got no `202` is *maybe* (it may appear, at most once). Events without their
//! own id are recognised by a sequence number in their payload, which every copy shares.
//!
//! Invariants, checked at the end: every reader saw each acknowledged event of its client
//! exactly once and nothing unexplained, in strictly increasing `(ordered_at, event_id)`, as
//! a prefix of a final full read from the start; PostgreSQL holds every acknowledged event
//! exactly once, every maybe at most once, and exactly what the final read answers; what is
//! answered is what was posted.
//!
//! The RNG seed is printed; `ADVERSARIAL_SEED=<n>` replays what each poster sent and when each
//! stream hung up (not the interleaving, which the machine decides).

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use pipeline_tests::{
    assert_same_content, event_id, eventually, ids, order_key, Block, SseReader, Stack,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::{sync::watch, time::Instant};
use uuid::Uuid;

const CLIENTS: [&str; 3] = ["adv-a", "adv-b", "adv-c"];
const POSTERS: u64 = 6;
/// How long the posters post, whatever the machine's speed.
const POSTING: Duration = Duration::from_secs(25);
/// Requests per poster at most.
const MAX_REQUESTS: u64 = 5_000;
/// Pause of a poster between requests, in milliseconds.
const THINK: std::ops::RangeInclusive<u64> = 40..=250;
/// How long a client waits for an answer it does not abandon (the gateway's own delivery
/// timeout is 10 s).
const ANSWER: Duration = Duration::from_secs(30);
const DRAIN: Duration = Duration::from_secs(60);
/// How long readers have, once the writer drained, to see every acknowledged event.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Page size of the pagers.
const PAGE: &str = "3";
/// A pager at the end of what is released polls again after this.
const POLL: Duration = Duration::from_millis(25);
/// Reads per reader at most (pages or stream blocks).
const MAX_READS: usize = 200_000;
const DEFAULT_SEED: u64 = 0x5eed_2024;

// ---------------------------------------------------------------------------------------
// What the posters did.

/// One request as sent and what came back.
struct Attempt {
    gateway: usize,
    body: Arc<Vec<Value>>,
    /// A resend of the previous attempt's body.
    retry: bool,
    /// The client gave up after this long.
    abandoned_after: Option<Duration>,
    outcome: Outcome,
}

enum Outcome {
    /// `202`: the id of each item, in body order.
    Acknowledged(Vec<Uuid>),
    /// Another status: nothing promised.
    Refused(u16),
    /// No answer: the client gave up (`timeout`), the connection failed, or a 202's body
    /// did not arrive.
    NoAnswer(&'static str),
}

/// Per-poster RNG seeds, so each poster's requests replay from the seed alone.
fn seed_for(seed: u64, role: u64) -> u64 {
    seed ^ (role + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

async fn poster(
    stack: Arc<Stack>,
    gateways: Arc<[String; 2]>,
    index: u64,
    seed: u64,
    until: Instant,
    acknowledged: Arc<AtomicUsize>,
) -> Vec<Attempt> {
    let mut rng = StdRng::seed_from_u64(seed_for(seed, index));
    let mut attempts = Vec::new();
    for n in 0..MAX_REQUESTS {
        if Instant::now() >= until {
            break;
        }
        let body = Arc::new(request(&mut rng, index * 1_000_000 + n * 10));
        let mut acked = false;
        for sends in 1..=3 {
            let attempt = send(&stack, &gateways, &mut rng, body.clone(), sends > 1).await;
            if let Outcome::Acknowledged(ids) = &attempt.outcome {
                acknowledged.fetch_add(ids.len(), Ordering::Relaxed);
                acked = true;
            }
            attempts.push(attempt);
            // Resend the identical body about one time in five after a 202, and mostly while
            // no 202 came (a producer that gives up leaves "maybe" events behind).
            let again = if acked {
                sends == 1 && rng.random_bool(0.2)
            } else {
                rng.random_bool(0.6)
            };
            if !again {
                break;
            }
        }
        // A device's think time: keeps the run to a size the readers can follow on a small
        // machine (it is load shaping, nothing waits on it).
        tokio::time::sleep(Duration::from_millis(rng.random_range(THINK))).await;
    }
    attempts
}

/// 1–4 events (sometimes one repeated), mostly for one client, both lanes mixed; about half
/// carry their own id. `seq` numbers the items: `seq`, `seq + 1`, …
fn request(rng: &mut StdRng, seq: u64) -> Vec<Value> {
    const TYPES: [&str; 4] = ["tap", "view", "purchase", "crash"];
    let main = CLIENTS[rng.random_range(0..CLIENTS.len())];
    let count = rng.random_range(1..=4u64);
    let mut items: Vec<Value> = (0..count)
        .map(|k| {
            let client = if rng.random_bool(0.15) {
                CLIENTS[rng.random_range(0..CLIENTS.len())]
            } else {
                main
            };
            let mut item = json!({
                "client_id": client,
                "type": TYPES[rng.random_range(0..TYPES.len())],
                "payload": payload(rng, seq + k),
            });
            if rng.random_bool(0.4) {
                item["priority"] = json!("critical");
            } else if rng.random_bool(0.2) {
                item["priority"] = json!("normal");
            }
            if rng.random_bool(0.5) {
                let id = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
                item["event_id"] = json!(id);
            }
            if rng.random_bool(0.3) {
                item["ts"] = json!(device_time(rng));
            }
            if rng.random_bool(0.3) {
                item["sdk"] = json!(format!("android/{}", rng.random_range(1..9)));
            }
            item
        })
        .collect();
    if rng.random_bool(0.1) {
        if let Some(with_id) = items.iter().find(|i| i.get("event_id").is_some()).cloned() {
            let at = rng.random_range(0..=items.len());
            items.insert(at, with_id);
        }
    }
    items
}

fn payload(rng: &mut StdRng, seq: u64) -> Value {
    match rng.random_range(0..4) {
        0 => json!({"seq": seq}),
        1 => json!({
            "seq": seq,
            "text": "h\u{e9}llo \u{2713} \"quoted\" back\\slash",
            "nested": {"z": [1, -2, {"c": null}], "a": true, "half": 0.5},
        }),
        2 => json!({"seq": seq, "blob": "x".repeat(rng.random_range(0..3000))}),
        _ => json!({"seq": seq, "big": -9_007_199_254_740_991_i64, "list": []}),
    }
}

/// A device time, in UTC or with an offset.
fn device_time(rng: &mut StdRng) -> String {
    let (day, hour, minute, micros) = (
        rng.random_range(1..=28),
        rng.random_range(0..24),
        rng.random_range(0..60),
        rng.random_range(0..1_000_000),
    );
    let zone = if rng.random_bool(0.5) { "Z" } else { "+05:30" };
    format!("2025-03-{day:02}T{hour:02}:{minute:02}:07.{micros:06}{zone}")
}

async fn send(
    stack: &Stack,
    gateways: &[String; 2],
    rng: &mut StdRng,
    body: Arc<Vec<Value>>,
    retry: bool,
) -> Attempt {
    let gateway = rng.random_range(0..gateways.len());
    let abandoned_after = rng
        .random_bool(0.05)
        .then(|| Duration::from_millis(rng.random_range(1..=15)));
    let sent = stack
        .http
        .post(format!("{}/events", gateways[gateway]))
        .json(&*body)
        .timeout(abandoned_after.unwrap_or(ANSWER))
        .send()
        .await;
    let outcome = match sent {
        Ok(response) if response.status() == 202 => match response.json::<Value>().await {
            Ok(answer) => Outcome::Acknowledged(ids(answer["events"].as_array().unwrap())),
            Err(_) => Outcome::NoAnswer("unreadable 202"),
        },
        Ok(response) => Outcome::Refused(response.status().as_u16()),
        Err(e) if e.is_timeout() => Outcome::NoAnswer("timeout"),
        Err(_) => Outcome::NoAnswer("connection"),
    };
    Attempt {
        gateway,
        body,
        retry,
        abandoned_after,
        outcome,
    }
}

// ---------------------------------------------------------------------------------------
// The ledger.

#[derive(Default)]
struct Ledger {
    /// Acknowledged event id → what was posted.
    acknowledged: HashMap<Uuid, Value>,
    /// Producer-chosen ids of requests without a 202, never acknowledged.
    maybe: HashMap<Uuid, Value>,
    /// Items without an id in requests without a 202: seq → (item, such attempts). Their
    /// gateway-assigned ids are unknown; each attempt may have added one event.
    anonymous: HashMap<u64, (Value, usize)>,
    /// Answers that broke the gateway's own contract.
    violations: Vec<String>,
}

impl Ledger {
    fn new(attempts: &[Attempt]) -> Ledger {
        let mut ledger = Ledger::default();
        for attempt in attempts {
            match &attempt.outcome {
                Outcome::Acknowledged(ids) => {
                    if ids.len() != attempt.body.len() {
                        ledger.violations.push(format!(
                            "a 202 named {} events for a body of {}",
                            ids.len(),
                            attempt.body.len()
                        ));
                    }
                    for (item, id) in attempt.body.iter().zip(ids) {
                        if let Some(own) = own_id(item) {
                            if own != *id {
                                ledger.violations.push(format!(
                                    "the gateway answered {id} for an event sent with id {own}"
                                ));
                            }
                        }
                        ledger.acknowledged.insert(*id, item.clone());
                    }
                }
                Outcome::Refused(_) | Outcome::NoAnswer(_) => {
                    for item in attempt.body.iter() {
                        match own_id(item) {
                            Some(id) => {
                                ledger.maybe.insert(id, item.clone());
                            }
                            None => {
                                ledger
                                    .anonymous
                                    .entry(seq_of(item))
                                    .or_insert_with(|| (item.clone(), 0))
                                    .1 += 1;
                            }
                        }
                    }
                }
            }
        }
        let acknowledged = &ledger.acknowledged;
        ledger.maybe.retain(|id, _| !acknowledged.contains_key(id));
        ledger
    }

    fn acknowledged_of(&self, client: &str) -> HashSet<Uuid> {
        self.acknowledged
            .iter()
            .filter(|(_, item)| item["client_id"] == client)
            .map(|(id, _)| *id)
            .collect()
    }

    /// What was posted for an event seen by a reader, if anything explains it.
    fn explain(&self, event: &Value) -> Option<&Value> {
        let id = event_id(event);
        let posted = match self.acknowledged.get(&id).or_else(|| self.maybe.get(&id)) {
            Some(posted) => posted,
            None => {
                let seq = event["payload"]["seq"].as_u64()?;
                &self.anonymous.get(&seq)?.0
            }
        };
        (posted["client_id"] == event["client_id"]).then_some(posted)
    }
}

fn own_id(item: &Value) -> Option<Uuid> {
    item.get("event_id")
        .map(|id| id.as_str().unwrap().parse().unwrap())
}

fn seq_of(item: &Value) -> u64 {
    item["payload"]["seq"].as_u64().unwrap()
}

// ---------------------------------------------------------------------------------------
// Readers.

/// What the readers need to know once the posting ended and the writer drained.
#[derive(Clone)]
struct Target {
    acknowledged: Arc<HashMap<&'static str, HashSet<Uuid>>>,
    until: Instant,
}

type Targets = watch::Receiver<Option<Target>>;

/// What one reader saw, in order.
struct Log {
    name: String,
    client: &'static str,
    seen: Vec<Value>,
    /// Answers that broke the API's contract (a status other than 200/503, an incomplete
    /// answer, an SSE id that is not the event's cursor).
    violations: Vec<String>,
    /// Requests (pages) or connections (streams).
    reads: usize,
    /// 503 answers, error events and ends of streams: allowed, retried.
    retries: usize,
    finished: bool,
}

impl Log {
    fn new(name: String, client: &'static str) -> Log {
        Log {
            name,
            client,
            seen: Vec::new(),
            violations: Vec::new(),
            reads: 0,
            retries: 0,
            finished: false,
        }
    }
}

/// `Some(true)` once the reader has seen everything, `Some(false)` past its deadline.
fn finished(targets: &Targets, client: &str, seen: &HashSet<Uuid>, bound: Instant) -> Option<bool> {
    let target = targets.borrow().clone();
    match target {
        Some(target) if target.acknowledged[client].is_subset(seen) => Some(true),
        Some(target) if Instant::now() >= target.until => Some(false),
        None if Instant::now() >= bound => Some(false),
        _ => None,
    }
}

async fn pager(
    stack: Arc<Stack>,
    query: String,
    client: &'static str,
    targets: Targets,
    bound: Instant,
) -> Log {
    let mut log = Log::new(format!("pager {client}"), client);
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_READS {
        if let Some(done) = finished(&targets, client, &seen, bound) {
            log.finished = done;
            break;
        }
        let mut params = vec![("clientId", client), ("limit", PAGE)];
        if let Some(c) = &cursor {
            params.push(("cursor", c));
        }
        log.reads += 1;
        let response = stack
            .http
            .get(format!("{query}/events"))
            .query(&params)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let page: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == 503 {
            log.retries += 1;
            tokio::time::sleep(POLL).await;
            continue;
        }
        if status != 200 {
            log.violations.push(format!("status {status}: {page}"));
            tokio::time::sleep(POLL).await;
            continue;
        }
        if page["complete"] != true {
            log.violations.push(format!("an incomplete answer: {page}"));
        }
        for event in page["events"].as_array().unwrap() {
            seen.insert(event_id(event));
            log.seen.push(event.clone());
        }
        if let Some(resume) = page["resume_cursor"].as_str() {
            cursor = Some(resume.to_owned());
        }
        if page["next_cursor"].is_null() {
            tokio::time::sleep(POLL).await;
        }
    }
    log
}

async fn streamer(
    stack: Arc<Stack>,
    query: String,
    client: &'static str,
    targets: Targets,
    bound: Instant,
    seed: u64,
) -> Log {
    let mut log = Log::new(format!("stream {client}"), client);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let mut last: Option<String> = None;
    let mut blocks = 0;
    'connect: while blocks < MAX_READS {
        if let Some(done) = finished(&targets, client, &seen, bound) {
            log.finished = done;
            break;
        }
        let params = [("clientId", client)];
        let mut stream = match SseReader::open(&stack.http, &query, &params, last.as_deref()).await
        {
            Ok(stream) => stream,
            Err((503, _)) => {
                log.retries += 1;
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err((status, body)) => {
                log.violations.push(format!("status {status}: {body}"));
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        log.reads += 1;
        let hang_up_after = rng.random_range(1..=6);
        let mut got = 0;
        while got < hang_up_after && blocks < MAX_READS {
            if let Some(done) = finished(&targets, client, &seen, bound) {
                log.finished = done;
                break 'connect;
            }
            blocks += 1;
            match stream.try_next(Duration::from_millis(200)).await {
                None => {}
                Some(Block::Event(streamed)) => {
                    let (micros, id) = order_key(&streamed.event);
                    if streamed.id != format!("{micros}.{}", id.simple()) {
                        log.violations.push(format!(
                            "SSE id {} is not the cursor of event {id} ordered at {micros}",
                            streamed.id
                        ));
                    }
                    seen.insert(id);
                    log.seen.push(streamed.event);
                    last = Some(streamed.id);
                    got += 1;
                }
                Some(Block::Error(_) | Block::End) => {
                    log.retries += 1;
                    continue 'connect;
                }
            }
        }
        // Hang up: the next connection resumes after the last event received.
    }
    log
}

// ---------------------------------------------------------------------------------------
// The checker.

/// One reader's record judged against the ledger and the final read of its client.
#[derive(Default)]
struct Verdict {
    duplicates: Vec<Uuid>,
    missing: Vec<Uuid>,
    unexplained: Vec<Uuid>,
    /// Positions where the key did not increase.
    out_of_order: Vec<usize>,
    /// First position where the reader differs from the final read.
    diverges_at: Option<usize>,
    /// Sequence numbers of id-less events seen more often than they were attempted without
    /// a 202.
    anonymous_too_often: Vec<u64>,
}

impl Verdict {
    fn of(seen: &[Value], client: &str, ledger: &Ledger, final_order: &[Uuid]) -> Verdict {
        let mut verdict = Verdict::default();
        let mut counts: HashMap<Uuid, usize> = HashMap::new();
        let mut anonymous: HashMap<u64, HashSet<Uuid>> = HashMap::new();
        for event in seen {
            let id = event_id(event);
            *counts.entry(id).or_default() += 1;
            if counts[&id] == 2 {
                verdict.duplicates.push(id);
            }
            if ledger.explain(event).is_none() || event["client_id"] != client {
                verdict.unexplained.push(id);
            } else if !ledger.acknowledged.contains_key(&id) && !ledger.maybe.contains_key(&id) {
                anonymous.entry(seq_of(event)).or_default().insert(id);
            }
        }
        let mut missing: Vec<Uuid> = ledger
            .acknowledged_of(client)
            .into_iter()
            .filter(|id| !counts.contains_key(id))
            .collect();
        missing.sort();
        verdict.missing = missing;
        for (seq, ids) in anonymous {
            if ids.len() > ledger.anonymous[&seq].1 {
                verdict.anonymous_too_often.push(seq);
            }
        }
        let keys: Vec<(i64, Uuid)> = seen.iter().map(order_key).collect();
        verdict.out_of_order = (1..keys.len())
            .filter(|&i| keys[i] <= keys[i - 1])
            .collect();
        let order = ids(seen);
        verdict.diverges_at = (0..order.len()).find(|&i| final_order.get(i) != Some(&order[i]));
        verdict
    }

    fn failures(&self, who: &str) -> Vec<String> {
        let mut failures = Vec::new();
        let mut report = |what: &str, n: usize, sample: String| {
            if n > 0 {
                failures.push(format!("{who}: {n} {what}, e.g. {sample}"));
            }
        };
        report(
            "seen twice",
            self.duplicates.len(),
            sample(&self.duplicates),
        );
        report(
            "acknowledged but never seen",
            self.missing.len(),
            sample(&self.missing),
        );
        report(
            "neither acknowledged nor maybe",
            self.unexplained.len(),
            sample(&self.unexplained),
        );
        report(
            "out of order (at position)",
            self.out_of_order.len(),
            sample(&self.out_of_order),
        );
        report(
            "id-less maybe events seen more often than attempted",
            self.anonymous_too_often.len(),
            sample(&self.anonymous_too_often),
        );
        if let Some(at) = self.diverges_at {
            failures.push(format!(
                "{who}: its order differs from the final read from position {at}"
            ));
        }
        failures
    }
}

fn sample<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("{:?}", &items[..items.len().min(3)])
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_retries_skewed_gateways_and_a_killed_writer_every_reader_sees_each_acknowledged_event_once_in_one_order(
) {
    let seed = std::env::var("ADVERSARIAL_SEED")
        .ok()
        .map(|s| s.parse().expect("ADVERSARIAL_SEED is a number"))
        .unwrap_or(DEFAULT_SEED);
    println!("adversarial: seed {seed} (replay with ADVERSARIAL_SEED={seed})");
    let begun = Instant::now();

    let stack = Arc::new(Stack::new().await);
    let gateway_process = stack.spawn_gateway_process().await;
    let (behind, _behind_stop) = stack
        .start_gateway_clocked(
            stack.gateway_settings(),
            producer_gateway::IngestClock::with_offset_micros(-400_000),
        )
        .await;
    let query = stack.start_query().await;
    let writer = stack.spawn_writer_process();
    let gateways = Arc::new([gateway_process.url().to_owned(), behind]);

    // Readers first, so they read while everything happens.
    let (publish_target, targets) = watch::channel(None::<Target>);
    let bound = Instant::now() + POSTING + DRAIN + CATCH_UP;
    let mut readers = Vec::new();
    for (n, client) in CLIENTS.into_iter().enumerate() {
        readers.push(tokio::spawn(pager(
            stack.clone(),
            query.clone(),
            client,
            targets.clone(),
            bound,
        )));
        readers.push(tokio::spawn(streamer(
            stack.clone(),
            query.clone(),
            client,
            targets.clone(),
            bound,
            seed_for(seed, 100 + n as u64),
        )));
    }

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let posting_ends = Instant::now() + POSTING;
    let posters: Vec<_> = (0..POSTERS)
        .map(|index| {
            tokio::spawn(poster(
                stack.clone(),
                gateways.clone(),
                index,
                seed,
                posting_ends,
                acknowledged.clone(),
            ))
        })
        .collect();

    // The nemesis: once a third of the posting time passed and the writer stored rows,
    // SIGKILL it; replace it after 100 more events were acknowledged without it.
    let kill_at = Instant::now() + POSTING / 3;
    eventually(POSTING, "the writer storing rows", || async {
        (Instant::now() >= kill_at && !stack.row_counts().await.is_empty()).then_some(())
    })
    .await;
    writer.kill().await;
    let killed_at = begun.elapsed();
    let at_kill = acknowledged.load(Ordering::Relaxed);
    eventually(POSTING, "traffic while no writer runs", || async {
        (acknowledged.load(Ordering::Relaxed) >= at_kill + 100).then_some(())
    })
    .await;
    let writer = stack.spawn_writer_process();
    let replaced_at = begun.elapsed();

    let mut attempts = Vec::new();
    for poster in posters {
        attempts.extend(poster.await.unwrap());
    }
    let posted_at = begun.elapsed();
    stack.drained(DRAIN).await;
    let drained_at = begun.elapsed();

    let ledger = Ledger::new(&attempts);
    let per_client: HashMap<&'static str, HashSet<Uuid>> = CLIENTS
        .into_iter()
        .map(|c| (c, ledger.acknowledged_of(c)))
        .collect();
    publish_target
        .send(Some(Target {
            acknowledged: Arc::new(per_client),
            until: Instant::now() + CATCH_UP,
        }))
        .unwrap();
    let mut logs = Vec::new();
    for reader in readers {
        logs.push(reader.await.unwrap());
    }
    let read_at = begun.elapsed();

    // The final state: PostgreSQL, and a full read from the start that answers all of it.
    let rows = stack.shard_rows().await;
    let mut stored: HashMap<&str, HashSet<Uuid>> = HashMap::new();
    let mut row_counts: HashMap<Uuid, usize> = HashMap::new();
    for (_, id, client) in &rows {
        *row_counts.entry(*id).or_default() += 1;
        let client = CLIENTS.into_iter().find(|c| c == client).unwrap_or("other");
        stored.entry(client).or_default().insert(*id);
    }
    let mut finals: HashMap<&str, Vec<Value>> = HashMap::new();
    for client in CLIENTS {
        let want = stored.get(client).cloned().unwrap_or_default();
        let history = eventually(CATCH_UP, "the final read to answer every row", || {
            let (stack, query, want) = (&stack, &query, &want);
            async move {
                let history = stack.history(query, client, 7).await;
                let answered: HashSet<Uuid> = ids(&history).into_iter().collect();
                want.is_subset(&answered).then_some(history)
            }
        })
        .await;
        finals.insert(client, history);
    }
    let copies = stack.published_count();

    // The ledger.
    let mut failures = ledger.violations.clone();
    let retries: Vec<&Attempt> = attempts.iter().filter(|a| a.retry).collect();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for attempt in &attempts {
        let status = match &attempt.outcome {
            Outcome::Acknowledged(_) => "202".to_owned(),
            Outcome::Refused(status) => status.to_string(),
            Outcome::NoAnswer(why) => format!("no answer ({why})"),
        };
        *statuses.entry(status).or_default() += 1;
    }
    let retried_elsewhere = attempts
        .windows(2)
        .filter(|w| w[1].retry && w[0].gateway != w[1].gateway)
        .count();
    let repeated_in_body = attempts
        .iter()
        .filter(|a| !a.retry)
        .filter(|a| {
            let ids: Vec<Uuid> = a.body.iter().filter_map(own_id).collect();
            ids.iter().collect::<HashSet<_>>().len() < ids.len()
        })
        .count();
    let abandoned = attempts
        .iter()
        .filter(|a| a.abandoned_after.is_some())
        .count();
    let events_sent: usize = attempts.iter().map(|a| a.body.len()).sum();
    println!(
        "adversarial: {} requests ({} first sends, {} resends of which {} to the other gateway; \
         {} bodies with an id twice; {} abandoned by the client), {events_sent} events sent; \
         answers {statuses:?}",
        attempts.len(),
        attempts.len() - retries.len(),
        retries.len(),
        retried_elsewhere,
        repeated_in_body,
        abandoned,
    );
    println!(
        "adversarial: {} acknowledged, maybe {} with ids + {} without; {copies} copies on Kafka, \
         {} rows in PostgreSQL",
        ledger.acknowledged.len(),
        ledger.maybe.len(),
        ledger.anonymous.len(),
        rows.len(),
    );
    println!(
        "adversarial: writer killed at {killed_at:.1?}, replaced at {replaced_at:.1?}; posting \
         ended {posted_at:.1?}, drained {drained_at:.1?}, readers done {read_at:.1?}"
    );
    println!(
        "{:<14} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>6} {:>8} {:>8}",
        "reader",
        "acked",
        "seen",
        "reads",
        "retry",
        "twice",
        "missing",
        "unexpl.",
        "order",
        "diverge",
        "finished"
    );
    for client in CLIENTS {
        let final_order = ids(&finals[client]);
        let acked = ledger.acknowledged_of(client).len();
        let final_read = Log {
            seen: finals[client].clone(),
            reads: 1,
            finished: true,
            ..Log::new(format!("final {client}"), client)
        };
        for log in std::iter::once(&final_read).chain(logs.iter().filter(|l| l.client == client)) {
            let verdict = Verdict::of(&log.seen, client, &ledger, &final_order);
            println!(
                "{:<14} {acked:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>6} {:>8} {:>8}",
                log.name,
                log.seen.len(),
                log.reads,
                log.retries,
                verdict.duplicates.len(),
                verdict.missing.len(),
                verdict.unexplained.len(),
                verdict.out_of_order.len(),
                verdict
                    .diverges_at
                    .map_or_else(|| "-".to_owned(), |at| at.to_string()),
                log.finished,
            );
            failures.extend(log.violations.iter().map(|v| format!("{}: {v}", log.name)));
            if !log.finished {
                failures.push(format!("{}: did not finish in time", log.name));
            }
            failures.extend(verdict.failures(&log.name));
        }
        // PostgreSQL holds exactly what the final read answers.
        let answered: HashSet<Uuid> = final_order.iter().copied().collect();
        let in_store = stored.get(client).cloned().unwrap_or_default();
        if answered != in_store {
            failures.push(format!(
                "{client}: the final read and PostgreSQL differ: {} answered only, {} stored only",
                answered.difference(&in_store).count(),
                in_store.difference(&answered).count()
            ));
        }
    }
    if let Some(others) = stored.get("other") {
        failures.push(format!(
            "{} rows of clients nobody posted for",
            others.len()
        ));
    }
    let not_once = ledger
        .acknowledged
        .keys()
        .filter(|id| row_counts.get(id) != Some(&1))
        .count();
    if not_once > 0 {
        failures.push(format!(
            "{not_once} acknowledged events not exactly once in PostgreSQL"
        ));
    }
    let maybe_twice = ledger
        .maybe
        .keys()
        .filter(|id| row_counts.get(id).is_some_and(|n| *n > 1))
        .count();
    if maybe_twice > 0 {
        failures.push(format!(
            "{maybe_twice} maybe events more than once in PostgreSQL"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} invariants broken (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );

    // What is answered is what was posted, in the final read and to every reader.
    for event in finals.values().flatten() {
        assert_same_content(ledger.explain(event).unwrap(), event);
    }
    for log in &logs {
        for event in &log.seen {
            assert_same_content(ledger.explain(event).unwrap(), event);
        }
    }
    assert!(
        gateway_process.terminate().await.success(),
        "gateway exits cleanly"
    );
    assert!(writer.terminate().await.success(), "writer exits cleanly");
    println!("adversarial: passed in {:.1?}", begun.elapsed());
}
