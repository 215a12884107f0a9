//! Tells the pipeline view which partitions this writer owns: every [`EVERY`] and once more,
//! empty, when it leaves. The view reads the group's members with DescribeGroups, which
//! answers only for the classic protocol; on KIP-848's consumer protocol these reports are
//! how operators see their writers (docs/operations/pipeline.md). Advisory, like the
//! persisted notices they travel with.

use std::{sync::Arc, time::Duration};

use rdkafka::consumer::Consumer;
use schemas::WriterReport;
use tokio_util::sync::CancellationToken;

use crate::{consume::WriterConsumer, notice::now_micros, notify::Notifier};

/// How often a writer reports. Readers forget a writer three reports after its last.
pub const EVERY: Duration = Duration::from_secs(2);

/// Who reports: the process's name (its consumers' client id), host and group.
#[derive(Clone)]
pub struct Reporter {
    writer: String,
    host: String,
    group: String,
}

impl Reporter {
    pub fn new(writer: String, group: String) -> Self {
        Reporter {
            writer,
            host: host_name(),
            group,
        }
    }

    /// Reports the lanes' assignments every [`EVERY`] until `stop`.
    pub async fn every(
        self,
        notifier: Arc<Notifier>,
        consumers: Vec<Arc<WriterConsumer>>,
        stop: CancellationToken,
    ) {
        let mut due = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = due.tick() => {}
            }
            // librdkafka answers from its group thread and the call waits for it, without a
            // bound: off the async workers.
            let lanes = consumers.clone();
            if let Ok(owned) = tokio::task::spawn_blocking(move || owned(&lanes)).await {
                notifier.writer_report(&self.report(owned, EVERY));
            }
        }
    }

    /// The last report: nothing owned, no next one.
    pub fn leaving(&self, notifier: &Notifier) {
        notifier.writer_report(&self.report(Vec::new(), Duration::ZERO));
    }

    fn report(&self, partitions: Vec<String>, next: Duration) -> WriterReport {
        WriterReport {
            writer: self.writer.clone(),
            host: self.host.clone(),
            group: self.group.clone(),
            partitions,
            every_ms: i32::try_from(next.as_millis()).unwrap_or(i32::MAX),
            reported_at: now_micros(),
        }
    }
}

/// `topic/partition` of every partition the lanes' members own now (librdkafka's view of the
/// assignment: no request to a broker). Blocking.
fn owned(consumers: &[Arc<WriterConsumer>]) -> Vec<String> {
    let mut owned: Vec<String> = consumers
        .iter()
        .filter_map(|c| c.assignment().ok())
        .flat_map(|tpl| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}/{}", e.topic(), e.partition()))
                .collect::<Vec<_>>()
        })
        .collect();
    owned.sort();
    owned
}

/// The host as it names itself: `HOSTNAME` (a container's or pod's name), else the kernel's.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default()
}
