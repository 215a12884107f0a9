//! How every Kafka client of the pipeline reaches the brokers: TLS, SASL, and the librdkafka
//! properties an operator may add. Each service carries one [`KafkaSecurity`] as
//! `kafka.security`; [`KafkaSecurity::client_config`] turns it into the `ClientConfig` every
//! producer, consumer and observer of that service starts from, so no client can be built
//! without the credentials, and no pass-through property can loosen what the pipeline's
//! guarantees rest on (those are refused at start).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use rdkafka::{
    client::ClientContext,
    config::{ClientConfig, RDKafkaLogLevel},
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::{KafkaError, RDKafkaErrorCode},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `security.protocol` of librdkafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication (the local development stack).
    #[default]
    Plaintext,
    /// TLS; the client may authenticate with a certificate.
    Ssl,
    /// SASL authentication over an unencrypted connection (the password itself is hashed with
    /// SCRAM, everything else travels in the clear).
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    fn librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// `sasl.mechanism` of librdkafka: the ones it implements with OpenSSL alone (no Cyrus SASL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// The password travels as it is: only over `sasl_ssl`.
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    fn librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::Plain => "PLAIN",
        }
    }
}

/// TLS and SASL settings of a service's Kafka clients (`kafka.security`). Every client the
/// service builds (producers, consumers, the lag observers) uses the same.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`. Default `plaintext`.
    pub security_protocol: SecurityProtocol,
    /// `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`; used with the `sasl_*` protocols.
    /// Default `SCRAM-SHA-512`.
    pub sasl_mechanism: SaslMechanism,
    /// SASL user; required with the `sasl_*` protocols. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    /// SASL password. Shown as `***` by `--print-config`; prefer `sasl_password_file`.
    /// Default none.
    #[serde(serialize_with = "redacted", skip_serializing_if = "Option::is_none")]
    pub sasl_password: Option<SecretString>,
    /// File holding the SASL password (a mounted Kubernetes secret, say), read at start;
    /// one trailing newline is ignored. Exclusive with `sasl_password`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sasl_password_file: Option<PathBuf>,
    /// PEM file of the CA(s) that signed the brokers' certificates. Default none: the
    /// system's trust store. The brokers' host names are checked against their certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM client certificate, for brokers that authenticate clients by certificate (mTLS).
    /// Needs `ssl_key_location`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM private key of `ssl_certificate_location`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_key_location: Option<PathBuf>,
    /// Password of an encrypted `ssl_key_location`. Shown as `***`. Default none.
    #[serde(serialize_with = "redacted", skip_serializing_if = "Option::is_none")]
    pub ssl_key_password: Option<SecretString>,
    /// Other librdkafka properties, passed through as they are (e.g.
    /// `"socket.keepalive.enable" = "true"`). Properties the typed settings above or the
    /// pipeline's delivery and commit guarantees own are refused at start. Numbers and
    /// booleans are taken as their text. Default none.
    #[serde(deserialize_with = "property_values")]
    pub properties: BTreeMap<String, String>,
}

/// librdkafka takes every value as text; TOML and the environment also give numbers and
/// booleans (`"linger.ms" = 5`).
fn property_values<'de, D: Deserializer<'de>>(
    input: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Text(String),
        Integer(i64),
        Float(f64),
        Flag(bool),
    }
    let map = BTreeMap::<String, Value>::deserialize(input)?;
    Ok(map
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::Text(t) => t,
                Value::Integer(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Flag(b) => b.to_string(),
            };
            (key, text)
        })
        .collect())
}

fn redacted<S: Serializer>(secret: &Option<SecretString>, out: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => out.serialize_str("***"),
        None => out.serialize_none(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSecurityError {
    #[error("kafka.security.properties: `{key}` cannot be set there: {why}")]
    Reserved { key: String, why: &'static str },
    #[error("kafka.security: {0}")]
    Invalid(String),
    #[error("kafka.security.{setting} {path}: {source}")]
    File {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kafka: the brokers refused authentication ({reason}); check kafka.security.sasl_username and the password")]
    Authentication { reason: String },
    #[error("kafka: TLS with the brokers failed ({reason}); check kafka.security.ssl_ca_location and the brokers' certificates")]
    Tls { reason: String },
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
}

/// Properties the pass-through map may not set, and why.
fn reserved(key: &str) -> Option<&'static str> {
    const TYPED: &str = "use the typed setting (kafka.brokers, kafka.security.*)";
    const PRODUCE: &str = "the gateway's acknowledged-means-durable guarantee and the placement by client id depend on it";
    const CONSUME: &str = "db-writer commits offsets only after the rows are stored, and readers depend on how groups and offsets are set";
    const TUNED: &str =
        "a typed setting of the service sets it (see the service's kafka.* settings)";
    match key {
        "bootstrap.servers"
        | "metadata.broker.list"
        | "security.protocol"
        | "sasl.mechanism"
        | "sasl.mechanisms"
        | "sasl.username"
        | "sasl.password"
        | "ssl.ca.location"
        | "ssl.certificate.location"
        | "ssl.key.location"
        | "ssl.key.password" => Some(TYPED),
        "enable.idempotence"
        | "acks"
        | "request.required.acks"
        | "enable.gapless.guarantee"
        | "max.in.flight.requests.per.connection"
        | "max.in.flight"
        | "retries"
        | "message.send.max.retries"
        | "transactional.id"
        | "partitioner"
        | "message.timeout.ms"
        | "delivery.timeout.ms" => Some(PRODUCE),
        "group.id"
        | "group.instance.id"
        | "group.protocol"
        | "enable.auto.commit"
        | "enable.auto.offset.store"
        | "auto.offset.reset"
        | "isolation.level"
        | "partition.assignment.strategy"
        | "enable.partition.eof" => Some(CONSUME),
        "compression.type"
        | "compression.codec"
        | "linger.ms"
        | "queue.buffering.max.ms"
        | "queue.buffering.max.messages"
        | "queue.buffering.max.kbytes"
        | "request.timeout.ms"
        | "session.timeout.ms"
        | "topic.metadata.refresh.interval.ms" => Some(TUNED),
        _ => None,
    }
}

impl KafkaSecurity {
    /// Refuses settings that cannot work or that would loosen a guarantee; reads nothing.
    pub fn check(&self) -> Result<(), KafkaSecurityError> {
        for key in self.properties.keys() {
            let normalized = key.trim().to_ascii_lowercase();
            if let Some(why) = reserved(&normalized) {
                return Err(KafkaSecurityError::Reserved {
                    key: key.clone(),
                    why,
                });
            }
        }
        let protocol = self.security_protocol;
        let invalid = |why: &str| Err(KafkaSecurityError::Invalid(why.to_owned()));
        if protocol.sasl() {
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                return invalid("sasl_username is required with a sasl_* security_protocol");
            }
            match (&self.sasl_password, &self.sasl_password_file) {
                (None, None) => {
                    return invalid(
                        "sasl_password or sasl_password_file is required with a sasl_* security_protocol",
                    )
                }
                (Some(_), Some(_)) => {
                    return invalid("set sasl_password or sasl_password_file, not both")
                }
                _ => {}
            }
            if self.sasl_mechanism == SaslMechanism::Plain && !protocol.tls() {
                return invalid(
                    "sasl_mechanism PLAIN sends the password as it is: use security_protocol sasl_ssl",
                );
            }
        } else if self.sasl_username.is_some()
            || self.sasl_password.is_some()
            || self.sasl_password_file.is_some()
        {
            return invalid(
                "SASL credentials are set but security_protocol is not sasl_ssl or sasl_plaintext: they would not be used",
            );
        }
        let tls_files = self.ssl_ca_location.is_some()
            || self.ssl_certificate_location.is_some()
            || self.ssl_key_location.is_some();
        if tls_files && !protocol.tls() {
            return invalid(
                "ssl_* files are set but security_protocol is not ssl or sasl_ssl: they would not be used",
            );
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return invalid("ssl_certificate_location and ssl_key_location go together");
        }
        Ok(())
    }

    /// The configuration every Kafka client of a service starts from: the brokers, TLS, SASL
    /// and the pass-through properties. Clients set their own properties on top of it. Reads
    /// the password file, so call it at start: a missing file then stops the service.
    pub fn client_config(&self, brokers: &str) -> Result<ClientConfig, KafkaSecurityError> {
        self.check()?;
        let mut config = ClientConfig::new();
        for (key, value) in &self.properties {
            config.set(key.trim(), value);
        }
        config.set("bootstrap.servers", brokers);
        let protocol = self.security_protocol;
        config.set("security.protocol", protocol.librdkafka());
        if protocol.sasl() {
            config.set("sasl.mechanism", self.sasl_mechanism.librdkafka());
            config.set("sasl.username", self.sasl_username.as_deref().unwrap_or(""));
            let password = match (&self.sasl_password, &self.sasl_password_file) {
                (Some(password), _) => password.clone(),
                (None, Some(file)) => read_secret("sasl_password_file", file)?,
                (None, None) => SecretString::from(""),
            };
            config.set("sasl.password", password.expose_secret());
        }
        if protocol.tls() {
            for (setting, property, path) in [
                ("ssl_ca_location", "ssl.ca.location", &self.ssl_ca_location),
                (
                    "ssl_certificate_location",
                    "ssl.certificate.location",
                    &self.ssl_certificate_location,
                ),
                (
                    "ssl_key_location",
                    "ssl.key.location",
                    &self.ssl_key_location,
                ),
            ] {
                if let Some(path) = path {
                    readable(setting, path)?;
                    config.set(property, path.to_string_lossy());
                }
            }
            if let Some(password) = &self.ssl_key_password {
                config.set("ssl.key.password", password.expose_secret());
            }
        }
        Ok(config)
    }
}

/// How long a service's start waits for the brokers to accept or refuse its credentials.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);

impl KafkaSecurity {
    /// [`client_config`](Self::client_config), then [`probe`] with it: what a service calls
    /// once at start, so wrong credentials stop it with an error naming them.
    pub async fn checked_client_config(
        &self,
        brokers: &str,
    ) -> Result<ClientConfig, KafkaSecurityError> {
        let config = self.client_config(brokers)?;
        let probing = config.clone();
        tokio::task::spawn_blocking(move || probe(&probing, PROBE_DEADLINE))
            .await
            .map_err(|_| KafkaSecurityError::Client(KafkaError::Canceled))??;
        Ok(config)
    }
}

/// A secret from a file: the whole content but one trailing newline.
pub fn read_secret(setting: &'static str, path: &Path) -> Result<SecretString, KafkaSecurityError> {
    let text = std::fs::read_to_string(path).map_err(|source| KafkaSecurityError::File {
        setting,
        path: path.to_owned(),
        source,
    })?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    Ok(SecretString::from(text))
}

fn readable(setting: &'static str, path: &Path) -> Result<(), KafkaSecurityError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| KafkaSecurityError::File {
            setting,
            path: path.to_owned(),
            source,
        })
}

/// Records the errors librdkafka reports while the probe connects.
#[derive(Default)]
struct Probe {
    refused: Mutex<Option<KafkaSecurityError>>,
    /// The latest warning or error librdkafka logged: the error events carry only a code, the
    /// log says what the broker or the handshake objected to.
    last_failure: Mutex<Option<String>>,
}

impl ClientContext for Probe {
    fn log(&self, level: RDKafkaLogLevel, _fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            if let Ok(mut last) = self.last_failure.lock() {
                *last = Some(log_message.to_owned());
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let logged = self.last_failure.lock().ok().and_then(|l| l.clone());
        let reason = match (reason.is_empty(), logged) {
            (false, _) => reason.to_owned(),
            (true, Some(logged)) => logged,
            (true, None) => error.to_string(),
        };
        let refused = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => KafkaSecurityError::Authentication { reason },
            Some(RDKafkaErrorCode::SSL) => KafkaSecurityError::Tls { reason },
            _ => return,
        };
        if let Ok(mut slot) = self.refused.lock() {
            slot.get_or_insert(refused);
        }
    }
}

impl ConsumerContext for Probe {}

/// With TLS or SASL configured, connects once to the brokers and fails if they refuse the
/// credentials or the TLS handshake fails: librdkafka would otherwise retry such a client
/// forever and the service would only look "not ready". Brokers that do not answer within
/// `deadline` are not an error (a service may start before Kafka). Blocks: run it off the
/// async runtime.
pub fn probe(config: &ClientConfig, deadline: Duration) -> Result<(), KafkaSecurityError> {
    let protocol = config.get("security.protocol").unwrap_or("plaintext");
    if protocol == "plaintext" {
        return Ok(());
    }
    let mut config = config.clone();
    config.set("group.id", "eventpipe-security-probe");
    let consumer: BaseConsumer<Probe> = config.create_with_context(Probe::default())?;
    let until = Instant::now() + deadline;
    loop {
        let answered = consumer
            .fetch_metadata(None, Duration::from_millis(500))
            .is_ok();
        // Errors reach the context only through the consumer's queue.
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            consumer.context().error(e, "");
        }
        if let Ok(mut refused) = consumer.context().refused.lock() {
            if let Some(refused) = refused.take() {
                return Err(refused);
            }
        }
        if answered || Instant::now() >= until {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl() -> KafkaSecurity {
        KafkaSecurity {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_username: Some("pipeline".into()),
            sasl_password: Some("s3cret".into()),
            ..KafkaSecurity::default()
        }
    }

    #[test]
    fn plaintext_by_default() {
        let config = KafkaSecurity::default()
            .client_config("k:9092")
            .expect("config");
        assert_eq!(config.get("bootstrap.servers"), Some("k:9092"));
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.password"), None);
    }

    #[test]
    fn sasl_ssl_sets_the_credentials() {
        let config = sasl().client_config("k:9093").expect("config");
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("pipeline"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
    }

    #[test]
    fn the_password_comes_from_a_file_without_its_newline() {
        let file = std::env::temp_dir().join(format!("sasl-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").expect("write");
        let security = KafkaSecurity {
            sasl_password: None,
            sasl_password_file: Some(file.clone()),
            ..sasl()
        };
        let config = security.client_config("k:9093").expect("config");
        std::fs::remove_file(&file).expect("remove");
        assert_eq!(config.get("sasl.password"), Some("from-file"));
        let missing = security.client_config("k:9093").expect_err("file gone");
        assert!(
            missing.to_string().contains("sasl_password_file"),
            "{missing}"
        );
    }

    #[test]
    fn guarantees_cannot_be_overridden() {
        for key in ["enable.idempotence", "acks", "enable.auto.commit", " ACKS "] {
            let security = KafkaSecurity {
                properties: [(key.to_owned(), "false".to_owned())].into(),
                ..KafkaSecurity::default()
            };
            let err = security.client_config("k:9092").expect_err(key);
            assert!(
                matches!(err, KafkaSecurityError::Reserved { .. }) && err.to_string().contains(key),
                "{err}"
            );
        }
        let security = KafkaSecurity {
            properties: [("socket.keepalive.enable".to_owned(), "true".to_owned())].into(),
            ..KafkaSecurity::default()
        };
        let config = security.client_config("k:9092").expect("allowed");
        assert_eq!(config.get("socket.keepalive.enable"), Some("true"));
    }

    #[test]
    fn incomplete_or_unused_credentials_are_refused() {
        let no_user = KafkaSecurity {
            sasl_username: None,
            ..sasl()
        };
        assert!(no_user.check().is_err());
        let unused = KafkaSecurity {
            security_protocol: SecurityProtocol::Ssl,
            ..sasl()
        };
        assert!(unused.check().is_err());
        let plain_in_clear = KafkaSecurity {
            security_protocol: SecurityProtocol::SaslPlaintext,
            sasl_mechanism: SaslMechanism::Plain,
            ..sasl()
        };
        assert!(plain_in_clear.check().is_err());
    }

    #[test]
    fn properties_from_toml_take_numbers_and_flags_as_text() {
        let security: KafkaSecurity = toml::from_str(
            "[properties]\n\"socket.keepalive.enable\" = true\n\"reconnect.backoff.ms\" = 250\n\"client.rack\" = \"a\"\n",
        )
        .expect("parses");
        assert_eq!(security.properties["socket.keepalive.enable"], "true");
        assert_eq!(security.properties["reconnect.backoff.ms"], "250");
        assert_eq!(security.properties["client.rack"], "a");
    }

    #[test]
    fn rendered_settings_never_show_the_password() {
        let text = crate::config::render(&sasl());
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains(r#"sasl_password = "***""#), "{text}");
        let debug = format!("{:?}", sasl());
        assert!(!debug.contains("s3cret"), "{debug}");
    }
}
