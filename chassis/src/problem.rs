//! RFC 9457 problem details, the body of every error answer.

use std::time::Duration;

use axum::{
    http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

pub const CONTENT_TYPE: &str = "application/problem+json";

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type; relative ones resolve against the API's base.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// Per-item errors of a rejected batch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<Duration>,
    /// One more header the answer carries (`Accept-Encoding` on a refused content coding);
    /// boxed, as every handler's `Result` carries a `Problem`.
    #[serde(skip)]
    #[schema(ignore)]
    pub header: Option<Box<(HeaderName, HeaderValue)>>,
}

/// One invalid field of one item of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Position of the item in the request (0-based; for NDJSON, the line's event index).
    pub index: usize,
    pub field: String,
    pub reason: String,
}

impl Problem {
    pub fn new(status: StatusCode, problem_type: &str, detail: impl Into<String>) -> Self {
        Problem {
            problem_type: format!("/problems/{problem_type}"),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            header: None,
        }
    }

    /// Adds a header to the answer (one; a second replaces it).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.header = Some(Box::new((name, value)));
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Adds a `Retry-After` header (whole seconds, at least 1).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(mut self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let extra = self.header.take();
        let mut response = (status, Json(self)).into_response();
        let headers = response.headers_mut();
        if let Some(extra) = extra {
            let (name, value) = *extra;
            headers.insert(name, value);
        }
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(after) = retry_after {
            let secs = after.as_secs().max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The answer to a path no route serves: axum's own is an empty `404`.
pub async fn no_route(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("nothing is served at {method} {}", uri.path()),
    )
}

/// The answer to a method a route does not take; axum adds the route's `Allow` header.
pub async fn method_not_allowed(method: Method, uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{} does not take {method}; see Allow", uri.path()),
    )
}
