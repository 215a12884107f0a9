//! Indexing on read (`cache.index_on_read`): the tail holds every consumed event in offset
//! order, but indexes (by client and id, for pages, streams and the judging of copies) only
//! the events of clients read lately. A read of a client not indexed asks the tail to index
//! what it holds of it first, so the answer is the same as if it always had been; most
//! events are stored and dropped without ever being indexed (docs/design.md, "Indexing on
//! read"). A page of a client the tail holds nothing of needs no indexing at all
//! ([`Ready::NothingHeld`]).

use std::sync::Arc;

use schemas::OrderKey;
use tokio::sync::{mpsc, oneshot};

use crate::{in_flight::InFlight, metrics, release::Frontier, wall_clock::now_micros};

/// How a page read goes on, once [`Indexing::before_page`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The client's in-flight events are indexed: read as always.
    Indexed,
    /// The client is not indexed, and the tail held none of its events after the release
    /// frontier was read as `released` (for the client): every event of the client below it
    /// is in PostgreSQL. The page is the shard's rows below it, read without the tail; the
    /// client stays unindexed, so the page cache, which follows only indexed clients'
    /// evictions, is left out.
    NothingHeld { released: OrderKey },
}

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

    /// Before a page of `client` is read: its in-flight events are indexed when this returns,
    /// or nothing of it is in flight below the frontier it gives.
    pub async fn before_page(
        &self,
        client: &str,
        frontier: &Frontier,
    ) -> Result<Ready, TailStopped> {
        if self.indexed(client) {
            return Ok(Ready::Indexed);
        }
        // The frontier first: the tail counts an event held before it publishes a clock past
        // it, so the count read after this frontier covers every event below it.
        let released = frontier.for_client(client);
        if !self.in_flight.may_hold(client) {
            metrics::UNHELD_READS.inc();
            return Ok(Ready::NothingHeld { released });
        }
        self.index(client).await?;
        Ok(Ready::Indexed)
    }

    /// Before `client` is read: once this returns, its in-flight events are indexed, and
    /// stay so while it is read at least every `cache.read_client_ttl`. For reads that follow
    /// the client's events as they come (streams, read-your-writes tokens).
    pub async fn reading(&self, client: &str) -> Result<(), TailStopped> {
        if self.indexed(client) {
            return Ok(());
        }
        self.index(client).await
    }

    /// Whether `client`'s in-flight events are indexed already (every client's, with
    /// `cache.index_on_read` off); a read now keeps them so for the read-client TTL.
    fn indexed(&self, client: &str) -> bool {
        !self.on_read || self.in_flight.touch(client, now_micros())
    }

    async fn index(&self, client: &str) -> Result<(), TailStopped> {
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
