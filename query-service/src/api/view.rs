//! An event as the API shows it, the same in `GET /events` and in streams.

use axum::http::StatusCode;
use chassis::problem::Problem;
use event_store::StoredEvent;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::params::format_time;
use crate::history::Status;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct EventView<'a> {
    event_id: Uuid,
    client_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    ts: Option<String>,
    ingested_at: String,
    /// Its place in the client's history (docs/design.md, "Ordering").
    ordered_at: String,
    /// `normal` or `critical`.
    priority: &'static str,
    /// The JSON the producer sent, unchanged.
    #[schema(value_type = Object)]
    payload: &'a RawValue,
    sdk: Option<&'a str>,
    /// `persisted` (in its shard) or `in_flight` (acknowledged, not stored yet).
    status: &'static str,
    topic: &'a str,
    partition: i32,
    offset: i64,
}

pub fn view(status: Status, stored: &StoredEvent) -> Result<EventView<'_>, Problem> {
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
        ordered_at: format_time(stored.ordered_at_micros),
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
