//! The HTTP API: `POST /events` and its OpenAPI document.

use std::{collections::HashMap, sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use chassis::{
    auth::{Authenticator, Caller},
    problem::Problem,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use schemas::{Priority, ReadToken};
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    admission::Admission,
    body::{self, Format},
    capacity::Capacity,
    encoding::Coding,
    metrics,
    publish::{PublishError, Publisher},
    rate_limit::RateLimiter,
    settings::Limits,
    validate::{EventsBody, Rules, Valid},
};

pub struct AppState {
    pub publisher: Publisher,
    pub capacity: Capacity,
    pub admission: Option<Arc<Admission>>,
    pub limits: Limits,
    pub rules: Rules,
    pub rate_limiter: Option<RateLimiter>,
    pub auth: Authenticator,
}

/// The gateway's own routes, documented in `GET /openapi.json` by the annotations that route
/// them; `chassis::edge` adds health and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    let auth = state.auth.enabled();
    let (router, mut document) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(post_events))
        .with_state(state)
        .split_for_parts();
    chassis::auth::openapi::document(&mut document, auth);
    let document = Arc::new(document);
    router.route("/openapi.json", get(move || async move { Json(document) }))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventpipe producer-gateway",
        description = "Events in: validated whole, published to Kafka keyed by client id, \
            answered 202 once the brokers acknowledged every event. Health (`/livez`, \
            `/readyz`) and `/metrics` are served beside."
    ),
    components(schemas(EventsBody))
)]
struct ApiDoc;

#[derive(Serialize, utoipa::ToSchema)]
struct Accepted {
    accepted: usize,
    events: Vec<AcceptedEvent>,
    token: String,
    /// For a request of one event object, its id and position repeated at the top level.
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i64>,
}

#[derive(Serialize, Clone, utoipa::ToSchema)]
struct AcceptedEvent {
    event_id: Uuid,
    partition: i32,
    offset: i64,
}

/// Publishes events, all or none: `202` once the brokers acknowledged every one.
#[utoipa::path(
    post,
    path = "/events",
    request_body(
        description = "One event, a JSON array of events, or NDJSON (one event per line); \
            sent as it is, or compressed with `Content-Encoding: gzip` or `deflate`",
        content(
            (EventsBody = "application/json"),
            (String = "application/x-ndjson"),
        )
    ),
    params(("traceparent" = Option<String>, Header, description = "W3C trace context, carried with each event")),
    responses(
        (status = 202, description = "Acknowledged by the brokers; positions and a read-your-writes token", body = Accepted),
        (status = 400, description = "Not JSON / NDJSON, or a body its `Content-Encoding` does not decode", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "With `auth.enabled`: no credential, or one refused (bad signature, expired, not yet valid, wrong audience or issuer, unknown key, malformed); `WWW-Authenticate: Bearer`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "With `auth.enabled`: an event's `client_id` is outside the credential's write grant; nothing of the request is published", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive within `limits.body_timeout`", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body (as sent or decoded) or event count over the limits", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither application/json nor application/x-ndjson, or a `Content-Encoding` other than gzip, deflate or identity (the answer's `Accept-Encoding` lists them)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid events, each bad field listed; nothing published", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "A client over its rate; retry after `Retry-After`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Brokers unavailable, queue full, pipeline behind or the gateway at its request/byte bounds; retry after `Retry-After` with the same event ids", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "events"
)]
async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Before the body is read: an unauthenticated caller holds no capacity.
    let response = match state.auth.authenticate(&headers) {
        Err(refused) => refused.into_response(),
        Ok(caller) => match accept(&state, &caller, &headers, body).await {
            Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
            Err(problem) => problem.into_response(),
        },
    };
    metrics::REQUESTS
        .with_label_values(&[response.status().as_str()])
        .inc();
    response
}

async fn accept(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, Problem> {
    let format = Format::of(headers)?;
    let coding = Coding::of(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let limit = state.limits.max_body_bytes;
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large(limit));
    }
    let sent = declared.unwrap_or(limit);
    // A coded body is held twice over for a moment: as sent, and decoded (up to the limit).
    let buffered = match coding {
        Coding::Identity => sent,
        _ => sent + limit,
    };
    // Held until the request is answered: its body, then its events, are in memory.
    let _held = state.capacity.admit(buffered)?;
    let bytes = tokio::time::timeout(state.limits.body_timeout, read_limited(body, limit))
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                format!(
                    "the request body did not arrive within {:?}; nothing was published",
                    state.limits.body_timeout
                ),
            )
        })??;
    let bytes = match coding {
        Coding::Identity => bytes,
        // Inflating megabytes takes milliseconds: off the workers that answer other requests.
        _ => tokio::task::spawn_blocking(move || coding.decode(bytes, limit))
            .await
            .map_err(|_| {
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "decode-failed",
                    "decoding the request body failed; nothing was published",
                )
            })??,
    };
    let body::Split { items, one_object } = body::split(format, &bytes, state.limits.max_events)?;
    let Valid { mut events } = state
        .rules
        .events_in_turns(&items)
        .await
        .map_err(|errors| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-events",
                format!("{} invalid field(s); nothing was published", errors.len()),
            )
            .with_errors(errors)
        })?;
    // One client id outside the grant refuses the whole request, as an invalid one does.
    state
        .auth
        .check_write(caller, events.iter().map(|e| e.client_id.as_str()))
        .map_err(|refused| refused.problem())?;
    if let Some(admission) = &state.admission {
        let lanes: Vec<Priority> = [Priority::Normal, Priority::Critical]
            .into_iter()
            .filter(|lane| events.iter().any(|e| e.priority == *lane))
            .collect();
        admission.admit(&lanes)?;
    }
    if let Some(limiter) = &state.rate_limiter {
        let mut per_client: HashMap<&str, usize> = HashMap::new();
        for event in &events {
            *per_client.entry(event.client_id.as_str()).or_default() += 1;
        }
        limiter.admit(&per_client).map_err(|wait| {
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "a client of this request is over its event rate; nothing was published",
            )
            .retry_after(wait)
        })?;
    }
    // W3C trace context travels with each event as a Kafka header; a malformed one is dropped.
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_traceparent(v));
    let started = Instant::now();
    let acks = state
        .publisher
        .publish(&mut events, traceparent)
        .await
        .map_err(|e| unavailable(e, state))?;
    metrics::PUBLISH_SECONDS.observe(started.elapsed().as_secs_f64());
    metrics::EVENTS_ACCEPTED.inc_by(events.len() as u64);
    let mut token = ReadToken::default();
    let accepted: Vec<AcceptedEvent> = events
        .iter()
        .zip(&acks)
        .map(|(event, ack)| {
            token.observe(&ack.topic, ack.partition, ack.offset);
            AcceptedEvent {
                event_id: event.event_id,
                partition: ack.partition,
                offset: ack.offset,
            }
        })
        .collect();
    let first = accepted.first().filter(|_| one_object);
    Ok(Accepted {
        accepted: accepted.len(),
        event_id: first.map(|e| e.event_id),
        partition: first.map(|e| e.partition),
        offset: first.map(|e| e.offset),
        events: accepted,
        token: token.to_string(),
    })
}

/// `version-traceid-parentid-flags`, lowercase hex, as W3C Trace Context defines it.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2)
}

fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("request body exceeds {limit} bytes"),
    )
}

async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, Problem> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(limit)),
        Err(e) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "unreadable-body",
            format!("request body could not be read: {e}"),
        )),
    }
}

fn unavailable(error: PublishError, state: &AppState) -> Problem {
    let (kind, detail) = match &error {
        PublishError::QueueFull => ("backpressure", "the pipeline is at capacity; retry later"),
        PublishError::NotAcknowledged(_) => (
            "brokers-unavailable",
            "the brokers did not acknowledge the events; retry later",
        ),
        PublishError::ClockAhead => (
            "clock-ahead",
            "the brokers refused the events' time: this gateway's clock is ahead of theirs; retry",
        ),
        PublishError::Encode(_) => ("encoding-failed", "the events could not be encoded"),
    };
    tracing::warn!(error = %error, "publish failed");
    if let PublishError::Encode(_) = error {
        return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, kind, detail);
    }
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, kind, detail)
        .retry_after(state.limits.retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_w3c_traceparent() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!is_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
    }
}
