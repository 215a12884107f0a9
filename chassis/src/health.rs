//! `/livez` and `/readyz` (aliases `/health/live`, `/health/ready`), the same in every service.
//!
//! Live means the process serves HTTP. Ready means every named check of the service passes
//! (for example "consumed up to the end offsets seen at start", "shards reachable"); until
//! then `/readyz` answers 503 with a problem+json naming what is not ready yet, so a
//! load balancer or orchestrator keeps traffic away.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::problem::Problem;

/// The readiness checks of one service and their current state.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    /// Check name → why it is not ready, or `None` once it passes.
    checks: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
}

impl Readiness {
    /// Every check starts not ready.
    pub fn new(checks: &[&'static str]) -> Self {
        Readiness {
            checks: Arc::new(Mutex::new(
                checks
                    .iter()
                    .map(|name| (*name, Some("starting".to_owned())))
                    .collect(),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        // Plain data: a panic elsewhere while holding the lock leaves it usable.
        self.checks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn pass(&self, check: &'static str) {
        self.lock().insert(check, None);
    }

    pub fn fail(&self, check: &'static str, reason: impl Into<String>) {
        self.lock().insert(check, Some(reason.into()));
    }

    pub fn is_ready(&self) -> bool {
        self.lock().values().all(Option::is_none)
    }

    /// `check: reason` of every check that does not pass.
    pub fn pending(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter_map(|(name, reason)| reason.as_ref().map(|r| format!("{name}: {r}")))
            .collect()
    }
}

/// `GET /livez` and `GET /readyz` (Kubernetes' names), with `/health/live` and
/// `/health/ready` kept as aliases for existing probes and scripts.
pub fn router<S: Clone + Send + Sync + 'static>(readiness: Readiness) -> Router<S> {
    Router::new()
        .route("/livez", get(live))
        .route("/readyz", get(ready))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(readiness)
}

async fn live() -> &'static str {
    "ok"
}

async fn ready(State(readiness): State<Readiness>) -> Response {
    let pending = readiness.pending();
    if pending.is_empty() {
        return "ready".into_response();
    }
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        format!("not ready: {}", pending.join("; ")),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_check_passes() {
        let readiness = Readiness::new(&["a", "b"]);
        assert!(!readiness.is_ready());
        readiness.pass("a");
        assert_eq!(readiness.pending(), vec!["b: starting".to_owned()]);
        readiness.pass("b");
        assert!(readiness.is_ready());
        readiness.fail("a", "lost");
        assert_eq!(readiness.pending(), vec!["a: lost".to_owned()]);
    }
}
