//! Layered configuration. Precedence, lowest to highest:
//!
//! 1. the defaults of the service's settings type (`Default`),
//! 2. a TOML file: `--config FILE`, or the file named by `<PREFIX>CONFIG`,
//! 3. environment variables `<PREFIX><SECTION>__<KEY>` (for example `DB_WRITER_BATCH__MAX_ROWS=5000`),
//! 4. command-line overrides `--set section.key=value`, repeatable.
//!
//! Unknown keys are errors (settings types use `deny_unknown_fields`), so a typo is reported
//! at start instead of silently running with a default.

use std::path::PathBuf;

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{de::DeserializeOwned, Serialize};

/// Command-line flags shared by every service binary.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. `--set kafka.brokers=127.0.0.1:9092`. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid override {0:?}: expected KEY=VALUE")]
    Override(String),
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error(transparent)]
    Figment(#[from] Box<figment::Error>),
}

/// Loads `T` from the layers above. `env_prefix` is e.g. `"GATEWAY_"`.
pub fn load<T>(env_prefix: &str, args: &ConfigArgs) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    let file = args
        .config
        .clone()
        .or_else(|| std::env::var_os(format!("{env_prefix}CONFIG")).map(PathBuf::from));
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError::MissingFile(file));
        }
        figment = figment.merge(Toml::file(file));
    }
    figment = figment.merge(Env::prefixed(env_prefix).ignore(&["CONFIG"]).split("__"));
    for entry in &args.overrides {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::Override(entry.clone()))?;
        let value: figment::value::Value = value
            .parse()
            .map_err(|_| ConfigError::Override(entry.clone()))?;
        figment = figment.merge(Serialized::default(key.trim(), value));
    }
    figment
        .extract()
        .map_err(|e| ConfigError::Figment(Box::new(e)))
}

/// Renders settings as TOML for `--print-config`.
pub fn render<T: Serialize>(settings: &T) -> String {
    toml::to_string_pretty(settings).unwrap_or_else(|e| format!("# cannot render: {e}"))
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        name: String,
        kafka: Kafka,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Kafka {
        brokers: String,
        partitions: u32,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                name: "svc".into(),
                kafka: Kafka::default(),
            }
        }
    }

    impl Default for Kafka {
        fn default() -> Self {
            Kafka {
                brokers: "localhost:9092".into(),
                partitions: 6,
                timeout: Duration::from_secs(5),
            }
        }
    }

    #[test]
    fn layers_file_env_and_overrides_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "svc.toml",
                "name = \"from-file\"\n[kafka]\npartitions = 12\ntimeout = \"2s\"\n",
            )?;
            jail.set_env("TESTSVC_KAFKA__BROKERS", "env:9092");
            jail.set_env("TESTSVC_KAFKA__PARTITIONS", "24");
            let args = ConfigArgs {
                config: Some("svc.toml".into()),
                overrides: vec!["kafka.partitions=48".into()],
                print_config: false,
            };
            let settings: Settings = load("TESTSVC_", &args).map_err(|e| e.to_string())?;
            assert_eq!(settings.name, "from-file");
            assert_eq!(settings.kafka.brokers, "env:9092");
            assert_eq!(settings.kafka.partitions, 48);
            assert_eq!(settings.kafka.timeout, Duration::from_secs(2));
            Ok(())
        });
    }

    #[test]
    fn rejects_unknown_keys_and_missing_files() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[kafka]\nbrokerz = \"x\"\n")?;
            let args = ConfigArgs {
                config: Some("bad.toml".into()),
                ..ConfigArgs::default()
            };
            let err = load::<Settings>("TESTSVC_", &args).unwrap_err().to_string();
            assert!(err.contains("brokerz"), "{err}");
            let args = ConfigArgs {
                config: Some("absent.toml".into()),
                ..ConfigArgs::default()
            };
            assert!(matches!(
                load::<Settings>("TESTSVC_", &args),
                Err(ConfigError::MissingFile(_))
            ));
            Ok(())
        });
    }
}
