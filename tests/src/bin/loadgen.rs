//! Feeds producer-gateway with synthetic device traffic: NDJSON batches or one event per
//! request, from a pool of clients, for a bounded time and count. Prints what it achieved.

use std::{
    fmt::Write,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use pipeline_tests::{
    bench::{metric_sum, percentile_ms, watch_rows_stored, Outcome, Output, Target},
    keep_alive::KeepAlive,
};
use tokio::sync::Mutex;

#[derive(Parser, Clone)]
#[command(about = "Synthetic device traffic for producer-gateway")]
struct Args {
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Events per request; 1 sends single JSON objects, more send NDJSON batches.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Distinct client ids.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Stop after this many events.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Stop after this long, whatever was sent.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Target events per second over all connections (0 = as fast as acknowledged).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Payload padding in bytes, to approximate real event sizes.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// db-writer's metrics base URL: after sending, wait until its rows inserted grew by the
    /// accepted events and report the end-to-end rate (POST sent → row stored).
    #[arg(long)]
    stored_by: Option<String>,
    /// How long to wait for db-writer to store what was accepted.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    store_deadline: Duration,
    /// The scenario's name in the outcomes (`--summary`).
    #[arg(long, default_value = "loadgen")]
    scenario: String,
    /// Target: acknowledged events/s at least this.
    #[arg(long)]
    min_rate: Option<f64>,
    /// Target: request p99 at most this many milliseconds.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Target: end-to-end events/s at least this (with `--stored-by`).
    #[arg(long)]
    min_stored_rate: Option<f64>,
    #[command(flatten)]
    output: Output,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // For db-writer's metrics; the POSTs go over one kept-open connection per worker.
    let client = reqwest::Client::new();
    let stored_before = match &args.stored_by {
        Some(url) => Some(
            metric_sum(&client, url, "db_writer_rows_inserted_total")
                .await
                .context("db-writer metrics")?,
        ),
        None => None,
    };
    let sent = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let started = Instant::now();
    let deadline = started + args.duration;
    let padding = "x".repeat(args.payload_bytes);
    let mut workers = Vec::new();
    for worker in 0..args.concurrency {
        let (args, sent, accepted, refused, latencies, padding) = (
            args.clone(),
            sent.clone(),
            accepted.clone(),
            refused.clone(),
            latencies.clone(),
            padding.clone(),
        );
        let mut connection = KeepAlive::new(&args.gateway).context("gateway address")?;
        workers.push(tokio::spawn(async move {
            let per_worker_rate = args.rate as f64 / args.concurrency as f64;
            let mut n: u64 = worker as u64;
            let mut local = Vec::new();
            let content_type = if args.batch == 1 {
                "application/json"
            } else {
                "application/x-ndjson"
            };
            let mut body = String::new();
            while Instant::now() < deadline {
                let start = sent.fetch_add(args.batch as u64, Ordering::Relaxed);
                if start >= args.events {
                    break;
                }
                let count = (args.events - start).min(args.batch as u64) as usize;
                body.clear();
                for _ in 0..count {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let client_id = (n >> 33) as usize % args.clients;
                    let _ = writeln!(
                        body,
                        r#"{{"client_id":"device-{client_id}","type":"reading","payload":{{"seq":{start},"pad":"{padding}"}}}}"#
                    );
                }
                let t0 = Instant::now();
                let result = connection
                    .post("/events", content_type, Bytes::copy_from_slice(body.as_bytes()))
                    .await;
                local.push(t0.elapsed());
                match result {
                    Ok(answer) if answer.status == 202 => {
                        accepted.fetch_add(count as u64, Ordering::Relaxed);
                    }
                    Ok(answer) => {
                        refused.fetch_add(count as u64, Ordering::Relaxed);
                        if let Some(secs) = answer.retry_after {
                            tokio::time::sleep(Duration::from_secs(secs.min(5))).await;
                        }
                    }
                    Err(_) => {
                        refused.fetch_add(count as u64, Ordering::Relaxed);
                    }
                }
                if per_worker_rate > 0.0 {
                    // Pace to the target rate: each request "costs" count / rate seconds.
                    let budget = Duration::from_secs_f64(count as f64 / per_worker_rate);
                    if let Some(rest) = budget.checked_sub(t0.elapsed()) {
                        tokio::time::sleep(rest).await;
                    }
                }
            }
            latencies.lock().await.extend(local);
        }));
    }
    for worker in workers {
        worker.await.context("worker panicked")?;
    }
    let elapsed = started.elapsed();
    let mut lat = latencies.lock().await.clone();
    lat.sort();
    let pct = |p| percentile_ms(&lat, p);
    let ok = accepted.load(Ordering::Relaxed);
    let rate = ok as f64 / elapsed.as_secs_f64();
    let stored_rate = match (&args.stored_by, stored_before) {
        (Some(url), Some(before)) => {
            // From the first POST until the last event was stored.
            let stored =
                watch_rows_stored(&client, url, before, ok, args.store_deadline, false).await?;
            Some(ok as f64 / (stored.done - started).as_secs_f64())
        }
        _ => None,
    };
    let mut report = format!(
        "loadgen: batch={} concurrency={} accepted={ok} refused={} requests={} elapsed={:.2}s rate={:.0} events/s request_ms p50={:.2} p99={:.2} max={:.2}",
        args.batch,
        args.concurrency,
        refused.load(Ordering::Relaxed),
        lat.len(),
        elapsed.as_secs_f64(),
        rate,
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    if let Some(stored) = stored_rate {
        report.push_str(&format!(" end_to_end={stored:.0} events/s"));
    }
    println!("{report}");
    args.output.report(env!("CARGO_BIN_NAME"), &report)?;
    let scenario = args.scenario.as_str();
    let mut outcomes = vec![
        Outcome::new(scenario, "acknowledged", rate, "events/s")
            .target_if(args.min_rate.map(Target::AtLeast)),
        Outcome::new(scenario, "request p50", pct(0.5), "ms"),
        Outcome::new(scenario, "request p99", pct(0.99), "ms")
            .target_if(args.max_p99_ms.map(Target::AtMost)),
        Outcome::new(
            scenario,
            "refused",
            refused.load(Ordering::Relaxed) as f64,
            "events",
        ),
    ];
    if let Some(stored) = stored_rate {
        outcomes.push(
            Outcome::new(scenario, "end to end (stored)", stored, "events/s")
                .target_if(args.min_stored_rate.map(Target::AtLeast)),
        );
    }
    args.output.outcomes(&outcomes)?;
    Ok(())
}
