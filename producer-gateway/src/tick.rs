//! Ticks: a record without an event into every partition that received nothing from this
//! gateway for a tick interval, so every partition's log time keeps moving and readers can
//! release events in their stable order within milliseconds (`schemas::order`). Rounds of
//! ticks come every tick interval while the gateway acknowledges critical events, every normal
//! tick interval while it acknowledges only normal ones (their release may take a little
//! longer, and each round is a produce request per quiet partition, which every consumer group
//! fetches), and every idle interval once it acknowledged nothing for a few rounds: its events
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
/// Rounds of a lane's cadence after its last acknowledged event during which a gateway keeps
/// ticking at that cadence. A partition that had an event within the last round's interval is
/// skipped in a round, so the round after next is the first that surely passes the last event
/// in every partition; one more for a round delayed by a busy runtime.
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

/// The interval between rounds of ticks at `now_micros`: while a lane has acknowledged an
/// event within [`ACTIVE_ROUNDS`] of its cadence, that lane's cadence (the shortest of such
/// lanes), otherwise `idle_interval_micros`. `lanes`: each lane's latest acknowledgement and
/// cadence, in micros.
fn round_interval(
    lanes: impl IntoIterator<Item = (i64, i64)>,
    now_micros: i64,
    idle_interval_micros: i64,
) -> i64 {
    lanes
        .into_iter()
        .filter(|&(latest_ack, cadence)| {
            latest_ack >= now_micros.saturating_sub(ACTIVE_ROUNDS.saturating_mul(cadence))
        })
        .map(|(_, cadence)| cadence)
        .min()
        .unwrap_or(idle_interval_micros)
}

/// Whether a round is due at `now_micros`: `interval_micros` after the last one
/// (`last_round_micros`, `None` before the first), give or take half of the ticker's wake-up
/// period `wake_micros`, the granularity of its rounds.
fn round_due(
    interval_micros: i64,
    last_round_micros: Option<i64>,
    now_micros: i64,
    wake_micros: i64,
) -> bool {
    last_round_micros.is_none_or(|at| {
        now_micros
            .saturating_sub(at)
            .saturating_add(wake_micros / 2)
            >= interval_micros
    })
}

/// One lane's topic, producer and activity.
#[derive(Clone)]
pub struct TickLane {
    /// The critical lane: while it is active, rounds come every `Ticker::interval`.
    pub urgent: bool,
    pub topic: String,
    pub producer: FutureProducer,
    pub activity: Arc<Activity>,
}

pub struct Ticker {
    pub lanes: Vec<TickLane>,
    pub clock: Arc<IngestClock>,
    /// How often the ticker wakes, and the cadence of rounds while critical events are
    /// being acknowledged.
    pub interval: Duration,
    /// The cadence while only normal events are (see [`round_interval`]).
    pub normal_interval: Duration,
    /// The cadence while this gateway is idle.
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
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let wake_micros = micros(self.interval);
        let normal_micros = micros(self.normal_interval).max(wake_micros);
        let idle_interval_micros = micros(self.idle_interval).max(normal_micros);
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
            let interval_micros = round_interval(
                self.lanes.iter().map(|lane| {
                    let cadence = if lane.urgent {
                        wake_micros
                    } else {
                        normal_micros
                    };
                    (lane.activity.latest(), cadence)
                }),
                host_now,
                idle_interval_micros,
            );
            if !round_due(interval_micros, last_round, host_now, wake_micros) {
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
    fn rounds_follow_the_most_urgent_active_lane_then_the_idle_interval() {
        let (wake, normal, idle) = (20 * MS, 40 * MS, 1_000 * MS);
        let interval = |normal_ack: i64, critical_ack: i64, now: i64| {
            round_interval([(normal_ack, normal), (critical_ack, wake)], now * MS, idle)
        };
        let due = |interval, last: Option<i64>, now: i64| {
            round_due(interval, last.map(|l| l * MS), now * MS, wake)
        };
        // Nothing acknowledged yet: the first round ticks, then one per idle interval.
        assert_eq!(interval(i64::MIN, i64::MIN, 5_000), idle);
        assert!(due(idle, None, 5_000));
        assert!(!due(idle, Some(5_000), 5_020));
        assert!(!due(idle, Some(5_000), 5_980));
        assert!(due(idle, Some(5_000), 6_000));
        // Normal events: the normal cadence for three of its rounds after the last one...
        let normal_ack = 6_010 * MS;
        for now in [6_020, 6_090, 6_130] {
            assert_eq!(interval(normal_ack, i64::MIN, now), normal, "at {now} ms");
        }
        assert_eq!(interval(normal_ack, i64::MIN, 6_131), idle);
        // ...every other wake-up, one a little early included.
        assert!(!due(normal, Some(6_020), 6_040));
        assert!(due(normal, Some(6_020), 6_059));
        assert!(due(normal, Some(6_020), 6_060));
        // A critical event: every wake-up for three of its rounds, whatever the normal lane
        // does; then the normal cadence while normal events keep coming.
        let critical_ack = 6_200 * MS;
        for now in [6_210, 6_260] {
            assert_eq!(interval(6_250 * MS, critical_ack, now), wake, "at {now} ms");
            assert_eq!(interval(i64::MIN, critical_ack, now), wake, "at {now} ms");
        }
        assert!(due(wake, Some(6_200), 6_211));
        assert!(due(wake, Some(6_200), 6_220));
        assert_eq!(interval(6_250 * MS, critical_ack, 6_261), normal);
        assert_eq!(interval(i64::MIN, critical_ack, 6_261), idle);
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
