use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{Ledger, Stack};

/// Posts batches to the gateway until stopped, so a test can break things *while* traffic
/// flows, whatever the machine's speed. Bounded by `MAX_ROUNDS` all the same.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicUsize>,
    ledger: Ledger,
    task: JoinHandle<Vec<Uuid>>,
}

const MAX_ROUNDS: usize = 100_000;

impl Feeder {
    pub fn start(
        stack: Arc<Stack>,
        gateway: String,
        batch: impl Fn(usize) -> Vec<Value> + Send + 'static,
    ) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let ledger = Ledger::default();
        let (flag, count, record) = (stop.clone(), acknowledged.clone(), ledger.clone());
        let task = tokio::spawn(async move {
            let mut ids = Vec::new();
            for round in 0..MAX_ROUNDS {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let events = batch(round);
                let posted = stack.post_events(&gateway, &events).await.event_ids;
                record.acknowledged(&events, &posted);
                count.fetch_add(posted.len(), Ordering::Relaxed);
                ids.extend(posted);
            }
            ids
        });
        Feeder {
            stop,
            acknowledged,
            ledger,
            task,
        }
    }

    /// What the gateway acknowledged so far, with what was posted.
    pub fn ledger(&self) -> Ledger {
        self.ledger.clone()
    }

    /// Waits until `more` events beyond those acknowledged so far are acknowledged.
    pub async fn more(&self, more: usize, deadline: Duration) {
        let target = self.acknowledged.load(Ordering::Relaxed) + more;
        crate::eventually(deadline, "more traffic", || async {
            (self.acknowledged.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    /// Stops after the request in progress; returns every acknowledged event id.
    pub async fn stop(self) -> Vec<Uuid> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("feeder task")
    }
}
