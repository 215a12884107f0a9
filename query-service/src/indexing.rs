//! Indexing on read (`cache.index_on_read`): the tail holds every consumed event in offset
//! order, but indexes (by client and id, for pages, streams and the judging of copies) only
//! the events of clients read lately. A read of a client not indexed asks the tail to index
//! what it holds of it first, so the answer is the same as if it always had been; most
//! events are stored and dropped without ever being indexed (docs/design.md, "Indexing on
//! read").

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::{in_flight::InFlight, metrics, wall_clock::now_micros};

/// A read's request to the tail: index `client`'s held events, then answer `done`.
pub struct Request {
    pub client: String,
    pub done: oneshot::Sender<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("the tail stopped: in-flight events cannot be indexed")]
pub struct TailStopped;

/// The readers' side.
pub struct Indexing {
    on_read: bool,
    in_flight: Arc<InFlight>,
    requests: mpsc::Sender<Request>,
}

impl Indexing {
    /// `capacity`: requests queued for the tail at most; readers beyond it wait.
    pub fn new(
        on_read: bool,
        in_flight: Arc<InFlight>,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<Request>) {
        let (requests, received) = mpsc::channel(capacity.max(1));
        (
            Indexing {
                on_read,
                in_flight,
                requests,
            },
            received,
        )
    }

    /// Before `client` is read: once this returns, its in-flight events are indexed, and
    /// stay so while it is read at least every `cache.read_client_ttl`.
    pub async fn reading(&self, client: &str) -> Result<(), TailStopped> {
        if !self.on_read || self.in_flight.touch(client, now_micros()) {
            return Ok(());
        }
        let _timer = metrics::READ_STAGE_SECONDS
            .with_label_values(&["index"])
            .start_timer();
        let (done, indexed) = oneshot::channel();
        self.requests
            .send(Request {
                client: client.to_owned(),
                done,
            })
            .await
            .map_err(|_| TailStopped)?;
        indexed.await.map_err(|_| TailStopped)
    }
}
