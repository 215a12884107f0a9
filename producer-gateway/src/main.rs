use anyhow::Context;
use chassis::config::{self, ConfigArgs};
use clap::Parser;
use producer_gateway::Settings;

/// HTTP ingest for device events: validates, publishes to Kafka, answers after the ack.
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
        config::load("GATEWAY_", &cli.config).context("loading configuration")?;
    if cli.config.print_config {
        print!("{}", config::render(&settings));
        return Ok(());
    }
    chassis::telemetry::init();
    producer_gateway::run(settings, chassis::shutdown::on_signal())
        .await
        .context("producer-gateway failed")
}
