//! Ticks: a record without an event into every partition that received nothing from this
//! gateway for a tick interval, so every partition's log time keeps moving and readers can
//! release events in their stable order within milliseconds (`schemas::order`). A gateway
//! that acknowledged nothing for a few intervals ticks only every idle interval: its events
//! are released already. A final tick into every partition at shutdown lets readers release
//! this gateway's last events without waiting for another gateway.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use chassis::health::Readiness;
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};
use schemas::{headers, Tick, TickCodec};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::IngestClock;

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Readiness check: the producers have broker metadata for both lanes.
pub const READY_BROKERS: &str = "brokers";
/// Tick intervals after its last acknowledged event during which a gateway keeps ticking
/// every interval. A partition that had an event within the last interval is skipped in a
/// round, so the round after next is the first that surely passes the last event in every
/// partition; one more for a round delayed by a busy runtime.
pub const ACTIVE_ROUNDS: i64 = 3;

/// When this gateway last produced to each partition of one topic (host clock, micros).
#[derive(Debug)]
pub struct Activity {
    last: RwLock<Vec<AtomicI64>>,
    /// The latest of `last`, whatever the partition.
    latest: AtomicI64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            last: RwLock::default(),
            latest: AtomicI64::new(i64::MIN),
        }
    }
}

impl Activity {
    /// Called for every acknowledged event.
    pub fn produced(&self, partition: i32, at_micros: i64) {
        self.latest.fetch_max(at_micros, Ordering::Relaxed);
        let Ok(last) = self.last.read() else {
            return;
        };
        if let Some(slot) = usize::try_from(partition).ok().and_then(|p| last.get(p)) {
            slot.fetch_max(at_micros, Ordering::Relaxed);
        }
    }

    fn resize(&self, partitions: usize) {
        if let Ok(mut last) = self.last.write() {
            while last.len() < partitions {
                last.push(AtomicI64::new(i64::MIN));
            }
        }
    }

    /// Partitions without a record from this gateway since `since`.
    fn quiet_since(&self, since: i64) -> Vec<i32> {
        let Ok(last) = self.last.read() else {
            return Vec::new();
        };
        last.iter()
            .enumerate()
            .filter(|(_, at)| at.load(Ordering::Relaxed) < since)
            .filter_map(|(p, _)| i32::try_from(p).ok())
            .collect()
    }

    fn partitions(&self) -> usize {
        self.last.read().map_or(0, |l| l.len())
    }

    fn latest(&self) -> i64 {
        self.latest.load(Ordering::Relaxed)
    }
}

/// Whether a round of ticks is due at `now_micros`: every interval while this gateway is
/// active (an event acknowledged within [`ACTIVE_ROUNDS`] intervals), every idle interval
/// otherwise. `last_round_micros` is when the last round ticked, `None` before the first.
fn round_due(
    latest_ack_micros: i64,
    last_round_micros: Option<i64>,
    now_micros: i64,
    interval_micros: i64,
    idle_interval_micros: i64,
) -> bool {
    let active = latest_ack_micros >= now_micros.saturating_sub(ACTIVE_ROUNDS * interval_micros);
    active
        || last_round_micros.is_none_or(|at| now_micros.saturating_sub(at) >= idle_interval_micros)
}

/// One lane's topic, producer and activity.
#[derive(Clone)]
pub struct TickLane {
    pub topic: String,
    pub producer: FutureProducer,
    pub activity: Arc<Activity>,
}

pub struct Ticker {
    pub lanes: Vec<TickLane>,
    pub clock: Arc<IngestClock>,
    pub interval: Duration,
    /// How often a round is ticked while this gateway is idle (see [`round_due`]).
    pub idle_interval: Duration,
    pub metadata_refresh: Duration,
    pub gateway: String,
    pub readiness: Readiness,
}

impl Ticker {
    /// Ticks quiet partitions every interval until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let codec = TickCodec::default();
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metadata_due = tokio::time::Instant::now();
        let interval_micros = i64::try_from(self.interval.as_micros()).unwrap_or(i64::MAX);
        let idle_interval_micros = i64::try_from(self.idle_interval.as_micros())
            .unwrap_or(i64::MAX)
            .max(interval_micros);
        let mut last_round = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            if tokio::time::Instant::now() >= metadata_due {
                let known = self.refresh_partitions().await;
                if known {
                    self.readiness.pass(READY_BROKERS);
                    metadata_due = tokio::time::Instant::now() + self.metadata_refresh;
                } else {
                    self.readiness.fail(READY_BROKERS, "no broker metadata yet");
                    metadata_due = tokio::time::Instant::now() + Duration::from_secs(1);
                }
            }
            let host_now = host_micros();
            let latest_ack = self
                .lanes
                .iter()
                .map(|lane| lane.activity.latest())
                .max()
                .unwrap_or(i64::MIN);
            if !round_due(
                latest_ack,
                last_round,
                host_now,
                interval_micros,
                idle_interval_micros,
            ) {
                continue;
            }
            last_round = Some(host_now);
            for lane in &self.lanes {
                for partition in lane.activity.quiet_since(host_now - interval_micros) {
                    self.tick(&codec, lane, partition);
                }
            }
        }
    }

    /// One tick into every partition: after the last events this gateway sent, so readers can
    /// release them without waiting for anyone else.
    pub fn final_ticks(&self) {
        let codec = TickCodec::default();
        let mut sent = 0;
        for lane in &self.lanes {
            for partition in 0..lane.activity.partitions() {
                if let Ok(partition) = i32::try_from(partition) {
                    self.tick(&codec, lane, partition);
                    sent += 1;
                }
            }
        }
        info!(sent, "final ticks queued");
    }

    fn tick(&self, codec: &TickCodec, lane: &TickLane, partition: i32) {
        let tick = Tick {
            at: self.clock.now_micros(),
            gateway: self.gateway.clone(),
        };
        let Ok(value) = codec.encode(&tick) else {
            return;
        };
        let record = FutureRecord::<(), _>::to(&lane.topic)
            .partition(partition)
            .payload(&value)
            .headers(OwnedHeaders::new().insert(Header {
                key: headers::KIND,
                value: Some(headers::KIND_TICK),
            }));
        // Not awaited: a lost tick only delays release until the next one.
        if let Err((e, _)) = lane.producer.send_result(record) {
            warn!(topic = %lane.topic, partition, error = %e, "tick not queued");
        }
    }

    /// Reads the partition count of every lane's topic; false if any is unknown.
    async fn refresh_partitions(&self) -> bool {
        let mut all = true;
        for lane in &self.lanes {
            let (producer, topic) = (lane.producer.clone(), lane.topic.clone());
            let count = tokio::task::spawn_blocking(move || {
                producer
                    .client()
                    .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
                    .ok()
                    .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
                    .filter(|n| *n > 0)
            })
            .await
            .ok()
            .flatten();
            match count {
                Some(count) => lane.activity.resize(count),
                None => all = false,
            }
        }
        all
    }
}

pub fn host_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000;

    #[test]
    fn ticks_every_interval_while_active_and_every_idle_interval_after() {
        let (interval, idle) = (20 * MS, 1_000 * MS);
        let due =
            |latest_ack, last_round, now| round_due(latest_ack, last_round, now, interval, idle);
        // Never acknowledged anything: the first round ticks, then once per idle interval.
        assert!(due(i64::MIN, None, 5_000 * MS));
        assert!(!due(i64::MIN, Some(5_000 * MS), 5_020 * MS));
        assert!(!due(i64::MIN, Some(5_000 * MS), 5_999 * MS));
        assert!(due(i64::MIN, Some(5_000 * MS), 6_000 * MS));
        // An event acknowledged: every round ticks for three intervals after it...
        let ack = 6_010 * MS;
        for now in [6_020, 6_040, 6_060, 6_070] {
            assert!(due(ack, Some((now - 20) * MS), now * MS), "at {now} ms");
        }
        // ...then idle again: the next round one idle interval after the last one.
        assert!(!due(ack, Some(6_070 * MS), 6_090 * MS));
        assert!(due(ack, Some(6_070 * MS), 7_070 * MS));
    }

    #[test]
    fn activity_remembers_the_latest_acknowledgement_of_any_partition() {
        let activity = Activity::default();
        assert_eq!(activity.latest(), i64::MIN);
        // Before metadata: no partition slots yet, the latest still counts.
        activity.produced(3, 10);
        activity.resize(4);
        activity.produced(1, 30);
        activity.produced(2, 20);
        assert_eq!(activity.latest(), 30);
        assert_eq!(activity.quiet_since(25), vec![0, 2, 3]);
    }
}
