//! The Kafka and PostgreSQL that `deploy/local/secure up` runs (tests/run starts it): Kafka
//! with a SASL_SSL listener (SCRAM-SHA-512), shards with `ssl = on` and `hostssl`-only
//! access, all certificates signed by a CA generated into its state directory. Ports and
//! directory come from the same variables as the script.

use std::{net::TcpStream, path::PathBuf, time::Duration};

use chassis::kafka_security::{KafkaSecurity, SaslMechanism, SecurityProtocol};

use crate::Links;

/// Where the secure stack runs and the files the services need to reach it.
pub struct SecureStack {
    pub brokers: String,
    pub pg_ports: Vec<u16>,
    /// `<state>/tls`: `ca.pem`, the password files.
    pub tls_dir: PathBuf,
}

impl SecureStack {
    /// The running secure stack; panics with how to start it when it is not up, so its
    /// tests never pass by skipping.
    pub fn local() -> SecureStack {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let state = std::env::var_os("PIPELINE_SECURE_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join(".local/secure"));
        let kafka_port: u16 = std::env::var("PIPELINE_SECURE_KAFKA_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(29092);
        let pg_ports: Vec<u16> = std::env::var("PIPELINE_SECURE_PG_PORTS")
            .unwrap_or_else(|_| "25433 25434".into())
            .split_whitespace()
            .map(|p| p.parse().expect("PIPELINE_SECURE_PG_PORTS: port numbers"))
            .collect();
        let stack = SecureStack {
            brokers: format!("127.0.0.1:{kafka_port}"),
            pg_ports,
            tls_dir: state.join("tls"),
        };
        let not_up = |what: String| -> ! {
            panic!(
                "the secure stack is not up ({what}): start it with `deploy/local/secure up` \
                 (tests/run does), state dir {}",
                state.display()
            )
        };
        for file in ["ca.pem", "kafka-pipeline.password", "pg.password"] {
            if !stack.tls_dir.join(file).exists() {
                not_up(format!("{} missing", stack.tls_dir.join(file).display()));
            }
        }
        for port in std::iter::once(kafka_port).chain(stack.pg_ports.iter().copied()) {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
                not_up(format!("nothing listens on {addr}"));
            }
        }
        stack
    }

    pub fn ca(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }

    /// The services' Kafka security: SASL_SSL as user `pipeline`, the generated CA.
    pub fn kafka_security(&self) -> KafkaSecurity {
        KafkaSecurity {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: SaslMechanism::ScramSha512,
            sasl_username: Some("pipeline".into()),
            sasl_password_file: Some(self.tls_dir.join("kafka-pipeline.password")),
            ssl_ca_location: Some(self.ca()),
            ..KafkaSecurity::default()
        }
    }

    /// SASL_SSL and `sslmode=verify-full` against the generated CA, the shards' password
    /// from its file: how every service of a [`crate::Stack`] on this stack connects.
    pub fn links(&self) -> Links {
        Links {
            kafka: self.kafka_security(),
            pg_host: "127.0.0.1".into(),
            pg_params: "?sslmode=verify-full".into(),
            pg_root_cert: Some(self.ca()),
            pg_password_file: Some(self.tls_dir.join("pg.password")),
            pg_ports: self.pg_ports.clone(),
        }
    }
}
