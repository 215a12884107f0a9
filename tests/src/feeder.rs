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
    refused: Arc<AtomicUsize>,
    ledger: Ledger,
    task: JoinHandle<Vec<Uuid>>,
}

const MAX_ROUNDS: usize = 100_000;

impl Feeder {
    /// Every request must be acknowledged (202).
    pub fn start(
        stack: Arc<Stack>,
        gateway: String,
        batch: impl Fn(usize) -> Vec<Value> + Send + 'static,
    ) -> Feeder {
        Self::run(stack, gateway, batch, false)
    }

    /// Requests may also be refused with 503 (brokers failing): like a device SDK, each event
    /// carries its own `event_id` and a refused request is recorded as "maybe" (it may have
    /// reached Kafka; it must appear at most once).
    pub fn start_tolerant(
        stack: Arc<Stack>,
        gateway: String,
        batch: impl Fn(usize) -> Vec<Value> + Send + 'static,
    ) -> Feeder {
        Self::run(stack, gateway, batch, true)
    }

    fn run(
        stack: Arc<Stack>,
        gateway: String,
        batch: impl Fn(usize) -> Vec<Value> + Send + 'static,
        tolerant: bool,
    ) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let ledger = Ledger::default();
        let (flag, count, refusals, record) = (
            stop.clone(),
            acknowledged.clone(),
            refused.clone(),
            ledger.clone(),
        );
        let task = tokio::spawn(async move {
            let mut ids = Vec::new();
            for round in 0..MAX_ROUNDS {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let mut events = batch(round);
                if !tolerant {
                    let posted = stack.post_events(&gateway, &events).await.event_ids;
                    record.acknowledged(&events, &posted);
                    count.fetch_add(posted.len(), Ordering::Relaxed);
                    ids.extend(posted);
                    continue;
                }
                for event in &mut events {
                    if event.get("event_id").is_none() {
                        event["event_id"] = Uuid::now_v7().to_string().into();
                    }
                }
                record.maybe(&events);
                let answer = stack
                    .http
                    .post(format!("{gateway}/events"))
                    .json(&events)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await;
                match answer.map(|a| a.status().as_u16()) {
                    Ok(202) => {
                        let posted: Vec<Uuid> = events
                            .iter()
                            .map(|e| e["event_id"].as_str().expect("id").parse().expect("uuid"))
                            .collect();
                        record.acknowledged(&events, &posted);
                        count.fetch_add(posted.len(), Ordering::Relaxed);
                        ids.extend(posted);
                    }
                    Ok(503) | Err(_) => {
                        refusals.fetch_add(1, Ordering::Relaxed);
                        // The gateway says when to come back; a short pause keeps a failing
                        // cluster from being hammered.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(other) => panic!("gateway answered {other}"),
                }
            }
            ids
        });
        Feeder {
            stop,
            acknowledged,
            refused,
            ledger,
            task,
        }
    }

    /// Requests refused (503 or no answer) so far.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
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
