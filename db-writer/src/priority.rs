//! Critical first: while the critical lane is taking events, the normal lane writes small
//! batches one at a time.
//!
//! Both lanes write to the same shards. A critical insert commits behind the WAL a normal
//! `COPY` of 10,000 rows has written, and on a machine the normal lane's four batches in
//! flight keep busy, everything on the critical path (the gateway's acknowledgement, the
//! broker, this process) waits for a core. With 100 critical events a second beside a
//! normal backlog of 1,000,000, critical stored p99 was 125-143 ms with the normal lane at
//! full speed and 54-80 ms with it yielding to 1,000-row batches one at a time, for a drain
//! 17-20 % longer (alternating pairs, docs/benchmarks.md, 2026-12-04). A normal lane alone
//! keeps its full speed.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::settings::CriticalFirstSettings;

/// When the critical lane last took an event, shared by both lanes.
#[derive(Debug)]
pub struct CriticalActivity {
    origin: Instant,
    /// Micros after `origin` of the last event, plus one (0: none yet).
    last: AtomicU64,
}

impl CriticalActivity {
    pub fn new() -> Arc<Self> {
        Arc::new(CriticalActivity {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    /// The critical lane took an event at `now`.
    fn event_at(&self, now: Instant) {
        let micros = now.saturating_duration_since(self.origin).as_micros() as u64;
        self.last.fetch_max(micros + 1, Ordering::Relaxed);
    }

    /// Whether the critical lane took an event within `window` before `now`.
    fn within(&self, window: Duration, now: Instant) -> bool {
        match self.last.load(Ordering::Relaxed) {
            0 => false,
            last => {
                let at = self.origin + Duration::from_micros(last - 1);
                now.saturating_duration_since(at) < window
            }
        }
    }
}

/// What a lane may write at once, given the critical lane's activity.
#[derive(Debug, Clone)]
pub enum Pace {
    /// The critical lane: notes its events, never yields.
    Critical(Arc<CriticalActivity>),
    /// The normal lane: yields per `CriticalFirstSettings` while the critical lane is busy.
    Normal {
        activity: Arc<CriticalActivity>,
        settings: CriticalFirstSettings,
    },
}

/// The limits a lane writes under right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Batches being stored at once.
    pub depth: usize,
    /// A batch is due at this many rows (the batcher's own bounds apply too).
    pub rows: usize,
}

impl Limits {
    /// Below the lane's own limits: yielding to the critical lane.
    pub fn yielding(&self) -> bool {
        self.rows != usize::MAX
    }
}

impl Pace {
    /// The limits at `now` for a lane whose own are `depth` batches at once.
    pub fn limits(&self, depth: usize, now: Instant) -> Limits {
        let full = Limits {
            depth,
            rows: usize::MAX,
        };
        match self {
            Pace::Critical(_) => full,
            Pace::Normal { activity, settings } => {
                if settings.window.is_zero() || !activity.within(settings.window, now) {
                    full
                } else {
                    Limits {
                        depth: 1,
                        rows: settings.max_rows.max(1),
                    }
                }
            }
        }
    }

    /// The lane took an event. Only the critical lane reads the clock for it: the normal
    /// lane takes every record of a backlog through here.
    pub fn took_event(&self) {
        if let Pace::Critical(activity) = self {
            activity.event_at(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(activity: &Arc<CriticalActivity>, window: Duration) -> Pace {
        Pace::Normal {
            activity: activity.clone(),
            settings: CriticalFirstSettings {
                window,
                max_rows: 1000,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_normal_lane_yields_for_a_window_after_each_critical_event() {
        let activity = CriticalActivity::new();
        let critical = Pace::Critical(activity.clone());
        let normal = normal(&activity, Duration::from_secs(1));
        let full = Limits {
            depth: 4,
            rows: usize::MAX,
        };
        let yielding = Limits {
            depth: 1,
            rows: 1000,
        };
        assert_eq!(
            normal.limits(4, Instant::now()),
            full,
            "no critical event yet"
        );

        critical.took_event();
        assert_eq!(normal.limits(4, Instant::now()), yielding);
        assert!(yielding.yielding() && !full.yielding());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(normal.limits(4, Instant::now()), yielding);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            normal.limits(4, Instant::now()),
            full,
            "the window has passed"
        );

        // A later event opens the window again; the critical lane itself never yields.
        critical.took_event();
        assert_eq!(normal.limits(4, Instant::now()), yielding);
        assert_eq!(critical.limits(4, Instant::now()), full);
    }

    #[tokio::test(start_paused = true)]
    async fn the_normal_lane_taking_events_opens_no_window_and_a_zero_window_never_yields() {
        let activity = CriticalActivity::new();
        let yields = normal(&activity, Duration::from_secs(1));
        yields.took_event();
        assert_eq!(yields.limits(4, Instant::now()).depth, 4);

        Pace::Critical(activity.clone()).took_event();
        assert_eq!(yields.limits(4, Instant::now()).depth, 1);
        let never = normal(&activity, Duration::ZERO);
        assert_eq!(never.limits(4, Instant::now()).depth, 4);
    }
}
