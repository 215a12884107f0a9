//! `eventpipe-admin`: the chores operators otherwise do with hand-written Kafka and SQL.
//!
//! `status` (the pipeline view as a table) · `migrate` (shard migrations without a writer) ·
//! `dlq list` / `dlq replay` (the dead-letter topic) · `shards check` (writer and
//! query-service agree on the shard list, and each database is the shard its position says) ·
//! `partitions list` / `partitions maintain` (the day partitions of `events`).
//!
//! Exit codes: 0 ok, 1 a check failed, 2 usage or connection error.

mod dlq;
mod error;
mod migrate;
mod partitions;
mod replay;
mod services;
mod shards;
mod status;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::error::AdminError;

#[derive(Parser)]
#[command(
    name = "eventpipe-admin",
    version,
    about = "Operate an eventpipe pipeline"
)]
struct Cli {
    /// db-writer's configuration file (its env vars `DB_WRITER_*` apply too): shards, brokers,
    /// topics and group are taken from it.
    #[arg(long, global = true, value_name = "FILE")]
    writer_config: Option<PathBuf>,
    /// query-service's configuration file (env vars `QUERY_*` apply too).
    #[arg(long, global = true, value_name = "FILE")]
    query_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The pipeline view (query-service's GET /pipeline) as tables.
    Status(status::Args),
    /// Applies the shard migrations and stamps each shard's identity, without starting a
    /// writer (for `store.migrate_on_start = false` deployments).
    Migrate(migrate::Args),
    /// The dead-letter topic.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// The shard lists of db-writer and query-service.
    #[command(subcommand)]
    Shards(ShardsCommand),
    /// The day partitions of the shards' events tables.
    #[command(subcommand)]
    Partitions(PartitionsCommand),
}

#[derive(Subcommand)]
enum PartitionsCommand {
    /// Every shard's partitions with their ranges, row estimates and sizes.
    List,
    /// One maintenance pass on every shard with db-writer's `partitions` settings: days
    /// made ahead, days past the retention dropped (and the default partition's rows past it
    /// deleted). Exit 1 if a step had to be postponed (table lock not granted in time).
    Maintain(partitions::MaintainArgs),
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Lists dead letters with their `dlq.*` headers, oldest first.
    List(dlq::ListArgs),
    /// Republishes dead letters to their original topic with their original key, bytes and
    /// headers. Idempotent by event id: a replayed event already stored is stored once.
    Replay(replay::Args),
}

#[derive(Subcommand)]
enum ShardsCommand {
    /// Checks that writer and query-service list the same shards in the same order and that
    /// each database is stamped as the shard its position says.
    Check,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let configs = services::Configs {
        writer: cli.writer_config,
        query: cli.query_config,
    };
    let outcome = match cli.command {
        Command::Status(args) => status::run(&configs, args).await,
        Command::Migrate(args) => migrate::run(&configs, args).await,
        Command::Dlq(DlqCommand::List(args)) => dlq::run(&configs, args).await,
        Command::Dlq(DlqCommand::Replay(args)) => replay::run(&configs, args).await,
        Command::Shards(ShardsCommand::Check) => shards::run(&configs).await,
        Command::Partitions(PartitionsCommand::List) => partitions::list(&configs).await,
        Command::Partitions(PartitionsCommand::Maintain(args)) => {
            partitions::maintain(&configs, args).await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(AdminError::CheckFailed(why)) => {
            eprintln!("check failed: {why}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
