//! The HTTP API: `GET /events` (`events`), `GET /events/stream` (`stream`), the pipeline
//! view and its dashboard (`pipeline`), over one shared state.

mod events;
mod params;
mod pipeline;
mod stream;
mod view;

use std::sync::Arc;

use axum::{response::Redirect, routing::get, Json, Router};
use chassis::auth::Authenticator;
use event_store::ShardSet;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    history::Sources, in_flight::InFlight, page_cache::PageCache, pipeline::Pipeline,
    progress::Progress, release::Frontier, settings::ApiSettings, streams::Streams,
};

/// What every request handler reads.
pub struct AppState {
    pub shards: ShardSet,
    pub in_flight: Arc<InFlight>,
    pub indexing: crate::indexing::Indexing,
    pub frontier: Arc<Frontier>,
    pub pages: PageCache,
    pub progress: Arc<Progress>,
    pub streams: Arc<Streams>,
    /// Bounds concurrent streams.
    pub stream_permits: Arc<Semaphore>,
    pub api: ApiSettings,
    /// The event topics this replica reads (`kafka.topics`): what a read token may name.
    pub topics: Vec<String>,
    /// Ends open streams when the service stops.
    pub shutdown: CancellationToken,
    pub pipeline: Arc<Pipeline>,
    pub auth: Authenticator,
}

impl AppState {
    pub(crate) fn sources(&self) -> Sources<'_> {
        Sources {
            shards: &self.shards,
            in_flight: &self.in_flight,
            indexing: &self.indexing,
            frontier: &self.frontier,
            cache: &self.pages,
        }
    }

    /// False while consumption waits at the in-flight bound: answers lag behind.
    pub(crate) fn complete(&self) -> bool {
        !self.in_flight.is_full()
    }
}

/// What a stream sends as its last `error` event when the caller's credential ended.
pub(crate) const CREDENTIAL_ENDED: &str = "the credential expired; reconnect with a valid one";

/// When a stream opened by `caller` must end: its credential's end, on the runtime's clock.
pub(crate) fn credential_ends(caller: &chassis::auth::Caller) -> Option<tokio::time::Instant> {
    let until = caller.valid_until()?;
    let left = until
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Some(tokio::time::Instant::now() + left)
}

/// Resolves at `end`; never without one.
pub(crate) async fn until(end: Option<tokio::time::Instant>) {
    match end {
        Some(end) => tokio::time::sleep_until(end).await,
        None => std::future::pending().await,
    }
}

/// The service's own routes, each documented in `GET /openapi.json` by the same
/// annotations that route it; `chassis::edge` adds health and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    let auth = state.auth.enabled();
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(events::get_events))
        .routes(routes!(stream::stream_events))
        .routes(routes!(pipeline::get_pipeline))
        .routes(routes!(pipeline::stream_pipeline))
        .routes(routes!(pipeline::dashboard))
        .with_state(state)
        .split_for_parts();
    chassis::auth::openapi::document(&mut document, auth);
    let document = Arc::new(document);
    router
        .route("/openapi.json", get(move || async move { Json(document) }))
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventpipe query-service",
        description = "A client's history, persisted and in flight, each event once, in one \
            stable order; the pipeline view. Health (`/livez`, `/readyz`) and `/metrics` are \
            served beside these."
    ),
    tags(
        (name = "events", description = "Reading a client's events"),
        (name = "operations", description = "The pipeline view and its dashboard"),
    )
)]
struct ApiDoc;
