//! Per-client token buckets, bounded in memory: idle clients are forgotten.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use moka::sync::Cache;

use crate::settings::RateLimitSettings;

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

impl RateLimiter {
    /// `None` when rate limiting is off.
    pub fn new(settings: &RateLimitSettings) -> Option<Self> {
        settings.enabled.then(|| RateLimiter {
            rate: settings.events_per_second.max(f64::MIN_POSITIVE),
            burst: settings.burst.max(1.0),
            buckets: Cache::builder()
                .max_capacity(settings.max_clients)
                .time_to_idle(Duration::from_secs(60))
                .build(),
        })
    }

    /// Takes `count` tokens from each client's bucket, all or none. On refusal returns how
    /// long until the most-starved client has enough.
    pub fn admit(&self, counts: &HashMap<&str, usize>) -> Result<(), Duration> {
        let now = Instant::now();
        let buckets: Vec<(Arc<Mutex<Bucket>>, f64)> = counts
            .iter()
            .map(|(client, n)| {
                let bucket = self.buckets.get_with((*client).to_owned(), || {
                    Arc::new(Mutex::new(Bucket {
                        tokens: self.burst,
                        refilled: now,
                    }))
                });
                (bucket, *n as f64)
            })
            .collect();
        let mut wait = Duration::ZERO;
        for (bucket, n) in &buckets {
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            let elapsed = now.saturating_duration_since(b.refilled).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
            b.refilled = now;
            if b.tokens < *n {
                let needed = (n.min(self.burst) - b.tokens) / self.rate;
                wait = wait.max(Duration::from_secs_f64(needed.max(0.001)));
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for (bucket, n) in &buckets {
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.tokens -= n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter::new(&RateLimitSettings {
            enabled: true,
            events_per_second: rate,
            burst,
            max_clients: 10,
        })
        .unwrap()
    }

    #[test]
    fn admits_a_burst_then_refuses_with_the_wait() {
        let limiter = limiter(10.0, 5.0);
        let five = HashMap::from([("a", 5)]);
        assert!(limiter.admit(&five).is_ok());
        let wait = limiter.admit(&HashMap::from([("a", 2)])).unwrap_err();
        assert!(
            wait > Duration::from_millis(100) && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        // Other clients have their own buckets.
        assert!(limiter.admit(&HashMap::from([("b", 5)])).is_ok());
    }

    #[test]
    fn a_refused_request_takes_no_tokens() {
        let limiter = limiter(1.0, 5.0);
        assert!(limiter.admit(&HashMap::from([("a", 3), ("b", 9)])).is_err());
        assert!(limiter.admit(&HashMap::from([("a", 5)])).is_ok());
    }

    #[test]
    fn off_by_default() {
        assert!(RateLimiter::new(&RateLimitSettings::default()).is_none());
    }
}
