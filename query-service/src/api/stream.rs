//! `GET /events/stream?clientId=`: one client's events as Server-Sent Events, live.
//!
//! A stream replays the client's history after its cursor (`cursor` or `Last-Event-ID`), then
//! follows the events the tail releases for the client, in the same order. Each SSE id is the
//! event's cursor, so a client that reconnects with `Last-Event-ID` resumes without gaps or
//! repeats. A reader too slow for its queue is cut off with an `error` event instead of
//! being buffered without bound. The stream ends when its reader goes (the body is dropped
//! and its subscription and slot with it) and when the service shuts down.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{atomic::Ordering, Arc},
};

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::{HeaderMap, StatusCode},
    response::{
        sse::{Event as SseEvent, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use chassis::{auth::Caller, problem::Problem};
use event_store::{ClientQuery, Direction, StoredEvent};
use futures::Stream;
use schemas::OrderKey;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::{
    events::{not_caught_up, unavailable},
    params::{client_id, format_cursor, parse_cursor, read_token, unreadable_query},
    view::view,
    AppState,
};
use crate::{
    history::{self, Status},
    streams::Subscription,
};

/// The first page of a replay is small, so a reader resuming where it left off (the usual
/// reconnect) costs a small read; later pages of a long replay are large.
const FIRST_REPLAY_PAGE: usize = 100;
const REPLAY_PAGE: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// The client whose events are streamed (required).
    #[serde(rename = "clientId")]
    #[param(rename = "clientId", required = true)]
    client_id: Option<String>,
    /// Start after this position (a cursor or an SSE event id); `Last-Event-ID` wins.
    cursor: Option<String>,
    /// A read-your-writes token from producer-gateway.
    after: Option<String>,
}

/// A client's events as Server-Sent Events (`event: event`, id = cursor, data = an
/// `Event`), the history first, then live; resumes after `Last-Event-ID`.
#[utoipa::path(
    get,
    path = "/events/stream",
    params(
        Params,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event"),
    ),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "A missing or invalid parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "With `auth.enabled`: no credential, or one refused; `WWW-Authenticate: Bearer`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "With `auth.enabled`: `clientId` is outside the credential's read grant", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many streams on this replica (`api.max_streams`)", body = Problem, content_type = "application/problem+json"),
    ),
    tag = "events"
)]
pub async fn stream_events(
    State(state): State<Arc<AppState>>,
    params: Result<Query<Params>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return unreadable_query(rejection).into_response(),
    };
    match state.auth.authenticate(&headers) {
        Err(refused) => refused.into_response(),
        Ok(caller) => match open(state, &caller, params, &headers).await {
            Ok(stream) => stream.into_response(),
            Err(problem) => problem.into_response(),
        },
    }
}

/// The checks and set-up of a stream, up to its first event. The grant is checked once,
/// here; the stream ends when the credential does (a token's `exp` plus the leeway).
async fn open(
    state: Arc<AppState>,
    caller: &Caller,
    params: Params,
    headers: &HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let client_id = client_id(params.client_id)?;
    state
        .auth
        .check_read(caller, &client_id)
        .map_err(|refused| refused.problem())?;
    let resume = params.cursor.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let last = resume.as_deref().map(parse_cursor).transpose()?;
    let token = params
        .after
        .as_deref()
        .map(|token| read_token(token, &state.topics))
        .transpose()?;
    let permit = state
        .stream_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-streams",
                "this replica serves its maximum number of streams; retry later or elsewhere",
            )
            .retry_after(state.api.retry_after)
        })?;
    // Indexed before the token's wait (it covers the checks of the client's events) and
    // before subscribing (only indexed clients' events are released to streams).
    super::events::reading(&state, &client_id).await?;
    if let Some(token) = token {
        let wait = state.api.default_wait;
        let caught_up = state
            .progress
            .wait_for(&token, &client_id, &state.in_flight, &state.frontier, wait)
            .await;
        if !caught_up {
            return Err(not_caught_up(wait.as_millis() as u64));
        }
    }
    // Subscribe before replaying: whatever is released during the replay is queued too, and
    // the replay's positions filter the overlap out.
    let subscription = state.streams.subscribe(&client_id, state.api.stream_buffer);
    // Right after the replica started, events stored before its start are not all released
    // yet; a replay then would stop short of some that it never delivers live.
    let started = state
        .progress
        .wait_until(|| state.frontier.started(), state.api.default_wait)
        .await;
    if !started {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "this replica is still catching up after its start; retry",
        )
        .retry_after(state.api.retry_after));
    }
    let heartbeat = state.api.stream_heartbeat;
    let feed = Feed {
        credential_ends: super::credential_ends(caller),
        state,
        client_id,
        last,
        replaying: true,
        replayed_pages: 0,
        queue: VecDeque::new(),
        subscription,
        done: false,
        _permit: permit,
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        feed.next().await.map(|event| (Ok(event), feed))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat)))
}

/// The state of one stream, owned by its response body.
struct Feed {
    /// When the caller's credential stops holding, if it does.
    credential_ends: Option<tokio::time::Instant>,
    state: Arc<AppState>,
    client_id: String,
    /// Position of the last event sent.
    last: Option<OrderKey>,
    replaying: bool,
    replayed_pages: usize,
    queue: VecDeque<SseEvent>,
    subscription: Subscription,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            // Past the credential's end nothing more is sent, queued events included.
            if !self.done
                && self
                    .credential_ends
                    .is_some_and(|end| tokio::time::Instant::now() >= end)
            {
                self.done = true;
                self.queue.clear();
                return Some(error_event(super::CREDENTIAL_ENDED));
            }
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if self.replaying {
                self.replay().await;
                continue;
            }
            if self.subscription.lagged.load(Ordering::Relaxed) {
                self.done = true;
                return Some(error_event(
                    "too slow: events were released faster than this stream read them; \
                     reconnect with Last-Event-ID",
                ));
            }
            let shutdown = self.state.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => self.done = true,
                // The loop's check above then ends the stream.
                () = super::until(self.credential_ends) => {}
                released = self.subscription.events.recv() => match released {
                    Some(event) => self.send(Status::InFlight, &event),
                    None => self.done = true,
                },
            }
        }
    }

    /// One page of the client's history after the last event sent.
    async fn replay(&mut self) {
        if self.state.shutdown.is_cancelled() {
            self.done = true;
            return;
        }
        let query = ClientQuery {
            client_id: &self.client_id,
            from: self.last,
            since_micros: None,
            until_micros: None,
            limit: if self.replayed_pages == 0 {
                FIRST_REPLAY_PAGE
            } else {
                REPLAY_PAGE
            },
            direction: Direction::Forward,
        };
        self.replayed_pages += 1;
        match history::page(&self.state.sources(), &query).await {
            Ok(page) => {
                for (status, event) in &page.events {
                    self.send(*status, event);
                }
                self.replaying = page.next.is_some();
            }
            Err(e) => {
                let problem = unavailable(&self.state, &e);
                self.queue.push_back(error_event(&problem.detail));
                self.done = true;
            }
        }
    }

    fn send(&mut self, status: Status, stored: &StoredEvent) {
        let key = stored.order_key();
        if self.last.is_some_and(|last| key <= last) {
            return; // sent already (replay and live overlap)
        }
        let data = view(status, stored)
            .ok()
            .and_then(|v| serde_json::to_string(&v).ok());
        if let Some(data) = data {
            self.queue.push_back(
                SseEvent::default()
                    .event("event")
                    .id(format_cursor(key))
                    .data(data),
            );
        }
        self.last = Some(key);
    }
}

fn error_event(message: &str) -> SseEvent {
    SseEvent::default().event("error").data(message)
}
