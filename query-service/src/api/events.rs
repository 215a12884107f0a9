//! `GET /events?clientId=`: one page of a client's history.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use chassis::{auth::Caller, problem::Problem};
use event_store::ClientQuery;
use serde::{Deserialize, Serialize};

use super::{
    params::{
        bad_request, client_id, format_cursor, parse_cursor, parse_order, parse_time, read_token,
        unreadable_query,
    },
    view::{view, EventView},
    AppState,
};
use crate::{
    history::{self, HistoryError},
    metrics,
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// The client whose history is read (required).
    #[serde(rename = "clientId")]
    #[param(rename = "clientId", required = true)]
    client_id: Option<String>,
    /// Events per page (default `api.default_limit`, at most `api.max_limit`).
    #[param(value_type = Option<u32>)]
    limit: Option<String>,
    /// `next_cursor` or `resume_cursor` of an earlier answer, or an SSE event id.
    cursor: Option<String>,
    /// RFC 3339: only events ordered at or after it.
    since: Option<String>,
    /// RFC 3339: only events ordered before it.
    until: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    order: Option<String>,
    /// A read-your-writes token from producer-gateway.
    after: Option<String>,
    /// How long to wait for `after` to be visible before answering 504 (milliseconds).
    #[param(value_type = Option<u32>)]
    wait_ms: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = EventsPage)]
pub struct Answer<'a> {
    #[serde(rename = "clientId")]
    client_id: &'a str,
    events: Vec<EventView<'a>>,
    /// Set when more events follow now.
    next_cursor: Option<String>,
    /// Where to continue from later for what comes next (after the last event returned).
    resume_cursor: Option<String>,
    complete: bool,
}

/// One page of a client's history: persisted and in-flight events, each once, in the order
/// every reader sees (docs/design.md, "Ordering").
#[utoipa::path(
    get,
    path = "/events",
    params(Params),
    responses(
        (status = 200, description = "A page", body = Answer),
        (status = 400, description = "A missing or invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "With `auth.enabled`: no credential, or one refused (bad signature, expired, not yet valid, wrong audience or issuer, unknown key, malformed); `WWW-Authenticate: Bearer`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "With `auth.enabled`: `clientId` is outside the credential's read grant (operators read every client)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Shards unreachable; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The `after` token was not visible within `wait_ms`", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "events"
)]
pub async fn get_events(
    State(state): State<Arc<AppState>>,
    params: Result<Query<Params>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return unreadable_query(rejection).into_response(),
    };
    let started = Instant::now();
    let response = match state.auth.authenticate(&headers) {
        Err(refused) => refused.into_response(),
        Ok(caller) => match answer(&state, &caller, params).await {
            Ok(response) => response,
            Err(problem) => problem.into_response(),
        },
    };
    let seconds = started.elapsed().as_secs_f64();
    metrics::QUERY_SECONDS
        .with_label_values(&[response.status().as_str()])
        .observe(seconds);
    state.pipeline.query_answered(seconds);
    response
}

async fn answer(state: &AppState, caller: &Caller, params: Params) -> Result<Response, Problem> {
    let client_id = client_id(params.client_id)?;
    state
        .auth
        .check_read(caller, &client_id)
        .map_err(|refused| refused.problem())?;
    let limit = match params.limit {
        None => state.api.default_limit,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=state.api.max_limit).contains(l))
            .ok_or_else(|| bad_request(format!("limit must be 1 to {}", state.api.max_limit)))?,
    };
    let from = params.cursor.as_deref().map(parse_cursor).transpose()?;
    let direction = parse_order(params.order.as_deref())?;
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
    // [since, until): an empty range is a caller's mistake, not an empty history.
    if since_micros.zip(until_micros).is_some_and(|(s, u)| s >= u) {
        return Err(bad_request(
            "since must be before until: events ordered at or after since and before until".into(),
        ));
    }
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
    if let Some(token) = params.after.as_deref() {
        let token = read_token(token, &state.topics)?;
        // Indexed first: the wait below then also covers the duplicate checks the token's
        // events may need.
        reading(state, &client_id).await?;
        let caught_up = state
            .progress
            .wait_for(
                &token,
                &client_id,
                &state.in_flight,
                &state.frontier,
                Duration::from_millis(wait_ms),
            )
            .await;
        if !caught_up {
            return Err(not_caught_up(wait_ms));
        }
    }
    let query = ClientQuery {
        client_id: &client_id,
        from,
        since_micros,
        until_micros,
        limit,
        direction,
    };
    let page = history::page(&state.sources(), &query)
        .await
        .map_err(|e| unavailable(state, &e))?;
    let complete = state.complete();
    if !complete {
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
        resume_cursor: page.resume.map(format_cursor),
        complete,
    };
    let mut response = Json(body).into_response();
    if !complete {
        response
            .headers_mut()
            .insert("x-events-incomplete", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Indexes `client`'s in-flight events before a read (`cache.index_on_read`).
pub(super) async fn reading(state: &AppState, client_id: &str) -> Result<(), Problem> {
    state
        .indexing
        .reading(client_id)
        .await
        .map_err(|e| unavailable(state, &HistoryError::from(e)))
}

pub(super) fn not_caught_up(wait_ms: u64) -> Problem {
    Problem::new(
        StatusCode::GATEWAY_TIMEOUT,
        "not-caught-up",
        format!("this replica has not released the token's events within {wait_ms} ms; retry"),
    )
}

pub(super) fn unavailable(state: &AppState, error: &HistoryError) -> Problem {
    tracing::warn!(error = %error, "history read failed");
    let detail = match error {
        HistoryError::Store(_) => "the client's shard cannot be read; retry later",
        HistoryError::Busy => "the client's events are moving into PostgreSQL; retry",
        HistoryError::TailStopped(_) => "this replica stopped following Kafka; retry elsewhere",
    };
    let kind = match error {
        HistoryError::Store(_) => "shard-unavailable",
        HistoryError::Busy => "busy",
        HistoryError::TailStopped(_) => "stopping",
    };
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, kind, detail).retry_after(state.api.retry_after)
}
