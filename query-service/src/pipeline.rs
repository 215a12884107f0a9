//! The whole pipeline as one view, for operators: how far behind storing is (depth, age of
//! the oldest unstored event, lag per partition), how fast events come in per lane and rows
//! go out per shard, dead letters, the in-flight set, the writer group's members, shards up
//! or down, query latency, and the latest persisted batches. Sampled every second into a
//! bounded history that `GET /pipeline`, its stream and the dashboard read, and into
//! Prometheus gauges named as kafka_exporter names them.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use event_store::ShardSet;
use schemas::{PersistedBatch, WriterReport};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use lag::{Member, Observed, Slot};
use rdkafka::consumer::BaseConsumer;

use crate::{
    in_flight::InFlight, metrics, release::Frontier, streams::Streams, wall_clock::now_micros,
};

/// Seconds of history kept (one sample a second).
const HISTORY: usize = 300;
/// Persisted batches kept for the view.
const BATCHES: usize = 50;
/// Query latencies kept for the percentiles (the last minute, at most this many).
const QUERIES: usize = 100_000;
/// Writers known from their reports at most (a writer restarting in a loop names itself anew
/// each time; each is forgotten within three reports anyway).
const REPORTED_WRITERS: usize = 1_000;
/// A writer is forgotten this many of its reports' intervals after its last report.
const REPORTS_MISSED: u32 = 3;
/// How long after it starts following reports a replica takes no report for no writer: a
/// running writer reports every 2 s (db-writer's `report::EVERY`), three of those.
const REPORTS_AWAITED: Duration = Duration::from_secs(6);

/// What the tail learned at its last refresh.
#[derive(Debug, Clone, Default)]
pub struct TailReport {
    pub partitions: Vec<PartitionView>,
    /// `ingested_at` (micros) of the oldest event held, i.e. consumed and not yet stored.
    pub oldest_held_micros: Option<i64>,
    /// Events consumed so far, per topic.
    pub consumed: BTreeMap<String, u64>,
    pub dead_letters: u64,
    pub members: Vec<Member>,
    /// Whether the group answered `DescribeGroups` (a classic-protocol group, members or
    /// none): then `members` is the whole truth.
    pub group_described: bool,
    /// The writer's commit and the end of every partition.
    pub observed: BTreeMap<Slot, Observed>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartitionView {
    pub topic: String,
    pub partition: i32,
    pub end_offset: i64,
    pub writer_committed: i64,
    /// Records (events and ticks) the writer has not committed.
    pub writer_lag: i64,
    pub query_position: i64,
    pub query_lag: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LaneView {
    pub topic: String,
    /// Events appended per second, counted as this replica consumes them: the gateway's
    /// rate once the replica is caught up (ticks are not counted).
    pub ingest_per_second: f64,
    /// Records appended to this lane and not yet stored (the writer's lag).
    pub depth: u64,
    pub oldest_unstored_age_seconds: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShardView {
    pub shard: usize,
    pub up: bool,
    pub rows_per_second: f64,
    pub rows_stored: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InFlightView {
    pub events: usize,
    pub bytes: usize,
    /// The replica waits at its bound: answers lag.
    pub full: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueryView {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One second of the pipeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// Unix time, milliseconds.
    pub at_ms: i64,
    /// Records acknowledged by the gateway and not yet stored: Σ over the partitions of both
    /// lanes of (end offset − db-writer's committed offset). Events, plus the few clock ticks
    /// among them.
    pub depth: u64,
    /// Age of the oldest event (or tick) not yet stored; 0 when caught up.
    pub oldest_unstored_age_seconds: f64,
    /// How far behind now the release frontier is (the delay before events are answered).
    pub release_lag_seconds: Option<f64>,
    pub lanes: Vec<LaneView>,
    pub shards: Vec<ShardView>,
    pub dead_letters: u64,
    pub in_flight: InFlightView,
    pub streams: usize,
    pub queries: QueryView,
    pub writers: Vec<Member>,
    /// Whether `writers` is known to be complete. Not while the group is not described
    /// (the consumer group protocol) and no writer has reported yet: right after this
    /// replica started, or for good when it reads no notices (`kafka.persisted_topic`
    /// empty). An empty list then does not mean that nothing is being stored.
    pub writers_known: bool,
    /// `topic/partition` of the partitions no listed writer holds: their records are not being
    /// stored. Empty while the writers are not known.
    pub partitions_without_writer: Vec<String>,
    pub partitions: Vec<PartitionView>,
}

/// `topic/partition` of `partitions` no writer holds; none claimed while the writers are not
/// known.
fn without_writer(writers: &[Member], known: bool, partitions: &[PartitionView]) -> Vec<String> {
    if !known {
        return Vec::new();
    }
    let held: HashSet<&str> = writers
        .iter()
        .flat_map(|w| w.partitions.iter().map(String::as_str))
        .collect();
    partitions
        .iter()
        .map(|p| format!("{}/{}", p.topic, p.partition))
        .filter(|p| !held.contains(p.as_str()))
        .collect()
}

/// A persisted batch as the view shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchView {
    pub batch_id: String,
    pub writer: String,
    pub persisted_at_ms: i64,
    pub records: i32,
    /// Rows per shard: `[shard, rows]` pairs.
    #[schema(value_type = Vec<Vec<i32>>)]
    pub shards: Vec<(i32, i32)>,
}

impl From<&PersistedBatch> for BatchView {
    fn from(batch: &PersistedBatch) -> Self {
        BatchView {
            batch_id: batch.batch_id.clone(),
            writer: batch.writer.clone(),
            persisted_at_ms: batch.persisted_at / 1000,
            records: batch.batch_size,
            shards: batch.shards.iter().map(|s| (s.shard, s.rows)).collect(),
        }
    }
}

/// What the view's stream sends.
#[derive(Debug, Clone)]
pub enum Update {
    Snapshot(Arc<Snapshot>),
    Batch(Arc<BatchView>),
}

#[derive(Default)]
struct State {
    tail: TailReport,
    history: VecDeque<Arc<Snapshot>>,
    batches: VecDeque<Arc<BatchView>>,
    /// Rows stored per shard, from the notices seen since start.
    shard_rows: BTreeMap<usize, u64>,
    queries: VecDeque<(Instant, f64)>,
    /// Counters at the previous sample, for rates.
    previous_at: Option<i64>,
    previous_consumed: BTreeMap<String, u64>,
    previous_rows: BTreeMap<usize, u64>,
    /// Writers by name, from their own reports, until when each counts as alive: listed when
    /// the group's members cannot be described (the consumer group protocol).
    reported: BTreeMap<String, (Instant, Member)>,
    /// Since when the writers' reports are followed; `None` with notices off.
    reports_since: Option<Instant>,
}

pub struct Pipeline {
    state: Mutex<State>,
    updates: broadcast::Sender<Update>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            state: Mutex::default(),
            updates: broadcast::channel(64).0,
        }
    }
}

impl Pipeline {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn tail_reported(&self, report: TailReport) {
        self.lock().tail = report;
    }

    pub fn batch_persisted(&self, batch: &PersistedBatch) {
        let view = Arc::new(BatchView::from(batch));
        {
            let mut state = self.lock();
            for shard in &batch.shards {
                *state
                    .shard_rows
                    .entry(usize::try_from(shard.shard).unwrap_or(0))
                    .or_default() += u64::try_from(shard.rows).unwrap_or(0);
            }
            state.batches.push_front(view.clone());
            state.batches.truncate(BATCHES);
        }
        let _ = self.updates.send(Update::Batch(view));
    }

    /// The writers' reports are followed from now on (the first call counts).
    pub fn following_reports(&self) {
        self.lock().reports_since.get_or_insert_with(Instant::now);
    }

    /// A writer told which partitions it owns; with nothing more to come (`every_ms` 0), it
    /// left.
    pub fn writer_reported(&self, report: WriterReport) {
        let mut state = self.lock();
        let every = u64::try_from(report.every_ms).unwrap_or(0);
        if every == 0 {
            state.reported.remove(&report.writer);
            return;
        }
        let until = Instant::now() + Duration::from_millis(every) * REPORTS_MISSED;
        let member = Member {
            member_id: String::new(),
            client_id: report.writer.clone(),
            host: report.host,
            partitions: report.partitions,
        };
        state.reported.insert(report.writer, (until, member));
        if state.reported.len() > REPORTED_WRITERS {
            let soonest = state
                .reported
                .iter()
                .min_by_key(|(_, (until, _))| *until)
                .map(|(writer, _)| writer.clone());
            if let Some(writer) = soonest {
                state.reported.remove(&writer);
            }
        }
    }

    /// The writers as the group describes them, or, where it does not (the consumer
    /// protocol), as they reported themselves lately; and whether that list is known to be
    /// complete: "no writer" is only said once every running writer would have reported.
    fn writers(state: &mut State, now: Instant) -> (Vec<Member>, bool) {
        if state.tail.group_described || !state.tail.members.is_empty() {
            return (state.tail.members.clone(), true);
        }
        state.reported.retain(|_, (until, _)| *until > now);
        let reported: Vec<Member> = state.reported.values().map(|(_, m)| m.clone()).collect();
        let known = !reported.is_empty()
            || state
                .reports_since
                .is_some_and(|since| now.saturating_duration_since(since) >= REPORTS_AWAITED);
        (reported, known)
    }

    pub fn query_answered(&self, seconds: f64) {
        let mut state = self.lock();
        if state.queries.len() >= QUERIES {
            state.queries.pop_front();
        }
        state.queries.push_back((Instant::now(), seconds * 1000.0));
    }

    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.lock().history.back().cloned()
    }

    pub fn history(&self) -> Vec<Arc<Snapshot>> {
        self.lock().history.iter().cloned().collect()
    }

    pub fn batches(&self) -> Vec<Arc<BatchView>> {
        self.lock().batches.iter().cloned().collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }
}

/// What a sample is taken from besides the tail's report.
pub struct Sources {
    pub pipeline: Arc<Pipeline>,
    pub in_flight: Arc<InFlight>,
    pub frontier: Arc<Frontier>,
    pub streams: Arc<Streams>,
    pub shards: ShardSet,
    /// Reads the oldest unstored record of partitions that are behind.
    pub peeker: Arc<BaseConsumer>,
}

/// Samples the pipeline every second until `shutdown`.
pub async fn sample(sources: Sources, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let mut up = Vec::with_capacity(sources.shards.shards().len());
        for shard in sources.shards.shards() {
            let ping = tokio::time::timeout(Duration::from_secs(1), shard.ping()).await;
            up.push(matches!(ping, Ok(Ok(()))));
        }
        let lagging = lag::lagging(&sources.pipeline.lock().tail.observed);
        let peeker = sources.peeker.clone();
        let oldest = tokio::task::spawn_blocking(move || lag::oldest_timestamps(&peeker, &lagging))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let snapshot = Arc::new(take(&sources, up, &oldest));
        publish(&snapshot);
        {
            let mut state = sources.pipeline.lock();
            if state.history.len() >= HISTORY {
                state.history.pop_front();
            }
            state.history.push_back(snapshot.clone());
        }
        let _ = sources.pipeline.updates.send(Update::Snapshot(snapshot));
        // The next sample a full second after this one: a sample slower than the period
        // (shard pings, a first connection after a start, on a loaded machine) left a tick
        // due at once, and the next sample followed within milliseconds — charted twice at
        // one point (the dashboard test's failure).
        every.reset();
    }
}

fn take(sources: &Sources, up: Vec<bool>, oldest: &BTreeMap<Slot, i64>) -> Snapshot {
    let now = now_micros();
    let mut state = sources.pipeline.lock();
    let elapsed = state
        .previous_at
        .map(|at| ((now - at) as f64 / 1e6).max(0.001));
    let rate = |now_count: u64, before: Option<u64>| match (elapsed, before) {
        (Some(seconds), Some(before)) => {
            (now_count.saturating_sub(before) as f64 / seconds * 10.0).round() / 10.0
        }
        _ => 0.0,
    };
    let behind = lag::behind(&state.tail.observed, oldest, now / 1000);
    let mut topics: Vec<&String> = behind.lanes.keys().collect();
    topics.extend(state.tail.consumed.keys());
    topics.sort();
    topics.dedup();
    let lanes: Vec<LaneView> = topics
        .into_iter()
        .map(|topic| {
            let consumed = state.tail.consumed.get(topic).copied().unwrap_or(0);
            let lane = behind.lanes.get(topic);
            LaneView {
                topic: topic.clone(),
                ingest_per_second: rate(consumed, state.previous_consumed.get(topic).copied()),
                depth: lane.map_or(0, |l| l.depth),
                oldest_unstored_age_seconds: lane.map_or(0.0, |l| l.oldest_age_seconds),
            }
        })
        .collect();
    let shards: Vec<ShardView> = up
        .iter()
        .enumerate()
        .map(|(shard, up)| {
            let stored = state.shard_rows.get(&shard).copied().unwrap_or(0);
            ShardView {
                shard,
                up: *up,
                rows_per_second: rate(stored, state.previous_rows.get(&shard).copied()),
                rows_stored: stored,
            }
        })
        .collect();
    let minute_ago = Instant::now() - Duration::from_secs(60);
    while state
        .queries
        .front()
        .is_some_and(|(at, _)| *at < minute_ago)
    {
        state.queries.pop_front();
    }
    let mut latencies: Vec<f64> = state.queries.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let released = sources.frontier.released().ordered_at_micros;
    let (writers, writers_known) = Pipeline::writers(&mut state, Instant::now());
    let partitions_without_writer = without_writer(&writers, writers_known, &state.tail.partitions);
    let snapshot = Snapshot {
        at_ms: now / 1000,
        depth: behind.depth,
        // The oldest record the writer has not stored, read from Kafka; when a peek did not
        // answer, the oldest event this replica holds is a lower bound too.
        oldest_unstored_age_seconds: state
            .tail
            .oldest_held_micros
            .map_or(0.0, |at| (now - at).max(0) as f64 / 1e6)
            .max(behind.oldest_age_seconds),
        release_lag_seconds: (released > i64::MIN).then(|| (now - released).max(0) as f64 / 1e6),
        lanes,
        shards,
        dead_letters: state.tail.dead_letters,
        in_flight: InFlightView {
            events: sources.in_flight.len(),
            bytes: sources.in_flight.bytes(),
            full: sources.in_flight.is_full(),
        },
        streams: sources.streams.count(),
        queries: QueryView {
            per_second: latencies.len() as f64 / 60.0,
            p50_ms: percentile(0.5),
            p99_ms: percentile(0.99),
        },
        writers,
        writers_known,
        partitions_without_writer,
        partitions: state.tail.partitions.clone(),
    };
    state.previous_at = Some(now);
    state.previous_consumed = state.tail.consumed.clone();
    state.previous_rows = state.shard_rows.clone();
    snapshot
}

/// The Prometheus side of a sample.
fn publish(snapshot: &Snapshot) {
    metrics::PIPELINE_DEPTH.set(i64::try_from(snapshot.depth).unwrap_or(i64::MAX));
    metrics::OLDEST_UNSTORED.set(snapshot.oldest_unstored_age_seconds);
    metrics::DEAD_LETTER_RECORDS.set(i64::try_from(snapshot.dead_letters).unwrap_or(i64::MAX));
    metrics::PARTITIONS_WITHOUT_WRITER
        .set(i64::try_from(snapshot.partitions_without_writer.len()).unwrap_or(i64::MAX));
    for shard in &snapshot.shards {
        metrics::SHARD_UP
            .with_label_values(&[&shard.shard.to_string()])
            .set(i64::from(shard.up));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(writer: &str, partitions: &[&str], every_ms: i32) -> WriterReport {
        WriterReport {
            writer: writer.into(),
            host: "h".into(),
            group: "db-writer".into(),
            partitions: partitions.iter().map(|p| p.to_string()).collect(),
            every_ms,
            reported_at: 0,
        }
    }

    fn writers_at(pipeline: &Pipeline, now: Instant) -> Vec<(String, Vec<String>)> {
        Pipeline::writers(&mut pipeline.lock(), now)
            .0
            .into_iter()
            .map(|m| (m.client_id, m.partitions))
            .collect()
    }

    fn known_at(pipeline: &Pipeline, now: Instant) -> bool {
        Pipeline::writers(&mut pipeline.lock(), now).1
    }

    fn writers(pipeline: &Pipeline) -> Vec<(String, Vec<String>)> {
        writers_at(pipeline, Instant::now())
    }

    #[test]
    fn writers_come_from_their_reports_until_they_leave_or_fall_silent() {
        let pipeline = Pipeline::default();
        pipeline.writer_reported(report("w-1", &["events/0", "events/1"], 60_000));
        pipeline.writer_reported(report("w-2", &[], 60_000));
        pipeline.writer_reported(report("w-2", &["events/1"], 60_000));
        assert_eq!(
            writers(&pipeline),
            [
                (
                    "w-1".to_owned(),
                    vec!["events/0".to_owned(), "events/1".to_owned()]
                ),
                ("w-2".to_owned(), vec!["events/1".to_owned()]),
            ]
        );
        // Leaving: gone at once.
        pipeline.writer_reported(report("w-1", &[], 0));
        assert_eq!(
            writers(&pipeline),
            [("w-2".to_owned(), vec!["events/1".to_owned()])]
        );
        // Silent for three of its intervals: gone.
        pipeline.writer_reported(report("w-3", &["events/0"], 1_000));
        assert_eq!(writers(&pipeline).len(), 2);
        let later = Instant::now() + Duration::from_millis(3_001);
        assert_eq!(
            writers_at(&pipeline, later),
            [("w-2".to_owned(), vec!["events/1".to_owned()])]
        );
    }

    #[test]
    fn no_writer_is_only_said_once_running_writers_would_have_reported() {
        // Notices off on the consumer protocol: never known, however long.
        let pipeline = Pipeline::default();
        let later = Instant::now() + REPORTS_AWAITED * 10;
        assert!(!known_at(&pipeline, later));
        // Following reports: not known until a writer would have reported three times.
        pipeline.following_reports();
        let start = Instant::now();
        assert!(!known_at(&pipeline, start));
        assert!(!known_at(&pipeline, start + REPORTS_AWAITED / 2));
        assert!(known_at(&pipeline, start + REPORTS_AWAITED));
        assert!(writers_at(&pipeline, start + REPORTS_AWAITED).is_empty());
        // A report makes the list known at once.
        let reporting = Pipeline::default();
        reporting.following_reports();
        reporting.writer_reported(report("w-1", &["events/0"], 60_000));
        assert!(known_at(&reporting, Instant::now()));
        // A described classic group is the whole truth, also with no member.
        let classic = Pipeline::default();
        classic.tail_reported(TailReport {
            group_described: true,
            ..TailReport::default()
        });
        assert!(known_at(&classic, Instant::now()));
        assert!(writers_at(&classic, Instant::now()).is_empty());
    }

    #[test]
    fn partitions_without_writer_are_counted_only_when_the_writers_are_known() {
        let partitions: Vec<PartitionView> = [("events", 0), ("events", 1), ("events-critical", 0)]
            .into_iter()
            .map(|(topic, partition)| PartitionView {
                topic: topic.into(),
                partition,
                end_offset: 10,
                writer_committed: 10,
                writer_lag: 0,
                query_position: 10,
                query_lag: 0,
            })
            .collect();
        let writer = |partitions: &[&str]| Member {
            member_id: String::new(),
            client_id: "w".into(),
            host: "h".into(),
            partitions: partitions.iter().map(|p| p.to_string()).collect(),
        };
        let some = [writer(&["events/0"]), writer(&["events-critical/0"])];
        assert_eq!(without_writer(&some, true, &partitions), ["events/1"]);
        assert_eq!(
            without_writer(&[], true, &partitions),
            ["events/0", "events/1", "events-critical/0"]
        );
        assert!(without_writer(&[], false, &partitions).is_empty());
        let all = [writer(&["events/0", "events/1", "events-critical/0"])];
        assert!(without_writer(&all, true, &partitions).is_empty());
    }

    #[test]
    fn the_groups_own_description_wins_where_there_is_one() {
        let pipeline = Pipeline::default();
        pipeline.writer_reported(report("w-1", &["events/0"], 60_000));
        pipeline.tail_reported(TailReport {
            members: vec![Member {
                member_id: "m-1".into(),
                client_id: "w-9".into(),
                host: "/10.0.0.1".into(),
                partitions: vec!["events/0".into()],
            }],
            ..TailReport::default()
        });
        assert_eq!(
            writers(&pipeline),
            [("w-9".to_owned(), vec!["events/0".to_owned()])]
        );
    }
}
