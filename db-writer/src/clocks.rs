//! Each assigned partition's log clock (`schemas::order`), resumed from the commit this
//! writer starts after.
//!
//! The clock at an offset depends on every record before it, so a writer that takes over a
//! partition must start from exactly the offset whose clock it knows: the committed offset,
//! whose metadata carries the clock. librdkafka already starts a new assignment there, except
//! when a commit moved after the assignment began (a previous owner's late commit): then this
//! writer seeks to the commit it read and drops what it received before.

use std::collections::HashMap;

use rdkafka::{consumer::Consumer, error::KafkaResult, Offset, TopicPartitionList};
use schemas::{order::parse_commit_metadata, LogClock};
use tracing::warn;

use crate::consume::WriterConsumer;

type Slot = (String, i32);

enum State {
    /// Waiting for the record at `from`, whose clock is `clock`; records before it are
    /// stored already, records after it arrived before a seek took effect.
    Resuming {
        from: i64,
        clock: LogClock,
    },
    Running(LogClock),
}

/// What to do with a consumed record.
pub enum Admission<'a> {
    /// The partition's commit must be read first ([`PartitionClocks::resume`]).
    Unknown,
    /// Not this writer's to handle now (see the module doc).
    Drop {
        seek_to: Option<i64>,
    },
    Take(&'a mut LogClock),
}

/// A commit of the writer's group: the offset and the clock in its metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    pub offset: i64,
    pub clock: Option<i64>,
}

#[derive(Default)]
pub struct PartitionClocks {
    states: HashMap<Slot, State>,
}

impl PartitionClocks {
    pub fn admit(&mut self, topic: &str, partition: i32, offset: i64) -> Admission<'_> {
        let slot = (topic.to_owned(), partition);
        let Some(state) = self.states.get_mut(&slot) else {
            return Admission::Unknown;
        };
        if let State::Resuming { from, clock } = state {
            if offset != *from {
                // Past the commit: the seek has not taken effect yet, or failed; ask again.
                let seek_to = (offset > *from).then_some(*from);
                return Admission::Drop { seek_to };
            }
            *state = State::Running(*clock);
        }
        match state {
            State::Running(clock) => Admission::Take(clock),
            State::Resuming { .. } => Admission::Drop { seek_to: None },
        }
    }

    /// Starts a partition whose first consumed record is at `first`, from its group commit.
    /// Returns the offset to seek to when the consumer is not where the commit is.
    pub fn resume(
        &mut self,
        topic: &str,
        partition: i32,
        first: i64,
        commit: Option<Commit>,
    ) -> Option<i64> {
        let slot = (topic.to_owned(), partition);
        match commit {
            // Never committed: the consumer starts at the beginning, and so does the clock.
            None => {
                self.states
                    .insert(slot, State::Running(LogClock::default()));
                None
            }
            Some(commit) if commit.offset == first => {
                self.states
                    .insert(slot, State::Running(LogClock::resume(commit.clock)));
                None
            }
            Some(commit) => {
                warn!(
                    topic,
                    partition,
                    first,
                    committed = commit.offset,
                    "consumer is not at the group commit; seeking to it"
                );
                self.states.insert(
                    slot,
                    State::Resuming {
                        from: commit.offset,
                        clock: LogClock::resume(commit.clock),
                    },
                );
                Some(commit.offset)
            }
        }
    }

    pub fn forget(&mut self, revoked: &[Slot]) {
        for slot in revoked {
            self.states.remove(slot);
        }
    }

    pub fn knows(&self, topic: &str, partition: i32) -> bool {
        self.states.contains_key(&(topic.to_owned(), partition))
    }
}

/// The group's commits for `partitions` (blocking: call off the async runtime).
pub fn read_commits(
    consumer: &WriterConsumer,
    partitions: &[Slot],
    timeout: std::time::Duration,
) -> KafkaResult<HashMap<Slot, Option<Commit>>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let commit = match e.offset() {
                Offset::Offset(offset) => Some(Commit {
                    offset,
                    clock: parse_commit_metadata(e.metadata()),
                }),
                _ => None,
            };
            ((e.topic().to_owned(), e.partition()), commit)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(clocks: &mut PartitionClocks, offset: i64) -> Option<i64> {
        match clocks.admit("t", 0, offset) {
            Admission::Take(clock) => Some(clock.observe(0)),
            _ => None,
        }
    }

    #[test]
    fn resumes_at_the_commit_with_its_clock() {
        let mut clocks = PartitionClocks::default();
        assert!(matches!(clocks.admit("t", 0, 10), Admission::Unknown));
        let commit = Commit {
            offset: 10,
            clock: Some(500),
        };
        assert_eq!(clocks.resume("t", 0, 10, Some(commit)), None);
        assert_eq!(
            take(&mut clocks, 10),
            Some(500),
            "an older record is raised"
        );
    }

    #[test]
    fn seeks_to_a_commit_that_moved_and_drops_what_came_before() {
        let mut clocks = PartitionClocks::default();
        let commit = Commit {
            offset: 20,
            clock: Some(900),
        };
        assert_eq!(clocks.resume("t", 0, 10, Some(commit)), Some(20));
        assert!(matches!(
            clocks.admit("t", 0, 11),
            Admission::Drop { seek_to: None }
        ));
        assert!(matches!(
            clocks.admit("t", 0, 25),
            Admission::Drop { seek_to: Some(20) }
        ));
        assert_eq!(take(&mut clocks, 20), Some(900));
        assert_eq!(take(&mut clocks, 21), Some(900));
    }

    #[test]
    fn a_partition_never_committed_starts_with_no_clock_and_revocation_forgets() {
        let mut clocks = PartitionClocks::default();
        assert_eq!(clocks.resume("t", 0, 0, None), None);
        assert_eq!(take(&mut clocks, 0), Some(0));
        clocks.forget(&[("t".into(), 0)]);
        assert!(!clocks.knows("t", 0));
    }
}
