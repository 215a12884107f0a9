//! Accumulates consumed records until one of three triggers fires: row count, bytes, or the
//! time since the batch's first record.

use std::time::Duration;

use event_store::StoredEvent;
use tokio::time::Instant;

use crate::settings::BatchSettings;

/// A record that can never be stored, kept whole for the dead-letter topic.
#[derive(Debug, Clone)]
pub struct Poison {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub error_class: &'static str,
    pub error: String,
}

#[derive(Debug, Clone)]
pub enum Record {
    Event(StoredEvent),
    Poison(Poison),
}

impl Record {
    pub fn topic_partition(&self) -> (&str, i32) {
        match self {
            Record::Event(e) => (&e.position.topic, e.position.partition),
            Record::Poison(p) => (&p.topic, p.partition),
        }
    }

    pub fn offset(&self) -> i64 {
        match self {
            Record::Event(e) => e.position.offset,
            Record::Poison(p) => p.offset,
        }
    }
}

#[derive(Debug)]
pub struct Batcher {
    max_rows: usize,
    max_bytes: usize,
    max_wait: Duration,
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
            records: Vec::with_capacity(settings.max_rows.max(1)),
            bytes: 0,
            deadline: None,
        }
    }

    /// Adds a record; returns true when the batch should be written now.
    pub fn push(&mut self, record: Record, bytes: usize) -> bool {
        // The run loop stops consuming while a batch is full, so this never grows past the
        // bound by more than the record that filled it.
        if self.records.is_empty() {
            self.deadline = Some(Instant::now() + self.max_wait);
        }
        self.records.push(record);
        self.bytes += bytes;
        self.is_full()
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max_rows || self.bytes >= self.max_bytes
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
            let (topic, partition) = r.topic_partition();
            !revoked.iter().any(|(t, p)| t == topic && *p == partition)
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

    fn poison(partition: i32, offset: i64) -> Record {
        Record::Poison(Poison {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            value: None,
            error_class: "test",
            error: String::new(),
        })
    }

    fn settings(rows: usize, bytes: usize) -> BatchSettings {
        BatchSettings {
            max_rows: rows,
            max_bytes: bytes,
            max_wait: Duration::from_millis(50),
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

    #[test]
    fn forgets_revoked_partitions_only() {
        let mut batcher = Batcher::new(&settings(100, 1 << 20));
        batcher.push(poison(0, 0), 1);
        batcher.push(poison(1, 0), 1);
        batcher.push(poison(0, 1), 1);
        assert_eq!(batcher.forget(&[("t".into(), 0)]), 2);
        let left = batcher.take();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].topic_partition(), ("t", 1));
    }
}
