//! db-writer draining a backlog, timed from its first stored row: what the storage-only
//! `writer_bench` leaves out (consuming, decoding, batching, committing). Start it before the
//! db-writer that drains; `tests/bench` stops db-writer, posts the backlog with `loadgen`,
//! then starts this and db-writer again. The writer's start-up is left out: a restarted
//! writer's counters start at zero, and the clock starts at the first row it stored.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pipeline_tests::bench::{watch_rows_stored, Outcome, Output, Target};

#[derive(Parser)]
#[command(about = "Times a restarted db-writer draining a backlog, from its first row")]
struct Args {
    /// db-writer's metrics base URL.
    #[arg(long, default_value = "http://127.0.0.1:9101")]
    writer: String,
    /// Rows of the backlog: the events `loadgen` had acknowledged.
    #[arg(long)]
    rows: u64,
    /// Give up when the writer has not stored them all this long after this program started.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// Target: rows/s at least this.
    #[arg(long)]
    min_rows_per_s: Option<f64>,
    /// The scenario's name in the table.
    #[arg(long, default_value = "db-writer drains a backlog into 2 shards")]
    scenario: String,
    #[command(flatten)]
    output: Output,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rows > 0, "--rows must be at least 1");
    let http = reqwest::Client::new();
    let stored = watch_rows_stored(&http, &args.writer, 0.0, args.rows, args.deadline, true)
        .await
        .context("waiting for db-writer to drain the backlog")?;
    let seconds = (stored.done - stored.first).as_secs_f64();
    // The first and last rows seen in the same 50 ms poll: a backlog too small to time.
    anyhow::ensure!(
        seconds > 0.0,
        "db-writer stored all {} rows between two polls: too few to time",
        args.rows
    );
    let rate = args.rows as f64 / seconds;
    let report = format!(
        "db-writer stored a backlog of {} events into its shards in {seconds:.2} s from its \
         first row: {rate:.0} rows/s",
        args.rows
    );
    println!("{report}");
    args.output.report(env!("CARGO_BIN_NAME"), &report)?;
    args.output.outcomes(&[Outcome::new(
        &args.scenario,
        "from its first row, Kafka included",
        rate,
        "rows/s",
    )
    .target_if(args.min_rows_per_s.map(Target::AtLeast))])?;
    Ok(())
}
