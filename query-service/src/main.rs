use anyhow::Context;
use chassis::config::{self, ConfigArgs};
use clap::Parser;
use query_service::Settings;

/// Serves client histories: persisted events merged with those still in flight.
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
        config::load("QUERY_", &cli.config).context("loading configuration")?;
    if cli.config.print_config {
        print!("{}", config::render(&settings));
        return Ok(());
    }
    chassis::telemetry::init();
    query_service::run(settings, chassis::shutdown::on_signal())
        .await
        .context("query-service failed")
}
