//! The gateway's clock: ingest times that strictly increase within this process, and the
//! time written into ticks.

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// Hands out ingest times that strictly increase within this process, so a batch keeps its
/// order and successive requests follow each other in the order key (`schemas::order`).
#[derive(Debug, Default)]
pub struct IngestClock {
    last_micros: AtomicI64,
    /// Added to the host clock. Zero in production; tests run gateways whose clocks differ.
    offset_micros: i64,
}

impl IngestClock {
    /// A clock `offset_micros` ahead of the host's (behind when negative): how a gateway on
    /// a host with a drifting clock behaves.
    pub fn with_offset_micros(offset_micros: i64) -> Self {
        IngestClock {
            last_micros: AtomicI64::new(0),
            offset_micros,
        }
    }

    pub fn now_micros(&self) -> i64 {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
        i64::try_from(now)
            .unwrap_or(i64::MAX)
            .saturating_add(self.offset_micros)
    }

    /// Reserves `n` consecutive microsecond ticks and returns the first.
    pub fn reserve(&self, n: usize) -> i64 {
        let now = self.now_micros();
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let mut last = self.last_micros.load(Ordering::Relaxed);
        loop {
            let first = now.max(last + 1);
            match self.last_micros.compare_exchange_weak(
                last,
                first + n - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return first,
                Err(actual) => last = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_strictly_increase_and_an_offset_shifts_them() {
        let clock = IngestClock::default();
        let a = clock.reserve(3);
        let b = clock.reserve(1);
        assert!(b >= a + 3);
        let ahead = IngestClock::with_offset_micros(3_600_000_000);
        assert!(ahead.reserve(1) > clock.reserve(1) + 3_000_000_000);
    }
}
