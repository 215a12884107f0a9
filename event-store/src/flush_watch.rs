//! When rows written without waiting for the WAL flush are durable on their shard.
//!
//! A write made with `synchronous_commit` off is visible as soon as its commit record is in
//! the shard's WAL buffers, before the flush to disk that a crash would need. db-writer moves
//! Kafka offsets past such rows only once this watch says the shard's WAL is flushed past
//! them. A round, over a session of the watch's own, covers every write that ended before it
//! began: in one statement it compares the shard's flushed WAL position with its insert
//! position and, if something is not flushed yet, writes a transactional logical message
//! (`pg_logical_emit_message`, no table, any role) in a transaction that does wait for the
//! flush, so everything inserted before it reaches the disk with it. Rounds are at least
//! `interval` apart: the writes of that interval share one flush.
//!
//! A crash of the server loses what it had not flushed, and after recovery the WAL positions
//! say nothing of what was lost. So a write counts as flushed only if the watch's session that
//! was open before the write began is still the one that saw the flush: a crash ends every
//! session. When that session is gone (or there was none) the write is `Unconfirmed`, and the
//! caller writes its rows again, waiting for the flush.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{watch, Notify};
use tracing::warn;

use crate::StoreSettings;

/// One round: nothing written when everything inserted is already flushed; otherwise a
/// message whose synchronous commit flushes the WAL up to it.
const ROUND: &str = "BEGIN; SET LOCAL synchronous_commit TO on; \
     SELECT CASE WHEN pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() THEN NULL \
     ELSE pg_logical_emit_message(true, 'eventpipe.flush', '') END; COMMIT";

/// A round that takes longer is given up and its session closed, so a shard that hangs
/// without breaking the connection cannot hold rows unconfirmed for ever.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// Between attempts to open the watch's session.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);

/// The write's rows may not have reached the shard's disk: the watch's session that was open
/// when the write began is gone (the server may have crashed), or none was open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shard {shard}: no session saw the WAL flushed past the write")]
pub struct Unconfirmed {
    pub shard: usize,
}

/// The watch's session when a write began; `flushed` needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Began(u64);

#[derive(Debug, Clone, Copy)]
struct State {
    /// The open session's number; 0 while none is open.
    session: u64,
    /// Every write asked for up to this number is flushed.
    confirmed: u64,
}

struct Shared {
    shard: usize,
    state: watch::Sender<State>,
    /// The number of the latest write asked about.
    asked: AtomicU64,
    wake: Notify,
}

/// The flush watch of one shard. Dropping it stops its task.
pub struct FlushWatch {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FlushWatch {
    /// Starts watching the shard at `url` (shard number `shard`), rounds at least `interval`
    /// apart. Its session opens in the background.
    pub fn start(settings: &StoreSettings, shard: usize, url: &str, interval: Duration) -> Self {
        let shared = Arc::new(Shared {
            shard,
            state: watch::Sender::new(State {
                session: 0,
                confirmed: 0,
            }),
            asked: AtomicU64::new(0),
            wake: Notify::new(),
        });
        let task = tokio::spawn(serve(
            shared.clone(),
            settings.clone(),
            url.to_owned(),
            interval,
        ));
        FlushWatch { shared, task }
    }

    /// Call before a write begins.
    pub fn began(&self) -> Began {
        Began(self.shared.state.borrow().session)
    }

    /// Waits until the shard's WAL is flushed past every write that ended before this call;
    /// `began` was taken before the write began.
    pub async fn flushed(&self, began: Began) -> Result<(), Unconfirmed> {
        let unconfirmed = Unconfirmed {
            shard: self.shared.shard,
        };
        if began.0 == 0 {
            return Err(unconfirmed);
        }
        let mut states = self.shared.state.subscribe();
        let asked = self.shared.asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.shared.wake.notify_one();
        let same_session = states
            .wait_for(|s| s.session != began.0 || s.confirmed >= asked)
            .await
            .is_ok_and(|state| state.session == began.0);
        if same_session {
            Ok(())
        } else {
            Err(unconfirmed)
        }
    }
}

impl Drop for FlushWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(shared: Arc<Shared>, settings: StoreSettings, url: String, interval: Duration) {
    let shard = shared.shard;
    let mut session = 0u64;
    loop {
        let (client, mut connection) = match settings.connect(shard, &url).await {
            Ok(opened) => opened,
            Err(e) => {
                warn!(shard, error = %e, "cannot open the WAL flush watch's session; retrying");
                tokio::time::sleep(RECONNECT_BACKOFF).await;
                continue;
            }
        };
        session += 1;
        shared.state.send_modify(|s| s.session = session);
        let mut last_round: Option<tokio::time::Instant> = None;
        // Waiting, the session's end is watched too: a crashed server fails its waiters at
        // once, so that their rows are written again as soon as it is back.
        loop {
            let confirmed = shared.state.borrow().confirmed;
            if shared.asked.load(Ordering::SeqCst) <= confirmed {
                tokio::select! {
                    _ = shared.wake.notified() => continue,
                    _ = &mut connection => break,
                }
            }
            if let Some(last) = last_round {
                tokio::select! {
                    _ = tokio::time::sleep_until(last + interval) => {}
                    _ = &mut connection => break,
                }
            }
            last_round = Some(tokio::time::Instant::now());
            // Read before the round: the writes it covers ended before this.
            let upto = shared.asked.load(Ordering::SeqCst);
            match tokio::time::timeout(ROUND_TIMEOUT, client.batch_execute(ROUND)).await {
                Ok(Ok(())) => shared
                    .state
                    .send_modify(|s| s.confirmed = s.confirmed.max(upto)),
                Ok(Err(e)) => {
                    warn!(shard, error = %e, "WAL flush round failed; writes not yet confirmed will be written again");
                    break;
                }
                Err(_) => {
                    warn!(shard, timeout = ?ROUND_TIMEOUT, "WAL flush round timed out; writes not yet confirmed will be written again");
                    break;
                }
            }
        }
        // Waiters of the closed session learn at once that it cannot confirm them.
        shared.state.send_modify(|s| s.session = 0);
        connection.abort();
    }
}
