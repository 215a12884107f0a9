//! `GET /pipeline` (the pipeline view as JSON), `GET /pipeline/stream` (the same live, as
//! Server-Sent Events) and `GET /dashboard` (a page that draws it).

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use chassis::problem::Problem;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::pipeline::{BatchView, Snapshot, Update};
use chassis::auth::Caller;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PipelineView)]
pub struct View {
    #[serde(flatten)]
    #[schema(inline, value_type = Snapshot)]
    snapshot: Arc<Snapshot>,
    #[schema(value_type = Vec<BatchView>)]
    batches: Vec<Arc<BatchView>>,
}

/// The whole pipeline in one answer: depth and oldest unstored age, lanes, shards, dead
/// letters, the in-flight set, writers and partitions, and the latest persisted batches.
#[utoipa::path(
    get,
    path = "/pipeline",
    responses(
        (status = 200, description = "The latest sample", body = View),
        (status = 401, description = "With `auth.enabled`: no credential, or one refused; `WWW-Authenticate: Bearer`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "With `auth.enabled`: the credential is not an operator's", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "No sample yet (the first comes a second after start)", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "operations"
)]
pub async fn get_pipeline(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = operator(&state, &headers) {
        return refused.into_response();
    }
    match state.pipeline.latest() {
        Some(snapshot) => Json(View {
            snapshot,
            batches: state.pipeline.batches(),
        })
        .into_response(),
        None => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the first sample of the pipeline is taken a second after start; retry",
        )
        .retry_after(Duration::from_secs(1))
        .into_response(),
    }
}

/// `history` (the samples kept so far) and the latest batches first, then `snapshot` every
/// second and `batch` as batches are persisted. A reader that falls behind skips samples.
#[utoipa::path(
    get,
    path = "/pipeline/stream",
    responses(
        (status = 200, description = "`history`, `batches`, then `snapshot` each second and `batch` as batches land", content_type = "text/event-stream", body = String),
        (status = 401, description = "With `auth.enabled`: no credential, or one refused; `WWW-Authenticate: Bearer`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "With `auth.enabled`: the credential is not an operator's", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "operations"
)]
pub async fn stream_pipeline(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match operator(&state, &headers) {
        Err(refused) => refused.into_response(),
        Ok(caller) => pipeline_events(&state, super::credential_ends(&caller)).into_response(),
    }
}

/// 401/403 unless the request carries an operator's credential (always passes with auth off).
fn operator(state: &AppState, headers: &HeaderMap) -> Result<Caller, chassis::auth::Refused> {
    let caller = state.auth.authenticate(headers)?;
    state.auth.check_operator(&caller)?;
    Ok(caller)
}

/// The stream; it ends at `credential_ends` with an `error` event, as a new request with the
/// credential would be refused then.
fn pipeline_events(
    state: &AppState,
    credential_ends: Option<tokio::time::Instant>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let updates = state.pipeline.subscribe();
    let first = [
        // Browsers wait ~3 s before reconnecting by default; a restarted replica is back sooner.
        json_event("history", &state.pipeline.history()).retry(RECONNECT),
        json_event("batches", &state.pipeline.batches()),
    ];
    let live = futures::stream::unfold(
        (updates, state.shutdown.clone(), false),
        move |(mut updates, shutdown, ended)| async move {
            if ended {
                return None;
            }
            let next = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break None,
                    () = super::until(credential_ends) => {
                        let last = SseEvent::default().event("error").data(super::CREDENTIAL_ENDED);
                        return Some((last, (updates, shutdown, true)));
                    }
                    update = updates.recv() => match update {
                        Ok(Update::Snapshot(s)) => break Some(json_event("snapshot", &s)),
                        Ok(Update::Batch(b)) => break Some(json_event("batch", &b)),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => break None,
                    },
                }
            };
            next.map(|event| (event, (updates, shutdown, false)))
        },
    );
    let stream = futures::stream::iter(first)
        .chain(live)
        .map(Ok::<_, Infallible>);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// How soon a dashboard that lost the stream tries again.
const RECONNECT: Duration = Duration::from_secs(1);

fn json_event<T: Serialize>(kind: &str, value: &T) -> SseEvent {
    SseEvent::default()
        .event(kind)
        .data(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

/// The live dashboard (HTML; draws `/pipeline/stream`). The page is the same static file for
/// everyone and holds no data: a browser's navigation cannot send a bearer token, so it is
/// served without one, and with `auth.enabled` it asks for an operator credential and reads
/// `/pipeline/stream` with it (docs/security.md).
#[utoipa::path(
    get,
    path = "/dashboard",
    responses((status = 200, description = "The page (static, no data; served without a credential)", content_type = "text/html", body = String)),
    security(()),
    tag = "operations"
)]
pub async fn dashboard(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let page = if state.auth.enabled() {
        DASHBOARD.replacen(AUTH_MARKER, "data-auth=\"required\"", 1)
    } else {
        DASHBOARD.to_owned()
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page keeps an operator's token in sessionStorage: no other site may frame it.
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        page,
    )
}

const DASHBOARD: &str = include_str!("dashboard.html");
/// Where the page learns that it must send a credential.
const AUTH_MARKER: &str = "data-auth=\"off\"";
