//! Commits offsets on a thread of its own, one batch after another.
//!
//! librdkafka's synchronous commit waits for the group coordinator without a deadline —
//! forever while the brokers are gone — and its asynchronous commit reports nothing back
//! through rust-rdkafka unless auto-commit is on. So commits are synchronous, in batch order,
//! on a plain thread: the run loop never blocks on one, gets each result in order, and a
//! commit that never returns cannot hold up the loop, shutdown, or the process's exit.

use std::{sync::Arc, thread};

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
    pub fn start(consumer: Arc<WriterConsumer>) -> std::io::Result<(Self, Results)> {
        let (requests, inbox) = std::sync::mpsc::channel::<TopicPartitionList>();
        let (answers, results) = mpsc::unbounded_channel();
        let thread = thread::Builder::new()
            .name("offset-committer".into())
            .spawn(move || {
                for offsets in inbox {
                    if answers
                        .send(consumer.commit(&offsets, CommitMode::Sync))
                        .is_err()
                    {
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
