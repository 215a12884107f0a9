//! producer-gateway: HTTP in, Kafka out.
//!
//! request → `body` (content type, limits, JSON syntax) → `validate` (field rules, ids,
//! ingest time) → `rate_limit` (per-client buckets, optional) → `publish` (Avro, keyed by client id, idempotent producer, wait for acks)
//! → `202` with the events' positions and a read-your-writes token.

mod body;
mod http;
mod metrics;
mod publish;
mod rate_limit;
pub mod settings;
mod validate;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use publish::ProducerError;
pub use settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A gateway bound to its address, ready to serve.
pub struct Gateway {
    listener: TcpListener,
    state: Arc<http::AppState>,
}

impl Gateway {
    pub async fn bind(settings: &Settings) -> Result<Gateway, GatewayError> {
        let publisher = publish::Publisher::new(&settings.kafka)?;
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let state = Arc::new(http::AppState {
            publisher,
            limits: settings.limits.clone(),
            rules: validate::Rules {
                max_payload_bytes: settings.limits.max_payload_bytes,
            },
            clock: validate::IngestClock::default(),
            rate_limiter: rate_limit::RateLimiter::new(&settings.rate_limit),
        });
        Ok(Gateway { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown`, lets in-flight requests finish, then flushes the producer.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        info!(addr = %self.local_addr(), "producer-gateway listening");
        let app = http::router(self.state.clone());
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(GatewayError::Serve)?;
        self.state.publisher.flush(Duration::from_secs(10));
        info!("producer-gateway stopped");
        Ok(())
    }
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), GatewayError> {
    Gateway::bind(&settings).await?.serve(shutdown).await
}
