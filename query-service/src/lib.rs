//! query-service: a client's history, persisted and in flight, each event once.
//!
//! `tail` (every partition from the writer's committed offsets) → `in_flight` (the
//! unpersisted tail, evicted as the writer commits) and `progress` (read-your-writes) → `history` (merge with the client's
//! shard) → `http` (`GET /events`) and `stream` (`GET /events/stream`, Server-Sent Events).

mod history;
mod http;
mod in_flight;
mod metrics;
mod page_cache;
mod progress;
pub mod settings;
mod stream;
mod tail;

use std::{net::SocketAddr, sync::Arc};

use event_store::{ShardSet, StoreError};
use rdkafka::error::KafkaError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A query-service tailing Kafka and bound to its address, ready to serve.
pub struct QueryService {
    listener: TcpListener,
    tail: tail::Tail,
    state: Arc<http::AppState>,
}

impl QueryService {
    pub async fn bind(settings: &Settings) -> Result<QueryService, QueryError> {
        let shards = ShardSet::connect(&settings.store).await?;
        let in_flight = Arc::new(in_flight::InFlight::new(
            settings.cache.max_in_flight_events,
        ));
        let progress = Arc::new(progress::Progress::default());
        let (live, _) = tokio::sync::broadcast::channel(settings.api.stream_buffer.max(1));
        let tail = tail::Tail::start(
            &settings.kafka,
            in_flight.clone(),
            progress.clone(),
            live.clone(),
        )
        .await?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| QueryError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let state = Arc::new(http::AppState {
            shards,
            in_flight,
            pages: page_cache::PageCache::new(
                settings.cache.max_page_rows,
                settings.cache.page_ttl,
            ),
            progress,
            live,
            streams: Arc::new(tokio::sync::Semaphore::new(settings.api.max_streams)),
            api: settings.api.clone(),
        });
        Ok(QueryService {
            listener,
            tail,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), QueryError> {
        info!(addr = %self.local_addr(), "query-service listening");
        let tail = tokio::spawn(self.tail.run(shutdown.clone()));
        let app = http::router(self.state);
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .map_err(QueryError::Serve);
        shutdown.cancel();
        let _ = tail.await;
        info!("query-service stopped");
        served
    }
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), QueryError> {
    QueryService::bind(&settings).await?.serve(shutdown).await
}
