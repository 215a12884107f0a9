//! The whole of a service binary's `main`: flags, configuration, logging, signals, run.

use std::future::Future;

use anyhow::Context;
use clap::{Args, Command, FromArgMatches};
use serde::{de::DeserializeOwned, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigArgs};

/// What a binary says about itself.
pub struct Service {
    pub name: &'static str,
    pub about: &'static str,
    pub version: &'static str,
    /// Prefix of its environment variables, e.g. `GATEWAY_`.
    pub env_prefix: &'static str,
}

/// Parses the flags, loads the settings (`--print-config` prints them and returns), starts
/// logging, and runs the service until SIGINT or SIGTERM.
pub async fn launch<S, F, Fut, E>(service: Service, run: F) -> anyhow::Result<()>
where
    S: Serialize + DeserializeOwned + Default,
    F: FnOnce(S, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    // The about text goes on last: the flags' own doc comment would replace it otherwise.
    let command = ConfigArgs::augment_args(Command::new(service.name))
        .about(service.about)
        .version(service.version);
    let flags = ConfigArgs::from_arg_matches(&command.get_matches())?;
    let settings: S = config::load(service.env_prefix, &flags).context("loading configuration")?;
    if flags.print_config {
        print!("{}", config::redact_credentials(&config::render(&settings)));
        return Ok(());
    }
    crate::telemetry::init();
    crate::metrics::register_process_metrics();
    run(settings, crate::shutdown::on_signal())
        .await
        .with_context(|| format!("{} failed", service.name))
}
