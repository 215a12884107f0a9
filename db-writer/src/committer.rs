//! Commits offsets on a thread of its own, one batch after another.
//!
//! Batches stored within `interval` of the last commit are committed together, with one
//! request: the critical lane stores a batch every few milliseconds, and an `OffsetCommit` per
//! batch was an append to `__consumer_offsets` for each. Nothing waits on a commit but replay
//! after a crash (idempotent) and query-service's eviction of stored events, which looks at
//! the commits every 100 ms.
//!
//! librdkafka's synchronous commit waits for the group coordinator without a deadline —
//! forever while the brokers are gone — and its asynchronous commit reports nothing back
//! through rust-rdkafka unless auto-commit is on. So commits are synchronous, in batch order,
//! on a plain thread: the run loop never blocks on one, gets each result in order, and a
//! commit that never returns cannot hold up the loop, shutdown, or the process's exit.

use std::{
    sync::{mpsc::RecvTimeoutError, Arc},
    thread,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{CommitMode, Consumer},
    error::{KafkaError, KafkaResult},
    TopicPartitionList,
};
use tokio::sync::mpsc;

use crate::consume::WriterConsumer;

pub struct Committer {
    requests: std::sync::mpsc::Sender<TopicPartitionList>,
    thread: thread::JoinHandle<()>,
}

/// Results in the order the commits were asked for. Unbounded: one per committed batch, taken
/// by the run loop as they come.
pub type Results = mpsc::UnboundedReceiver<KafkaResult<()>>;

impl Committer {
    /// `interval`: the least time between two commits' starts.
    pub fn start(
        consumer: Arc<WriterConsumer>,
        interval: Duration,
    ) -> std::io::Result<(Self, Results)> {
        let (requests, inbox) = std::sync::mpsc::channel::<TopicPartitionList>();
        let (answers, results) = mpsc::unbounded_channel();
        let thread = thread::Builder::new()
            .name("offset-committer".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while let Ok(first) = inbox.recv() {
                    let (offsets, batches, open) = gather(&inbox, first, last, interval);
                    last = Some(Instant::now());
                    let result = consumer.commit(&offsets, CommitMode::Sync);
                    // One answer per batch, in order: the lane settles each.
                    for _ in 0..batches {
                        if answers.send(result.clone()).is_err() {
                            return;
                        }
                    }
                    if !open {
                        return;
                    }
                }
            })?;
        Ok((Committer { requests, thread }, results))
    }

    /// Queues a commit; its result comes on `results`, after those queued before.
    pub fn commit(&self, offsets: TopicPartitionList) -> KafkaResult<()> {
        self.requests
            .send(offsets)
            .map_err(|_| KafkaError::Canceled)
    }

    /// Ends the thread. When every commit was answered it is idle and ends at once, so it is
    /// joined — its handle on the consumer must go before the consumer can leave the group;
    /// a commit still hanging on a gone broker is left behind rather than waited for.
    pub fn close(self, answered: bool) {
        let Committer { requests, thread } = self;
        drop(requests);
        if answered {
            let _ = thread.join();
        }
    }
}

/// `first` and every commit asked for until `interval` after the `last` commit started,
/// merged: each partition at the furthest offset asked. Returns the offsets, how many
/// commits they stand for, and whether more can come.
fn gather(
    inbox: &std::sync::mpsc::Receiver<TopicPartitionList>,
    first: TopicPartitionList,
    last: Option<Instant>,
    interval: Duration,
) -> (TopicPartitionList, usize, bool) {
    let mut offsets = first;
    let mut batches = 1;
    let due = last.map_or_else(Instant::now, |last| last + interval);
    loop {
        // Past `due` this still takes what is already queued (a zero wait tries once).
        match inbox.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(more) => {
                merge(&mut offsets, &more);
                batches += 1;
            }
            Err(RecvTimeoutError::Timeout) => return (offsets, batches, true),
            Err(RecvTimeoutError::Disconnected) => return (offsets, batches, false),
        }
    }
}

/// `later`'s offsets into `offsets`: the lane asks in batch order, so a later offset of a
/// partition is the further one. Its metadata (the partition's log clock there, which the
/// next owner orders from) goes with it.
fn merge(offsets: &mut TopicPartitionList, later: &TopicPartitionList) {
    for element in later.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let mut merged = match offsets.find_partition(topic, partition) {
            Some(known) => known,
            None => offsets.add_partition(topic, partition),
        };
        // Fails only for an offset librdkafka cannot represent, which the lane never asks.
        let _ = merged.set_offset(element.offset());
        merged.set_metadata(element.metadata());
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::Offset;

    use super::*;

    /// Offsets with the offset as their metadata, as the lane's clock would be.
    fn offsets(list: &[(&str, i32, i64)]) -> TopicPartitionList {
        let mut offsets = TopicPartitionList::new();
        for (topic, partition, offset) in list {
            let mut element = offsets.add_partition(topic, *partition);
            element.set_offset(Offset::Offset(*offset)).unwrap();
            element.set_metadata(format!("clock={offset}"));
        }
        offsets
    }

    /// Each partition's offset, and whether its metadata went with it.
    fn listed(offsets: &TopicPartitionList) -> Vec<(String, i32, Offset)> {
        let mut listed: Vec<_> = offsets
            .elements()
            .iter()
            .map(|e| {
                let Offset::Offset(at) = e.offset() else {
                    panic!("not an offset: {:?}", e.offset());
                };
                assert_eq!(
                    e.metadata(),
                    format!("clock={at}"),
                    "the metadata of its offset"
                );
                (e.topic().to_owned(), e.partition(), e.offset())
            })
            .collect();
        listed.sort_by_key(|(topic, partition, _)| (topic.clone(), *partition));
        listed
    }

    #[test]
    fn commits_asked_within_the_interval_go_as_one_at_the_furthest_offsets() {
        let (requests, inbox) = std::sync::mpsc::channel();
        requests
            .send(offsets(&[("e", 1, 20), ("e", 2, 7)]))
            .unwrap();
        requests.send(offsets(&[("e", 1, 31)])).unwrap();
        let first = offsets(&[("e", 0, 5), ("e", 1, 10)]);
        let (merged, batches, open) = gather(
            &inbox,
            first,
            Some(Instant::now()),
            Duration::from_millis(20),
        );
        assert_eq!(batches, 3);
        assert!(open);
        assert_eq!(
            listed(&merged),
            vec![
                ("e".to_owned(), 0, Offset::Offset(5)),
                ("e".to_owned(), 1, Offset::Offset(31)),
                ("e".to_owned(), 2, Offset::Offset(7)),
            ]
        );
    }

    #[test]
    fn a_commit_after_the_interval_goes_at_once_with_what_is_queued() {
        let (requests, inbox) = std::sync::mpsc::channel();
        let started = Instant::now();
        // Past the interval, what is already queued still goes with it.
        requests.send(offsets(&[("e", 0, 8)])).unwrap();
        let (merged, batches, _) = gather(
            &inbox,
            offsets(&[("e", 0, 5)]),
            started.checked_sub(Duration::from_secs(20)),
            Duration::from_secs(10),
        );
        assert_eq!(batches, 2);
        assert_eq!(
            listed(&merged),
            vec![("e".to_owned(), 0, Offset::Offset(8))]
        );
        // The last commit two intervals ago, and none at all.
        for last in [started.checked_sub(Duration::from_secs(20)), None] {
            let (merged, batches, open) = gather(
                &inbox,
                offsets(&[("e", 0, 5)]),
                last,
                Duration::from_secs(10),
            );
            // `requests` still open: the commit did not wait for a next one.
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!((batches, open), (1, true));
            assert_eq!(
                listed(&merged),
                vec![("e".to_owned(), 0, Offset::Offset(5))]
            );
        }
        drop(requests);
    }

    #[test]
    fn what_was_asked_before_the_lane_closed_is_still_committed() {
        let (requests, inbox) = std::sync::mpsc::channel();
        requests.send(offsets(&[("e", 0, 9)])).unwrap();
        drop(requests);
        let (merged, batches, open) = gather(
            &inbox,
            offsets(&[("e", 0, 5)]),
            Some(Instant::now()),
            Duration::from_secs(10),
        );
        assert_eq!((batches, open), (2, false));
        assert_eq!(
            listed(&merged),
            vec![("e".to_owned(), 0, Offset::Offset(9))]
        );
    }
}
