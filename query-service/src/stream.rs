//! `GET /events/stream?clientId=`: one client's events as Server-Sent Events, live.
//!
//! A stream replays the client's history after its cursor (`cursor` or `Last-Event-ID`), then
//! follows new events as they are consumed. Each SSE id is the event's cursor, so a client
//! that reconnects with `Last-Event-ID` resumes without gaps or repeats. A reader too slow for
//! the live feed is disconnected with an `error` event instead of buffering without bound.

use std::{convert::Infallible, sync::Arc};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use chassis::problem::Problem;
use event_store::{ClientQuery, IngestKey, StoredEvent};
use futures::Stream;
use schemas::ReadToken;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::{
    history::{self, Status},
    http::{bad_request, format_cursor, parse_cursor, view, AppState},
};

/// Events buffered per stream between the feed and a slow connection.
const PER_STREAM_BUFFER: usize = 256;
const REPLAY_PAGE: usize = 1000;

#[derive(Deserialize)]
pub struct Params {
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    cursor: Option<String>,
    after: Option<String>,
}

pub async fn stream_events(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Problem> {
    let client_id = params
        .client_id
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad_request("clientId is required".into()))?;
    let resume = params.cursor.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let cursor = resume.as_deref().map(parse_cursor).transpose()?;
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-streams",
            "this replica serves its maximum number of streams; retry later or elsewhere",
        )
        .retry_after(state.api.retry_after)
    })?;
    if let Some(token) = params.after.as_deref() {
        let token: ReadToken = token
            .parse()
            .map_err(|e: schemas::TokenError| bad_request(format!("after: {e}")))?;
        if !state
            .progress
            .wait_for(&token, state.api.default_wait)
            .await
        {
            return Err(Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "not-caught-up",
                "this replica has not consumed the token's events yet; retry",
            ));
        }
    }
    let heartbeat = state.api.stream_heartbeat;
    // Subscribe before replaying, so no event falls between the replay and the live feed.
    let live = state.live.subscribe();
    let (tx, rx) = mpsc::channel(PER_STREAM_BUFFER);
    tokio::spawn(async move {
        let _permit = permit;
        feed(state, client_id, cursor, live, tx).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat)))
}

async fn feed(
    state: Arc<AppState>,
    client_id: String,
    mut last: Option<IngestKey>,
    mut live: broadcast::Receiver<Arc<StoredEvent>>,
    tx: mpsc::Sender<SseEvent>,
) {
    // Replay what the client missed: persisted and in flight, in ingest order.
    loop {
        let query = ClientQuery {
            client_id: &client_id,
            after: last,
            since_micros: None,
            until_micros: None,
            limit: REPLAY_PAGE,
        };
        let page = match history::page(&state.shards, &state.in_flight, &state.pages, &query).await
        {
            Ok(page) => page,
            Err(e) => {
                let _ = tx
                    .send(error_event(&format!("history unavailable: {e}")))
                    .await;
                return;
            }
        };
        for (status, event) in &page.events {
            if !send(&tx, *status, event).await {
                return;
            }
            last = Some(IngestKey::of(&event.event));
        }
        if page.next.is_none() {
            break;
        }
    }
    loop {
        match live.recv().await {
            Ok(event) if event.event.client_id == client_id => {
                let key = IngestKey::of(&event.event);
                if last.is_some_and(|last| key <= last) {
                    continue; // already sent by the replay
                }
                if !send(&tx, Status::InFlight, &event).await {
                    return;
                }
                last = Some(key);
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let _ = tx
                    .send(error_event(&format!(
                        "too slow: {missed} events behind; reconnect with Last-Event-ID"
                    )))
                    .await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// False once the client is gone.
async fn send(tx: &mpsc::Sender<SseEvent>, status: Status, stored: &StoredEvent) -> bool {
    let Ok(view) = view(status, stored) else {
        return true;
    };
    let Ok(data) = serde_json::to_string(&view) else {
        return true;
    };
    let event = SseEvent::default()
        .event("event")
        .id(format_cursor(IngestKey::of(&stored.event)))
        .data(data);
    tx.send(event).await.is_ok()
}

fn error_event(message: &str) -> SseEvent {
    SseEvent::default().event("error").data(message)
}
