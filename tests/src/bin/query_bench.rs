//! GET /events latency while ingest runs: cache-hot (a few clients read over and over) and
//! cold (a client not read before in the phase, each time), at a fixed request rate; with
//! how many of each phase's pages query-service read from a shard (its page cache missed).
//! Needs the services running (deploy/local/demo, or the release binaries). Before the
//! reads, an ingest-only phase measures query-service's CPU per consumed event (every replica
//! consumes every event), and with `--baseline-metrics` that of a second replica in the same
//! phase, side by side, and the ratio; with `--baseline-gateway` too, the ingest alternates
//! between that gateway (writing the records the baseline's gateway wrote) and the current
//! one, and each replica is measured on its own gateway's records. Per phase it also prints
//! how many blocks the shards found in PostgreSQL's buffers and how many they read from
//! outside them (the OS cache or the disk): a cold page is ~100 heap pages, and where they
//! come from decides its latency; and how much of the phase a shard spent vacuuming or
//! analyzing `events` (autovacuum).
//! Prints percentiles and appends them to a results file.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;
use pipeline_tests::{
    bench::{self, metric_series, metric_sum, percentile_ms, Outcome, Output, Target},
    keep_alive::KeepAlive,
};

/// A GET unanswered after this counts as not answered, not as a latency.
const GET_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the shards are asked whether a vacuum or analyze of `events` is under way.
const MAINTENANCE_SAMPLE: Duration = Duration::from_millis(200);

#[derive(Parser, Clone)]
#[command(
    about = "GET /events latency while ingest runs, and query-service CPU per consumed event"
)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    query: String,
    /// Background ingest, events per second (NDJSON batches of 100).
    #[arg(long, default_value_t = 20_000)]
    ingest_rate: u64,
    /// GET requests per second, per phase.
    #[arg(long, default_value_t = 500)]
    get_rate: u64,
    /// Length of each phase.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Clients with history: hot reads use the first 10, cold reads walk the others once
    /// each (again from the start only when a phase has more reads than clients).
    #[arg(long, default_value_t = 10_010)]
    clients: usize,
    /// The clients' ids are `<prefix>-<n>` (and `<prefix>-heavy`). Default: new for every run,
    /// so that no run reads pages an earlier one left in query-service's page cache, nor
    /// histories that earlier runs spread over the shards' heap.
    #[arg(long, default_value_t = run_prefix())]
    client_prefix: String,
    /// Events to hold for one client ("heavy") before measuring; run with db-writer stopped
    /// to see whether a client with that many events in flight slows the others' reads.
    #[arg(long, default_value_t = 0)]
    heavy_client_events: usize,
    /// The shards, for their block counts (`pg_stat_database`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "postgres://postgres@127.0.0.1:5433/events,postgres://postgres@127.0.0.1:5434/events"
    )]
    shards: Vec<String>,
    /// query-service's metrics base URL (its `process_cpu_seconds_total`).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    query_metrics: String,
    /// Length of the ingest-only phase that measures CPU per consumed event (0 skips it).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    cpu_phase: Duration,
    /// Target: cache-hot GET p99 at most this (ms).
    #[arg(long)]
    hot_p99_target_ms: Option<f64>,
    /// Target: cold GET p99 at most this (ms).
    #[arg(long)]
    cold_p99_target_ms: Option<f64>,
    /// Target: query-service CPU per consumed event at most this (µs).
    #[arg(long)]
    cpu_per_event_target_us: Option<f64>,
    /// Metrics base URL of a second replica on the same stack, built from the code issue 12
    /// started from (`tests/bench` builds and starts it): its CPU per event is measured in the
    /// same ingest-only phase, side by side, so machine speed cancels out of the ratio.
    #[arg(long)]
    baseline_metrics: Option<String>,
    /// A gateway writing the records the baseline's own gateway wrote (`event.v2`, the id's
    /// origin in a header: `kafka.schema_version = 2`), which the baseline replica reads;
    /// it cannot read `event.v3`. With it the CPU phase is twice as long, in eight parts, the
    /// ingest through this gateway, the current one, the current one, this one, and again
    /// (so that a drift of the machine's speed cancels); the ratio is the current replica's
    /// CPU per event on the current gateway's records over the baseline's on its own.
    #[arg(long, requires = "baseline_metrics")]
    baseline_gateway: Option<String>,
    /// Target: query-service's CPU per event at most this share of the baseline's (the issue
    /// asks for "at least halved": 0.5).
    #[arg(long)]
    cpu_ratio_target: Option<f64>,
    /// Only the ingest-only CPU phase, no GET phases (a baseline replica would load them).
    #[arg(long)]
    cpu_only: bool,
    /// Time the GETs on the runtime that also generates the ingest (as until 2026-12-07),
    /// instead of on a thread and a runtime of their own: a GET's answer then waits for the
    /// generator's work, which a reader elsewhere would not.
    #[arg(long)]
    gets_on_ingest_runtime: bool,
    #[command(flatten)]
    output: Output,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Seeding, ingest and metrics; the timed GETs go over `KeepAlive` connections.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        // The services close a kept-alive connection idle for their header timeout (10 s):
        // the metrics read after a 10 s CPU phase reused one as it closed ("connection closed
        // before message completed", tests/bench 2026-12-05). Drop idle ones before that.
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(GET_TIMEOUT)
        .build()?;

    let shards = bench::connect_shards(&args.shards).await?;

    // Seed every client with some history, then keep ingesting in the background.
    let seed: String = (0..args.clients * 5)
        .map(|n| event_line(&client_id(&args.client_prefix, n % args.clients), "seed", n))
        .collect();
    for chunk in seed.lines().collect::<Vec<_>>().chunks(1000) {
        let response = http
            .post(format!("{}/events", args.gateway))
            .header("content-type", "application/x-ndjson")
            .body(chunk.join("\n"))
            .send()
            .await
            .context("seeding")?;
        anyhow::ensure!(
            response.status() == 202,
            "seed refused: {}",
            response.status()
        );
    }
    for start in (0..args.heavy_client_events).step_by(1000) {
        let body: String = (start..(start + 1000).min(args.heavy_client_events))
            .map(|n| event_line(&client_id(&args.client_prefix, "heavy"), "seed", n))
            .collect();
        let response = http
            .post(format!("{}/events", args.gateway))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .context("seeding the heavy client")?;
        anyhow::ensure!(
            response.status() == 202,
            "heavy seed refused: {}",
            response.status()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ingested = Arc::new(AtomicU64::new(0));
    // Whether the ingest goes through `--baseline-gateway` for now.
    let via_baseline = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (http, gateways, via_baseline, stop, ingested) = (
            http.clone(),
            [
                args.gateway.clone(),
                args.baseline_gateway.clone().unwrap_or_default(),
            ],
            via_baseline.clone(),
            stop.clone(),
            ingested.clone(),
        );
        let (rate, clients, prefix) = (args.ingest_rate, args.clients, args.client_prefix.clone());
        tokio::spawn(async move {
            let per_request = 100u64;
            let interval = Duration::from_secs_f64(per_request as f64 / rate.max(1) as f64);
            let mut tick = tokio::time::interval(interval);
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let body: String = (0..per_request)
                    .map(|_| {
                        n += 1;
                        event_line(&client_id(&prefix, n % clients), "live", n)
                    })
                    .collect();
                let http = http.clone();
                let gateway = &gateways[usize::from(via_baseline.load(Ordering::Relaxed))];
                let url = format!("{gateway}/events");
                let ingested = ingested.clone();
                tokio::spawn(async move {
                    let sent = http
                        .post(url)
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status() == 202) {
                        ingested.fetch_add(per_request, Ordering::Relaxed);
                    }
                });
            }
        })
    };

    let mut report = format!(
        "GET /events?limit=100 latency, {} GET/s per phase for {:?}, background ingest {} events/s, heavy client {} events, clients {}-0..{}\n",
        args.get_rate,
        args.duration,
        args.ingest_rate,
        args.heavy_client_events,
        args.client_prefix,
        args.clients
    );
    let scenario = format!("GET at {}/s, ingest {}/s", args.get_rate, args.ingest_rate);
    let mut outcomes = Vec::new();
    let mut ingest_cost = None;
    if !args.cpu_phase.is_zero() {
        let replicas: Vec<&str> = std::iter::once(args.query_metrics.as_str())
            .chain(args.baseline_metrics.as_deref())
            .collect();
        let (own, baseline, like_for_like) = if args.baseline_gateway.is_some() {
            let part = args.cpu_phase / 4;
            let (mut own, mut baseline) = (Cost::default(), Cost::default());
            let mut own_on_baseline_records = Cost::default();
            for on_baseline in [true, false, false, true, true, false, false, true] {
                via_baseline.store(on_baseline, Ordering::Relaxed);
                let (cpu, events) = cpu_seconds(&http, &replicas, part, &ingested).await?;
                if on_baseline {
                    baseline.add(cpu[1], events);
                    own_on_baseline_records.add(cpu[0], events);
                } else {
                    own.add(cpu[0], events);
                }
            }
            via_baseline.store(false, Ordering::Relaxed);
            let (own, baseline) = (own.per_event()?, baseline.per_event()?);
            let like_for_like = own_on_baseline_records.per_event()?;
            (own, Some(baseline), Some(like_for_like))
        } else {
            let (cpu, events) = cpu_seconds(&http, &replicas, args.cpu_phase, &ingested).await?;
            let per_event: Vec<f64> = cpu.iter().map(|c| c * 1e6 / events as f64).collect();
            (per_event[0], per_event.get(1).copied(), None)
        };
        ingest_cost = Some(own);
        let ingest = format!("ingest {}/s", args.ingest_rate);
        let mut line = format!(
            "query-service CPU per consumed event: {own:.2} µs (ingest only, {:?})",
            args.cpu_phase
        );
        // Beside GET phases it is what their CPU per GET is net of; in the table only when it
        // is the run's subject.
        if args.cpu_only || args.cpu_per_event_target_us.is_some() {
            outcomes.push(
                Outcome::new(&ingest, "query-service CPU per event", own, "µs")
                    .target_if(args.cpu_per_event_target_us.map(Target::AtMost)),
            );
        }
        if let Some(baseline) = baseline {
            let ratio = own / baseline;
            let how = if like_for_like.is_some() {
                "on its own gateway's records"
            } else {
                "side by side"
            };
            line.push_str(&format!(
                "; the issue's start, {how}: {baseline:.2} µs; ratio {ratio:.3}"
            ));
            outcomes.push(Outcome::new(
                &ingest,
                &format!("the issue's start's CPU per event, {how}"),
                baseline,
                "µs",
            ));
            outcomes.push(
                Outcome::new(&ingest, "CPU per event / the issue's start's", ratio, "×")
                    .target_if(args.cpu_ratio_target.map(Target::AtMost)),
            );
            if let Some(old_records) = like_for_like {
                line.push_str(&format!(
                    " (each on its own gateway's records, alternating; on the issue's start's \
                     records, side by side, the current replica took {old_records:.2} µs, \
                     ratio {:.3})",
                    old_records / baseline
                ));
                outcomes.push(Outcome::new(
                    &ingest,
                    "the same, both on the issue's start's records",
                    old_records / baseline,
                    "×",
                ));
            }
        }
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    }
    let mut phases = if args.cpu_only {
        Vec::new()
    } else {
        vec![("cache-hot", Phase::Hot), ("cold", Phase::Cold)]
    };
    if args.heavy_client_events > 0 && !args.cpu_only {
        phases.push(("heavy", Phase::Heavy));
    }
    for (phase, kind) in phases {
        let page_reads = || async {
            let series = |result| format!("query_page_cache_total{{result=\"{result}\"}}");
            let hits = metric_series(&http, &args.query_metrics, &series("hit")).await?;
            let misses = metric_series(&http, &args.query_metrics, &series("miss")).await?
                + metric_series(&http, &args.query_metrics, &series("bypassed")).await?;
            reqwest::Result::Ok((hits, misses))
        };
        let cpu = || metric_sum(&http, &args.query_metrics, "process_cpu_seconds_total");
        let handled_slow = || handled_over(&http, &args.query_metrics, SLOW_MS);
        let slow_before = handled_slow().await?;
        let (before, blocks_before) = (page_reads().await?, shard_blocks(&shards).await?);
        let (cpu_before, events_before) = (cpu().await?, ingested.load(Ordering::Relaxed));
        let done = AtomicBool::new(false);
        let (timed, maintenance) = tokio::join!(
            async {
                // Owned: the GETs run on a thread of their own.
                let load = args.clone();
                let timed = if args.gets_on_ingest_runtime {
                    run_phase(load, kind).await
                } else {
                    match bench::run_apart("gets", run_phase(load, kind)) {
                        Ok(timed) => timed
                            .await
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("the GETs' thread panicked"))),
                        Err(e) => Err(anyhow::Error::new(e).context("the GETs' thread")),
                    }
                };
                done.store(true, Ordering::Relaxed);
                timed
            },
            shard_maintenance(&shards, &done)
        );
        let (mut latencies, failed) = timed?;
        let maintenance = maintenance?;
        let (cpu_after, events_after) = (cpu().await?, ingested.load(Ordering::Relaxed));
        let (after, blocks_after) = (page_reads().await?, shard_blocks(&shards).await?);
        // A replica restarted meanwhile counts from zero again.
        let slow_handled = handled_slow().await?.saturating_sub(slow_before);
        let slow_seen = latencies
            .iter()
            .filter(|l| l.as_secs_f64() * 1e3 > SLOW_MS)
            .count();
        // What the phase's reads cost query-service: its CPU less what consuming the phase's
        // ingest costs at the rate the ingest-only phase measured.
        let gets = (latencies.len() + failed).max(1) as f64;
        let ingest_micros =
            ingest_cost.unwrap_or(0.0) * events_after.saturating_sub(events_before) as f64;
        let per_get = ((cpu_after - cpu_before) * 1e6 - ingest_micros) / gets;
        latencies.sort();
        let target = match kind {
            Phase::Hot => args.hot_p99_target_ms,
            Phase::Cold => args.cold_p99_target_ms,
            Phase::Heavy => None,
        };
        let p99 = Outcome::new(
            &scenario,
            &format!("{phase} p99"),
            percentile_ms(&latencies, 0.99),
            "ms",
        );
        outcomes.push(Outcome::new(
            &scenario,
            &format!("{phase} p50"),
            percentile_ms(&latencies, 0.5),
            "ms",
        ));
        outcomes.push(p99.target_if(target.map(Target::AtMost)));
        outcomes.push(Outcome::new(
            &scenario,
            &format!("{phase}: a shard vacuuming or analyzing events"),
            maintenance.share_percent(),
            "% of the phase",
        ));
        // The latencies are of 200 answers: a phase that answered 503s fast would otherwise
        // look quick.
        outcomes.push(
            Outcome::new(
                &scenario,
                &format!("{phase} not answered 200"),
                failed as f64,
                "GETs",
            )
            .target(Target::AtMost(0.0)),
        );
        let line = format!(
            "{} failed={failed} over {SLOW_MS} ms: {slow_seen} here, {slow_handled} in query-service's handler; query-service CPU per GET={per_get:.0}µs{} pages: from memory={} from a shard={} shard blocks (writer's too): in buffers={} read from outside={} vacuum or analyze of events running: {} of {} samples",
            summarize(phase, &latencies),
            if ingest_cost.is_some() { "" } else { " (its ingest's too)" },
            after.0 - before.0,
            after.1 - before.1,
            blocks_after.hit - blocks_before.hit,
            blocks_after.read - blocks_before.read,
            maintenance.busy,
            maintenance.samples,
        );
        println!("{line}");
        report.push_str(&line);
        report.push('\n');
    }
    stop.store(true, Ordering::Relaxed);
    let _ = ingest.await;
    let line = format!(
        "background ingest accepted {} events",
        ingested.load(Ordering::Relaxed)
    );
    println!("{line}");
    report.push_str(&line);
    args.output
        .report(env!("CARGO_BIN_NAME"), &format!("{report}\n"))?;
    args.output.outcomes(&outcomes)?;
    Ok(())
}

/// Blocks the shards' databases found in PostgreSQL's buffers and read from outside them,
/// summed over the shards (`pg_stat_database`: every backend's, the writer's too, as each
/// reports them, at least once a second).
#[derive(Clone, Copy)]
struct Blocks {
    hit: i64,
    read: i64,
}

async fn shard_blocks(shards: &[tokio_postgres::Client]) -> anyhow::Result<Blocks> {
    let mut blocks = Blocks { hit: 0, read: 0 };
    for shard in shards {
        let row = shard
            .query_one(
                "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .context("reading a shard's block counts")?;
        blocks.hit += row.try_get::<_, i64>(0)?;
        blocks.read += row.try_get::<_, i64>(1)?;
    }
    Ok(blocks)
}

/// How often a phase found a shard vacuuming or analyzing a partition of `events`
/// (autovacuum's passes), which compete with the reads for the CPU and the page cache:
/// printed beside the phase's p99, so a reader sees whether the two met (the worst cold
/// phases of 2026-12-06 all had a pass ending in them; not every phase with one was slow).
struct Maintenance {
    samples: u32,
    /// Samples in which at least one shard had such a pass under way.
    busy: u32,
}

impl Maintenance {
    fn share_percent(&self) -> f64 {
        100.0 * f64::from(self.busy) / f64::from(self.samples.max(1))
    }
}

/// Every `MAINTENANCE_SAMPLE` until `done`: is a vacuum or an analyze of a partition of
/// `events` under way on any shard (`pg_stat_progress_vacuum` / `_analyze`)?
async fn shard_maintenance(
    shards: &[tokio_postgres::Client],
    done: &AtomicBool,
) -> anyhow::Result<Maintenance> {
    let mut seen = Maintenance {
        samples: 0,
        busy: 0,
    };
    let mut tick = tokio::time::interval(MAINTENANCE_SAMPLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let mut busy = false;
        for shard in shards {
            let row = shard
                .query_one(
                    "SELECT count(*)
                       FROM (SELECT relid FROM pg_stat_progress_vacuum
                             UNION ALL SELECT relid FROM pg_stat_progress_analyze) p
                       JOIN pg_inherits i ON i.inhrelid = p.relid
                      WHERE i.inhparent = 'events'::regclass",
                    &[],
                )
                .await
                .context("reading a shard's vacuum and analyze progress")?;
            busy |= row.try_get::<_, i64>(0)? > 0;
        }
        seen.samples += 1;
        seen.busy += u32::from(busy);
    }
    Ok(seen)
}

/// Each replica's CPU seconds over the events ingested meanwhile, in microseconds: with no
/// reads running, what it spends consuming (every replica consumes every event).
/// Each replica's CPU seconds over `phase`, and the events ingested meanwhile.
async fn cpu_seconds(
    http: &reqwest::Client,
    replicas: &[&str],
    phase: Duration,
    ingested: &AtomicU64,
) -> anyhow::Result<(Vec<f64>, u64)> {
    let cpu = |metrics| metric_sum(http, metrics, "process_cpu_seconds_total");
    let mut before = Vec::new();
    for metrics in replicas {
        before.push(cpu(metrics).await?);
    }
    let events_before = ingested.load(Ordering::Relaxed);
    tokio::time::sleep(phase).await;
    let events = ingested
        .load(Ordering::Relaxed)
        .saturating_sub(events_before);
    anyhow::ensure!(events > 0, "nothing was ingested during the CPU phase");
    let mut seconds = Vec::new();
    for (metrics, before) in replicas.iter().zip(before) {
        seconds.push(cpu(metrics).await? - before);
    }
    Ok((seconds, events))
}

/// CPU seconds and events summed over the parts of a phase.
#[derive(Default)]
struct Cost {
    seconds: f64,
    events: u64,
}

impl Cost {
    fn add(&mut self, seconds: f64, events: u64) {
        self.seconds += seconds;
        self.events += events;
    }

    /// Microseconds per event.
    fn per_event(&self) -> anyhow::Result<f64> {
        anyhow::ensure!(self.events > 0, "nothing was ingested during the CPU phase");
        Ok(self.seconds * 1e6 / self.events as f64)
    }
}

/// The id of this run's client `n` (a number, or `heavy`): what the seed and the ingest write
/// and the phases read.
fn client_id(prefix: &str, n: impl std::fmt::Display) -> String {
    format!("{prefix}-{n}")
}

/// One NDJSON line of an event with payload `{"n": n}`.
fn event_line(client: &str, event_type: &str, n: impl std::fmt::Display) -> String {
    format!("{{\"client_id\":\"{client}\",\"type\":\"{event_type}\",\"payload\":{{\"n\":{n}}}}}\n")
}

/// A client prefix of this run's own: `qb` and the time in seconds, in hex.
fn run_prefix() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("qb{seconds:x}")
}

/// GETs slower than this (ms) are counted twice: as timed here, and in query-service's own
/// handler timing (`query_request_seconds`, one of its bucket bounds). A phase with many more
/// here than there waited outside the handler: in the network path, query-service's runtime
/// before the handler ran, or this program.
const SLOW_MS: f64 = 25.0;

/// How many GETs answered 200 took query-service's handler more than `ms` since the replica
/// started (`ms` must be a bucket bound of `query_request_seconds`).
async fn handled_over(http: &reqwest::Client, metrics: &str, ms: f64) -> anyhow::Result<u64> {
    let series = |le: &str| format!("query_request_seconds_bucket{{status=\"200\",le=\"{le}\"}}");
    let text = bench::metrics_text(http, metrics).await?;
    let all = bench::series_value(&text, &series("+Inf"));
    let within = bench::series_value(&text, &series(&(ms / 1e3).to_string()));
    Ok((all - within).max(0.0) as u64)
}

/// Hot clients a phase reads over and over.
const HOT_CLIENTS: u64 = 10;

/// The `read`th cold read's client: every client past the hot ones once, in a scattered
/// order (a stride coprime with their count), before any is read again.
fn cold_client(read: u64, clients: usize) -> u64 {
    let cold = (clients as u64).saturating_sub(HOT_CLIENTS).max(1);
    let stride = (cold / 2..cold)
        .chain(1..cold / 2)
        .find(|s| gcd(*s, cold) == 1)
        .unwrap_or(1);
    HOT_CLIENTS + (read * stride) % cold
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[derive(Clone, Copy)]
enum Phase {
    /// The first 10 clients, over and over.
    Hot,
    /// A client not read before in the phase.
    Cold,
    /// Pages of the client with many events in flight.
    Heavy,
}

/// The latencies of the GETs answered 200 (the whole answer read), and how many were not (an
/// error status, a refused connection or a timeout). Open loop at `get_rate`, each GET on a
/// kept-open connection that no other GET is using (opened when all are busy).
async fn run_phase(args: Args, phase: Phase) -> anyhow::Result<(Vec<Duration>, usize)> {
    let interval = Duration::from_secs_f64(1.0 / args.get_rate.max(1) as f64);
    let mut tick = tokio::time::interval(interval);
    let until = Instant::now() + args.duration;
    let idle: Arc<std::sync::Mutex<Vec<KeepAlive>>> = Arc::default();
    let mut handles = Vec::new();
    let mut n: u64 = 0;
    let mut reads: u64 = 0;
    while Instant::now() < until {
        tick.tick().await;
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        reads += 1;
        let client = match phase {
            Phase::Hot => client_id(&args.client_prefix, (n >> 33) % HOT_CLIENTS),
            Phase::Cold => client_id(&args.client_prefix, cold_client(reads, args.clients)),
            Phase::Heavy => client_id(&args.client_prefix, "heavy"),
        };
        let path = format!("/events?clientId={client}&limit=100");
        let taken = idle.lock().ok().and_then(|mut idle| idle.pop());
        let mut connection = match taken {
            Some(c) => c,
            None => KeepAlive::new(&args.query).context("query-service address")?,
        };
        let idle = idle.clone();
        handles.push(tokio::spawn(async move {
            let started = Instant::now();
            let answer = tokio::time::timeout(GET_TIMEOUT, connection.get(&path)).await;
            let elapsed = started.elapsed();
            let ok = matches!(answer, Ok(Ok(ref a)) if a.status == 200);
            if let (Ok(Ok(_)), Ok(mut idle)) = (answer, idle.lock()) {
                idle.push(connection);
            }
            ok.then_some(elapsed)
        }));
    }
    let mut latencies = Vec::with_capacity(handles.len());
    let mut failed = 0;
    for handle in handles {
        match handle.await {
            Ok(Some(latency)) => latencies.push(latency),
            _ => failed += 1,
        }
    }
    Ok((latencies, failed))
}

fn summarize(phase: &str, latencies: &[Duration]) -> String {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let pct = |p| percentile_ms(&sorted, p);
    format!(
        "{phase:<10} requests={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        sorted.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn cold_reads_take_every_cold_client_once_before_any_again() {
        for clients in [11, 12, 2000, 10_010] {
            let cold = clients as u64 - HOT_CLIENTS;
            let first: HashSet<u64> = (1..=cold).map(|r| cold_client(r, clients)).collect();
            assert_eq!(first.len() as u64, cold, "{clients} clients");
            assert!(first
                .iter()
                .all(|c| (HOT_CLIENTS..clients as u64).contains(c)));
            assert_eq!(cold_client(cold + 1, clients), cold_client(1, clients));
        }
    }
}
