use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Stack;

/// Posts batches to the gateway until stopped, so a test can break things *while* traffic
/// flows, whatever the machine's speed. Bounded by `MAX_ROUNDS` all the same.
pub struct Feeder {
    stop: Arc<AtomicBool>,
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
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for round in 0..MAX_ROUNDS {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                acknowledged.extend(stack.post_events(&gateway, &batch(round)).await.event_ids);
            }
            acknowledged
        });
        Feeder { stop, task }
    }

    /// Stops after the request in progress; returns every acknowledged event id.
    pub async fn stop(self) -> Vec<Uuid> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("feeder task")
    }
}
