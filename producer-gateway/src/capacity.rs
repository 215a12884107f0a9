//! What the gateway holds at once, across all clients: requests in progress and request
//! bytes buffered. Past either bound a request is refused at once with 503 + `Retry-After`
//! (other clients' requests in progress keep being served), instead of the process growing
//! until the kernel kills it.

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;
use chassis::problem::Problem;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;

/// Bytes are counted in KiB so that a bound of many GiB fits the semaphore's permit type.
const UNIT: usize = 1024;

pub struct Capacity {
    requests: Arc<Semaphore>,
    buffered_kib: Arc<Semaphore>,
    max_buffered_kib: usize,
    retry_after: Duration,
}

/// What one admitted request holds until it is answered.
pub struct Held {
    _request: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl Capacity {
    pub fn new(max_requests: usize, max_buffered_bytes: usize, retry_after: Duration) -> Self {
        let max_buffered_kib = max_buffered_bytes.div_ceil(UNIT).max(1);
        Capacity {
            requests: Arc::new(Semaphore::new(max_requests.max(1))),
            buffered_kib: Arc::new(Semaphore::new(max_buffered_kib)),
            max_buffered_kib,
            retry_after,
        }
    }

    /// Admits a request whose body will take at most `body_bytes` (its Content-Length, or the
    /// body limit when it has none).
    pub fn admit(&self, body_bytes: usize) -> Result<Held, Problem> {
        let overloaded = |what: &str| {
            metrics::OVERLOADED.with_label_values(&[what]).inc();
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("the gateway holds its most {what} at once; retry later"),
            )
            .retry_after(self.retry_after)
        };
        let request = self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| overloaded("requests"))?;
        let kib = body_bytes.div_ceil(UNIT).clamp(1, self.max_buffered_kib);
        let bytes = self
            .buffered_kib
            .clone()
            .try_acquire_many_owned(u32::try_from(kib).unwrap_or(u32::MAX))
            .map_err(|_| overloaded("buffered bytes"))?;
        Ok(Held {
            _request: request,
            _bytes: bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_either_bound_and_frees_what_answered_requests_held() {
        let capacity = Capacity::new(2, 100 * UNIT, Duration::from_secs(1));
        let first = capacity.admit(60 * UNIT).unwrap();
        // 60 + 50 KiB > 100 KiB buffered.
        let refused = capacity.admit(50 * UNIT).err().unwrap();
        assert_eq!(refused.status, 503);
        assert!(refused.detail.contains("buffered bytes"));
        let second = capacity.admit(10 * UNIT).unwrap();
        // Two requests in progress: the third is refused whatever its size.
        assert!(capacity.admit(1).err().unwrap().detail.contains("requests"));
        drop(first);
        drop(second);
        assert!(capacity.admit(100 * UNIT).is_ok());
    }
}
