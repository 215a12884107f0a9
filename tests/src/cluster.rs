//! The three-broker Kafka cluster that `deploy/local/cluster up` starts (tests/run does), for
//! the tests that kill, stop and pause brokers under traffic. Brokers are driven with the same
//! script an operator uses for a drill (`deploy/local/cluster kafka-node kill 2`).
//!
//! Those tests break a cluster every test of the group shares, so each holds [`Cluster::lock`]
//! for its whole run and leaves every broker up and every partition fully replicated.

use std::{
    path::PathBuf,
    process::Command,
    sync::{Arc, LazyLock},
    time::Duration,
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use tokio::sync::{Mutex, MutexGuard};

use crate::eventually;

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Cluster {
    pub bootstrap: String,
    pub brokers: usize,
    metadata: Arc<BaseConsumer>,
}

static TURN: LazyLock<Mutex<()>> = LazyLock::new(|| Mutex::new(()));

impl Cluster {
    /// The cluster `deploy/local/cluster` runs (brokers from `PIPELINE_CLUSTER_PORT`, default
    /// 19092, one every 100 ports).
    pub fn local() -> Cluster {
        let port: u16 = std::env::var("PIPELINE_CLUSTER_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(19092);
        let brokers = 3;
        let bootstrap = (0..brokers)
            .map(|i| format!("127.0.0.1:{}", port + 100 * i as u16))
            .collect::<Vec<_>>()
            .join(",");
        let metadata = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("metadata client");
        Cluster {
            bootstrap,
            brokers,
            metadata: Arc::new(metadata),
        }
    }

    /// One test at a time breaks the cluster.
    pub async fn lock() -> MutexGuard<'static, ()> {
        TURN.lock().await
    }

    /// `deploy/local/cluster kafka-node <action> <node>`: start, stop (SIGTERM), kill (SIGKILL),
    /// pause (SIGSTOP), resume (SIGCONT).
    pub fn node(&self, action: &str, node: i32) {
        let script = repo().join("deploy/local/cluster");
        let output = Command::new(&script)
            .args(["kafka-node", action, &node.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "kafka-node {action} {node}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The leader (node id) of a partition, as the cluster's metadata says now; -1 when none
    /// or when no broker answered in time (a paused broker may be the one asked).
    pub fn leader(&self, topic: &str, partition: i32) -> i32 {
        let Ok(metadata) = self.metadata.fetch_metadata(Some(topic), METADATA_TIMEOUT) else {
            return -1;
        };
        metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .find(|p| p.id() == partition)
            .map_or(-1, |p| p.leader())
    }

    /// Partitions of `topics` that lack a leader or a replica in sync.
    fn under_replicated(
        metadata: &BaseConsumer,
        brokers: usize,
        topics: &[String],
    ) -> Option<usize> {
        let mut under = 0;
        for topic in topics {
            let metadata = metadata
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .ok()?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    if p.leader() < 0 || p.isr().len() < brokers {
                        under += 1;
                    }
                }
            }
        }
        Some(under)
    }

    /// Waits until every partition of `topics` has a leader and all replicas in sync (after a
    /// broker came back: the next drill may then take another one away).
    pub async fn fully_replicated(&self, topics: &[&str], deadline: Duration) {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        eventually(deadline, "every partition fully replicated", || {
            let (metadata, brokers, topics) = (self.metadata.clone(), self.brokers, topics.clone());
            async move {
                let under = tokio::task::spawn_blocking(move || {
                    Self::under_replicated(&metadata, brokers, &topics)
                })
                .await
                .ok()
                .flatten();
                (under == Some(0)).then_some(())
            }
        })
        .await;
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}
