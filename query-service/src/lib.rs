//! query-service: a client's history, persisted and in flight, each event once, in a stable
//! order.
//!
//! `tail` (every partition from the writer's committed offsets and log clocks) → `in_flight`
//! (the unpersisted tail, evicted as the writer commits; indexed only for clients read lately,
//! at a reader's request through `indexing`, which a read of a client with nothing held
//! skips: `held_clients`; copies of one event judged, producer ids checked
//! by `verify`) → `release` (the frontier every partition has passed; delivery to
//! `streams`) → `history` (one page: in-flight ⊕ shard, via `page_cache`) → `api`
//! (`GET /events`, `GET /events/stream`), with `progress` for read-your-writes tokens; every
//! route checks the caller's read or operator grant (`chassis::auth`, with `auth.enabled`).

mod api;
#[doc(hidden)]
pub mod bench;
mod held_clients;
mod history;
mod in_flight;
mod indexing;
mod metrics;
#[cfg(test)]
mod model;
mod notices;

mod page_cache;
mod partitions;
mod pipeline;
mod progress;
mod recent_ids;
mod release;
pub mod settings;
mod streams;
mod tail;
mod verify;
mod wall_clock;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chassis::{
    edge::{Edge, EdgeError},
    health::Readiness,
};
use event_store::{ShardSet, StoreError};
use rdkafka::error::KafkaError;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error(transparent)]
    KafkaSecurity(#[from] chassis::kafka_security::KafkaSecurityError),
    #[error("auth: {0}")]
    Auth(#[from] chassis::auth::AuthConfigError),
    #[error("cannot start the tail's thread: {0}")]
    TailThread(#[source] std::io::Error),
}

/// Reads waiting for the tail to index their client (`cache.index_on_read`) at most; more
/// wait to queue.
const INDEX_REQUESTS: usize = 1024;

/// A query-service tailing Kafka and bound to its address, ready to serve.
pub struct QueryService {
    edge: Edge,
    shutdown_timeout: Duration,
    tail: tail::Tail,
    peeker: Arc<rdkafka::consumer::BaseConsumer>,
    state: Arc<api::AppState>,
    readiness: Readiness,
    shutdown: CancellationToken,
}

impl QueryService {
    pub async fn bind(settings: &Settings) -> Result<QueryService, QueryError> {
        // Before anything connects: a key that cannot be read stops the start.
        let auth =
            chassis::auth::Authenticator::new(&settings.auth, metrics::AUTH_REFUSED.clone())?;
        let kafka = settings
            .kafka
            .security
            .checked_client_config(&settings.kafka.brokers)
            .await?;
        let shards = ShardSet::connect(&settings.store).await?;
        metrics::init(shards.shards().len());
        let in_flight = Arc::new(in_flight::InFlight::new(
            settings.cache.max_in_flight_events,
            settings.cache.max_in_flight_bytes,
            settings.cache.recent_evictions,
        ));
        let progress = Arc::new(progress::Progress::default());
        let frontier = Arc::new(release::Frontier::default());
        let streams = Arc::new(streams::Streams::default());
        let readiness = Readiness::new(&[tail::READY_CAUGHT_UP]);
        let pipeline = Arc::new(pipeline::Pipeline::default());
        // Stops the checker and open streams with the service.
        let shutdown = CancellationToken::new();
        let (indexing, index_requests) = indexing::Indexing::new(
            settings.cache.index_on_read,
            in_flight.clone(),
            INDEX_REQUESTS,
        );
        let (checks, checked) = verify::spawn(
            shards.clone(),
            settings.cache.max_pending_checks,
            shutdown.clone(),
        );
        let tail = tail::Tail::start(
            &kafka,
            &settings.kafka,
            &settings.order,
            &settings.cache,
            tail::Wiring {
                in_flight: in_flight.clone(),
                progress: progress.clone(),
                release: release::Release::new(
                    frontier.clone(),
                    in_flight.clone(),
                    streams.clone(),
                ),
                checks,
                checked,
                index_requests,
                readiness: readiness.clone(),
                pipeline: pipeline.clone(),
            },
        )
        .await?;
        notices::follow(&kafka, &settings.kafka, pipeline.clone(), shutdown.clone()).await?;
        let peeker = Arc::new(lag::observer(&kafka, &settings.kafka.writer_group)?);
        let edge = Edge::bind(settings.listen)
            .await?
            .with_ops_listener(settings.metrics_listen)
            .await?;
        let state = Arc::new(api::AppState {
            shards,
            in_flight,
            indexing,
            frontier,
            pages: page_cache::PageCache::new(
                settings.cache.max_page_bytes,
                settings.cache.page_ttl,
            ),
            progress,
            streams,
            stream_permits: Arc::new(tokio::sync::Semaphore::new(settings.api.max_streams)),
            api: settings.api.clone(),
            topics: settings.kafka.topics.clone(),
            shutdown: shutdown.clone(),
            pipeline,
            auth,
        });
        Ok(QueryService {
            edge,
            shutdown_timeout: settings.shutdown_timeout,
            tail,
            peeker,
            state,
            readiness,
            shutdown,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.edge.local_addr()
    }

    /// Where `/metrics` and the health routes answer (`local_addr` unless `metrics_listen`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.edge.ops_addr()
    }

    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), QueryError> {
        info!(addr = %self.local_addr(), "query-service listening");
        // One token for everything inside: the caller's stops it all.
        let inner = self.shutdown.clone();
        {
            let inner = inner.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => inner.cancel(),
                    _ = inner.cancelled() => {}
                }
            });
        }
        let tail = self
            .tail
            .spawn(inner.clone())
            .map_err(QueryError::TailThread)?;
        tokio::spawn(pipeline::sample(
            pipeline::Sources {
                pipeline: self.state.pipeline.clone(),
                in_flight: self.state.in_flight.clone(),
                frontier: self.state.frontier.clone(),
                streams: self.state.streams.clone(),
                shards: self.state.shards.clone(),
                peeker: self.peeker,
            },
            inner.clone(),
        ));
        let served = self
            .edge
            .serve(
                api::router(self.state),
                self.readiness,
                inner.clone(),
                self.shutdown_timeout,
            )
            .await
            .map_err(QueryError::from);
        inner.cancel();
        let _ = tail.await;
        info!("query-service stopped");
        served
    }
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), QueryError> {
    QueryService::bind(&settings).await?.serve(shutdown).await
}
