//! db-writer: Kafka in, PostgreSQL shards out, offsets committed only after the rows are in.
//!
//! Per `lane` (topic), on a task of its own: `consume` (the lane's group consumer, rebalance
//! bookkeeping, decoding; `clocks` orders each partition's records) → `batch` (count, bytes,
//! time since the first event) → `sink`: `route` (shard by client id) → `write` (bulk insert
//! per shard concurrently, retry while paused, bisect) → `dead_letter` (refused records,
//! original bytes) → `commit` (next offset and log clock per partition) → `notify` (a
//! persisted notice, built by `notice`). Beside it, `partitions` keeps the shards' day
//! partitions (made ahead, dropped past the retention).
//!
//! Delivery is at-least-once from Kafka and idempotent in PostgreSQL (one row per event id,
//! the copy that comes first), so a crash or rebalance can repeat a write but never a row.

mod batch;
mod clocks;
mod commit;
mod committer;
mod consume;
mod dead_letter;
mod lane;
mod metrics;
mod notice;
mod notify;
mod partitions;
mod priority;
mod report;
mod route;
pub mod settings;
mod sink;
mod write;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chassis::{
    edge::{Edge, EdgeError},
    health::Readiness,
};
use event_store::{ShardSet, StoreError};
use futures::{stream::FuturesUnordered, StreamExt};
use rdkafka::{consumer::Consumer, error::KafkaError};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    consume::WriterConsumer, dead_letter::DeadLetters, lane::Lane, notify::Notifier,
    priority::Pace, write::ShardWriter,
};
pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error("cannot start the offset committer: {0}")]
    Thread(std::io::Error),
    #[error("a lane's task failed: {0}")]
    Lane(String),
    #[error(transparent)]
    KafkaSecurity(#[from] chassis::kafka_security::KafkaSecurityError),
    #[error("settings: {0}")]
    Settings(String),
}

/// Readiness checks: every shard answers, and the group has handed each lane's member its
/// share.
const READY_SHARDS: &str = "shards";
const READY_GROUP: &str = "group";
/// Fails at SIGTERM, while the final flush runs.
const READY_RUNNING: &str = "running";

/// A db-writer connected to Kafka and its shards, ready to run.
pub struct DbWriter {
    settings: Settings,
    /// One consumer per lane, normal then critical, members of one group.
    consumers: [Arc<WriterConsumer>; 2],
    /// Per lane, normal then critical: each writes with its own sessions, waiting for the WAL
    /// flush or not (its `synchronous_commit`).
    writers: [Arc<ShardWriter>; 2],
    /// Sessions that wait for the flush: partition upkeep and readiness.
    shards: ShardSet,
    dead_letters: DeadLetters,
    notifier: Option<Arc<Notifier>>,
    metrics_edge: Edge,
    readiness: Readiness,
    /// Names this process: the client id of its consumers and the writer of its notices.
    member: String,
}

impl DbWriter {
    pub async fn connect(settings: Settings) -> Result<DbWriter, WriterError> {
        settings.kafka.check().map_err(WriterError::Settings)?;
        let kafka = settings
            .kafka
            .security
            .checked_client_config(&settings.kafka.brokers)
            .await?;
        let shards = ShardSet::connect(&settings.store).await?;
        let member = format!(
            "{}-{}",
            settings.kafka.group_id,
            uuid::Uuid::new_v4().simple()
        );
        let normal_fetch = consume::FetchWait {
            min_bytes: settings.kafka.fetch_min_bytes,
            wait: settings.kafka.fetch_wait,
        };
        let consumers = [
            consume::create(
                &kafka,
                &settings.kafka,
                &settings.kafka.topic,
                &member,
                normal_fetch,
            )?,
            consume::create(
                &kafka,
                &settings.kafka,
                &settings.kafka.critical_topic,
                &member,
                consume::FetchWait::AT_ONCE,
            )?,
        ];
        let dead_letters = DeadLetters::new(&kafka, &settings.kafka.dead_letter_topic)?;
        let notifier = Notifier::new(
            &kafka,
            &settings.kafka.persisted_topic,
            settings.kafka.persisted_linger,
        )?
        .map(Arc::new);
        let metrics_edge = Edge::bind(settings.metrics_listen).await?;
        metrics::init(
            shards.shards().len(),
            &[&settings.kafka.topic, &settings.kafka.critical_topic],
        );
        partitions::pass(&shards, &settings.partitions).await;
        let writers = [&settings.batch, &settings.critical_batch].map(|lane| {
            if lane.synchronous_commit {
                Ok(Arc::new(ShardWriter::new(
                    shards.clone(),
                    settings.retry.clone(),
                    settings.store.insert_method,
                )))
            } else {
                ShardWriter::unflushed(
                    &settings.store,
                    shards.clone(),
                    settings.flush_interval,
                    settings.retry.clone(),
                )
                .map(Arc::new)
            }
        });
        let [normal_writer, critical_writer] = writers;
        Ok(DbWriter {
            writers: [normal_writer?, critical_writer?],
            shards,
            settings,
            consumers,
            dead_letters,
            notifier,
            metrics_edge,
            readiness: Readiness::new(&[READY_SHARDS, READY_GROUP]),
            member,
        })
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        Some(self.metrics_edge.local_addr())
    }

    /// Consumes, writes and commits until `shutdown`; then writes and commits what it holds
    /// and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WriterError> {
        let DbWriter {
            settings,
            consumers,
            writers,
            shards,
            dead_letters,
            notifier,
            metrics_edge,
            readiness,
            member,
        } = self;
        // Metrics and health stay up through the final flush (readiness turns to 503 at
        // once): an operator can watch the shutdown; the edge stops after it.
        let edge_stop = CancellationToken::new();
        // Also on an early return with an error.
        let _edge_stopped = edge_stop.clone().drop_guard();
        let metrics_serving = metrics_edge.spawn(
            axum::Router::new(),
            readiness.clone(),
            edge_stop.clone(),
            Duration::from_secs(1),
        );
        {
            let (shutdown, stopped, readiness) =
                (shutdown.clone(), edge_stop.clone(), readiness.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => readiness.fail(READY_RUNNING, "shutting down: final flush"),
                    _ = stopped.cancelled() => {}
                }
            });
        }
        tokio::spawn(partitions::maintain(
            shards.clone(),
            settings.partitions.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(watch_readiness(
            readiness,
            shards,
            consumers.to_vec(),
            shutdown.clone(),
        ));
        info!(
            topic = %settings.kafka.topic,
            critical_topic = %settings.kafka.critical_topic,
            group = %settings.kafka.group_id,
            member,
            "db-writer consuming"
        );

        // Each lane consumes, batches, stores and commits on a task of its own: a critical
        // record never waits behind normal ones in a prefetch queue, nor for a normal batch's
        // timer, write slot or commit (offsets of different topics never cover each other),
        // and a normal lane that cannot keep up pauses only its own partitions.
        let shared = Arc::new(lane::Shared {
            dead_letters,
            notifier,
            member,
            depth: settings.max_in_flight_batches,
            shutdown_timeout: settings.shutdown_timeout,
            commit_interval: settings.kafka.commit_interval,
        });
        // Which partitions this process owns, for the pipeline view (DescribeGroups does not
        // describe a group on the consumer protocol); until the lanes have ended, as through
        // the final flush they are still owned.
        let reporter =
            report::Reporter::new(shared.member.clone(), settings.kafka.group_id.clone());
        let lanes_ended = CancellationToken::new();
        let reporting = shared.notifier.clone().map(|notifier| {
            tokio::spawn(
                reporter
                    .clone()
                    .every(notifier, consumers.to_vec(), lanes_ended.clone()),
            )
        });
        let [normal, critical] = consumers;
        let [normal_writer, critical_writer] = writers;
        let critical_activity = priority::CriticalActivity::new();
        // A lane that fails stops the other one too (after its final flush): the process ends
        // with the error instead of running half.
        let stop = shutdown.child_token();
        let mut lanes: FuturesUnordered<_> = [
            Lane::new(
                &settings.kafka.topic,
                normal,
                normal_writer,
                &settings.batch,
                Pace::Normal {
                    activity: critical_activity.clone(),
                    settings: settings.critical_first.clone(),
                },
            ),
            Lane::new(
                &settings.kafka.critical_topic,
                critical,
                critical_writer,
                &settings.critical_batch,
                Pace::Critical(critical_activity),
            ),
        ]
        .into_iter()
        .map(|lane| tokio::spawn(lane.run(shared.clone(), stop.clone())))
        .collect();
        let mut failed = None;
        while let Some(ended) = lanes.next().await {
            let ended = ended.unwrap_or_else(|e| Err(WriterError::Lane(e.to_string())));
            if let Err(e) = ended {
                stop.cancel();
                failed.get_or_insert(e);
            }
        }
        let flush_began = tokio::time::Instant::now();
        lanes_ended.cancel();
        if let Some(reporting) = reporting {
            let _ = reporting.await;
        }
        if let Some(notifier) = &shared.notifier {
            reporter.leaving(notifier);
            notifier.flush();
        }
        edge_stop.cancel();
        metrics_serving.join().await;
        info!(
            notices_flushed_ms = flush_began.elapsed().as_millis() as u64,
            "db-writer stopped"
        );
        failed.map_or(Ok(()), Err)
    }
}

/// Keeps the readiness checks current until shutdown.
async fn watch_readiness(
    readiness: Readiness,
    shards: ShardSet,
    consumers: Vec<Arc<WriterConsumer>>,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if consumers.iter().all(|c| c.context().joined()) {
            readiness.pass(READY_GROUP);
        }
        let mut down = Vec::new();
        for shard in shards.shards() {
            if shard.ping().await.is_err() {
                down.push(shard.index.to_string());
            }
        }
        if down.is_empty() {
            readiness.pass(READY_SHARDS);
        } else {
            readiness.fail(
                READY_SHARDS,
                format!("shard(s) {} unreachable", down.join(", ")),
            );
        }
    }
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), WriterError> {
    DbWriter::connect(settings).await?.run(shutdown).await
}
