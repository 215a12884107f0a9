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

/// Renders settings as TOML (a configuration file a service can read back).
pub fn render<T: Serialize>(settings: &T) -> String {
    toml::to_string_pretty(settings).unwrap_or_else(|e| format!("# cannot render: {e}"))
}

/// `text` with the password of every `scheme://user:password@host` URL replaced by `***`:
/// what `--print-config` shows, since its output ends up in terminals, tickets and logs.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let (before, after) = rest.split_at(scheme + 3);
        out.push_str(before);
        // The authority ends at the first '/', quote, whitespace or the end.
        let end = after
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority
            .rfind('@')
            .map(|at| (&authority[..at], &authority[at..]))
        {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                    out.push_str(host);
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    #[test]
    fn passwords_in_urls_are_redacted_and_the_rest_kept() {
        let text = r#"shards = [
    "postgres://app:s3cr:et@db-0:5432/events",
    "postgres://postgres@127.0.0.1:5433/events",
]
brokers = "kafka-1:9092"
url = "https://user:pw@example.com"
"#;
        let redacted = super::redact_credentials(text);
        assert!(
            !redacted.contains("s3cr") && !redacted.contains("pw@"),
            "{redacted}"
        );
        assert!(
            redacted.contains(r#""postgres://app:***@db-0:5432/events""#),
            "{redacted}"
        );
        assert!(redacted.contains(r#""postgres://postgres@127.0.0.1:5433/events""#));
        assert!(
            redacted.contains(r#""https://user:***@example.com""#),
            "{redacted}"
        );
        assert!(redacted.contains(r#"brokers = "kafka-1:9092""#));
    }

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
