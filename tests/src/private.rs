//! Servers a single test owns, so it can stop and restart them without disturbing the
//! tests that share the stack from `deploy/local/up`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use uuid::Uuid;

use crate::eventually;

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A PostgreSQL server of its own, run as the `postgres` user like the local shards.
pub struct PrivateShard {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
}

impl PrivateShard {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// With `extra` added to its `postgresql.conf`.
    pub async fn start_with(extra: &str) -> Self {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed (deploy/local/install)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("a PostgreSQL bindir");
        let dir = std::env::temp_dir().join(format!("pipeline-shard-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("shard dir");
        run(Command::new("chown").arg("postgres:postgres").arg(&dir));
        let port = free_port();
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bindir.join("initdb"))
            .arg("-D")
            .arg(&dir)
            .args(["--auth=trust", "--username=postgres", "-E", "UTF8"]));
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = 50\n",
            dir.display()
        );
        let mut existing = std::fs::read_to_string(dir.join("postgresql.conf")).expect("conf");
        existing.push_str(&conf);
        existing.push_str(extra);
        existing.push('\n');
        std::fs::write(dir.join("postgresql.conf"), existing).expect("write conf");
        let shard = PrivateShard { dir, bindir, port };
        shard.start_again().await;
        shard
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(args);
        command
    }

    /// Fast shutdown: connections are cut, as when an operator restarts the server.
    pub fn stop(&self) {
        run(&mut self.pg_ctl(&["-m", "fast", "-w", "stop"]));
    }

    /// Immediate shutdown, as in a crash: no checkpoint, and what the WAL buffers held that was
    /// not written out is gone (recovery replays what reached the files).
    pub fn crash(&self) {
        run(&mut self.immediate_stop());
    }

    fn immediate_stop(&self) -> Command {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"])
    }

    pub async fn start_again(&self) {
        let log = self.dir.join("server.log");
        run(&mut self.pg_ctl(&["-w", "-t", "60", "-l", &log.display().to_string(), "start"]));
    }
}

impl Drop for PrivateShard {
    fn drop(&mut self) {
        // Already stopped (a test's crash without a start) is fine.
        let _ = self.immediate_stop().output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A single-node Kafka (KRaft) of its own, from the jars `deploy/local/install` fetched.
pub struct PrivateKafka {
    dir: PathBuf,
    lib: PathBuf,
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateKafka {
    pub async fn start() -> Self {
        let state = std::env::var_os("PIPELINE_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join(".local"));
        let lib = std::fs::read_dir(state.join("kafka"))
            .expect("Kafka jars (deploy/local/install)")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(".complete").exists())
            .max()
            .expect("a complete Kafka lib dir");
        let dir = std::env::temp_dir().join(format!("pipeline-kafka-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("kafka dir");
        let (port, controller) = (free_port(), free_port());
        let props = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             log.dirs={}\noffsets.topic.replication.factor=1\noffsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\nshare.coordinator.state.topic.min.isr=1\n\
             auto.create.topics.enable=false\ngroup.initial.rebalance.delay.ms=0\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("server.properties"), props).expect("props");
        std::fs::write(
            dir.join("log4j2.properties"),
            "rootLogger.level=WARN\nrootLogger.appenderRef.out.ref=out\n\
             appender.out.type=Console\nappender.out.name=out\n\
             appender.out.layout.type=PatternLayout\nappender.out.layout.pattern=%d %p %m%n\n",
        )
        .expect("log config");
        let mut kafka = PrivateKafka {
            dir,
            lib,
            port,
            child: None,
        };
        run(kafka
            .java()
            .args([
                "kafka.tools.StorageTool",
                "format",
                "-t",
                "MkU3OEVBNTcwNTJENDM2Qg",
                "-c",
            ])
            .arg(kafka.dir.join("server.properties")));
        kafka.start_again().await;
        kafka
    }

    fn java(&self) -> Command {
        let mut command = Command::new("java");
        command
            .args(["-Xms256m", "-Xmx512m", "-cp"])
            .arg(format!("{}/*", self.lib.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ));
        command
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn start_again(&mut self) {
        let log = std::fs::File::create(self.dir.join("stdout.log")).expect("log");
        let child = self
            .java()
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start kafka");
        self.child = Some(child);
        let bootstrap = self.bootstrap();
        eventually(Duration::from_secs(90), "private Kafka up", || {
            let bootstrap = bootstrap.clone();
            async move {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .create()
                    .ok()?;
                consumer
                    .fetch_metadata(None, Duration::from_secs(1))
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
    }

    /// Stops the broker (SIGTERM) and waits for the process to end; a broker that has not
    /// stopped after 30 s is killed, so a stuck shutdown cannot hang the test.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
