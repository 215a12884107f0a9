//! Live delivery delay: how long after the gateway acknowledged an event a reader following
//! its client's stream (`GET /events/stream`) receives it — what the stable order costs.
//! Opens one stream per client, posts single events round-robin at a fixed rate (a share of
//! them critical), optionally with background NDJSON ingest for other clients, and reports
//! percentiles of ack → stream and send → stream. Needs the services running
//! (deploy/local/demo, or the release binaries); appends its report to a results file.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use clap::Parser;
use pipeline_tests::bench::{percentile_ms, Output};
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Live delivery delay of SSE streams: acknowledgement to event received")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    query: String,
    /// Streams, one per client.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Single-event POSTs per second, spread over the streamed clients.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Share of them sent as `priority: critical`.
    #[arg(long, default_value_t = 0.2)]
    critical: f64,
    /// Background NDJSON ingest for other clients, events per second (0: none).
    #[arg(long, default_value_t = 0)]
    ingest_rate: u64,
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[command(flatten)]
    output: Output,
}

struct Sent {
    sent: Instant,
    acked: Instant,
    critical: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let client = |n: usize| format!("stream-{run}-{n}");

    let (received_tx, mut received_rx) = mpsc::unbounded_channel::<(Uuid, Instant)>();
    for n in 0..args.clients {
        let response = http
            .get(format!("{}/events/stream", args.query))
            .query(&[("clientId", client(n))])
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "stream refused: {}",
            response.status()
        );
        tokio::spawn(read_stream(response, received_tx.clone()));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let background = (args.ingest_rate > 0).then(|| {
        tokio::spawn(ingest(
            http.clone(),
            args.gateway.clone(),
            args.ingest_rate,
            run.clone(),
            stop.clone(),
        ))
    });

    let sent: Arc<Mutex<HashMap<Uuid, Sent>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
    let until = Instant::now() + args.duration;
    let mut posts = Vec::new();
    let mut n = 0usize;
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        // Every 1/critical-th event, evenly spread.
        let critical =
            (n as f64 * args.critical).floor() > ((n - 1) as f64 * args.critical).floor();
        let body = serde_json::json!({
            "client_id": client(n % args.clients),
            "type": "live",
            "priority": if critical { "critical" } else { "normal" },
            "payload": {"n": n},
        });
        let (http, url, sent) = (
            http.clone(),
            format!("{}/events", args.gateway),
            sent.clone(),
        );
        posts.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = http.post(url).json(&body).send().await.ok()?;
            let acked = Instant::now();
            if response.status() != 202 {
                return None;
            }
            let answer: Value = response.json().await.ok()?;
            let id: Uuid = answer["event_id"].as_str()?.parse().ok()?;
            sent.lock().ok()?.insert(
                id,
                Sent {
                    sent: started,
                    acked,
                    critical,
                },
            );
            Some(())
        }));
    }
    for post in posts {
        let _ = post.await;
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(background) = background {
        let _ = background.await;
    }

    // Collect deliveries until every acknowledged event arrived, or 10 s of silence.
    let expected = sent.lock().map(|s| s.len()).unwrap_or(0);
    let mut received: HashMap<Uuid, Instant> = HashMap::new();
    while received.len() < expected {
        match tokio::time::timeout(Duration::from_secs(10), received_rx.recv()).await {
            Ok(Some((id, at))) => {
                received.entry(id).or_insert(at);
            }
            _ => break,
        }
    }
    let sent = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut lanes: HashMap<&str, (Vec<Duration>, Vec<Duration>)> = HashMap::new();
    let mut missing = 0;
    for (id, s) in sent.iter() {
        let Some(at) = received.get(id) else {
            missing += 1;
            continue;
        };
        let lane = if s.critical { "critical" } else { "normal" };
        let (from_ack, from_send) = lanes.entry(lane).or_default();
        from_ack.push(at.saturating_duration_since(s.acked));
        from_send.push(at.saturating_duration_since(s.sent));
    }
    let mut report = format!(
        "stream delivery, {} streams, {} single events/s for {:?} ({}% critical), background ingest {} events/s: {} acknowledged, {} not delivered\n",
        args.clients,
        args.rate,
        args.duration,
        (args.critical * 100.0).round(),
        args.ingest_rate,
        sent.len(),
        missing
    );
    let mut lane_names: Vec<&&str> = lanes.keys().collect();
    lane_names.sort();
    for lane in lane_names {
        let (from_ack, from_send) = &lanes[*lane];
        for (what, delays) in [("ack->stream", from_ack), ("send->stream", from_send)] {
            let mut sorted = delays.clone();
            sorted.sort();
            let pct = |p| percentile_ms(&sorted, p);
            let line = format!(
                "{lane:<9} {what:<13} n={} p50={:.1}ms p90={:.1}ms p99={:.1}ms max={:.1}ms",
                sorted.len(),
                pct(0.5),
                pct(0.9),
                pct(0.99),
                pct(1.0)
            );
            println!("{line}");
            report.push_str(&line);
            report.push('\n');
        }
    }
    args.output.report(env!("CARGO_BIN_NAME"), &report)?;
    anyhow::ensure!(missing == 0, "{missing} acknowledged events never streamed");
    Ok(())
}

/// Parses Server-Sent Events and reports each event's id with its arrival time.
async fn read_stream(mut response: reqwest::Response, out: mpsc::UnboundedSender<(Uuid, Instant)>) {
    let mut buffer = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let at = Instant::now();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(str::trim);
            let id = data
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .and_then(|v| v["event_id"].as_str().and_then(|s| s.parse().ok()));
            if let Some(id) = id {
                if out.send((id, at)).is_err() {
                    return;
                }
            }
        }
    }
}

async fn ingest(
    http: reqwest::Client,
    gateway: String,
    rate: u64,
    run: String,
    stop: Arc<AtomicBool>,
) {
    let per_request = 100u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(
        per_request as f64 / rate.max(1) as f64,
    ));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let body: String = (0..per_request)
            .map(|_| {
                n += 1;
                format!(
                    "{{\"client_id\":\"bulk-{run}-{}\",\"type\":\"bulk\",\"payload\":{{\"n\":{n}}}}}\n",
                    n % 1000
                )
            })
            .collect();
        let (http, url) = (http.clone(), format!("{gateway}/events"));
        tokio::spawn(async move {
            let _ = http
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await;
        });
    }
}
