//! The tail's CPU per consumed event without Kafka (`query_service::bench`): decode, check,
//! hold, release and evict, single-threaded as the tail runs. Prints ns per event and appends
//! the line to target/bench-results/tail.txt. Run: `cargo bench -p query-service --bench tail`.

use std::{fs::OpenOptions, io::Write, path::PathBuf};

use query_service::bench::{replay, Workload};

// As in the service: the allocator is a large share of this work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::io::Result<()> {
    let workload = Workload {
        events: 1_000_000,
        clients: 10_000,
        partitions: 12,
        drain: 100,
        commit_every: 1_000,
        in_flight: std::env::var("TAIL_BENCH_IN_FLIGHT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3_000),
        payload_bytes: 200,
        // TAIL_BENCH_READ_CLIENTS=all indexes every event as consumed (`cache.index_on_read`
        // off); a number N (default 10) indexes the first N clients only, as reads would.
        read_clients: match std::env::var("TAIL_BENCH_READ_CLIENTS").as_deref() {
            Ok("all") => None,
            Ok(n) => n.parse().ok().or(Some(10)),
            Err(_) => Some(10),
        },
    };
    // A first pass warms the allocator and the caches; the best of five is the figure (the
    // others are printed: a machine shared with other work makes them vary).
    replay(&Workload {
        events: 200_000,
        ..workload.clone()
    });
    let runs: Vec<f64> = (0..5)
        .map(|_| replay(&workload).as_nanos() as f64 / workload.events as f64)
        .collect();
    let best = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let line = format!(
        "{} tail: {best:.0} ns/event (runs {}) events={} clients={} in_flight={} read_clients={}",
        time_stamp(),
        runs.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        workload.events,
        workload.clients,
        workload.in_flight,
        workload
            .read_clients
            .map_or("all".to_string(), |n| n.to_string())
    );
    println!("{line}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results");
    std::fs::create_dir_all(&dir)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tail.txt"))?;
    writeln!(file, "{line}")
}

fn time_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("unix={now}")
}
