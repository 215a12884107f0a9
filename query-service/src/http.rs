//! `GET /events?clientId=`: parameters, answer shape, errors.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use chassis::problem::Problem;
use event_store::{ClientQuery, IngestKey, ShardSet, StoredEvent};
use schemas::ReadToken;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio::sync::{broadcast, Semaphore};
use uuid::Uuid;

use crate::{
    history::{self, Status},
    in_flight::InFlight,
    metrics,
    page_cache::PageCache,
    progress::Progress,
    settings::ApiSettings,
};

pub struct AppState {
    pub shards: ShardSet,
    pub in_flight: Arc<InFlight>,
    pub pages: PageCache,
    pub progress: Arc<Progress>,
    /// Every consumed event, for live streams.
    pub live: broadcast::Sender<Arc<StoredEvent>>,
    /// Bounds concurrent streams.
    pub streams: Arc<Semaphore>,
    pub api: ApiSettings,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/events", get(get_events))
        .route("/events/stream", get(crate::stream::stream_events))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(|| async { "ok" }))
        .with_state(state)
        .merge(chassis::metrics::router())
}

#[derive(Deserialize)]
struct Params {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// A read-your-writes token from producer-gateway.
    after: Option<String>,
    wait_ms: Option<String>,
}

#[derive(Serialize)]
struct Answer<'a> {
    #[serde(rename = "clientId")]
    client_id: &'a str,
    events: Vec<EventView<'a>>,
    next_cursor: Option<String>,
    complete: bool,
}

#[derive(Serialize)]
pub(crate) struct EventView<'a> {
    event_id: Uuid,
    client_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    ts: Option<String>,
    ingested_at: String,
    priority: &'static str,
    payload: &'a RawValue,
    sdk: Option<&'a str>,
    status: &'static str,
    topic: &'a str,
    partition: i32,
    offset: i64,
}

async fn get_events(State(state): State<Arc<AppState>>, Query(params): Query<Params>) -> Response {
    let started = Instant::now();
    let response = match answer(&state, params).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    };
    metrics::QUERY_SECONDS
        .with_label_values(&[response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

pub(crate) fn bad_request(detail: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-parameter", detail)
}

async fn answer(state: &AppState, params: Params) -> Result<Response, Problem> {
    let client_id = params
        .client_id
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad_request("clientId is required".into()))?;
    let limit = match params.limit {
        None => state.api.default_limit,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=state.api.max_limit).contains(l))
            .ok_or_else(|| bad_request(format!("limit must be 1 to {}", state.api.max_limit)))?,
    };
    let after = params.cursor.as_deref().map(parse_cursor).transpose()?;
    let since_micros = params
        .since
        .as_deref()
        .map(|s| parse_time("since", s))
        .transpose()?;
    let until_micros = params
        .until
        .as_deref()
        .map(|s| parse_time("until", s))
        .transpose()?;
    if let Some(token) = params.after.as_deref() {
        let token: ReadToken = token
            .parse()
            .map_err(|e: schemas::TokenError| bad_request(format!("after: {e}")))?;
        let wait_ms = match params.wait_ms.as_deref() {
            None => state.api.default_wait.as_millis() as u64,
            Some(w) => w
                .parse::<u64>()
                .ok()
                .filter(|w| *w <= state.api.max_wait.as_millis() as u64)
                .ok_or_else(|| {
                    bad_request(format!(
                        "wait_ms must be 0 to {}",
                        state.api.max_wait.as_millis()
                    ))
                })?,
        };
        if !state
            .progress
            .wait_for(&token, Duration::from_millis(wait_ms))
            .await
        {
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "not-caught-up",
                format!(
                    "this replica has not consumed the token's events within {wait_ms} ms; retry"
                ),
            ));
        }
    }
    let query = ClientQuery {
        client_id: &client_id,
        after,
        since_micros,
        until_micros,
        limit,
    };
    let page = history::page(&state.shards, &state.in_flight, &state.pages, &query)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "shard read failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shard-unavailable",
                "the client's shard cannot be read; retry later",
            )
            .retry_after(state.api.retry_after)
        })?;
    if !page.complete {
        metrics::INCOMPLETE_ANSWERS.inc();
    }
    let events = page
        .events
        .iter()
        .map(|(status, stored)| view(*status, stored))
        .collect::<Result<Vec<_>, _>>()?;
    let body = Answer {
        client_id: &client_id,
        events,
        next_cursor: page.next.map(format_cursor),
        complete: page.complete,
    };
    let mut response = Json(body).into_response();
    if !page.complete {
        response.headers_mut().insert(
            "x-events-incomplete",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

pub(crate) fn view(
    status: Status,
    stored: &event_store::StoredEvent,
) -> Result<EventView<'_>, Problem> {
    let event = &stored.event;
    let payload: &RawValue = serde_json::from_str(&event.payload).map_err(|_| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt-event",
            format!("event {} has an unreadable payload", event.event_id),
        )
    })?;
    Ok(EventView {
        event_id: event.event_id,
        client_id: &event.client_id,
        event_type: &event.event_type,
        ts: event.ts_micros.map(format_time),
        ingested_at: format_time(event.ingested_at_micros),
        priority: event.priority.as_str(),
        payload,
        sdk: event.sdk.as_deref(),
        status: match status {
            Status::Persisted => "persisted",
            Status::InFlight => "in_flight",
        },
        topic: &stored.position.topic,
        partition: stored.position.partition,
        offset: stored.position.offset,
    })
}

fn format_time(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn parse_time(name: &str, value: &str) -> Result<i64, Problem> {
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000).ok())
        .ok_or_else(|| bad_request(format!("{name} must be an RFC 3339 timestamp")))
}

/// Cursor: `<ingested_at micros>.<event_id hex>`, the last key of the previous page.
pub(crate) fn format_cursor(key: IngestKey) -> String {
    format!("{}.{}", key.ingested_at_micros, key.event_id.simple())
}

pub(crate) fn parse_cursor(cursor: &str) -> Result<IngestKey, Problem> {
    let invalid = || bad_request("cursor is not one this service issued".into());
    let (micros, id) = cursor.split_once('.').ok_or_else(invalid)?;
    Ok(IngestKey {
        ingested_at_micros: micros.parse().map_err(|_| invalid())?,
        event_id: Uuid::parse_str(id).map_err(|_| invalid())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let key = IngestKey {
            ingested_at_micros: 1_763_000_000_000_001,
            event_id: Uuid::now_v7(),
        };
        assert_eq!(parse_cursor(&format_cursor(key)).unwrap(), key);
        for bad in ["", "123", "x.y", "1.not-a-uuid"] {
            assert_eq!(parse_cursor(bad).unwrap_err().status, 400, "{bad}");
        }
    }
}
