//! The HTTP API: `GET /events` (`events`), `GET /events/stream` (`stream`), the pipeline
//! view and its dashboard (`pipeline`), over one shared state.

mod events;
mod params;
mod pipeline;
mod stream;
mod view;

use std::sync::Arc;

use axum::{response::Redirect, routing::get, Router};
use event_store::ShardSet;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    history::Sources, in_flight::InFlight, page_cache::PageCache, pipeline::Pipeline,
    progress::Progress, release::Frontier, settings::ApiSettings, streams::Streams,
};

/// What every request handler reads.
pub struct AppState {
    pub shards: ShardSet,
    pub in_flight: Arc<InFlight>,
    pub frontier: Arc<Frontier>,
    pub pages: PageCache,
    pub progress: Arc<Progress>,
    pub streams: Arc<Streams>,
    /// Bounds concurrent streams.
    pub stream_permits: Arc<Semaphore>,
    pub api: ApiSettings,
    /// Ends open streams when the service stops.
    pub shutdown: CancellationToken,
    pub pipeline: Arc<Pipeline>,
}

impl AppState {
    pub(crate) fn sources(&self) -> Sources<'_> {
        Sources {
            shards: &self.shards,
            in_flight: &self.in_flight,
            frontier: &self.frontier,
            cache: &self.pages,
        }
    }

    /// False while consumption waits at the in-flight bound: answers lag behind.
    pub(crate) fn complete(&self) -> bool {
        !self.in_flight.is_full()
    }
}

/// The service's own routes; `chassis::edge` adds health and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/events", get(events::get_events))
        .route("/events/stream", get(stream::stream_events))
        .route("/pipeline", get(pipeline::get_pipeline))
        .route("/pipeline/stream", get(pipeline::stream_pipeline))
        .route("/dashboard", get(pipeline::dashboard))
        .route("/", get(|| async { Redirect::temporary("/dashboard") }))
        .with_state(state)
}
