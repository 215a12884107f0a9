//! The order of a client's history, as every consumer of the event topics computes it.
//!
//! Gateways stamp `ingested_at` with their own clocks, and a client's events spread over
//! several partitions (two lanes, partitions added later), so neither `ingested_at` nor the
//! order in which a reader happens to consume them is a stable order. The pipeline therefore
//! orders by `(ordered_at, event_id)`, where
//!
//! > `ordered_at` of a record = the largest `ingested_at` (of events and ticks) among the
//! > records of its partition up to and including it.
//!
//! `ordered_at` equals `ingested_at` unless a record was appended after one stamped later (a
//! slower gateway clock, a request stamped before a concurrent one but acknowledged after it);
//! such a record is ordered where it arrived. It is a function of the partition's contents
//! alone, so db-writer (which stores it) and every query-service replica (which serves events
//! before they are stored) compute the same value, and a partition's `ordered_at` never
//! decreases: once a reader has consumed a partition up to some record, nothing later in that
//! partition sorts before it. That is what lets a replica release events in a stable order
//! (see `docs/design.md`, "Ordering").
//!
//! A consumer that starts in the middle of a partition needs the clock's value there: db-writer
//! commits it as the offset's metadata ([`commit_metadata`]), and whoever starts from that
//! commit (the next writer, every query-service replica) reads it back ([`parse_commit_metadata`]).

use std::fmt;

use uuid::Uuid;

/// A position in a client's history: unique, and the same in every replica and in PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrderKey {
    pub ordered_at_micros: i64,
    pub event_id: Uuid,
}

impl OrderKey {
    /// The smallest key at `micros`: every key of an event ordered at `micros` or later is
    /// at or above it, every key ordered before it is below.
    pub fn floor(micros: i64) -> Self {
        OrderKey {
            ordered_at_micros: micros,
            event_id: Uuid::nil(),
        }
    }

    /// Below every key.
    pub const MIN: OrderKey = OrderKey {
        ordered_at_micros: i64::MIN,
        event_id: Uuid::nil(),
    };

    /// Above every key.
    pub const MAX: OrderKey = OrderKey {
        ordered_at_micros: i64::MAX,
        event_id: Uuid::max(),
    };
}

impl fmt::Display for OrderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ordered_at_micros, self.event_id.simple())
    }
}

/// The running maximum of `ingested_at` over one partition: its "log time".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogClock {
    /// `None` before the first record with a time.
    latest: Option<i64>,
}

impl LogClock {
    /// The clock of a consumer starting where a commit with this metadata was made.
    pub fn resume(committed: Option<i64>) -> Self {
        LogClock { latest: committed }
    }

    /// Advances over one record stamped `ingested_at` and returns that record's `ordered_at`.
    pub fn observe(&mut self, ingested_at_micros: i64) -> i64 {
        let at = self
            .latest
            .map_or(ingested_at_micros, |latest| latest.max(ingested_at_micros));
        self.latest = Some(at);
        at
    }

    /// The largest time seen so far: every later record of the partition is ordered at or
    /// after it.
    pub fn latest(&self) -> Option<i64> {
        self.latest
    }
}

const METADATA_PREFIX: &str = "eventpipe.clock.v1=";

/// Offset-commit metadata carrying the partition's clock at the committed offset.
pub fn commit_metadata(clock: LogClock) -> String {
    match clock.latest {
        Some(at) => format!("{METADATA_PREFIX}{at}"),
        None => String::new(),
    }
}

/// The clock value in a commit's metadata; `None` when there is none (no commit yet, a commit
/// made before the pipeline recorded clocks, or a partition that held no timed record).
pub fn parse_commit_metadata(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(METADATA_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitions_clock_never_goes_back() {
        let mut clock = LogClock::default();
        let ordered: Vec<i64> = [100, 90, 105, 105, 50, 200]
            .into_iter()
            .map(|at| clock.observe(at))
            .collect();
        assert_eq!(ordered, vec![100, 100, 105, 105, 105, 200]);
        assert_eq!(clock.latest(), Some(200));
    }

    #[test]
    fn the_clock_travels_in_commit_metadata() {
        let mut clock = LogClock::default();
        assert_eq!(commit_metadata(clock), "");
        assert_eq!(parse_commit_metadata(""), None);
        clock.observe(1_763_000_000_000_001);
        let text = commit_metadata(clock);
        let mut resumed = LogClock::resume(parse_commit_metadata(&text));
        assert_eq!(resumed, clock);
        assert_eq!(resumed.observe(5), 1_763_000_000_000_001);
        for foreign in ["x", "eventpipe.clock.v1=", "eventpipe.clock.v1=abc", "v0=1"] {
            assert_eq!(parse_commit_metadata(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn keys_order_by_time_then_id() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let key = |at, id| OrderKey {
            ordered_at_micros: at,
            event_id: id,
        };
        assert!(key(1, b) < key(2, a));
        assert!(key(2, a) < key(2, b));
        assert!(OrderKey::floor(2) <= key(2, a));
        assert!(key(1, b) < OrderKey::floor(2));
        assert!(OrderKey::MIN < key(i64::MIN, a));
        assert!(key(i64::MAX, b) < OrderKey::MAX);
    }
}
