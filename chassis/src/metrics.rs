use axum::{http::header, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, TextEncoder};

/// Registers the process's own metrics (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, `process_open_fds`, …) once; a binary calls it at start.
pub fn register_process_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let collector = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(e) = prometheus::register(Box::new(collector)) {
            tracing::warn!(error = %e, "process metrics not registered");
        }
    });
}

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
