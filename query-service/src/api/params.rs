//! Query parameters shared by the handlers: cursors, times, page direction.

use axum::{extract::rejection::QueryRejection, http::StatusCode};
use chassis::problem::Problem;
use event_store::Direction;
use schemas::{contract::client_id_problem, OrderKey, ReadToken, TokenError};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use uuid::Uuid;

pub fn bad_request(detail: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-parameter", detail)
}

/// A query string axum could not read (a parameter given twice, one of the wrong type): a
/// 400 like any other bad parameter, rather than axum's plain-text answer.
pub fn unreadable_query(rejection: QueryRejection) -> Problem {
    bad_request(rejection.body_text())
}

/// `after`: a gateway's read-your-writes token, for the topics this replica reads. One naming
/// another topic could never be caught up with: a 400 now rather than a 504 after the wait.
pub fn read_token(text: &str, topics: &[String]) -> Result<ReadToken, Problem> {
    let token: ReadToken = text
        .parse()
        .map_err(|e: TokenError| bad_request(format!("after: {e}")))?;
    if let Some((topic, _, _)) = token
        .positions()
        .find(|(topic, _, _)| !topics.iter().any(|t| t == topic))
    {
        return Err(bad_request(format!(
            "after: the token names topic {topic:?}, which this service does not read ({})",
            topics.join(", ")
        )));
    }
    Ok(token)
}

/// `clientId`: required, and one the gateway would accept (`schemas::contract`). No event of
/// another id can exist, so a typo is told, not answered with an empty history.
pub fn client_id(param: Option<String>) -> Result<String, Problem> {
    let id = param
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad_request("clientId is required".into()))?;
    match client_id_problem(&id) {
        Some(reason) => Err(bad_request(format!("clientId {reason}"))),
        None => Ok(id),
    }
}

/// Cursor: `<ordered_at micros>.<event_id hex>`, a position in the client's history. The
/// same text is the SSE id of each streamed event.
pub fn format_cursor(key: OrderKey) -> String {
    key.to_string()
}

pub fn parse_cursor(cursor: &str) -> Result<OrderKey, Problem> {
    let invalid = || bad_request("cursor is not one this service issued".into());
    let (micros, id) = cursor.split_once('.').ok_or_else(invalid)?;
    Ok(OrderKey {
        ordered_at_micros: micros.parse().map_err(|_| invalid())?,
        event_id: Uuid::parse_str(id).map_err(|_| invalid())?,
    })
}

pub fn parse_order(order: Option<&str>) -> Result<Direction, Problem> {
    match order {
        None | Some("asc") => Ok(Direction::Forward),
        Some("desc") => Ok(Direction::Backward),
        Some(other) => Err(bad_request(format!(
            "order must be asc (oldest first) or desc (newest first), not {other:?}"
        ))),
    }
}

pub fn format_time(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn parse_time(name: &str, value: &str) -> Result<i64, Problem> {
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000).ok())
        .ok_or_else(|| bad_request(format!("{name} must be an RFC 3339 timestamp")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let key = OrderKey {
            ordered_at_micros: 1_763_000_000_000_001,
            event_id: Uuid::now_v7(),
        };
        assert_eq!(parse_cursor(&format_cursor(key)).unwrap(), key);
        for bad in ["", "123", "x.y", "1.not-a-uuid"] {
            assert_eq!(parse_cursor(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn order_is_asc_or_desc() {
        assert_eq!(parse_order(None).unwrap(), Direction::Forward);
        assert_eq!(parse_order(Some("desc")).unwrap(), Direction::Backward);
        assert_eq!(parse_order(Some("newest")).unwrap_err().status, 400);
    }
}
