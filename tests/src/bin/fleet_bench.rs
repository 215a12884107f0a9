//! A fleet rollout: devices `fleet-<n>` join linearly from `--devices-start` to
//! `--devices-end` over the run, each sending bursts (v1 SDKs one event per POST, v2 SDKs
//! small arrays with `sdk` and `ts`), a share critical, a share of requests sent again with
//! the same `event_id`s; some devices poll their own history, some hold an SSE stream; in the
//! middle db-writer is restarted rolling (two members, one at a time, SIGTERM). Every service
//! runs as its own release process on a fresh `Stack`. Reports rates and latencies, then what
//! the shards hold against the ledger; exits non-zero on a lost, duplicated or unknown row.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use db_writer::settings::GroupProtocol;
use event_store::ShardRouter;
use pipeline_tests::{
    bench::{percentile_ms, watch_stored, Outcome, Output, SentAt, Target, Timed},
    Block, Ledger, SseReader, Stack, WriterProcess,
};
use serde_json::{json, Value};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Parser, Clone)]
#[command(about = "Fleet rollout under a rolling db-writer restart: rates, latencies, loss")]
struct Args {
    /// The writers' consumer group protocol (db-writer's `kafka.group_protocol`): `classic`
    /// or `consumer` (KIP-848).
    #[arg(long, default_value = "classic")]
    group_protocol: GroupProtocol,
    /// How long devices join and send.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Devices sending from the start.
    #[arg(long, default_value_t = 120)]
    devices_start: usize,
    /// Devices at the end; the rest join linearly over the run.
    #[arg(long, default_value_t = 3300)]
    devices_end: usize,
    /// Events in a burst at most (1 to this many, evenly).
    #[arg(long, default_value_t = 20)]
    burst_max: usize,
    /// Mean pause between a device's bursts (each drawn from 0.5x to 1.5x).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// Share of events sent as critical.
    #[arg(long, default_value_t = 0.10)]
    critical_share: f64,
    /// Share of acknowledged requests sent once more with the same event ids (a device that
    /// lost the answer).
    #[arg(long, default_value_t = 0.05)]
    retry_share: f64,
    /// Share of devices on the v2 SDK (arrays, `sdk`, `ts`); the rest post single v1 events.
    #[arg(long, default_value_t = 0.6)]
    v2_share: f64,
    /// Events per request of a v2 SDK at most.
    #[arg(long, default_value_t = 10)]
    v2_batch: usize,
    /// Requests in flight at most; devices wait for a slot, so the generator stays bounded.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Share of normal events timed create-to-persist (every critical one is).
    #[arg(long, default_value_t = 0.05)]
    normal_sample: f64,
    /// Every this many devices one polls its own history (2%) ...
    #[arg(long, default_value_t = 50)]
    poller_every: usize,
    /// ... up to this many pollers.
    #[arg(long, default_value_t = 50)]
    max_pollers: usize,
    /// How often a poller asks for its history.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    poll_history: Duration,
    /// Devices (the first ones) that hold an SSE stream for the run.
    #[arg(long, default_value_t = 20)]
    streams: usize,
    /// How often each shard is asked for the timed events not seen yet: how far apart a
    /// row's two bounds may be (`bench::Stored`; a tighter poll loads the shard it measures,
    /// see latency_bench).
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    shard_poll: Duration,
    #[command(flatten)]
    output: Output,
}

const SDKS: [&str; 3] = ["ios/2.3", "android/2.4", "web/2.1"];
/// Attempts of one request (first send, resends after 429/503/5xx/transport errors).
const MAX_ATTEMPTS: usize = 10;
/// The longest `Retry-After` honoured, so a confused answer cannot park a device.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Timed events waiting to be seen per shard, at most; more are counted as dropped.
const MAX_PENDING: usize = 200_000;
/// A timed event unseen for this long counts as not persisted.
const GIVE_UP: Duration = Duration::from_secs(60);
/// Bounds of the end: SSE readers catching up, db-writer draining, a service starting.
const CATCH_UP: Duration = Duration::from_secs(20);
const DRAIN: Duration = Duration::from_secs(120);
const READY: Duration = Duration::from_secs(60);
/// Times an SSE reader opens its stream again, at most.
const MAX_RECONNECTS: usize = 100;

/// Small deterministic generator (SplitMix64): one per device, so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    resent_acknowledged: AtomicU64,
    resent_refused: AtomicU64,
    status_429: AtomicU64,
    status_503: AtomicU64,
    other_4xx: AtomicU64,
    other_5xx: AtomicU64,
    transport: AtomicU64,
    bad_answers: AtomicU64,
    critical: AtomicU64,
    v2_events: AtomicU64,
    events: AtomicU64,
    samples_dropped: AtomicU64,
    get_4xx: AtomicU64,
    get_5xx: AtomicU64,
    get_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// What the devices, readers and streams share.
struct Fleet {
    args: Args,
    http: reqwest::Client,
    gateway: String,
    query: String,
    ledger: Ledger,
    slots: tokio::sync::Semaphore,
    counts: Counts,
    router: ShardRouter,
    feeds: Vec<mpsc::Sender<Timed>>,
    stop: CancellationToken,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        0 < args.devices_start && args.devices_start <= args.devices_end,
        "need 0 < --devices-start <= --devices-end"
    );
    let wall = Instant::now();
    // Fresh topics and databases; every service a release process built next to this one.
    let stack = Arc::new(Stack::new().await);
    let mut writer_settings = stack.writer_settings();
    writer_settings.kafka.group_protocol = args.group_protocol;
    let writers = vec![
        stack.spawn_writer_process_with(writer_settings.clone()),
        stack.spawn_writer_process_with(writer_settings.clone()),
    ];
    for writer in &writers {
        stack.ready(writer.metrics_url(), READY).await;
    }
    let gateway = stack.spawn_gateway_process().await;
    let query = stack.spawn_query_process().await;
    // Ready writers have migrated the shards, so the timing statements can be prepared.
    let (mut feeds, mut pollers, devices_done) = (vec![], JoinSet::new(), CancellationToken::new());
    for url in &stack.shard_urls {
        let store = stack.links.store(vec![url.clone()]);
        let (shard, _session) = store.connect(0, url).await.context("a shard to poll")?;
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        feeds.push(tx);
        let (every, done) = (args.shard_poll, devices_done.clone());
        pollers.spawn(
            async move { watch_stored(&shard, rx, every, GIVE_UP, MAX_PENDING, done).await },
        );
    }
    let fleet = Arc::new(Fleet {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .timeout(Duration::from_secs(30))
            .build()
            .context("http client")?,
        gateway: format!("{}/events", gateway.url()),
        query: query.url().to_owned(),
        ledger: Ledger::default(),
        slots: tokio::sync::Semaphore::new(args.concurrency),
        counts: Counts::default(),
        router: ShardRouter::new(stack.shard_urls.len()),
        feeds,
        stop: CancellationToken::new(),
        args: args.clone(),
    });

    let started = Instant::now();
    let halfway = started + args.duration / 2;
    let restart = tokio::spawn(rolling_restart(
        stack.clone(),
        writers,
        writer_settings,
        halfway,
    ));
    let lag = tokio::spawn(lag_sampler(fleet.clone()));
    let (streams_stop, mut streams) = (CancellationToken::new(), Vec::new());
    for n in 0..args.streams.min(args.devices_start) {
        let tally = Arc::<Mutex<Tally>>::default();
        let reader = stream(fleet.clone(), n, tally.clone(), streams_stop.clone());
        streams.push((format!("fleet-{n}"), tally, tokio::spawn(reader)));
    }
    let (mut devices, mut readers) = (JoinSet::new(), JoinSet::new());
    let (joining, every) = (
        (args.devices_end - args.devices_start).max(1),
        args.poller_every.max(1),
    );
    for n in 0..args.devices_end {
        // Device n joins at (n - start) / (end - start) of the run: linear growth.
        let at = args
            .duration
            .mul_f64(n.saturating_sub(args.devices_start) as f64 / joining as f64);
        tokio::time::sleep_until((started + at).into()).await;
        devices.spawn(device(fleet.clone(), n));
        if n % every == 0 && n / every < args.max_pollers {
            readers.spawn(history_reader(fleet.clone(), n));
        }
    }
    tokio::time::sleep_until((started + args.duration).into()).await;
    fleet.stop.cancel();
    let (mut acks, mut gets) = (Vec::new(), Vec::new());
    while let Some(done) = devices.join_next().await {
        acks.extend(done.context("a device")?);
    }
    let traffic = started.elapsed();
    devices_done.cancel();
    while let Some(done) = readers.join_next().await {
        gets.extend(done.context("a history reader")?);
    }
    let (writers, restart_log) = restart.await.context("the rolling restart")?;
    let (max_unstored_age, max_depth) = lag.await.context("the lag sampler")?;

    // The streams get a bounded while to deliver every acknowledged event of their device.
    let acknowledged = fleet.ledger.by_client();
    let missing = |streams: &[(String, Arc<Mutex<Tally>>, _)]| -> usize {
        let of = |(client, tally, _): &(String, Arc<Mutex<Tally>>, _)| {
            let (ids, t) = (acknowledged.get(client)?, tally.lock().ok()?);
            Some(ids.iter().filter(|id| !t.seen.contains(id)).count())
        };
        streams.iter().filter_map(of).sum()
    };
    let until = Instant::now() + CATCH_UP;
    while missing(&streams) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sse_missing = missing(&streams);
    streams_stop.cancel();
    let mut sse = Tally::default();
    for (_, tally, task) in streams {
        task.await.context("an SSE reader")?;
        if let Ok(t) = tally.lock() {
            sse.received += t.received;
            sse.duplicates += t.duplicates;
            sse.reconnects += t.reconnects;
        }
    }

    // With the gateway gone nothing more is published (no ticks either): drained is final.
    let gateway_exit = gateway.terminate().await;
    let until = Instant::now() + DRAIN;
    while !stack.writer_drained() {
        anyhow::ensure!(
            Instant::now() < until,
            "db-writer not drained within {DRAIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut persisted, mut unseen) = ([Vec::new(), Vec::new()], [0usize; 2]);
    let mut not_before = [Vec::new(), Vec::new()];
    while let Some(done) = pollers.join_next().await {
        let found = done.context("a shard poller")??;
        let [normal, critical] = found.not_before;
        not_before[0].extend(normal);
        not_before[1].extend(critical);
        let [normal, critical] = found.after;
        persisted[0].extend(normal);
        persisted[1].extend(critical);
        unseen = [unseen[0] + found.gave_up[0], unseen[1] + found.gave_up[1]];
    }
    let stored = fleet.ledger.stored_counts(&stack).await;
    let mut writer_exits = Vec::new();
    for writer in writers {
        writer_exits.push(writer.terminate().await.to_string());
    }

    acks.sort();
    gets.sort();
    persisted.iter_mut().for_each(|v| v.sort());
    not_before.iter_mut().for_each(|v| v.sort());
    let (k, c) = (&fleet.counts, |a: &AtomicU64| a.load(Relaxed));
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let ms = |v: &[Duration], q| round(percentile_ms(v, q));
    let pct = |a: &AtomicU64| round(100.0 * c(a) as f64 / c(&k.events).max(1) as f64);
    let rate = (stored.acknowledged as f64 / traffic.as_secs_f64()).round();
    let http_4xx = c(&k.status_429) + c(&k.other_4xx) + c(&k.get_4xx);
    let http_5xx = c(&k.status_503) + c(&k.other_5xx) + c(&k.get_5xx);
    let [normal, critical] = &persisted;
    // One set of numbers: a line of the report per group (keys sorted within).
    let groups = json!([
        ["run", {"duration_s": args.duration.as_secs_f64(), "devices_start": args.devices_start,
            "devices_end": args.devices_end, "traffic_s": round(traffic.as_secs_f64()),
            "wall_s": round(wall.elapsed().as_secs_f64())}],
        ["POST", {"requests": c(&k.requests), "acknowledged": stored.acknowledged,
            "acknowledged_per_s": rate, "ack_p50_ms": ms(&acks, 0.5), "ack_p99_ms": ms(&acks, 0.99),
            "critical_pct": pct(&k.critical), "v2_pct": pct(&k.v2_events),
            "resent_after_202": c(&k.resent_acknowledged), "resent_after_refusal": c(&k.resent_refused)}],
        ["create-to-persist", {"persist_p50_critical_ms": ms(critical, 0.5),
            "persist_p99_critical_ms": ms(critical, 0.99), "persist_p50_normal_ms": ms(normal, 0.5),
            "persist_p99_normal_ms": ms(normal, 0.99), "timed_critical": critical.len(),
            "timed_normal": normal.len(), "unseen_critical": unseen[1], "unseen_normal": unseen[0],
            "samples_dropped": c(&k.samples_dropped),
            "persist_p99_critical_lower_bound_ms": ms(&not_before[1], 0.99),
            "persist_p99_normal_lower_bound_ms": ms(&not_before[0], 0.99),
            "max_oldest_unstored_s": round(max_unstored_age), "max_depth": max_depth}],
        ["GET /events", {"gets": gets.len(), "get_p50_ms": ms(&gets, 0.5), "get_p99_ms": ms(&gets, 0.99),
            "get_4xx": c(&k.get_4xx), "get_5xx": c(&k.get_5xx), "get_errors": c(&k.get_errors)}],
        ["SSE", {"streams": args.streams.min(args.devices_start), "sse_events": sse.received,
            "sse_duplicates": sse.duplicates, "sse_missing": sse_missing, "sse_reconnects": sse.reconnects}],
        ["HTTP", {"http_4xx": http_4xx, "http_5xx": http_5xx, "http_429": c(&k.status_429),
            "http_503": c(&k.status_503), "transport_errors": c(&k.transport),
            "answers_with_other_ids": c(&k.bad_answers)}],
        ["shards", {"rows": stored.rows, "lost": stored.lost, "duplicated": stored.duplicated,
            "unexpected": stored.unexpected, "maybe": stored.maybe,
            "failed_but_stored": stored.failed_but_stored}],
    ]);
    let mut report = String::from("fleet_bench (fleet rollout)");
    for pair in groups.as_array().into_iter().flatten() {
        let (group, numbers) = (pair[0].as_str().unwrap_or_default(), &pair[1]);
        report.push_str(&format!("\n  {group}:"));
        for (name, value) in numbers.as_object().into_iter().flatten() {
            report.push_str(&format!(" {name}={value}"));
        }
    }
    let writer_exits = writer_exits.join(", ");
    report.push_str(&format!(
        "\n  rolling restart: {restart_log}; gateway {gateway_exit}; last writers {writer_exits}"
    ));
    println!("{report}");
    args.output
        .report(env!("CARGO_BIN_NAME"), &report)
        .context("results file")?;
    let scenario = match args.group_protocol {
        GroupProtocol::Classic => "fleet rollout",
        GroupProtocol::Consumer => "fleet rollout, consumer group protocol",
    };
    let none = Target::AtMost(0.0);
    let outcomes = [
        Outcome::new(scenario, "acknowledged", rate, "events/s"),
        Outcome::new(scenario, "ack p99", ms(&acks, 0.99), "ms"),
        Outcome::new(scenario, "critical stored p99", ms(critical, 0.99), "ms"),
        Outcome::new(scenario, "normal stored p99", ms(normal, 0.99), "ms"),
        Outcome::new(scenario, "GET p99", ms(&gets, 0.99), "ms"),
        Outcome::new(scenario, "4xx", http_4xx as f64, "answers"),
        Outcome::new(scenario, "5xx", http_5xx as f64, "answers"),
        Outcome::new(scenario, "SSE events missing", sse_missing as f64, "events").target(none),
        Outcome::new(scenario, "lost", stored.lost as f64, "events").target(none),
        Outcome::new(scenario, "duplicated", stored.duplicated as f64, "events").target(none),
        Outcome::new(
            scenario,
            "rows nobody posted",
            stored.unexpected as f64,
            "rows",
        )
        .target(none),
    ];
    args.output.outcomes(&outcomes).context("summary file")?;
    anyhow::ensure!(
        stored.lost == 0 && stored.duplicated == 0 && stored.unexpected == 0,
        "the shards disagree with the ledger: lost={} duplicated={} unexpected={}",
        stored.lost,
        stored.duplicated,
        stored.unexpected
    );
    Ok(())
}

/// One device: bursts until the run stops; returns the ack latencies of its 202s (bounded by
/// the run: a burst at most every half pause).
async fn device(fleet: Arc<Fleet>, n: usize) -> Vec<Duration> {
    let args = &fleet.args;
    let mut rng = Rng(n as u64);
    let client = format!("fleet-{n}");
    let sdk = (rng.unit() < args.v2_share).then(|| SDKS[n % SDKS.len()]);
    // v1 SDKs post one event per request, v2 SDKs small arrays.
    let per_request = if sdk.is_some() {
        args.v2_batch.max(1)
    } else {
        1
    };
    let (mut acks, mut seq) = (Vec::new(), 0u64);
    // Devices that join together must not burst together.
    let mut pause = args.pause.mul_f64(rng.unit());
    loop {
        tokio::select! {
            _ = fleet.stop.cancelled() => return acks,
            _ = tokio::time::sleep(pause) => {}
        }
        let burst: Vec<Value> = (0..1 + rng.below(args.burst_max))
            .map(|_| {
                seq += 1;
                event(&fleet, &client, sdk, seq, &mut rng)
            })
            .collect();
        for request in burst.chunks(per_request) {
            post(&fleet, request, &mut rng, &mut acks).await;
        }
        pause = args.pause.mul_f64(0.5 + rng.unit());
    }
}

fn event(fleet: &Fleet, client: &str, sdk: Option<&str>, seq: u64, rng: &mut Rng) -> Value {
    let critical = rng.unit() < fleet.args.critical_share;
    let kind = ["reading", "heartbeat", "app_open"][rng.below(3)];
    // Every event carries its own id, as an SDK that retries must.
    let mut event = json!({
        "client_id": client, "type": if critical { "alarm" } else { kind },
        "event_id": Uuid::now_v7().to_string(), "payload": {"seq": seq, "battery": rng.below(101)},
    });
    if critical {
        event["priority"] = "critical".into();
        bump(&fleet.counts.critical);
    }
    if let Some(sdk) = sdk {
        event["sdk"] = sdk.into();
        let now = time::OffsetDateTime::now_utc();
        if let Ok(ts) = now.format(&time::format_description::well_known::Rfc3339) {
            event["ts"] = ts.into();
        }
        event["payload"]["schema"] = 2.into();
        bump(&fleet.counts.v2_events);
    }
    bump(&fleet.counts.events);
    event
}

/// The `event_id`s of events, as posted or as answered.
fn ids_of(events: &[Value]) -> Vec<Uuid> {
    events
        .iter()
        .filter_map(|e| e["event_id"].as_str()?.parse().ok())
        .collect()
}

/// Sends one request until a 202 (then, for a share, once more with the same ids), or until
/// it is refused as data, the attempts run out, or the run stops while it waits to retry.
async fn post(fleet: &Fleet, events: &[Value], rng: &mut Rng, acks: &mut Vec<Duration>) {
    let k = &fleet.counts;
    let body = match events {
        [one] => serde_json::to_vec(one),
        many => serde_json::to_vec(many),
    };
    let (Ok(body), ids) = (body, ids_of(events)) else {
        return;
    };
    let (mut first_sent, mut acknowledged) = (None, false);
    for attempt in 0..MAX_ATTEMPTS {
        let Ok(slot) = fleet.slots.acquire().await else {
            return;
        };
        bump(&k.requests);
        let sent = *first_sent.get_or_insert_with(SentAt::now);
        let attempt_sent = Instant::now();
        let request = fleet
            .http
            .post(&fleet.gateway)
            .header("content-type", "application/json");
        let answer = request.body(body.clone()).send().await;
        let backoff = Duration::from_millis(100 << attempt.min(5));
        let wait = match answer {
            Ok(r) if r.status() == 202 => {
                let answer = r.json::<Value>().await.ok();
                acks.push(attempt_sent.elapsed());
                drop(slot);
                let answered = answer
                    .as_ref()
                    .and_then(|a| a["events"].as_array())
                    .map(|a| ids_of(a));
                if answered.as_ref() != Some(&ids) {
                    bump(&k.bad_answers);
                }
                if !acknowledged {
                    acknowledged = true;
                    acknowledge(fleet, events, &ids, sent, rng);
                    // A device that lost the answer sends the same events again at once.
                    if rng.unit() < fleet.args.retry_share {
                        bump(&k.resent_acknowledged);
                        continue;
                    }
                }
                return;
            }
            Ok(r) => {
                drop(slot);
                fleet.ledger.maybe(events);
                let status = r.status().as_u16();
                bump(match status {
                    429 => &k.status_429,
                    503 => &k.status_503,
                    400..=499 => &k.other_4xx,
                    _ => &k.other_5xx,
                });
                if (400..500).contains(&status) && status != 429 {
                    return; // refused as data: sending it again changes nothing
                }
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                after.map_or(backoff, Duration::from_secs)
            }
            Err(_) => {
                drop(slot);
                fleet.ledger.maybe(events);
                bump(&k.transport);
                backoff
            }
        };
        if attempt + 1 == MAX_ATTEMPTS {
            return; // given up: the events stay "maybe" in the ledger
        }
        bump(&k.resent_refused);
        tokio::select! {
            _ = fleet.stop.cancelled() => return,
            _ = tokio::time::sleep(wait.min(MAX_RETRY_AFTER)) => {}
        }
    }
}

/// Records a first 202 in the ledger and hands the events to time to their shard's poller:
/// every critical one, a sample of the normal ones, timed from the request's first send.
fn acknowledge(fleet: &Fleet, events: &[Value], ids: &[Uuid], sent: SentAt, rng: &mut Rng) {
    fleet.ledger.acknowledged(events, ids);
    for (event, &id) in events.iter().zip(ids) {
        let critical = event["priority"] == "critical";
        if critical || rng.unit() < fleet.args.normal_sample {
            let shard = fleet
                .router
                .shard_for(event["client_id"].as_str().unwrap_or_default());
            if fleet.feeds[shard]
                .try_send(Timed { id, critical, sent })
                .is_err()
            {
                bump(&fleet.counts.samples_dropped);
            }
        }
    }
}

/// A device reading its own newest history every `--poll-history`; returns the latencies of
/// its 200 answers, bodies read (bounded by the run).
async fn history_reader(fleet: Arc<Fleet>, n: usize) -> Vec<Duration> {
    let (client, k) = (format!("fleet-{n}"), &fleet.counts);
    let url = format!("{}/events", fleet.query);
    let mut tick = tokio::time::interval(fleet.args.poll_history);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut latencies = Vec::new();
    loop {
        tokio::select! {
            _ = fleet.stop.cancelled() => return latencies,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        let params = [
            ("clientId", client.as_str()),
            ("limit", "50"),
            ("order", "desc"),
        ];
        match fleet.http.get(&url).query(&params).send().await {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(_) => latencies.push(sent.elapsed()),
                Err(_) => bump(&k.get_errors),
            },
            Ok(r) if r.status().is_client_error() => bump(&k.get_4xx),
            Ok(_) => bump(&k.get_5xx),
            Err(_) => bump(&k.get_errors),
        }
    }
}

#[derive(Default)]
struct Tally {
    received: u64,
    duplicates: u64,
    reconnects: u64,
    seen: HashSet<Uuid>,
}

/// Holds `fleet-<n>`'s SSE stream until `stop`, resuming from the last id after an `error`
/// event or an end (a bounded number of times), counting the events and their repeats.
async fn stream(fleet: Arc<Fleet>, n: usize, tally: Arc<Mutex<Tally>>, stop: CancellationToken) {
    let client = format!("fleet-{n}");
    // Its own client: the bench's has a whole-request timeout, a stream lasts the run.
    let http = reqwest::Client::new();
    let mut last: Option<String> = None;
    for _ in 0..MAX_RECONNECTS {
        let params = [("clientId", client.as_str())];
        if let Ok(mut reader) = SseReader::open(&http, &fleet.query, &params, last.as_deref()).await
        {
            // Short waits, so `stop` is seen; what arrived of a block stays buffered.
            while !stop.is_cancelled() {
                match reader.try_next(Duration::from_millis(200)).await {
                    None => {}
                    Some(Block::Event(e)) => {
                        let id = e.event["event_id"].as_str().and_then(|s| s.parse().ok());
                        if let (Ok(mut t), Some(id)) = (tally.lock(), id) {
                            t.received += 1;
                            t.duplicates += u64::from(!t.seen.insert(id));
                        }
                        last = Some(e.id);
                    }
                    Some(_) => break,
                }
            }
        }
        if stop.is_cancelled() {
            return;
        }
        if let Ok(mut t) = tally.lock() {
            t.reconnects += 1;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The writer's lag as query-service's pipeline view shows it, sampled every second until
/// the run stops: the largest `oldest_unstored_age_seconds` and `depth` seen (a check of the
/// create-to-persist numbers that does not depend on this program's shard polls).
async fn lag_sampler(fleet: Arc<Fleet>) -> (f64, f64) {
    let (url, mut worst) = (format!("{}/pipeline", fleet.query), (0.0f64, 0.0f64));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = fleet.stop.cancelled() => return worst,
            _ = tick.tick() => {}
        }
        let Ok(answer) = fleet.http.get(&url).send().await else {
            continue;
        };
        if let Ok(view) = answer.json::<Value>().await {
            let age = view["oldest_unstored_age_seconds"].as_f64().unwrap_or(0.0);
            let depth = view["depth"].as_f64().unwrap_or(0.0);
            worst = (worst.0.max(age), worst.1.max(depth));
        }
    }
}

/// At `at`, replaces each writer in turn: SIGTERM (it commits what it stored and leaves the
/// group), a new one, ready (shards answer, partitions assigned), then the next, so the
/// group always has a member. Panics of the harness end this task, which main reports.
async fn rolling_restart(
    stack: Arc<Stack>,
    writers: Vec<WriterProcess>,
    settings: db_writer::Settings,
    at: Instant,
) -> (Vec<WriterProcess>, String) {
    tokio::time::sleep_until(at.into()).await;
    let (mut next, mut log) = (Vec::new(), Vec::new());
    for (i, old) in writers.into_iter().enumerate() {
        let begun = Instant::now();
        let exit = old.terminate().await;
        let stopped = begun.elapsed();
        let new = stack.spawn_writer_process_with(settings.clone());
        stack.ready(new.metrics_url(), READY).await;
        log.push(format!(
            "writer {i} {exit} after {:.1}s, replacement ready after {:.1}s",
            stopped.as_secs_f64(),
            begun.elapsed().as_secs_f64()
        ));
        next.push(new);
    }
    (next, log.join("; "))
}
