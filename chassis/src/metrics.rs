use axum::{http::header, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, TextEncoder};

/// `GET /metrics` in the Prometheus text format, from the process-wide default registry.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(render))
}

async fn render() -> impl IntoResponse {
    let families = prometheus::gather();
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut body) {
        body = format!("# metrics encoding failed: {e}\n").into_bytes();
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}
