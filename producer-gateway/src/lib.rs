//! producer-gateway: HTTP in, Kafka out.
//!
//! request → the caller's credential (`chassis::auth`, with `auth.enabled`) → `encoding` (a
//! gzip or deflate body decoded, within the body limit) → `body` (content type, limits, JSON
//! syntax) → `validate` (field rules, ids, ingest time; the rules are
//! `schemas::contract`, so nothing PostgreSQL's jsonb would refuse) → the caller's write grant
//! covers every client id → `rate_limit` (per-client buckets, optional) → `publish` (Avro,
//! keyed by client id, idempotent producer, wait for acks) → `202` with the events'
//! positions and a read-your-writes token.

mod admission;
mod body;
mod capacity;
mod clock;
mod encoding;
mod http;
#[cfg(test)]
mod input_properties;
mod metrics;
mod publish;
mod rate_limit;
pub mod settings;
mod tick;
mod validate;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chassis::{
    edge::{Edge, EdgeError},
    health::Readiness,
};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::info;

pub use clock::IngestClock;
pub use publish::ProducerError;
pub use settings::Settings;

/// Events a batch request works through before giving its worker back to the runtime, in
/// validation (`validate::Rules::events_in_turns`) and in queueing (`publish`): 500 events
/// in one poll were milliseconds during which a critical single POST on the same worker
/// waited (docs/design.md, "Ingest").
const EVENTS_PER_TURN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error(transparent)]
    Admission(#[from] admission::AdmissionError),
    #[error(transparent)]
    KafkaSecurity(#[from] chassis::kafka_security::KafkaSecurityError),
    #[error("auth: {0}")]
    Auth(#[from] chassis::auth::AuthConfigError),
    #[error("kafka.schema_version: {0}")]
    SchemaVersion(#[from] schemas::UnwritableVersion),
}

/// A gateway bound to its address, ready to serve.
pub struct Gateway {
    /// Stops admission's lag sampling when the gateway goes.
    _sampling: DropGuard,
    edge: Edge,
    shutdown_timeout: Duration,
    state: Arc<http::AppState>,
    ticker: tick::Ticker,
    readiness: Readiness,
}

impl Gateway {
    pub async fn bind(settings: &Settings) -> Result<Gateway, GatewayError> {
        Gateway::bind_with_clock(settings, IngestClock::default()).await
    }

    /// A gateway stamping ingest times from `clock` (tests run gateways whose clocks differ).
    pub async fn bind_with_clock(
        settings: &Settings,
        clock: IngestClock,
    ) -> Result<Gateway, GatewayError> {
        // Before anything connects: a key that cannot be read stops the start.
        let auth =
            chassis::auth::Authenticator::new(&settings.auth, metrics::AUTH_REFUSED.clone())?;
        let clock = Arc::new(clock);
        let kafka = settings
            .kafka
            .security
            .checked_client_config(&settings.kafka.brokers)
            .await?;
        let gateway = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let codec = schemas::EventCodec::writing(settings.kafka.schema_version)?;
        let publisher =
            publish::Publisher::new(&kafka, &settings.kafka, codec, clock.clone(), &gateway)?;
        let readiness = Readiness::new(&[tick::READY_BROKERS]);
        let ticker = tick::Ticker {
            lanes: publisher.tick_lanes(),
            release_producer: tick::release_producer(&kafka)
                .map_err(publish::ProducerError::from)?,
            clock,
            release_ticks: settings.kafka.release_ticks,
            release_spacing: settings.kafka.release_spacing,
            interval: settings.kafka.tick_interval,
            normal_interval: settings.kafka.normal_tick_interval,
            idle_interval: settings.kafka.idle_tick_interval,
            metadata_refresh: settings.kafka.metadata_refresh,
            gateway,
            readiness: readiness.clone(),
        };
        let edge = Edge::bind(settings.listen)
            .await?
            .with_ops_listener(settings.metrics_listen)
            .await?
            .header_timeout(settings.limits.header_timeout);
        let sampling = CancellationToken::new();
        let admission = admission::Admission::start(
            &settings.admission,
            &kafka,
            vec![
                settings.kafka.topic.clone(),
                settings.kafka.critical_topic.clone(),
            ],
            settings.limits.retry_after,
            sampling.clone(),
        )?;
        let state = Arc::new(http::AppState {
            publisher,
            capacity: capacity::Capacity::new(
                settings.limits.max_concurrent_requests,
                settings.limits.max_buffered_bytes,
                settings.limits.retry_after,
            ),
            admission,
            limits: settings.limits.clone(),
            rules: validate::Rules {
                max_payload_bytes: settings.limits.max_payload_bytes,
            },
            rate_limiter: rate_limit::RateLimiter::new(&settings.rate_limit),
            auth,
        });
        Ok(Gateway {
            _sampling: sampling.drop_guard(),
            edge,
            shutdown_timeout: settings.shutdown_timeout,
            state,
            ticker,
            readiness,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.edge.local_addr()
    }

    /// Where `/metrics` and the health routes answer (`local_addr` unless `metrics_listen`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.edge.ops_addr()
    }

    /// Serves until `shutdown`, lets in-flight requests finish, ticks every partition once
    /// more (readers can then release this gateway's last events), then flushes the producer.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        info!(addr = %self.local_addr(), "producer-gateway listening");
        let ticking = CancellationToken::new();
        let ticker = Arc::new(self.ticker);
        let ticks = tokio::spawn({
            let (ticker, ticking) = (ticker.clone(), ticking.clone());
            async move { ticker.run(ticking).await }
        });
        // One deadline for the whole shutdown: requests drain within it, the final ticks and
        // the producers' flush get what is left (at least a second, to hand over what the
        // drained requests enqueued).
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        let served = self
            .edge
            .serve(
                http::router(self.state.clone()),
                self.readiness,
                shutdown,
                self.shutdown_timeout,
            )
            .await
            .map_err(GatewayError::from);
        ticking.cancel();
        let _ = ticks.await;
        ticker.final_ticks();
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(1));
        self.state.publisher.flush(left);
        info!("producer-gateway stopped");
        served
    }
}

pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<(), GatewayError> {
    Gateway::bind(&settings).await?.serve(shutdown).await
}
