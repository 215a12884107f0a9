use anyhow::Context;
use chassis::config::{self, ConfigArgs};
use clap::Parser;
use db_writer::Settings;

/// Persists events from Kafka into the PostgreSQL shards, committing offsets after the rows.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings =
        config::load("DB_WRITER_", &cli.config).context("loading configuration")?;
    if cli.config.print_config {
        print!("{}", config::render(&settings));
        return Ok(());
    }
    chassis::telemetry::init();
    db_writer::run(settings, chassis::shutdown::on_signal())
        .await
        .context("db-writer failed")
}
