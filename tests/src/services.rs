use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use event_store::StoreSettings;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::KafkaAdmin;

const PARTITIONS: i32 = 6;
/// How far ahead of the broker's clock an event topic accepts a record's time, as
/// `deploy/local/topics` configures it.
pub const MAX_CLOCK_AHEAD_MS: &str = "2000";

/// One test's private slice of the real infrastructure, and the services started on it.
pub struct Stack {
    pub id: String,
    pub brokers: String,
    pub kafka: KafkaAdmin,
    pub topic: String,
    pub critical_topic: String,
    pub dead_letter_topic: String,
    pub persisted_topic: String,
    pub writer_group: String,
    pub shard_urls: Vec<String>,
    /// How the harness and the services it starts reach Kafka and the shards.
    pub links: Links,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    /// Errors of services this stack runs in-process; a test that ends with any fails.
    failures: Arc<Mutex<Vec<String>>>,
}

/// How the harness and the services of a [`Stack`] reach Kafka and the shards: plaintext on
/// the stack of `deploy/local/up` (the default), TLS and SASL on `deploy/local/secure`'s.
#[derive(Clone)]
pub struct Links {
    /// Every service's `kafka.security`, and the harness's own Kafka clients'.
    pub kafka: chassis::kafka_security::KafkaSecurity,
    /// Host name in the shard URLs (the one their certificates are checked against).
    pub pg_host: String,
    /// Query of every shard URL, e.g. `?sslmode=verify-full`; empty for none.
    pub pg_params: String,
    /// `store.ssl_root_cert` of the services.
    pub pg_root_cert: Option<PathBuf>,
    /// `store.password_file` of the services (the URLs carry no password).
    pub pg_password_file: Option<PathBuf>,
    /// PostgreSQL ports, shard i on the i-th.
    pub pg_ports: Vec<u16>,
}

impl Links {
    /// The plaintext stack: `PIPELINE_PG_PORTS` (default `5433 5434`).
    pub fn plaintext() -> Links {
        let ports = std::env::var("PIPELINE_PG_PORTS").unwrap_or_else(|_| "5433 5434".into());
        Links {
            kafka: Default::default(),
            pg_host: "127.0.0.1".into(),
            pg_params: String::new(),
            pg_root_cert: None,
            pg_password_file: None,
            pg_ports: ports
                .split_whitespace()
                .map(|p| p.parse().expect("PIPELINE_PG_PORTS: port numbers"))
                .collect(),
        }
    }

    /// The base of every Kafka client of the harness.
    pub fn kafka_config(&self, brokers: &str) -> rdkafka::config::ClientConfig {
        self.kafka
            .client_config(brokers)
            .expect("the harness's kafka.security")
    }

    /// Store settings of the services (TLS, password file) for these shard URLs.
    pub fn store(&self, shards: Vec<String>) -> StoreSettings {
        StoreSettings {
            shards,
            ssl_root_cert: self.pg_root_cert.clone(),
            password_file: self.pg_password_file.clone(),
            ..StoreSettings::default()
        }
    }

    /// The URL of database `database` on shard server `port`.
    pub fn shard_url(&self, port: u16, database: &str) -> String {
        format!(
            "postgres://postgres@{}:{port}/{database}{}",
            self.pg_host, self.pg_params
        )
    }

    /// One session to `url` the way the services open theirs.
    pub async fn connect(&self, url: &str) -> tokio_postgres::Client {
        let (client, _connection) = self
            .store(vec![url.to_owned()])
            .connect(0, url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", redact(url)));
        client
    }
}

fn redact(url: &str) -> String {
    chassis::config::redact_credentials(url)
}

/// What the gateway acknowledged for one request.
#[derive(Debug, Clone)]
pub struct Posted {
    pub event_ids: Vec<Uuid>,
    /// The partition each event went to, in request order.
    pub partitions: Vec<i32>,
    pub token: String,
}

impl Stack {
    /// Fresh topics on the local broker and a fresh database on every shard.
    pub async fn new() -> Stack {
        let brokers = std::env::var("PIPELINE_KAFKA").unwrap_or_else(|_| {
            let port = std::env::var("KAFKA_PORT").unwrap_or_else(|_| "9092".into());
            format!("127.0.0.1:{port}")
        });
        Stack::on_brokers(brokers).await
    }

    /// The same on another Kafka, e.g. a `PrivateKafka`.
    pub async fn on_brokers(brokers: String) -> Stack {
        Stack::with_links(brokers, Links::plaintext()).await
    }

    /// The same reached through `links` (e.g. the secure stack's TLS and SASL).
    pub async fn with_links(brokers: String, links: Links) -> Stack {
        if std::env::var_os("RUST_LOG").is_some() {
            chassis::telemetry::init();
        }
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let kafka = KafkaAdmin::with_config(links.kafka_config(&brokers));
        let topic = format!("events-{id}");
        let critical_topic = format!("events-critical-{id}");
        let dead_letter_topic = format!("events-dlq-{id}");
        let persisted_topic = format!("events-persisted-{id}");
        for t in [&topic, &critical_topic] {
            kafka
                .create_topic_with(
                    t,
                    PARTITIONS,
                    &[("message.timestamp.after.max.ms", MAX_CLOCK_AHEAD_MS)],
                )
                .await;
        }
        for t in [&dead_letter_topic, &persisted_topic] {
            kafka.create_topic(t, PARTITIONS).await;
        }
        let database = format!("t_{id}");
        let mut shard_urls = Vec::new();
        for &port in &links.pg_ports {
            let admin = links.shard_url(port, "postgres");
            let (client, _connection) = links
                .store(vec![admin.clone()])
                .connect(0, &admin)
                .await
                .unwrap_or_else(|e| panic!("shard on port {port} (run deploy/local/up): {e}"));
            client
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await
                .expect("create test database");
            shard_urls.push(links.shard_url(port, &database));
        }
        Stack {
            writer_group: format!("db-writer-{id}"),
            id,
            brokers,
            kafka,
            topic,
            critical_topic,
            dead_letter_topic,
            persisted_topic,
            shard_urls,
            links,
            http: reqwest::Client::new(),
            shutdown: CancellationToken::new(),
            failures: Arc::default(),
        }
    }

    pub fn topics(&self) -> [&str; 2] {
        [&self.topic, &self.critical_topic]
    }

    pub fn store_settings(&self) -> StoreSettings {
        self.links.store(self.shard_urls.clone())
    }

    pub fn gateway_settings(&self) -> producer_gateway::Settings {
        let defaults = producer_gateway::Settings::default();
        producer_gateway::Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: producer_gateway::settings::KafkaSettings {
                brokers: self.brokers.clone(),
                security: self.links.kafka.clone(),
                topic: self.topic.clone(),
                critical_topic: self.critical_topic.clone(),
                metadata_refresh: Duration::from_millis(500),
                ..defaults.kafka
            },
            ..defaults
        }
    }

    pub fn writer_settings(&self) -> db_writer::Settings {
        let defaults = db_writer::Settings::default();
        db_writer::Settings {
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: db_writer::settings::KafkaSettings {
                brokers: self.brokers.clone(),
                security: self.links.kafka.clone(),
                group_id: self.writer_group.clone(),
                topic: self.topic.clone(),
                critical_topic: self.critical_topic.clone(),
                dead_letter_topic: self.dead_letter_topic.clone(),
                persisted_topic: self.persisted_topic.clone(),
                // Partitions of a killed writer move on quickly.
                session_timeout: Duration::from_secs(6),
                metadata_refresh: Duration::from_millis(500),
                ..defaults.kafka.clone()
            },
            store: self.store_settings(),
            retry: db_writer::settings::RetrySettings {
                max_backoff: Duration::from_millis(500),
                ..defaults.retry
            },
            ..defaults
        }
    }

    pub fn query_settings(&self) -> query_service::Settings {
        let defaults = query_service::Settings::default();
        query_service::Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: query_service::settings::KafkaSettings {
                brokers: self.brokers.clone(),
                security: self.links.kafka.clone(),
                topics: vec![self.topic.clone(), self.critical_topic.clone()],
                writer_group: self.writer_group.clone(),
                dead_letter_topic: self.dead_letter_topic.clone(),
                persisted_topic: self.persisted_topic.clone(),
                ..defaults.kafka
            },
            store: self.store_settings(),
            // Per-client release within a test's time: the test gateways learn of new
            // partitions within 500 ms, and no test holds a record back across a growth.
            order: query_service::settings::OrderSettings {
                growth_settle: Duration::from_secs(2),
                ..defaults.order
            },
            ..defaults
        }
    }

    /// Starts producer-gateway in this process; returns its base URL.
    pub async fn start_gateway(&self) -> String {
        self.start_gateway_with(self.gateway_settings()).await
    }

    pub async fn start_gateway_with(&self, settings: producer_gateway::Settings) -> String {
        self.start_gateway_clocked(settings, producer_gateway::IngestClock::default())
            .await
            .0
    }

    /// A gateway whose clock is `offset_micros` ahead of this host's (behind when negative);
    /// the token stops it (with its final ticks).
    pub async fn start_gateway_clocked(
        &self,
        settings: producer_gateway::Settings,
        clock: producer_gateway::IngestClock,
    ) -> (String, CancellationToken) {
        let gateway = producer_gateway::Gateway::bind_with_clock(&settings, clock)
            .await
            .expect("gateway binds");
        let url = format!("http://{}", gateway.local_addr());
        let token = self.shutdown.child_token();
        self.watch("producer-gateway", gateway.serve(token.clone()));
        (url, token)
    }

    /// Starts query-service in this process; returns its base URL.
    pub async fn start_query(&self) -> String {
        self.start_query_with(self.query_settings()).await.0
    }

    /// Starts query-service with these settings; the token stops it.
    pub async fn start_query_with(
        &self,
        settings: query_service::Settings,
    ) -> (String, CancellationToken) {
        let service = query_service::QueryService::bind(&settings)
            .await
            .expect("query-service starts");
        let url = format!("http://{}", service.local_addr());
        let token = self.shutdown.child_token();
        self.watch("query-service", service.serve(token.clone()));
        (url, token)
    }

    /// Starts db-writer in this process; cancelling the token stops it cleanly.
    pub async fn start_writer(&self) -> CancellationToken {
        self.start_writer_with(self.writer_settings()).await.0
    }

    /// Starts db-writer with these settings; returns its token and the base URL of its
    /// metrics and health endpoints.
    pub async fn start_writer_with(
        &self,
        settings: db_writer::Settings,
    ) -> (CancellationToken, String) {
        let token = self.shutdown.child_token();
        let writer = db_writer::DbWriter::connect(settings)
            .await
            .expect("db-writer starts");
        let url = format!(
            "http://{}",
            writer.metrics_addr().expect("metrics listener address")
        );
        self.watch("db-writer", writer.run(token.clone()));
        (token, url)
    }

    /// The value of one Prometheus sample (`name{labels}`) at `url`/metrics; 0 when absent.
    pub async fn metric(&self, url: &str, sample: &str) -> f64 {
        let text = self
            .http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        crate::bench::series_value(&text, sample)
    }

    /// Runs a statement on every shard's test database.
    pub async fn on_shards(&self, sql: &str) {
        for url in &self.shard_urls {
            let client = self.links.connect(url).await;
            client.batch_execute(sql).await.expect("statement on shard");
        }
    }

    /// Runs a statement on every shard's server outside the test database (for example to
    /// change the database's settings or end its sessions).
    pub async fn on_shard_servers(&self, sql: &str) {
        for url in &self.shard_urls {
            let admin = match url.rsplit_once('/') {
                Some((server, database)) => {
                    let params = database.split_once('?').map_or("", |(_, p)| p);
                    let separator = if params.is_empty() { "" } else { "?" };
                    format!("{server}/postgres{separator}{params}")
                }
                None => url.clone(),
            };
            let client = self.links.connect(&admin).await;
            client
                .batch_execute(sql)
                .await
                .expect("statement on shard server");
        }
    }

    /// The name of this test's database on every shard.
    pub fn database(&self) -> String {
        format!("t_{}", self.id)
    }

    /// Runs a service in this process and records its error, if it returns one.
    fn watch<E: std::fmt::Display>(
        &self,
        name: &'static str,
        service: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let failures = self.failures.clone();
        tokio::spawn(async move {
            if let Err(e) = service.await {
                let failure = format!("{name} failed: {e}");
                eprintln!("{failure}");
                failures.lock().expect("failures").push(failure);
            }
        });
    }

    /// Errors of in-process services so far.
    pub fn service_failures(&self) -> Vec<String> {
        self.failures.lock().expect("failures").clone()
    }

    /// Starts the db-writer binary as its own process, so a test can kill it.
    pub fn spawn_writer_process(&self) -> WriterProcess {
        self.spawn_writer_process_with(self.writer_settings())
    }

    /// The db-writer binary with these settings (its metrics on a free port).
    pub fn spawn_writer_process_with(&self, settings: db_writer::Settings) -> WriterProcess {
        WriterProcess::spawn(self, settings, Logs::Inherit)
    }

    /// The db-writer binary writing its log to `logs`.
    pub fn spawn_writer_process_logging(&self, logs: Logs) -> WriterProcess {
        WriterProcess::spawn(self, self.writer_settings(), logs)
    }

    /// Starts the query-service binary as its own process, with `query_settings()` on a free
    /// port, and waits until it is ready.
    pub async fn spawn_query_process(&self) -> QueryProcess {
        let listen = SocketAddr::from(([127, 0, 0, 1], crate::private::free_port()));
        QueryProcess::spawn(self, listen).await
    }

    /// The same on a given address, e.g. where a killed one listened (a restart its clients
    /// reconnect to).
    pub async fn spawn_query_process_on(&self, listen: SocketAddr) -> QueryProcess {
        QueryProcess::spawn(self, listen).await
    }

    /// Starts the producer-gateway binary as its own process, with `gateway_settings()` on a
    /// free port, and waits until it is ready.
    pub async fn spawn_gateway_process(&self) -> GatewayProcess {
        GatewayProcess::spawn(self, Logs::Inherit).await
    }

    /// The same, writing its log to `logs`.
    pub async fn spawn_gateway_process_logging(&self, logs: Logs) -> GatewayProcess {
        GatewayProcess::spawn(self, logs).await
    }

    /// Waits until the service at `url` answers `/readyz` with 200.
    pub async fn ready(&self, url: &str, deadline: Duration) {
        let ready = format!("{url}/readyz");
        crate::eventually(deadline, &format!("{url} ready"), || {
            let request = self.http.get(&ready).timeout(Duration::from_secs(1)).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
    }

    /// POSTs a JSON body to the gateway.
    pub async fn post(
        &self,
        gateway: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        post_via(&self.http, gateway, content_type, body).await
    }

    /// POSTs events as one JSON array and expects 202.
    pub async fn post_events(&self, gateway: &str, events: &[Value]) -> Posted {
        let response = self
            .post(
                gateway,
                "application/json",
                serde_json::to_vec(events).expect("json"),
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json answer");
        assert_eq!(status, 202, "gateway refused events: {body}");
        Posted {
            event_ids: crate::ids(body["events"].as_array().expect("events array")),
            partitions: body["events"]
                .as_array()
                .expect("events array")
                .iter()
                .map(|e| e["partition"].as_i64().expect("partition") as i32)
                .collect(),
            token: body["token"].as_str().expect("token").to_owned(),
        }
    }

    /// One `GET /events` with extra parameters: status and JSON body.
    pub async fn get(
        &self,
        query: &str,
        params: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = self
            .http
            .get(format!("{query}/events"))
            .query(params)
            .send()
            .await
            .expect("query-service answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, response.json().await.expect("json answer"), headers)
    }

    /// query-service's `GET /pipeline`, or `None` while it has no sample yet (503) or does
    /// not answer.
    pub async fn pipeline_view(&self, query: &str) -> Option<Value> {
        let answer = self
            .http
            .get(format!("{query}/pipeline"))
            .send()
            .await
            .ok()?;
        (answer.status() == 200).then_some(())?;
        answer.json().await.ok()
    }

    /// A client's whole history, following cursors page by page.
    pub async fn history(&self, query: &str, client_id: &str, page_size: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut request = self
                .http
                .get(format!("{query}/events"))
                .query(&[("clientId", client_id), ("limit", &page_size.to_string())]);
            if let Some(c) = &cursor {
                request = request.query(&[("cursor", c)]);
            }
            let response = request.send().await.expect("query-service answers");
            assert_eq!(response.status(), 200);
            let page: Value = response.json().await.expect("json answer");
            assert_eq!(page["complete"], true, "answer marked incomplete");
            events.extend(page["events"].as_array().expect("events").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return events,
            }
        }
        panic!("history of {client_id} did not end");
    }

    /// `(shard index, event_id, client_id)` of every row in every shard.
    pub async fn shard_rows(&self) -> Vec<(usize, Uuid, String)> {
        let mut rows = Vec::new();
        for shard in 0..self.shard_urls.len() {
            rows.extend(self.rows_on(shard).await);
        }
        rows
    }

    /// The same for one shard (the others may be down).
    pub async fn rows_on(&self, shard: usize) -> Vec<(usize, Uuid, String)> {
        let client = self.links.connect(&self.shard_urls[shard]).await;
        let exists = client
            .query_one("SELECT to_regclass('events') IS NOT NULL", &[])
            .await
            .expect("catalog query");
        if !exists.get::<_, bool>(0) {
            return Vec::new();
        }
        client
            .query("SELECT event_id, client_id FROM events", &[])
            .await
            .expect("select rows")
            .iter()
            .map(|row| (shard, row.get(0), row.get(1)))
            .collect()
    }

    /// Waits until the writer's group has committed everything published on both topics
    /// before this call (gateways keep adding ticks after it).
    pub async fn drained(&self, deadline: Duration) {
        let ends: Vec<_> = self
            .topics()
            .iter()
            .map(|t| (t.to_string(), self.kafka.end_offsets(t)))
            .collect();
        crate::eventually(deadline, "the writer to drain both topics", || async {
            self.committed_past(&ends).then_some(())
        })
        .await;
    }

    /// True once the writer's group has committed everything published so far.
    pub fn writer_drained(&self) -> bool {
        let ends: Vec<_> = self
            .topics()
            .iter()
            .map(|t| (t.to_string(), self.kafka.end_offsets(t)))
            .collect();
        self.committed_past(&ends)
    }

    fn committed_past(&self, ends: &[(String, std::collections::BTreeMap<i32, i64>)]) -> bool {
        ends.iter().all(|(topic, ends)| {
            let committed = self.kafka.committed_offsets(&self.writer_group, topic);
            ends.iter()
                .all(|(p, end)| committed.get(p).is_some_and(|c| c >= end))
        })
    }

    /// Events on the event topics (ticks left out), every copy counted: what the gateway
    /// published.
    pub fn published_count(&self) -> i64 {
        self.topics()
            .iter()
            .map(|t| self.kafka.read_events(t, Duration::from_secs(60)).len() as i64)
            .sum()
    }

    /// Rows per event id: a correct pipeline has exactly one of each.
    pub async fn row_counts(&self) -> HashMap<Uuid, usize> {
        let mut counts = HashMap::new();
        for (_, id, _) in self.shard_rows().await {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let failures = self.service_failures();
        if !failures.is_empty() && !std::thread::panicking() {
            panic!("services run by this test failed: {failures:?}");
        }
    }
}

/// A service binary of this workspace run as a child process, with its settings rendered
/// to a temporary TOML file (removed when the process is dropped). Killed on drop.
struct ServiceProcess {
    name: &'static str,
    child: Child,
    config: PathBuf,
}

/// Where a service process writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// Errors to the test's stderr (`RUST_LOG`, default `warn`).
    Inherit,
    /// Everything (`info`) to `/dev/full`, where every write fails with "no space left on
    /// device": a full disk under the log files.
    DiskFull,
}

impl ServiceProcess {
    fn spawn(
        stack: &Stack,
        name: &'static str,
        settings: &impl serde::Serialize,
        logs: Logs,
    ) -> Self {
        let binary = sibling_binary(name);
        let config = std::env::temp_dir().join(format!(
            "{name}-{}-{}.toml",
            stack.id,
            Uuid::new_v4().simple()
        ));
        std::fs::write(&config, chassis::config::render(settings)).expect("write config");
        let mut command = Command::new(&binary);
        command.arg("--config").arg(&config).kill_on_drop(true);
        match logs {
            Logs::Inherit => {
                command
                    .env(
                        "RUST_LOG",
                        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
                    )
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit());
            }
            Logs::DiskFull => {
                let full = || std::fs::File::options().write(true).open("/dev/full");
                command
                    .env("RUST_LOG", "info")
                    .stdout(Stdio::from(full().expect("/dev/full")))
                    .stderr(Stdio::from(full().expect("/dev/full")));
            }
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "start {} (build it with `cargo build --bins`): {e}",
                binary.display()
            )
        });
        ServiceProcess {
            name,
            child,
            config,
        }
    }

    async fn kill(&mut self) {
        let name = self.name;
        self.child
            .kill()
            .await
            .unwrap_or_else(|e| panic!("kill {name}: {e}"));
    }

    /// SIGTERM, then waits for the exit; a process still running after 30 s fails the test.
    async fn terminate(&mut self) -> std::process::ExitStatus {
        self.sigterm();
        self.exited().await
    }

    fn sigterm(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }

    async fn exited(&mut self) -> std::process::ExitStatus {
        let name = self.name;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{name} exits after SIGTERM"))
            .unwrap_or_else(|e| panic!("wait for {name}: {e}"))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// db-writer as a child process, killed (not stopped) by `kill`.
pub struct WriterProcess {
    process: ServiceProcess,
    metrics_url: String,
}

impl WriterProcess {
    fn spawn(stack: &Stack, mut settings: db_writer::Settings, logs: Logs) -> Self {
        settings.metrics_listen = SocketAddr::from(([127, 0, 0, 1], crate::private::free_port()));
        WriterProcess {
            metrics_url: format!("http://{}", settings.metrics_listen),
            process: ServiceProcess::spawn(stack, "db-writer", &settings, logs),
        }
    }

    /// Base URL of its metrics and health endpoints.
    pub fn metrics_url(&self) -> &str {
        &self.metrics_url
    }

    /// SIGKILL: no flush, no commit, no goodbye to the group.
    pub async fn kill(mut self) {
        self.process.kill().await;
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.process.terminate().await
    }
}

/// producer-gateway as a child process on a port of its own, ready when spawned.
pub struct GatewayProcess {
    process: ServiceProcess,
    url: String,
}

impl GatewayProcess {
    async fn spawn(stack: &Stack, logs: Logs) -> Self {
        let mut settings = stack.gateway_settings();
        settings.listen = SocketAddr::from(([127, 0, 0, 1], crate::private::free_port()));
        let url = format!("http://{}", settings.listen);
        let process = ServiceProcess::spawn(stack, "producer-gateway", &settings, logs);
        stack.ready(&url, Duration::from_secs(30)).await;
        GatewayProcess { process, url }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// SIGKILL: requests in progress get no answer; what was enqueued may still land.
    pub async fn kill(mut self) {
        self.process.kill().await;
    }

    /// SIGTERM (in-progress requests finish, final ticks, producer flush), then waits for
    /// the exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.process.terminate().await
    }
}

/// query-service as a child process on a port of its own, ready when spawned.
pub struct QueryProcess {
    process: ServiceProcess,
    url: String,
    listen: SocketAddr,
}

impl QueryProcess {
    async fn spawn(stack: &Stack, listen: SocketAddr) -> Self {
        let mut settings = stack.query_settings();
        settings.listen = listen;
        let url = format!("http://{}", settings.listen);
        let process = ServiceProcess::spawn(stack, "query-service", &settings, Logs::Inherit);
        stack.ready(&url, Duration::from_secs(60)).await;
        QueryProcess {
            process,
            url,
            listen,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// SIGKILL: open connections are cut without a goodbye.
    pub async fn kill(mut self) {
        self.process.kill().await;
    }
}

/// POSTs a body to the gateway's `/events` with `client` (e.g. one that never reuses a
/// connection, for requests the gateway answers before reading their body).
pub async fn post_via(
    client: &reqwest::Client,
    gateway: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(format!("{gateway}/events"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("gateway answers")
}

/// A binary of this workspace, built next to the test executable (`target/<profile>/`).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("the executable's folder");
    // Test executables live in `target/<profile>/deps`, the benchmark bins of this crate
    // in `target/<profile>` itself, next to the services.
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>/deps")
    } else {
        dir
    };
    profile_dir.join(name)
}
