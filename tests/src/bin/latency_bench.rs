//! Create-to-persist latency per lane: one event per POST at a fixed open-loop rate, a share
//! of them critical, and for every critical event and a sample of normal ones the time from
//! the POST being sent until its row is visible in its PostgreSQL shard (found by polling
//! the shard by event id; timed between the row's commit timestamp and the shard's clock in
//! the poll that found it: `bench::Stored`), and for a smaller sample the time until a GET
//! without a token (query-service) answers it. Prints p50/p90/p99/max per lane and rate and
//! appends them to the results file.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use event_store::ShardRouter;
use pipeline_tests::{
    bench::{self, percentile_ms, Outcome, Output, SentAt, Target, Timed},
    keep_alive::KeepAlive,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

#[derive(Parser, Clone)]
#[command(about = "POST → row visible in PostgreSQL, per lane, at fixed rates")]
struct Args {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The shards, in routing order (as db-writer is configured).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "postgres://postgres@127.0.0.1:5433/events,postgres://postgres@127.0.0.1:5434/events"
    )]
    shards: Vec<String>,
    /// Offered rates in events (= requests) per second, one run each.
    #[arg(long, value_delimiter = ',', default_value = "2000,10000")]
    rates: Vec<u64>,
    /// How long each rate is offered.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Share of events sent as critical.
    #[arg(long, default_value_t = 0.2)]
    critical_share: f64,
    /// Share of normal events whose persistence is timed (every critical one is).
    #[arg(long, default_value_t = 0.1)]
    normal_sample: f64,
    /// Requests in flight at most; past it the generator falls behind (reported).
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Distinct client ids.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// How often each shard is asked for the timed events not seen yet: how far apart a
    /// row's two bounds may be (`bench::Stored`). Each poll costs the shard a statement; at
    /// 2ms the polls alone took a quarter of a core per shard here and doubled the latencies
    /// measured.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    shard_poll: Duration,
    /// How often a watched event's client's newest page is asked for (GET): the resolution of
    /// "visible in GET".
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// Payload padding in bytes.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// query-service base URL, for the time until a GET without a token answers an event.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    query: String,
    /// Timed events also watched through GET, per second on average (each watch polls its
    /// client's newest page every `--poll`, so this is a cost too). A rate, not a share: a
    /// low offered rate's p99 rests on as many events as a high one's (a 5 % share watched
    /// 301 critical events at 2,000/s in 15 s, so its p99 was the fourth-worst). 0 watches
    /// none.
    #[arg(long, default_value_t = 80.0)]
    watch_rate: f64,
    /// Watches through GET at once, at most; past it an event is not watched.
    #[arg(long, default_value_t = 32)]
    max_watches: usize,
    /// Target: the critical lane's p99 (stored, and visible in GET) at most this (ms).
    #[arg(long, default_value_t = 20.0)]
    critical_p99_target_ms: f64,
    /// Target: the normal lane's p99 at most this (ms).
    #[arg(long, default_value_t = 100.0)]
    normal_p99_target_ms: f64,
    /// What else runs meanwhile, named in the scenario (e.g. "beside a normal backlog").
    #[arg(long)]
    beside: Option<String>,
    #[command(flatten)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Lane {
    Normal,
    Critical,
}

impl Lane {
    fn name(self) -> &'static str {
        match self {
            Lane::Normal => "normal",
            Lane::Critical => "critical",
        }
    }
}

#[derive(Default)]
struct Samples {
    ack: HashMap<Lane, Vec<Duration>>,
    /// POST sent → the row visible by then (the upper bound, `bench::Stored::after`).
    persisted: HashMap<Lane, Vec<Duration>>,
    /// POST sent → the row not visible before then (`bench::Stored::not_before`).
    not_before: HashMap<Lane, Vec<Duration>>,
    unseen: HashMap<Lane, usize>,
    /// POST sent → the event in its client's GET answer (the answer's receipt: an upper
    /// bound, late by up to `--poll` plus the GET's own time).
    visible: HashMap<Lane, Vec<Duration>>,
    /// POST sent → the send of the last GET whose answer did not hold it (0 if the first
    /// did): the event was not visible before then.
    visible_not_before: HashMap<Lane, Vec<Duration>>,
}

/// How long a timed event may stay unseen before it counts as not persisted.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Timed events waiting to be seen per shard, at most; past it an event is not timed.
const MAX_PENDING: usize = 200_000;

// One thread: the generator shares the machine with what it measures, and a second worker
// only added cross-thread wake-ups (~17 % of its CPU, docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let router = ShardRouter::new(args.shards.len());
    println!(
        "| offered | achieved | lane | acknowledged | timed | ack p50 / p99 ms | persisted p50 / p90 / p99 / max ms | visible in GET p50 / p90 / p99 / max ms (watched) | not seen | refused |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for &rate in &args.rates {
        run_rate(&args, &router, rate).await?;
    }
    Ok(())
}

async fn run_rate(args: &Args, router: &ShardRouter, rate: u64) -> anyhow::Result<()> {
    // One poller per shard, each on a thread of its own, fed the acknowledged events to time.
    let mut feeds = Vec::new();
    let mut pollers = Vec::new();
    for url in &args.shards {
        let (tx, rx) = mpsc::channel::<Timed>(MAX_PENDING);
        feeds.push(tx);
        pollers.push(
            bench::watch_stored_apart(url, rx, args.shard_poll, GIVE_UP, MAX_PENDING)
                .await
                .context("a shard to poll")?,
        );
    }
    // Idle kept-open connections: a request takes one or, when all are busy, is skipped.
    let (idle_tx, mut idle) = mpsc::channel::<KeepAlive>(args.concurrency);
    for _ in 0..args.concurrency {
        idle_tx
            .try_send(KeepAlive::new(&args.gateway).context("gateway address")?)
            .context("idle connections")?;
    }
    let watches = Arc::new(Semaphore::new(args.max_watches));
    let refused = Arc::new(AtomicU64::new(0));
    let behind = Arc::new(AtomicU64::new(0));
    let acks: Arc<std::sync::Mutex<Samples>> = Arc::default();
    let (watch_tx, watcher) = spawn_watcher(args.max_watches, args.poll, acks.clone())?;
    let padding = "x".repeat(args.payload_bytes);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let total = (rate as f64 * args.duration.as_secs_f64()) as u64;
    let timed_rate =
        rate as f64 * (args.critical_share + (1.0 - args.critical_share) * args.normal_sample);
    let watch_share = (args.watch_rate / timed_rate.max(1.0)).min(1.0);
    let mut tasks = tokio::task::JoinSet::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ rate;
    for n in 0..total {
        // Open loop: request n leaves at n / rate, whatever the earlier ones are doing.
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let Ok(mut connection) = idle.try_recv() else {
            behind.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let draw = (seed >> 11) as f64 / (1u64 << 53) as f64;
        let lane = if draw < args.critical_share {
            Lane::Critical
        } else {
            Lane::Normal
        };
        let timed = lane == Lane::Critical
            || (draw - args.critical_share) / (1.0 - args.critical_share) < args.normal_sample;
        // A second draw, so the watched share is independent of the lane.
        let watched = timed && ((seed >> 3) & 0xffff) as f64 / 65_536.0 < watch_share;
        let watch = if watched {
            watches.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let client = format!("lat-{}", (seed >> 33) as usize % args.clients);
        let priority = match lane {
            Lane::Critical => r#","priority":"critical""#,
            Lane::Normal => "",
        };
        let body = format!(
            r#"{{"client_id":"{client}","type":"reading"{priority},"payload":{{"n":{n},"pad":"{padding}"}}}}"#
        );
        let feed = feeds[router.shard_for(&client)].clone();
        let (watch_tx, idle_tx, refused, acks) = (
            watch_tx.clone(),
            idle_tx.clone(),
            refused.clone(),
            acks.clone(),
        );
        let history = format!(
            "{}/events?clientId={client}&order=desc&limit=20",
            args.query
        );
        tasks.spawn(async move {
            let sent = SentAt::now();
            let answer = connection
                .post("/events", "application/json", Bytes::from(body))
                .await;
            let acked = sent.instant.elapsed();
            // Back for the next request; the channel holds every connection, so never full.
            let _ = idle_tx.try_send(connection);
            let id = match answer {
                Ok(a) if a.status == 202 => serde_json::from_slice::<serde_json::Value>(&a.body)
                    .ok()
                    .and_then(|b| b["events"][0]["event_id"].as_str()?.parse::<Uuid>().ok()),
                _ => None,
            };
            let Some(id) = id else {
                refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if let Ok(mut acks) = acks.lock() {
                acks.ack.entry(lane).or_default().push(acked);
            }
            if timed {
                let critical = lane == Lane::Critical;
                let _ = feed.try_send(Timed { id, critical, sent });
            }
            if let Some(permit) = watch {
                // The permits bound the watches queued and running, so the queue has room.
                let _ = watch_tx.try_send(Watch {
                    history,
                    id,
                    lane,
                    sent: sent.instant,
                    _permit: permit,
                });
            }
        });
        // Finished requests are reaped as we go: the set stays at the concurrency bound.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    drop(feeds);
    drop(watch_tx);
    // The watcher ends when its last watch has: every request task (and its sender) is done.
    watcher.await.context("the GET watches' thread")?;
    let mut samples = match Arc::try_unwrap(acks) {
        Ok(acks) => acks.into_inner().unwrap_or_default(),
        Err(_) => Samples::default(),
    };
    let (mut commit_timestamps, mut visible_after_commit, mut visible_after_commit_max) =
        (true, 0, Duration::ZERO);
    let mut slowest: [Vec<bench::Slow>; 2] = Default::default();
    for poller in pollers {
        let found = poller.finished().await.context("a shard's poll")?;
        commit_timestamps &= found.commit_timestamps;
        visible_after_commit += found.visible_after_commit;
        visible_after_commit_max = visible_after_commit_max.max(found.visible_after_commit_max);
        for (all, shard) in slowest.iter_mut().zip(found.slowest) {
            all.extend(shard);
        }
        for (lane, index) in [(Lane::Normal, 0), (Lane::Critical, 1)] {
            samples
                .persisted
                .entry(lane)
                .or_default()
                .extend(&found.after[index]);
            samples
                .not_before
                .entry(lane)
                .or_default()
                .extend(&found.not_before[index]);
            *samples.unseen.entry(lane).or_default() += found.gave_up[index];
        }
    }
    let acknowledged: usize = samples.ack.values().map(Vec::len).sum();
    let achieved = acknowledged as f64 / elapsed.as_secs_f64();
    let refused = refused.load(Ordering::Relaxed);
    let behind = behind.load(Ordering::Relaxed);
    let scenario = match &args.beside {
        Some(beside) => format!("single POST at {rate}/s, {beside}"),
        None => format!("single POST at {rate}/s"),
    };
    let mut outcomes = vec![Outcome::new(
        &scenario,
        "acknowledged",
        achieved,
        "events/s",
    )];
    for lane in [Lane::Critical, Lane::Normal] {
        let mut ack = samples.ack.remove(&lane).unwrap_or_default();
        let mut persisted = samples.persisted.remove(&lane).unwrap_or_default();
        let mut visible = samples.visible.remove(&lane).unwrap_or_default();
        let mut visible_not_before = samples.visible_not_before.remove(&lane).unwrap_or_default();
        let mut not_before = samples.not_before.remove(&lane).unwrap_or_default();
        ack.sort();
        persisted.sort();
        visible.sort();
        visible_not_before.sort();
        not_before.sort();
        let p = |v: &[Duration], q| percentile_ms(v, q);
        // p50, p90, p99 and max, as every table and results line reports them.
        let spread = |v: &[Duration]| [0.5, 0.9, 0.99, 1.0].map(|q| p(v, q));
        let (ack_p50, ack_p99) = (p(&ack, 0.5), p(&ack, 0.99));
        let stored = spread(&persisted);
        let earliest = spread(&not_before);
        let unseen = samples.unseen.get(&lane).copied().unwrap_or(0);
        let (name, acked, timed) = (lane.name(), ack.len(), persisted.len());
        let seen = spread(&visible);
        let seen_earliest = spread(&visible_not_before);
        println!(
            "| {rate}/s | {achieved:.0}/s | {name} | {acked} | {timed} | {ack_p50:.1} / {ack_p99:.1} | {:.1} / {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} / {:.1} ({}) | {unseen} | {refused} |",
            stored[0], stored[1], stored[2], stored[3], seen[0], seen[1], seen[2], seen[3], visible.len(),
        );
        let target = Target::AtMost(match lane {
            Lane::Critical => args.critical_p99_target_ms,
            Lane::Normal => args.normal_p99_target_ms,
        });
        // What was not measured (a lane not offered, GETs not watched) is left out: its 0 ms
        // would read as a target met.
        let offered = match lane {
            Lane::Critical => args.critical_share > 0.0,
            Lane::Normal => args.critical_share < 1.0,
        };
        if offered {
            outcomes.push(Outcome::new(
                &scenario,
                &format!("{name} ack p99"),
                ack_p99,
                "ms",
            ));
            outcomes.push(
                Outcome::new(&scenario, &format!("{name} stored p99"), stored[2], "ms")
                    .target(target),
            );
            // The target is held to the upper bound, which proves it; the lower one beside it
            // shows how far apart they are.
            outcomes.push(Outcome::new(
                &scenario,
                &format!("{name} stored p99, lower bound"),
                earliest[2],
                "ms",
            ));
        }
        if offered && args.watch_rate > 0.0 {
            outcomes.push(
                Outcome::new(
                    &scenario,
                    &format!("{name} visible in GET p99"),
                    seen[2],
                    "ms",
                )
                .target(target),
            );
            outcomes.push(Outcome::new(
                &scenario,
                &format!("{name} visible in GET p99, lower bound"),
                seen_earliest[2],
                "ms",
            ));
        }
        args.output.report(
            env!("CARGO_BIN_NAME"),
            &format!(
                "latency_bench: offered={rate}/s achieved={achieved:.0}/s lane={name} acknowledged={acked} timed={timed} ack_ms p50={ack_p50:.2} p99={ack_p99:.2} persisted_ms p50={:.2} p90={:.2} p99={:.2} max={:.2} visible_in_get_ms p50={:.2} p90={:.2} p99={:.2} max={:.2} watched={} not_seen={unseen} refused={refused} generator_behind={behind} commit_timestamps={commit_timestamps} persisted_not_before_ms p50={:.2} p90={:.2} p99={:.2} max={:.2} visible_after_commit={visible_after_commit} visible_after_commit_max_ms={:.2} shard_poll={:?} get_poll={:?} visible_in_get_not_before_ms p50={:.2} p90={:.2} p99={:.2} max={:.2}",
                stored[0], stored[1], stored[2], stored[3], seen[0], seen[1], seen[2], seen[3], visible.len(), earliest[0], earliest[1], earliest[2], earliest[3], visible_after_commit_max.as_secs_f64() * 1000.0, args.shard_poll, args.poll, seen_earliest[0], seen_earliest[1], seen_earliest[2], seen_earliest[3],
            ),
        )?;
    }
    if !commit_timestamps {
        println!(
            "note: a shard keeps no commit timestamps (track_commit_timestamp); the lower bounds are the polls that missed the rows"
        );
    }
    if visible_after_commit > 0 {
        println!(
            "note: {visible_after_commit} rows were not yet visible after their commit timestamp (the commit's WAL flush; up to {:.2} ms seen)",
            visible_after_commit_max.as_secs_f64() * 1000.0
        );
    }
    // When the slowest were sent, to be matched with the servers' logs (gc.log, the shards'
    // checkpoints and autovacuums): a rare stall shows in the max and the p99 alone.
    for (lane, index) in [(Lane::Critical, 1), (Lane::Normal, 0)] {
        let slow = &mut slowest[index];
        slow.sort_by_key(|s| std::cmp::Reverse(s.after));
        slow.truncate(bench::SLOWEST);
        if slow.is_empty() {
            continue;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rows: Vec<String> = slow
            .iter()
            .map(|s| {
                let committed = s.committed.map_or("-".into(), |c| format!("{:.1}", ms(c)));
                format!(
                    "{} {committed} / {:.1}",
                    humantime::format_rfc3339_millis(s.sent),
                    ms(s.after)
                )
            })
            .collect();
        println!(
            "note: slowest {} rows at {rate}/s (sent at, then ms to commit / to seen): {}",
            lane.name(),
            rows.join(", ")
        );
    }
    if behind > 0 {
        println!(
            "note: {behind} requests not sent at {rate}/s: {} already in flight",
            args.concurrency
        );
    }
    outcomes.push(Outcome::new(
        &scenario,
        "not sent (generator behind)",
        behind as f64,
        "requests",
    ));
    args.output.outcomes(&outcomes)?;
    Ok(())
}

/// An acknowledged event to watch for in its client's GET answers.
struct Watch {
    history: String,
    id: Uuid,
    lane: Lane,
    sent: Instant,
    /// Held until the watch ends: at most `--max-watches` at once.
    _permit: OwnedSemaphorePermit,
}

/// The GET watches on a thread, a runtime and connections of their own: on the generator's
/// one busy thread at 10,000/s their polls waited behind its requests, and the upper bound
/// of "visible in GET" carried that wait (docs/benchmarks.md, "The observer's own thread").
/// Resolves when the sender is dropped and every watch has ended.
fn spawn_watcher(
    capacity: usize,
    every: Duration,
    samples: Arc<std::sync::Mutex<Samples>>,
) -> anyhow::Result<(mpsc::Sender<Watch>, tokio::sync::oneshot::Receiver<()>)> {
    let (tx, mut rx) = mpsc::channel::<Watch>(capacity.max(1));
    let done = bench::run_apart("get-watch", async move {
        let http = reqwest::Client::new();
        let mut running = tokio::task::JoinSet::new();
        while let Some(watch) = rx.recv().await {
            let (http, samples) = (http.clone(), samples.clone());
            running.spawn(async move {
                let found = watch_visible(&http, &watch.history, watch.id, watch.sent, every).await;
                if let (Some((not_before, visible)), Ok(mut samples)) = (found, samples.lock()) {
                    samples.visible.entry(watch.lane).or_default().push(visible);
                    samples
                        .visible_not_before
                        .entry(watch.lane)
                        .or_default()
                        .push(not_before);
                }
            });
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    })
    .context("the GET watches' thread")?;
    Ok((tx, done))
}

/// Asks for the client's newest page every `every` until it holds `id`: from the POST until
/// a reader without a token sees the event, as two bounds: the send of the last GET that
/// did not see it (0 if the first did) and the receipt of the first that did. `None` if it
/// never did within [`GIVE_UP`].
async fn watch_visible(
    http: &reqwest::Client,
    history: &str,
    id: Uuid,
    sent: Instant,
    every: Duration,
) -> Option<(Duration, Duration)> {
    let wanted = id.to_string();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut not_before = Duration::ZERO;
    while sent.elapsed() < GIVE_UP {
        tick.tick().await;
        let asked = sent.elapsed();
        let Ok(answer) = http.get(history).send().await else {
            continue;
        };
        let Ok(page) = answer.json::<serde_json::Value>().await else {
            continue;
        };
        let found = page["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["event_id"] == wanted.as_str()));
        if found {
            return Some((not_before, sent.elapsed()));
        }
        not_before = asked;
    }
    None
}
