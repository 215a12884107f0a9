//! Accumulates consumed records until one of three triggers fires: row count, bytes, or the
//! time since the batch's first event. Ticks (records without an event) ride along to have
//! their offsets committed, but only start a slow timer: there is nothing to store for them.

use std::time::Duration;

use event_store::{KafkaPosition, StoredEvent};
use tokio::time::Instant;

use crate::settings::BatchSettings;

/// The Kafka record as it arrived, kept so a dead letter carries its original bytes and
/// headers (`traceparent` included).
#[derive(Debug, Clone, Default)]
pub struct Raw {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A record that can never be stored, kept whole for the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Poison {
    pub position: KafkaPosition,
    pub raw: Raw,
    pub error_class: &'static str,
    pub error: String,
}

#[derive(Debug, Clone)]
pub enum Record {
    /// An event to store.
    Event { event: StoredEvent, raw: Raw },
    /// A tick: moves its partition's clock to `clock`, stores nothing.
    Tick { position: KafkaPosition, clock: i64 },
    /// A record that can never be stored; `clock` is its partition's clock after it.
    Poison { poison: Poison, clock: Option<i64> },
}

impl Record {
    pub fn position(&self) -> &KafkaPosition {
        match self {
            Record::Event { event, .. } => &event.position,
            Record::Tick { position, .. } => position,
            Record::Poison { poison, .. } => &poison.position,
        }
    }

    /// The partition's log clock just after this record, carried into the commit metadata.
    pub fn clock_after(&self) -> Option<i64> {
        match self {
            Record::Event { event, .. } => Some(event.ordered_at_micros),
            Record::Tick { clock, .. } => Some(*clock),
            Record::Poison { clock, .. } => *clock,
        }
    }
}

#[derive(Debug)]
pub struct Batcher {
    max_rows: usize,
    max_bytes: usize,
    max_wait: Duration,
    idle_wait: Duration,
    records: Vec<Record>,
    bytes: usize,
    deadline: Option<Instant>,
}

impl Batcher {
    pub fn new(settings: &BatchSettings) -> Self {
        Batcher {
            max_rows: settings.max_rows.max(1),
            max_bytes: settings.max_bytes.max(1),
            max_wait: settings.max_wait,
            idle_wait: settings.idle_wait.max(settings.max_wait),
            records: Vec::with_capacity(settings.max_rows.max(1)),
            bytes: 0,
            deadline: None,
        }
    }

    /// Adds a record; returns true when the batch should be written now.
    pub fn push(&mut self, record: Record, bytes: usize) -> bool {
        // The run loop stops consuming while a batch is full, so this never grows past the
        // bound by more than the record that filled it.
        let wait = match record {
            Record::Tick { .. } => self.idle_wait,
            _ => self.max_wait,
        };
        let due = Instant::now() + wait;
        self.deadline = Some(self.deadline.map_or(due, |d| d.min(due)));
        self.records.push(record);
        self.bytes += bytes;
        self.is_full()
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max_rows || self.bytes >= self.max_bytes
    }

    /// Full, or holding `rows` records: the bound a yielding lane writes at
    /// (`priority::Limits`).
    pub fn holds(&self, rows: usize) -> bool {
        self.is_full() || self.records.len() >= rows
    }

    /// When the time trigger fires; `None` while the batch is empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Drops the records of partitions this writer no longer owns: their new owner reads
    /// them again from the last committed offset.
    pub fn forget(&mut self, revoked: &[(String, i32)]) -> usize {
        let before = self.records.len();
        self.records.retain(|r| {
            let position = r.position();
            !revoked
                .iter()
                .any(|(t, p)| t.as_str() == &*position.topic && *p == position.partition)
        });
        if self.records.is_empty() {
            self.deadline = None;
            self.bytes = 0;
        }
        before - self.records.len()
    }

    pub fn take(&mut self) -> Vec<Record> {
        self.deadline = None;
        self.bytes = 0;
        std::mem::replace(&mut self.records, Vec::with_capacity(self.max_rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(partition: i32, offset: i64) -> KafkaPosition {
        KafkaPosition {
            topic: "t".into(),
            partition,
            offset,
        }
    }

    fn poison(partition: i32, offset: i64) -> Record {
        Record::Poison {
            poison: Poison {
                position: position(partition, offset),
                raw: Raw::default(),
                error_class: "test",
                error: String::new(),
            },
            clock: None,
        }
    }

    fn tick(partition: i32, offset: i64) -> Record {
        Record::Tick {
            position: position(partition, offset),
            clock: 1,
        }
    }

    fn settings(rows: usize, bytes: usize) -> BatchSettings {
        BatchSettings {
            max_rows: rows,
            max_bytes: bytes,
            max_wait: Duration::from_millis(50),
            idle_wait: Duration::from_secs(1),
            synchronous_commit: true,
        }
    }

    #[test]
    fn fires_on_count_and_on_bytes() {
        let mut by_count = Batcher::new(&settings(3, 1 << 20));
        assert!(!by_count.push(poison(0, 0), 10));
        assert!(!by_count.push(poison(0, 1), 10));
        assert!(by_count.push(poison(0, 2), 10));
        assert_eq!(by_count.take().len(), 3);
        assert!(by_count.deadline().is_none());

        let mut by_bytes = Batcher::new(&settings(100, 25));
        assert!(!by_bytes.push(poison(0, 0), 10));
        assert!(!by_bytes.push(poison(0, 1), 10));
        assert!(by_bytes.push(poison(0, 2), 10));
    }

    #[tokio::test(start_paused = true)]
    async fn timer_starts_at_the_first_record() {
        let mut batcher = Batcher::new(&settings(100, 1 << 20));
        let t0 = Instant::now();
        batcher.push(poison(0, 0), 1);
        tokio::time::advance(Duration::from_millis(30)).await;
        batcher.push(poison(0, 1), 1);
        assert_eq!(batcher.deadline(), Some(t0 + Duration::from_millis(50)));
        batcher.take();
        tokio::time::advance(Duration::from_millis(5)).await;
        batcher.push(poison(0, 2), 1);
        assert_eq!(
            batcher.deadline(),
            Some(t0 + Duration::from_millis(35) + Duration::from_millis(50))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_alone_wait_long_and_an_event_shortens_the_wait() {
        let mut batcher = Batcher::new(&settings(100, 1 << 20));
        let t0 = Instant::now();
        batcher.push(tick(0, 0), 0);
        assert_eq!(batcher.deadline(), Some(t0 + Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(100)).await;
        batcher.push(poison(0, 1), 1);
        assert_eq!(batcher.deadline(), Some(t0 + Duration::from_millis(150)));
        batcher.push(tick(0, 2), 0);
        assert_eq!(batcher.deadline(), Some(t0 + Duration::from_millis(150)));
    }

    #[test]
    fn a_yielding_bound_holds_below_the_batch_bounds_never_above() {
        let mut batcher = Batcher::new(&settings(5, 1 << 20));
        batcher.push(poison(0, 0), 10);
        batcher.push(poison(0, 1), 10);
        assert!(batcher.holds(2));
        assert!(!batcher.holds(3));
        assert!(!batcher.holds(usize::MAX));
        for offset in 2..5 {
            batcher.push(poison(0, offset), 10);
        }
        // Full at the batch's own bound whatever the yielding one says.
        assert!(batcher.holds(usize::MAX));
    }

    #[test]
    fn forgets_revoked_partitions_only() {
        let mut batcher = Batcher::new(&settings(100, 1 << 20));
        batcher.push(poison(0, 0), 1);
        batcher.push(poison(1, 0), 1);
        batcher.push(tick(0, 1), 1);
        assert_eq!(batcher.forget(&[("t".into(), 0)]), 2);
        let left = batcher.take();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].position().partition, 1);
    }
}
