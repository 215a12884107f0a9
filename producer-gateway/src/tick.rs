//! Ticks: a record without an event into a partition, so every partition's log time keeps
//! moving and readers can release events in their stable order within milliseconds
//! (`schemas::order`). Release ticks, then two kinds of rounds:
//! - Release ticks follow critical acknowledgements (`kafka.release_ticks = "client"`, the
//!   default): readers release a client's events once the partitions its id maps to (one per
//!   lane) have a later record (query-service's per-client release), so as soon as the
//!   critical lane acknowledged an event, a tick goes into each of those two partitions that
//!   has no later record from this gateway yet — at most one per partition per
//!   `kafka.release_spacing`. They go through a producer of their own (no linger, no bulk
//!   records queued ahead of them, no share of the critical lane's requests in flight), so a
//!   critical event's release waits neither for the normal lane's batches nor for a round.
//!   With `kafka.trailing_ticks` (the default) the critical lane's partition needs none:
//!   the publisher queues a trailing tick right behind the request's critical events, in
//!   their produce request, and the partition counts it as a later record.
//! - Release rounds instead, with `release_ticks = "all"` (for readers that release by the
//!   slowest of all partitions): a tick into every partition of both lanes whose latest
//!   acknowledged record is stamped at or before the latest critical event, at most one round
//!   per tick interval.
//! - Periodic rounds, into every partition that received nothing from this gateway for a round
//!   interval: every normal tick interval while the gateway acknowledges events (their release
//!   may take a little longer; each round is a produce request per quiet partition, which
//!   every consumer group fetches), every idle interval once it acknowledged nothing for a few
//!   rounds: its events are released already.
//!
//! A final tick into every partition at shutdown lets readers release this gateway's last
//! events without waiting for another gateway.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};

use chassis::health::Readiness;
use rdkafka::{
    config::ClientConfig,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};
use schemas::{headers, partitioning::partition_for, Tick, TickCodec};
use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{clock::IngestClock, metrics};

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// How long release ticks wait after a critical acknowledgement wakes the ticker.
const RELEASE_GATHER: Duration = Duration::from_millis(1);
/// Readiness check: the producers have broker metadata for both lanes.
pub const READY_BROKERS: &str = "brokers";
/// Periodic rounds after a gateway's last acknowledged event during which it keeps ticking at
/// the normal cadence. A partition that had an event within the last round's interval is
/// skipped in a round, so the round after next is the first that surely passes the last event
/// in every partition; one more for a round delayed by a busy runtime.
pub const ACTIVE_ROUNDS: i64 = 3;

/// Where release ticks go after a critical acknowledgement (`kafka.release_ticks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseTicks {
    /// Into the partitions the event's client maps to, one per lane.
    Client,
    /// Into every partition, in rounds.
    All,
}

/// What this gateway had acknowledged in each partition of one topic.
#[derive(Debug)]
pub struct Activity {
    /// Per partition, the latest ingest time of an acknowledged record: the partition's log
    /// time has passed it once readers consume that far.
    last: RwLock<Vec<AtomicI64>>,
    /// Per partition, the latest ingest time of a critical event acknowledged whose client
    /// maps here: a release tick must follow it, unless a later record does.
    wanted: RwLock<Vec<AtomicI64>>,
    /// Per partition, the latest ingest time of a record queued (not yet acknowledged): one
    /// stamped after a wanted release will pass it too, without a tick.
    queued: RwLock<Vec<AtomicI64>>,
    /// The latest acknowledgement (host clock, micros), whatever the partition.
    latest_ack: AtomicI64,
    /// The latest ingest time acknowledged, whatever the partition.
    latest_stamp: AtomicI64,
    /// Wakes the ticker when an acknowledgement may call for a release round.
    acked: Notify,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            last: RwLock::default(),
            wanted: RwLock::default(),
            queued: RwLock::default(),
            latest_ack: AtomicI64::new(i64::MIN),
            latest_stamp: AtomicI64::new(i64::MIN),
            acked: Notify::new(),
        }
    }
}

impl Activity {
    /// Called for every acknowledged event: stamped `stamp_micros`, acknowledged at
    /// `acked_micros` (host clock).
    pub fn produced(&self, partition: i32, stamp_micros: i64, acked_micros: i64) {
        self.latest_ack.fetch_max(acked_micros, Ordering::Relaxed);
        if self.latest_stamp.fetch_max(stamp_micros, Ordering::Relaxed) < stamp_micros {
            self.acked.notify_one();
        }
        raise(
            &self.last,
            |_| usize::try_from(partition).ok(),
            stamp_micros,
        );
    }

    /// A critical event stamped `stamp_micros`, whose client maps to `partition` in this
    /// lane, was acknowledged: readers release it once a later record is there. Call before
    /// [`Activity::produced`] of the critical lane, which wakes the ticker.
    pub fn want_release(&self, partition: i32, stamp_micros: i64) {
        raise(
            &self.wanted,
            |_| usize::try_from(partition).ok(),
            stamp_micros,
        );
    }

    /// [`Activity::want_release`] for the partition of this lane that `client`'s records go
    /// to (Kafka's partitioner, as the producer's `murmur2_random`).
    pub fn want_release_of(&self, client: &str, stamp_micros: i64) {
        raise(
            &self.wanted,
            |count| partition_for(client.as_bytes(), count),
            stamp_micros,
        );
    }

    /// A record keyed `client` and stamped `stamp_micros` was queued into this lane.
    pub fn queued(&self, client: &str, stamp_micros: i64) {
        raise(
            &self.queued,
            |count| partition_for(client.as_bytes(), count),
            stamp_micros,
        );
    }

    /// A record stamped `stamp_micros` was queued into `partition` of this lane.
    pub fn queued_in(&self, partition: usize, stamp_micros: i64) {
        raise(&self.queued, |_| Some(partition), stamp_micros);
    }

    fn resize(&self, partitions: usize) {
        for slots in [&self.last, &self.wanted, &self.queued] {
            if let Ok(mut slots) = slots.write() {
                while slots.len() < partitions {
                    slots.push(AtomicI64::new(i64::MIN));
                }
            }
        }
    }

    /// Per partition: the release wanted, and the latest stamp of a record acknowledged or
    /// queued there.
    fn wanted_and_last(&self) -> Vec<(i64, i64)> {
        let (Ok(wanted), Ok(last), Ok(queued)) =
            (self.wanted.read(), self.last.read(), self.queued.read())
        else {
            return Vec::new();
        };
        wanted
            .iter()
            .zip(last.iter().zip(queued.iter()))
            .map(|(w, (l, q))| {
                let latest = l.load(Ordering::Relaxed).max(q.load(Ordering::Relaxed));
                (w.load(Ordering::Relaxed), latest)
            })
            .collect()
    }

    /// Partitions without a record from this gateway stamped at or after `since`.
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

    /// The lane's partition count from the latest metadata; 0 before the first.
    pub fn partitions(&self) -> usize {
        self.last.read().map_or(0, |l| l.len())
    }

    fn latest_ack(&self) -> i64 {
        self.latest_ack.load(Ordering::Relaxed)
    }

    fn latest_stamp(&self) -> i64 {
        self.latest_stamp.load(Ordering::Relaxed)
    }
}

/// Raises the stamp of one partition in `slots` (per partition of a lane) to `stamp_micros`:
/// the partition `pick` chooses from the lane's partition count. A partition not known yet
/// (before the first metadata) is left alone.
fn raise(
    slots: &RwLock<Vec<AtomicI64>>,
    pick: impl FnOnce(usize) -> Option<usize>,
    stamp_micros: i64,
) {
    let Ok(slots) = slots.read() else {
        return;
    };
    if let Some(slot) = pick(slots.len()).and_then(|p| slots.get(p)) {
        slot.fetch_max(stamp_micros, Ordering::Relaxed);
    }
}

/// The interval between periodic rounds at `now_micros`: `cadence_micros` while this gateway
/// acknowledged an event (`latest_ack_micros`) within [`ACTIVE_ROUNDS`] of it, otherwise
/// `idle_interval_micros`.
fn round_interval(
    latest_ack_micros: i64,
    now_micros: i64,
    cadence_micros: i64,
    idle_interval_micros: i64,
) -> i64 {
    let active_since = now_micros.saturating_sub(ACTIVE_ROUNDS.saturating_mul(cadence_micros));
    if latest_ack_micros >= active_since {
        cadence_micros
    } else {
        idle_interval_micros
    }
}

/// When the next release round is due: never while the critical events acknowledged up to
/// `wanted` (their latest ingest time) are `covered` by one already; otherwise `spacing` after
/// the last release round (`last`), or now if there was none or that has passed.
fn release_due(
    wanted: i64,
    covered: i64,
    last: Option<Instant>,
    spacing: Duration,
    now: Instant,
) -> Option<Instant> {
    (wanted > covered).then(|| last.map_or(now, |at| (at + spacing).max(now)))
}

/// A partition's release tick: what it last followed and when it was sent.
#[derive(Debug, Clone, Copy)]
struct Released {
    /// The wanted stamp a tick (or a later record) already followed.
    covered: i64,
    sent_at: Option<Instant>,
}

impl Default for Released {
    fn default() -> Self {
        Released {
            covered: i64::MIN,
            sent_at: None,
        }
    }
}

/// What a partition's release needs now.
#[derive(Debug, PartialEq, Eq)]
enum ReleaseTick {
    /// Nothing: no critical event wants it, or a tick or a later record followed it.
    Covered,
    /// A tick now.
    Now,
    /// A tick at this time: the partition had one less than `spacing` ago.
    At(Instant),
}

/// A partition's release tick, for critical events wanting it up to `wanted` (their latest
/// stamp), when this gateway's latest record there (acknowledged or queued: queued, it is
/// appended after them) is stamped `last`.
fn release_tick(
    wanted: i64,
    last: i64,
    released: Released,
    spacing: Duration,
    now: Instant,
) -> ReleaseTick {
    if wanted <= released.covered || last > wanted {
        return ReleaseTick::Covered;
    }
    match released.sent_at.map(|at| at + spacing) {
        Some(at) if at > now => ReleaseTick::At(at),
        _ => ReleaseTick::Now,
    }
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

/// Why a tick was sent (the `kind` label of `gateway_ticks_total`).
#[derive(Clone, Copy)]
pub enum TickKind {
    Release,
    /// Right behind a request's critical events (`kafka.trailing_ticks`).
    Trailing,
    Periodic,
    Final,
}

impl TickKind {
    fn as_str(self) -> &'static str {
        match self {
            TickKind::Release => "release",
            TickKind::Trailing => "trailing",
            TickKind::Periodic => "periodic",
            TickKind::Final => "final",
        }
    }
}

/// Queues `tick` into `partition` of `topic`. Not awaited: a lost tick only delays release
/// until the next one.
pub fn queue_tick(
    codec: &TickCodec,
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    tick: &Tick,
    kind: TickKind,
) -> Result<(), TickError> {
    let value = codec.encode(tick)?;
    let record = FutureRecord::<(), _>::to(topic)
        .partition(partition)
        .payload(&value)
        .headers(OwnedHeaders::new().insert(Header {
            key: headers::KIND,
            value: Some(headers::KIND_TICK),
        }));
    producer.send_result(record).map_err(|(e, _)| e)?;
    metrics::TICKS.with_label_values(&[kind.as_str()]).inc();
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("tick could not be encoded: {0}")]
    Encode(#[from] schemas::EncodeError),
    #[error("tick not queued: {0}")]
    Queue(#[from] KafkaError),
}

/// One lane's topic, producer and activity.
#[derive(Clone)]
pub struct TickLane {
    /// The critical lane: its acknowledgements call for release rounds.
    pub urgent: bool,
    pub topic: String,
    pub producer: FutureProducer,
    pub activity: Arc<Activity>,
}

pub struct Ticker {
    pub lanes: Vec<TickLane>,
    /// Sends release ticks and rounds ([`release_producer`]).
    pub release_producer: FutureProducer,
    pub release_ticks: ReleaseTicks,
    /// The least time between two release ticks into one partition.
    pub release_spacing: Duration,
    pub clock: Arc<IngestClock>,
    /// How often the ticker wakes for periodic rounds, and the least time between two release
    /// rounds.
    pub interval: Duration,
    /// The periodic rounds' cadence while this gateway acknowledges events.
    pub normal_interval: Duration,
    /// The cadence while this gateway is idle.
    pub idle_interval: Duration,
    pub metadata_refresh: Duration,
    pub gateway: String,
    pub readiness: Readiness,
}

impl Ticker {
    /// Ticks until `shutdown`: a release round as soon as one is due, a periodic round on the
    /// wake-ups it is due.
    pub async fn run(&self, shutdown: CancellationToken) {
        let codec = TickCodec::default();
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metadata_due = Instant::now();
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        let wake_micros = micros(self.interval);
        let normal_micros = micros(self.normal_interval).max(wake_micros);
        let idle_interval_micros = micros(self.idle_interval).max(normal_micros);
        let urgent = self.lanes.iter().find(|lane| lane.urgent);
        let wanted = || urgent.map_or(i64::MIN, |lane| lane.activity.latest_stamp());
        let (mut covered, mut last_release) = (wanted(), None);
        let mut last_round = None;
        let mut released: Vec<Vec<Released>> = vec![Vec::new(); self.lanes.len()];
        loop {
            let due = match self.release_ticks {
                ReleaseTicks::All => release_due(
                    wanted(),
                    covered,
                    last_release,
                    self.interval,
                    Instant::now(),
                ),
                ReleaseTicks::Client => self.release_ticks(&codec, &mut released),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
                _ = async {
                    match urgent {
                        Some(lane) => {
                            lane.activity.acked.notified().await;
                            if self.release_ticks == ReleaseTicks::Client {
                                // Acknowledgements within a moment share their ticks, and
                                // records queued meanwhile make some unneeded.
                                tokio::time::sleep(RELEASE_GATHER).await;
                            }
                        }
                        None => std::future::pending().await,
                    }
                }, if due.is_none() || self.release_ticks == ReleaseTicks::Client => {}
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {}
            }
            if Instant::now() >= metadata_due {
                let known = self.refresh_partitions().await;
                if known {
                    self.readiness.pass(READY_BROKERS);
                    metadata_due = Instant::now() + self.metadata_refresh;
                } else {
                    self.readiness.fail(READY_BROKERS, "no broker metadata yet");
                    metadata_due = Instant::now() + Duration::from_secs(1);
                }
            }
            // Release ticks go at the top of the loop, which also tells when the next is due.
            let (now, target) = (Instant::now(), wanted());
            if self.release_ticks == ReleaseTicks::All
                && release_due(target, covered, last_release, self.interval, now)
                    .is_some_and(|at| at <= now)
            {
                self.release_round(&codec, target);
                (covered, last_release) = (target, Some(now));
            }
            let host_now = host_micros();
            let latest_ack = self
                .lanes
                .iter()
                .map(|lane| lane.activity.latest_ack())
                .max()
                .unwrap_or(i64::MIN);
            let interval_micros =
                round_interval(latest_ack, host_now, normal_micros, idle_interval_micros);
            if !round_due(interval_micros, last_round, host_now, wake_micros) {
                continue;
            }
            last_round = Some(host_now);
            for lane in &self.lanes {
                for partition in lane.activity.quiet_since(host_now - interval_micros) {
                    self.tick(&codec, lane, &lane.producer, partition, TickKind::Periodic);
                }
            }
        }
    }

    /// Sends the release ticks due now; returns when the next one is due, if one is wanted.
    fn release_ticks(&self, codec: &TickCodec, released: &mut [Vec<Released>]) -> Option<Instant> {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for (lane, released) in self.lanes.iter().zip(released.iter_mut()) {
            let partitions = lane.activity.wanted_and_last();
            released.resize(partitions.len(), Released::default());
            for (partition, ((wanted, last), released)) in
                partitions.into_iter().zip(released.iter_mut()).enumerate()
            {
                match release_tick(wanted, last, *released, self.release_spacing, now) {
                    ReleaseTick::Covered => released.covered = released.covered.max(wanted),
                    ReleaseTick::Now => {
                        if let Ok(partition) = i32::try_from(partition) {
                            self.release_tick(codec, lane, partition);
                        }
                        *released = Released {
                            covered: wanted,
                            sent_at: Some(now),
                        };
                    }
                    ReleaseTick::At(at) => next = Some(next.map_or(at, |n| n.min(at))),
                }
            }
        }
        next
    }

    /// A tick into every partition, of both lanes, whose latest record from this gateway is
    /// stamped at or before `wanted` (the latest critical event acknowledged): once readers
    /// consume them, every partition's log time has passed those events. A tick that
    /// overtakes events still queued in another producer only orders them at its time, where
    /// they arrive (`schemas::order`); they are released with the partition's next record.
    fn release_round(&self, codec: &TickCodec, wanted: i64) {
        for lane in &self.lanes {
            for partition in lane.activity.quiet_since(wanted.saturating_add(1)) {
                self.release_tick(codec, lane, partition);
            }
        }
    }

    fn release_tick(&self, codec: &TickCodec, lane: &TickLane, partition: i32) {
        self.tick(
            codec,
            lane,
            &self.release_producer,
            partition,
            TickKind::Release,
        );
    }

    /// One tick into every partition: after the last events this gateway sent, so readers can
    /// release them without waiting for anyone else.
    pub fn final_ticks(&self) {
        let codec = TickCodec::default();
        let mut sent = 0;
        for lane in &self.lanes {
            for partition in 0..lane.activity.partitions() {
                if let Ok(partition) = i32::try_from(partition) {
                    self.tick(&codec, lane, &lane.producer, partition, TickKind::Final);
                    sent += 1;
                }
            }
        }
        info!(sent, "final ticks queued");
    }

    fn tick(
        &self,
        codec: &TickCodec,
        lane: &TickLane,
        producer: &FutureProducer,
        partition: i32,
        kind: TickKind,
    ) {
        // Reserved like an ingest time: after every event this gateway stamped so far.
        let tick = Tick {
            at: self.clock.reserve(1),
            gateway: self.gateway.clone(),
        };
        if let Err(e) = queue_tick(codec, producer, &lane.topic, partition, &tick, kind) {
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

/// The producer of release rounds, from `kafka` (brokers and security). No idempotence and
/// leader-only acknowledgements: a tick lost or repeated only moves a log time a little later
/// or not at all, and nobody waits for it.
pub fn release_producer(kafka: &ClientConfig) -> Result<FutureProducer, KafkaError> {
    kafka
        .clone()
        .set("enable.idempotence", "false")
        .set("acks", "1")
        .set("linger.ms", "0")
        // Rounds are at most a tick per partition per `tick_interval`: a queue this long is a
        // broker unreachable for a while; the ticks then are late anyway.
        .set("queue.buffering.max.messages", "10000")
        .set("message.timeout.ms", "5000")
        .create()
}

pub fn host_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    const MS: i64 = 1_000;

    #[test]
    fn periodic_rounds_follow_the_normal_cadence_while_active_then_the_idle_interval() {
        let (wake, normal, idle) = (20 * MS, 40 * MS, 1_000 * MS);
        let interval = |ack: i64, now: i64| round_interval(ack, now * MS, normal, idle);
        let due = |interval, last: Option<i64>, now: i64| {
            round_due(interval, last.map(|l| l * MS), now * MS, wake)
        };
        // Nothing acknowledged yet: the first round ticks, then one per idle interval.
        assert_eq!(interval(i64::MIN, 5_000), idle);
        assert!(due(idle, None, 5_000));
        assert!(!due(idle, Some(5_000), 5_020));
        assert!(!due(idle, Some(5_000), 5_980));
        assert!(due(idle, Some(5_000), 6_000));
        // An event: the normal cadence for three of its rounds after the last one...
        let ack = 6_010 * MS;
        for now in [6_020, 6_090, 6_130] {
            assert_eq!(interval(ack, now), normal, "at {now} ms");
        }
        assert_eq!(interval(ack, 6_131), idle);
        // ...every other wake-up, one a little early included.
        assert!(!due(normal, Some(6_020), 6_040));
        assert!(due(normal, Some(6_020), 6_059));
        assert!(due(normal, Some(6_020), 6_060));
    }

    #[test]
    fn a_release_round_follows_the_first_critical_ack_at_once_and_later_ones_after_the_spacing() {
        let spacing = Duration::from_millis(20);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // Nothing acknowledged beyond what a round passed: none due.
        assert_eq!(release_due(100, 100, None, spacing, at(0)), None);
        assert_eq!(release_due(100, 100, Some(at(0)), spacing, at(50)), None);
        // The first critical event: now.
        assert_eq!(release_due(101, 100, None, spacing, at(5)), Some(at(5)));
        // One acknowledged 3 ms after a round: the spacing after that round.
        assert_eq!(
            release_due(102, 101, Some(at(5)), spacing, at(8)),
            Some(at(25))
        );
        // One acknowledged long after: now.
        assert_eq!(
            release_due(103, 102, Some(at(25)), spacing, at(90)),
            Some(at(90))
        );
    }

    #[test]
    fn a_release_tick_follows_a_wanted_stamp_once_unless_a_later_record_did() {
        let spacing = Duration::from_millis(5);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let never = Released::default();
        // Nothing wanted.
        assert_eq!(
            release_tick(i64::MIN, i64::MIN, never, spacing, at(0)),
            ReleaseTick::Covered
        );
        // A critical event stamped 100, nothing later here: now.
        assert_eq!(
            release_tick(100, 90, never, spacing, at(0)),
            ReleaseTick::Now
        );
        // A later record (stamp 101) already follows it: no tick.
        assert_eq!(
            release_tick(100, 101, never, spacing, at(0)),
            ReleaseTick::Covered
        );
        // The record with that very stamp (the event itself) does not.
        assert_eq!(
            release_tick(100, 100, never, spacing, at(0)),
            ReleaseTick::Now
        );
        let ticked = Released {
            covered: 100,
            sent_at: Some(at(0)),
        };
        // Followed already.
        assert_eq!(
            release_tick(100, 100, ticked, spacing, at(1)),
            ReleaseTick::Covered
        );
        // A later critical event: after the spacing, then at once.
        assert_eq!(
            release_tick(120, 100, ticked, spacing, at(2)),
            ReleaseTick::At(at(5))
        );
        assert_eq!(
            release_tick(120, 100, ticked, spacing, at(5)),
            ReleaseTick::Now
        );
    }

    #[test]
    fn a_release_is_wanted_in_the_partition_kafka_maps_the_client_to() {
        let activity = Activity::default();
        // Before metadata nothing is known of the partitions: nothing wanted.
        activity.want_release_of("device-1", 10);
        assert!(activity.wanted_and_last().is_empty());
        activity.resize(6);
        activity.want_release_of("device-1", 10);
        activity.want_release_of("device-1", 5);
        let expected = partition_for(b"device-1", 6).expect("six partitions");
        let wanted: Vec<i64> = activity.wanted_and_last().iter().map(|(w, _)| *w).collect();
        for (p, w) in wanted.iter().enumerate() {
            assert_eq!(
                *w,
                if p == expected { 10 } else { i64::MIN },
                "partition {p}"
            );
        }
    }

    #[test]
    fn activity_keeps_stamps_per_partition_and_wakes_the_ticker_on_a_later_one() {
        let activity = Activity::default();
        assert_eq!(activity.latest_ack(), i64::MIN);
        // Before metadata: no partition slots yet, the latest still counts.
        activity.produced(3, 10, 11);
        activity.resize(4);
        activity.produced(1, 30, 40);
        activity.produced(2, 20, 45);
        assert_eq!((activity.latest_stamp(), activity.latest_ack()), (30, 45));
        assert_eq!(activity.quiet_since(25), vec![0, 2, 3]);
        // A release round for stamp 20 ticks every partition without a later record.
        assert_eq!(activity.quiet_since(21), vec![0, 2, 3]);
        assert_eq!(activity.quiet_since(20), vec![0, 3]);
        // The ticker is woken by a later stamp (once for any number of them), not by an
        // earlier one.
        let woken = || activity.acked.notified().now_or_never().is_some();
        assert!(woken());
        assert!(!woken());
        activity.produced(2, 25, 50);
        assert!(!woken());
        activity.produced(0, 50, 60);
        activity.produced(1, 55, 61);
        assert!(woken());
        assert!(!woken());
    }
}
