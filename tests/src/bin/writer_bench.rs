//! db-writer's storage throughput: rows/s per insert method and batch size, writing both
//! shards concurrently and several batches at once, as db-writer does, without Kafka. Uses
//! the local shards (deploy/local/up), in a scratch database it drops afterwards. Prints a
//! table and appends it to a results file.

use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use event_store::{InsertMethod, KafkaPosition, RowOutcome, ShardSet, StoreSettings, StoredEvent};
use futures::{future::try_join_all, stream, StreamExt};
use pipeline_tests::bench::{Outcome, Output, Target};
use schemas::{Event, Priority};
use tokio_postgres::NoTls;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "db-writer's storage throughput per insert method and batch size")]
struct Args {
    /// Events written per (method, batch size) run.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Batch sizes to try.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    batches: Vec<usize>,
    /// Shard ports (as deploy/local's PIPELINE_PG_PORTS).
    #[arg(long, env = "PIPELINE_PG_PORTS", default_value = "5433 5434")]
    ports: String,
    /// Who chose the ids: `gateway` (fresh UUIDv7s, stored on the partitioned key alone) and
    /// `producer` (devices' own ids, each also kept in the `event_ids` guard).
    #[arg(long, value_delimiter = ',', default_value = "gateway,producer")]
    ids: Vec<String>,
    /// Insert methods to try.
    #[arg(long, value_delimiter = ',', default_value = "direct_copy,copy,unnest")]
    methods: Vec<String>,
    /// Batches written at once, each to every shard, the next taken as the oldest ends, as
    /// db-writer's lanes write up to `max_in_flight_batches` (default 4); 1 writes one batch at
    /// a time (this benchmark until 2026-12-07).
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Target: rows/s at least this, for every run.
    #[arg(long)]
    min_rows_per_s: Option<f64>,
    #[command(flatten)]
    output: Output,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let database = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..8]);
    let admins: Vec<String> = args
        .ports
        .split_whitespace()
        .map(|p| format!("postgres://postgres@127.0.0.1:{p}/postgres"))
        .collect();
    for admin in &admins {
        execute(admin, &format!("CREATE DATABASE {database}")).await?;
    }
    let settings = StoreSettings {
        shards: args
            .ports
            .split_whitespace()
            .map(|p| format!("postgres://postgres@127.0.0.1:{p}/{database}"))
            .collect(),
        ..StoreSettings::default()
    };
    let shards = ShardSet::connect(&settings)
        .await
        .context("connect shards")?;
    // Today's partition exists, as db-writer makes it at start.
    for shard in shards.shards() {
        shard
            .maintain_partitions(
                &event_store::PartitionSettings::default(),
                time::OffsetDateTime::now_utc(),
            )
            .await?;
    }
    let methods = args
        .methods
        .iter()
        .map(|m| m.parse::<InsertMethod>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let events = generate(args.events);
    let mut outcomes = Vec::new();
    let bytes: usize = events.iter().map(|e| e.event.payload.len() + 100).sum();

    let mut report = format!(
        "db-writer insert benchmark: {} events of ~{} bytes, {} shards written concurrently, {} batch(es) at once, UUIDv7 ids, day-partitioned table\n{:<9} {:<11} {:>7} {:>12} {:>10}\n",
        args.events,
        bytes / args.events.max(1),
        shards.shards().len(),
        args.in_flight.max(1),
        "ids",
        "method",
        "batch",
        "rows/s",
        "seconds"
    );
    print!("{report}");
    // Methods alternate within each batch size so that WAL and checkpoint load, which grow
    // over the run, fall on both alike.
    for batch in &args.batches {
        for (ids, method) in args
            .ids
            .iter()
            .flat_map(|ids| methods.iter().map(|method| (ids.clone(), *method)))
        {
            let assigned = ids != "producer";
            for shard in shards.shards() {
                shard.truncate_for_benchmark().await?;
            }
            let started = Instant::now();
            let per_shard = |chunk: &[StoredEvent]| {
                let mut per_shard = vec![Vec::new(); shards.shards().len()];
                for e in chunk {
                    let mut e = e.clone();
                    e.id_assigned = assigned;
                    per_shard[shards.router().shard_for(&e.event.client_id)].push(e);
                }
                per_shard
            };
            let shards = &shards;
            let write = move |rows: Vec<Vec<StoredEvent>>| async move {
                try_join_all(
                    shards
                        .shards()
                        .iter()
                        .zip(&rows)
                        .map(|(shard, rows)| shard.insert_events(rows, method)),
                )
                .await
            };
            // Each batch is split as it is taken, as db-writer routes a batch it starts.
            let mut writes = stream::iter(events.chunks(*batch))
                .map(|chunk| write(per_shard(chunk)))
                .buffered(args.in_flight.max(1));
            let mut inserted = 0;
            while let Some(written) = writes.next().await {
                inserted += written?
                    .iter()
                    .flatten()
                    .filter(|row| matches!(row, RowOutcome::Inserted))
                    .count();
            }
            let seconds = started.elapsed().as_secs_f64();
            // A rate of rows that were not all stored would be no rate.
            anyhow::ensure!(
                inserted == args.events,
                "{inserted} of {} rows inserted ({ids}, {}, batch {batch})",
                args.events,
                method.as_str()
            );
            let line = format!(
                "{:<9} {:<11} {:>7} {:>12.0} {:>10.2}\n",
                ids,
                method.as_str(),
                batch,
                args.events as f64 / seconds,
                seconds
            );
            print!("{line}");
            report.push_str(&line);
            let shards_written = shards.shards().len();
            let outcome = Outcome::new(
                &format!(
                    "store into {shards_written} shard{}",
                    if shards_written == 1 { "" } else { "s" }
                ),
                &format!("{ids} ids, {}, batch {batch}", method.as_str()),
                args.events as f64 / seconds,
                "rows/s",
            );
            outcomes.push(outcome.target_if(args.min_rows_per_s.map(Target::AtLeast)));
        }
    }
    drop(shards);
    for admin in &admins {
        execute(admin, &format!("DROP DATABASE {database} WITH (FORCE)")).await?;
    }
    args.output.report(env!("CARGO_BIN_NAME"), &report)?;
    args.output.outcomes(&outcomes)?;
    println!(
        "results appended to {}",
        args.output.results_file(env!("CARGO_BIN_NAME")).display()
    );
    Ok(())
}

async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    client.batch_execute(sql).await?;
    Ok(())
}

/// ~320-byte events from 1000 clients with time-ordered ids, like the gateway makes.
fn generate(n: usize) -> Vec<StoredEvent> {
    let base = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64;
    (0..n)
        .map(|i| StoredEvent {
            event: Event {
                event_id: Uuid::now_v7(),
                client_id: format!("device-{}", (i * 7919) % 1000),
                event_type: "reading".into(),
                ts_micros: Some(base + i as i64),
                ingested_at_micros: base + i as i64,
                priority: Priority::Normal,
                payload: format!(
                    r#"{{"seq":{i},"temperature":21.5,"battery":0.87,"pad":"{}"}}"#,
                    "x".repeat(150)
                ),
                sdk: None,
                id_origin: None,
            },
            position: KafkaPosition {
                topic: "events".into(),
                partition: (i % 6) as i32,
                offset: (i / 6) as i64,
            },
            ordered_at_micros: base + i as i64,
            id_assigned: true,
        })
        .collect()
}
