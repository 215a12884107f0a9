//! The live dashboard (`GET /dashboard` on query-service) in a real browser, read the way an
//! operator reads it: numbers, charts and the batch list change while events flow through
//! both lanes; when the service goes away the page says so and keeps the last figures; when
//! it comes back the page follows it again. Screenshots land in `target/dashboard*.png`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};

use pipeline_tests::{Browser, Stack};
use serde_json::{json, Value};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

const DEADLINE: Duration = Duration::from_secs(30);
/// A normal operator's screen.
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;
/// Bounds the traffic loop whatever happens to the checks.
const MAX_ROUNDS: usize = 2_000;

/// What the page shows, read from its DOM: text where a person reads text (numbers are
/// parsed from what is displayed), `data-*` where the page draws (charts).
const READ: &str = r#"(() => {
  const q = s => document.querySelector(s);
  const all = s => [...document.querySelectorAll(s)];
  const num = t => { const n = Number(String(t).replace(/[^0-9.\-]/g, '')); return Number.isFinite(n) ? n : null; };
  const chart = id => { const c = q(`[data-testid=${id}]`); return { points: Number(c.dataset.points || 0), nonzero: Number(c.dataset.nonzero || 0), max: Number(c.dataset.max || 0), lines: c.querySelectorAll('polyline').length }; };
  const status = q('[data-testid=status]');
  return {
    state: status.dataset.state,
    status_text: status.textContent,
    connects: Number(status.dataset.connects || 0),
    last_update: q('[data-testid=last-update]').textContent,
    at_ms: Number(q('[data-testid=last-update]').dataset.atMs || 0),
    banner: getComputedStyle(q('[data-testid=disconnected-banner]')).display !== 'none',
    greyed: document.body.classList.contains('disconnected'),
    depth: num(q('[data-testid=depth]').textContent),
    dead_letters: num(q('[data-testid=dead-letters]').textContent),
    in_flight_events: num(q('[data-testid=in-flight-events]').textContent),
    in_flight_bytes: q('[data-testid=in-flight-bytes]').textContent,
    streams: num(q('[data-testid=streams]').textContent),
    query_rate: num(q('[data-testid=query-rate]').textContent),
    query_p99: num(q('[data-testid=query-p99]').textContent),
    lanes: all('[data-testid=lane]').map(l => ({ lane: l.dataset.lane, topic: l.dataset.topic,
      rate: num(l.querySelector('[data-testid=lane-rate]').textContent) })),
    charts: { ingest: chart('chart-ingest'), shards: chart('chart-shards'), depth: chart('chart-depth'), age: chart('chart-age') },
    shards: all('[data-testid=shard]').map(tr => ({ shard: Number(tr.dataset.shard),
      up: tr.cells[1].textContent.trim() === 'UP', rows_stored: num(tr.cells[3].textContent) })),
    writers: all('[data-testid=writer]').map(tr => ({ partitions: Number(tr.dataset.partitions),
      client_id: tr.dataset.clientId, text: tr.textContent })),
    no_writer: q('[data-testid=writers-none]')?.textContent ?? null,
    unheld: q('[data-testid=writers-unheld]')?.textContent ?? null,
    partitions: all('[data-testid=partition]').map(tr => ({ topic: tr.dataset.topic,
      partition: Number(tr.dataset.partition), end_offset: num(tr.cells[2].textContent), writer_lag: num(tr.cells[4].textContent),
      held_by: tr.cells[5].dataset.writer, held_text: tr.cells[5].textContent })),
    // x of every sample drawn in the depth chart, in order.
    samples: [...q('[data-testid=chart-depth]').querySelectorAll('polyline')]
      .flatMap(l => l.getAttribute('points').split(' ').map(xy => Number(xy.split(',')[0]))),
    batches: all('[data-testid=batch]').map(tr => ({ id: tr.dataset.batchId, records: num(tr.cells[2].textContent),
      rows: Number(tr.dataset.rows), text: tr.textContent })),
  };
})()"#;

async fn read(browser: &mut Browser) -> Value {
    browser.evaluate(READ).await.expect("the page answers")
}

/// Polls the page until `check` accepts what it shows.
async fn page_until(browser: &mut Browser, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let page = read(browser).await;
        if check(&page) {
            return page;
        }
        if tokio::time::Instant::now() >= until {
            panic!("timed out after {DEADLINE:?} waiting for the dashboard to show {what}; it shows {page:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn rows_stored(page: &Value) -> f64 {
    page["shards"]
        .as_array()
        .map_or(0.0, |s| s.iter().map(|s| f(&s["rows_stored"])).sum())
}

fn end_offsets(page: &Value) -> f64 {
    page["partitions"]
        .as_array()
        .map_or(0.0, |p| p.iter().map(|p| f(&p["end_offset"])).sum())
}

fn lane_rate(page: &Value, lane: &str) -> f64 {
    page["lanes"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["lane"] == lane))
        .map_or(0.0, |l| f(&l["rate"]))
}

fn batch_ids(page: &Value) -> Vec<String> {
    page["batches"]
        .as_array()
        .map(|b| {
            b.iter()
                .map(|b| b["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn unique(ids: &[String]) -> bool {
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted.len() == ids.len()
}

fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join(name)
}

/// Posts small requests mixing both lanes until `stop`, paced so the rates are steady.
async fn traffic(stack: &Stack, gateway: &str, stop: &AtomicBool, posted: &AtomicUsize) {
    for round in 0..MAX_ROUNDS {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let events: Vec<Value> = (0..40)
            .map(|i| {
                json!({
                    "client_id": format!("dash-{}", (round * 40 + i) % 37),
                    "type": "reading",
                    "payload": {"round": round, "i": i},
                    "priority": if i % 4 == 0 { "critical" } else { "normal" },
                })
            })
            .collect();
        let acknowledged = stack.post_events(gateway, &events).await.event_ids.len();
        posted.fetch_add(acknowledged, Ordering::Relaxed);
        // Pacing the load, not waiting for anything: the checks poll on their own.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `checks` while traffic flows; stops the traffic when they are done.
async fn with_traffic<T>(
    stack: &Stack,
    gateway: &str,
    posted: &AtomicUsize,
    checks: impl std::future::Future<Output = T>,
) -> T {
    let stop = AtomicBool::new(false);
    let checks = async {
        let out = checks.await;
        stop.store(true, Ordering::Relaxed);
        out
    };
    let ((), out) = tokio::join!(traffic(stack, gateway, &stop, posted), checks);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_follows_the_pipeline_live_and_across_a_restart() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let writer = stack.start_writer().await;
    let query = stack.spawn_query_process().await;
    let listen = query.listen();
    let dashboard = format!("{}/dashboard", query.url());
    // `/` is where an operator lands.
    let landing = stack
        .http
        .get(query.url())
        .send()
        .await
        .expect("query-service answers");
    assert_eq!(landing.url().path(), "/dashboard");
    assert!(landing
        .headers()
        .get("content-type")
        .is_some_and(|t| t.to_str().unwrap_or_default().starts_with("text/html")));

    let mut browser = Browser::launch(WIDTH, HEIGHT)
        .await
        .expect("chromium starts");
    browser.navigate(&dashboard).await.expect("the page loads");

    // Before any traffic: live, both shards up, one writer holding all 12 partitions, both
    // lanes listed, nothing stored yet.
    let before = page_until(&mut browser, "the first sample", |p| {
        p["state"] == "live"
            && p["shards"].as_array().is_some_and(|s| s.len() == 2)
            && p["writers"]
                .as_array()
                .is_some_and(|w| w.len() == 1 && w[0]["partitions"] == 12)
            && p["lanes"].as_array().is_some_and(|l| l.len() == 2)
            && p["partitions"].as_array().is_some_and(|p| p.len() == 12)
    })
    .await;
    assert!(before["last_update"]
        .as_str()
        .is_some_and(|t| t.starts_with("Last update")));
    assert!(before["shards"]
        .as_array()
        .is_some_and(|s| s.iter().all(|s| s["up"] == true)));
    assert_eq!(rows_stored(&before), 0.0, "{before:#}");
    assert!(!before["banner"].as_bool().unwrap_or(true));
    // Each partition names the writer holding it; no alarm while one holds them all.
    let writer_id = before["writers"][0]["client_id"]
        .as_str()
        .unwrap_or_default();
    assert!(!writer_id.is_empty(), "{before:#}");
    assert!(
        before["partitions"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["held_by"] == writer_id
                && p["held_text"]
                    .as_str()
                    .is_some_and(|t| writer_id.ends_with(t.trim_start_matches('…'))))),
        "{before:#}"
    );
    assert!(
        before["no_writer"].is_null() && before["unheld"].is_null(),
        "{before:#}"
    );
    let batches_before = batch_ids(&before).len();
    let offsets_before = end_offsets(&before);

    // Traffic through both lanes: the rates rise in the numbers and the chart, batches land
    // in the list, shards count rows, partitions grow; a few reads show in the query tile.
    let posted = AtomicUsize::new(0);
    let live = with_traffic(&stack, &gateway, &posted, async {
        for _ in 0..5 {
            let answer = stack
                .http
                .get(format!("{}/events?clientId=dash-1", query.url()))
                .send()
                .await
                .expect("GET /events");
            assert_eq!(answer.status(), 200);
        }
        // Several seconds of both lanes in the chart, not a single blip.
        let shown = page_until(
            &mut browser,
            "both lanes' ingest, stored rows and batches",
            |p| {
                lane_rate(p, "normal") > 0.0
                    && lane_rate(p, "critical") > 0.0
                    && p["charts"]["ingest"]["nonzero"].as_u64().unwrap_or(0) >= 8
                    && p["charts"]["shards"]["max"].as_f64().unwrap_or(0.0) > 0.0
                    && p["shards"]
                        .as_array()
                        .is_some_and(|s| s.iter().all(|s| f(&s["rows_stored"]) > 0.0))
                    && batch_ids(p).len() >= batches_before + 3
                    && end_offsets(p) > offsets_before
                    && f(&p["query_rate"]) > 0.0
            },
        )
        .await;
        // While events still flow: what an operator sees of a busy pipeline.
        browser
            .screenshot(&screenshot_path("dashboard.png"))
            .await
            .expect("screenshot");
        shown
    })
    .await;
    let ids = batch_ids(&live);
    assert!(unique(&ids), "a batch listed twice: {ids:?}");
    assert!(live["charts"]["ingest"]["lines"].as_u64().unwrap_or(0) >= 2);
    assert!(live["charts"]["depth"]["points"].as_u64().unwrap_or(0) > 0);
    assert!(live["charts"]["age"]["points"].as_u64().unwrap_or(0) > 0);
    // Every stored row is in a listed batch (the list holds them all at this size).
    let posted_now = posted.load(Ordering::Relaxed) as f64;
    let settled = page_until(&mut browser, "every posted event stored", |p| {
        rows_stored(p) == posted_now
    })
    .await;
    let listed_rows: f64 = settled["batches"]
        .as_array()
        .map_or(0.0, |b| b.iter().map(|b| f(&b["rows"])).sum());
    assert_eq!(listed_rows, posted_now, "{settled:#}");

    // The service goes away: the page says so at once, keeps and greys the last figures.
    let last_seen = f(&settled["at_ms"]);
    query.kill().await;
    let gone = page_until(&mut browser, "the disconnected state", |p| {
        p["state"] == "disconnected" && p["banner"] == true && p["greyed"] == true
    })
    .await;
    assert!(gone["status_text"]
        .as_str()
        .is_some_and(|t| t.contains("Disconnected") && t.contains("reconnecting")));
    assert!(f(&gone["at_ms"]) >= last_seen);
    assert_eq!(rows_stored(&gone), posted_now, "the last figures stay");
    assert_eq!(batch_ids(&gone), batch_ids(&settled));
    browser
        .screenshot(&screenshot_path("dashboard-reconnecting.png"))
        .await
        .expect("screenshot");

    // It comes back on the same address: the page reconnects by itself, its charts keep the
    // samples from before, and new traffic shows again, without listing a batch twice.
    let query = stack.spawn_query_process_on(listen).await;
    let gone_at = f(&gone["at_ms"]);
    let points_before = gone["charts"]["depth"]["points"].as_u64().unwrap_or(0);
    let back = with_traffic(&stack, &gateway, &posted, async {
        page_until(&mut browser, "live again with new batches", |p| {
            p["state"] == "live"
                && p["connects"].as_u64().unwrap_or(0) >= 2
                && f(&p["at_ms"]) > gone_at
                && p["banner"] == false
                && lane_rate(p, "normal") > 0.0
                && batch_ids(p).len() > ids.len()
        })
        .await
    })
    .await;
    let ids_after = batch_ids(&back);
    assert!(unique(&ids_after), "a batch listed twice: {ids_after:?}");
    // The page keeps the latest 200; the newest from before the restart are still there.
    assert!(
        ids.iter().take(50).all(|id| ids_after.contains(id)),
        "batches from before the restart stay listed"
    );
    assert!(
        back["charts"]["depth"]["points"].as_u64().unwrap_or(0) > points_before,
        "the charts go on from where they were"
    );

    // A network blip with the service up (a relay between page and service cuts every
    // connection): the page is sent `history` and `batches` again, overlapping what it has,
    // and still lists every batch and charts every sample once.
    let relay = Relay::start(query.listen()).await;
    browser
        .navigate(&format!("http://{}/dashboard", relay.addr))
        .await
        .expect("the page loads through the relay");
    let first = with_traffic(&stack, &gateway, &posted, async {
        page_until(&mut browser, "batches through the relay", |p| {
            p["state"] == "live" && batch_ids(p).len() >= 3
        })
        .await
    })
    .await;
    relay.cut();
    let connects = first["connects"].as_u64().unwrap_or(0);
    let after_blip = page_until(&mut browser, "live again after the blip", |p| {
        p["state"] == "live" && p["connects"].as_u64().unwrap_or(0) > connects
    })
    .await;
    let ids_blip = batch_ids(&after_blip);
    assert!(unique(&ids_blip), "a batch listed twice: {ids_blip:?}");
    println!(
        "{} events posted; batches listed: {} before the restart, {} after, {} after the blip",
        posted.load(Ordering::Relaxed),
        ids.len(),
        ids_after.len(),
        ids_blip.len()
    );
    assert!(batch_ids(&first).iter().all(|id| ids_blip.contains(id)));
    let xs: Vec<f64> = after_blip["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(f)
        .collect();
    assert!(
        xs.windows(2).all(|w| w[0] < w[1]),
        "samples charted once each, in time order: {xs:?}"
    );

    // The only writer stops: the page says that nothing is being stored, and every partition
    // is marked as held by no writer.
    writer.cancel();
    let unheld = page_until(&mut browser, "no writer holding any partition", |p| {
        p["no_writer"]
            .as_str()
            .is_some_and(|t| t.contains("nothing is being stored"))
            && p["writers"].as_array().is_some_and(|w| w.is_empty())
            && p["partitions"].as_array().is_some_and(|p| {
                p.len() == 12
                    && p.iter()
                        .all(|p| p["held_by"] == "" && p["held_text"] == "NONE")
            })
    })
    .await;
    assert_eq!(unheld["state"], "live", "{unheld:#}");
    // What the alert rule reads (EventpipePartitionsWithoutWriter).
    assert_eq!(
        stack
            .metric(query.url(), "eventpipe_partitions_without_writer")
            .await,
        12.0
    );
    browser
        .screenshot(&screenshot_path("dashboard-no-writer.png"))
        .await
        .expect("screenshot");
    assert!(stack.service_failures().is_empty());
    drop(query);
}

/// Some partitions held, one not: a partition added to the normal lane that the only writer
/// has not seen yet (it refreshes topic metadata every ten minutes here). The page marks that
/// one NONE and names it in red under the writers; every other partition keeps its writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_no_writer_holds_is_marked_among_held_ones() {
    let stack = Stack::new().await;
    let mut settings = stack.writer_settings();
    settings.kafka.metadata_refresh = Duration::from_secs(600);
    let _writer = stack.start_writer_with(settings).await;
    let query = stack.spawn_query_process().await;
    let mut browser = Browser::launch(WIDTH, HEIGHT)
        .await
        .expect("chromium starts");
    browser
        .navigate(&format!("{}/dashboard", query.url()))
        .await
        .expect("the page loads");
    let held = page_until(&mut browser, "one writer holding every partition", |p| {
        p["writers"]
            .as_array()
            .is_some_and(|w| w.len() == 1 && w[0]["partitions"] == 12)
            && p["partitions"].as_array().is_some_and(|p| p.len() == 12)
    })
    .await;
    let writer_id = held["writers"][0]["client_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let normal = held["partitions"].as_array().map_or(0, |p| {
        p.iter()
            .filter(|p| p["topic"] == stack.topic.as_str())
            .count()
    });

    stack.kafka.add_partitions(&stack.topic, normal + 1).await;
    let partial = page_until(&mut browser, "the added partition marked NONE", |p| {
        p["partitions"].as_array().is_some_and(|p| p.len() == 13) && p["unheld"].is_string()
    })
    .await;
    let (unheld, others): (Vec<&Value>, Vec<&Value>) = partial["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .partition(|p| p["topic"] == stack.topic.as_str() && p["partition"] == normal);
    assert_eq!(unheld.len(), 1, "{partial:#}");
    assert_eq!(unheld[0]["held_text"], "NONE", "{partial:#}");
    assert_eq!(unheld[0]["held_by"], "", "{partial:#}");
    assert!(
        others.iter().all(|p| p["held_by"] == writer_id.as_str()),
        "the other partitions keep their writer: {partial:#}"
    );
    let line = partial["unheld"].as_str().unwrap_or_default();
    assert!(
        line.contains(&format!("normal: {normal}")) && line.contains("not being stored"),
        "the red line names the partition: {line}"
    );
    assert!(partial["no_writer"].is_null(), "{partial:#}");
    browser
        .screenshot(&screenshot_path("dashboard-partial.png"))
        .await
        .expect("screenshot");
    assert!(stack.service_failures().is_empty());
}

/// A TCP relay to a service whose connections the test cuts at once while the service stays
/// up: a network blip as a browser sees it.
struct Relay {
    addr: SocketAddr,
    cuts: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay address");
        let (cuts, watching) = watch::channel(0);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watching.clone();
                cut.mark_unchanged();
                // Each connection lives until either side closes it or the next cut.
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { addr, cuts, accept }
    }

    /// Drops every connection open now; new ones are relayed again.
    fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
