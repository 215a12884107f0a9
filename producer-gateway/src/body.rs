//! From HTTP body to a list of raw items: content type, size limits, JSON syntax.

use axum::http::{header, HeaderMap, StatusCode};
use chassis::problem::Problem;
use serde_json::value::RawValue;

/// The request formats `POST /events` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: one event object, or an array of them.
    Json,
    /// `application/x-ndjson`: one event object per line.
    Ndjson,
}

impl Format {
    pub fn of(headers: &HeaderMap) -> Result<Format, Problem> {
        let unsupported = |what: &str| {
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                format!("{what}; send application/json or application/x-ndjson"),
            )
        };
        let value = headers
            .get(header::CONTENT_TYPE)
            .ok_or_else(|| unsupported("no Content-Type"))?
            .to_str()
            .map_err(|_| unsupported("unreadable Content-Type"))?;
        let essence = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(Format::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Ok(Format::Ndjson)
            }
            other => Err(unsupported(&format!(
                "Content-Type {other:?} is not accepted"
            ))),
        }
    }
}

/// A body split into its events.
#[derive(Debug)]
pub struct Split<'a> {
    /// One raw JSON value per event, in request order.
    pub items: Vec<&'a RawValue>,
    /// The body was one JSON object, not an array or NDJSON: its answer repeats the event's
    /// id and position at the top level.
    pub one_object: bool,
}

/// Splits a body into one raw JSON value per event, checking syntax and the item limit.
/// Malformed JSON is a 400: nothing of the request is published.
pub fn split(format: Format, body: &[u8], max_events: usize) -> Result<Split<'_>, Problem> {
    let malformed =
        |detail: String| Problem::new(StatusCode::BAD_REQUEST, "malformed-json", detail);
    let text =
        std::str::from_utf8(body).map_err(|e| malformed(format!("body is not UTF-8: {e}")))?;
    // Some clients (.NET, Windows tools) start UTF-8 with a byte order mark; RFC 8259 lets a
    // parser ignore it, and refusing it only told them "expected value at line 1 column 1".
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut one_object = false;
    let items: Vec<&RawValue> = match format {
        Format::Json => {
            let value: &RawValue = serde_json::from_str(text)
                .map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
            if value.get().trim_start().starts_with('[') {
                serde_json::from_str(value.get())
                    .map_err(|e| malformed(format!("body is not valid JSON: {e}")))?
            } else {
                one_object = true;
                vec![value]
            }
        }
        Format::Ndjson => text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str::<&RawValue>(line)
                    .map_err(|e| malformed(format!("line {} is not valid JSON: {e}", n + 1)))
            })
            .collect::<Result<_, _>>()?,
    };
    if items.is_empty() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no-events",
            "the request contains no events",
        ));
    }
    if items.len() > max_events {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-events",
            format!(
                "{} events in one request; at most {max_events} are accepted",
                items.len()
            ),
        ));
    }
    Ok(Split { items, one_object })
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        h
    }

    #[test]
    fn recognises_content_types() {
        assert_eq!(
            Format::of(&headers("application/json; charset=utf-8")).unwrap(),
            Format::Json
        );
        assert_eq!(
            Format::of(&headers("application/x-ndjson")).unwrap(),
            Format::Ndjson
        );
        assert_eq!(Format::of(&headers("text/plain")).unwrap_err().status, 415);
        assert_eq!(Format::of(&HeaderMap::new()).unwrap_err().status, 415);
    }

    #[test]
    fn a_leading_byte_order_mark_is_ignored() {
        let json = "\u{feff}{\"a\":1}".as_bytes();
        assert_eq!(
            split(Format::Json, json, 10).unwrap().items[0].get(),
            r#"{"a":1}"#
        );
        let ndjson = "\u{feff}{\"a\":1}\n{\"b\":2}\n".as_bytes();
        assert_eq!(split(Format::Ndjson, ndjson, 10).unwrap().items.len(), 2);
        // Only at the start: one inside is not whitespace to JSON.
        let inside = "[\u{feff}{\"a\":1}]".as_bytes();
        assert_eq!(split(Format::Json, inside, 10).unwrap_err().status, 400);
    }

    #[test]
    fn splits_object_array_and_ndjson() {
        let one = split(Format::Json, br#"{"a":1}"#, 10).unwrap();
        assert!(one.one_object);
        assert_eq!(one.items.len(), 1);
        let two = split(Format::Json, br#" [{"a":1},{"b":[2]}] "#, 10).unwrap();
        assert!(!two.one_object);
        assert_eq!(two.items.len(), 2);
        // An array of one is an array still, also after a byte order mark.
        let marked = "\u{feff} [{\"a\":1}]".as_bytes();
        assert!(!split(Format::Json, marked, 10).unwrap().one_object);
        let nd = b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}";
        assert_eq!(split(Format::Ndjson, nd, 10).unwrap().items.len(), 3);
    }

    #[test]
    fn rejects_malformed_empty_and_oversized() {
        assert_eq!(split(Format::Json, b"{\"a\":", 10).unwrap_err().status, 400);
        let err = split(Format::Ndjson, b"{\"a\":1}\n{oops", 10).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.detail.contains("line 2"), "{}", err.detail);
        assert_eq!(split(Format::Json, b"[]", 10).unwrap_err().status, 422);
        assert_eq!(split(Format::Json, b"[1,2,3]", 2).unwrap_err().status, 413);
    }
}
