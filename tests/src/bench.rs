//! What the benchmark programs share: percentiles, the results file, and the outcomes
//! `tests/bench` gathers into one table (`bench_table`).

use std::{
    collections::HashMap,
    fmt,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The `p`-th percentile (0.0–1.0, nearest rank) of ascending `sorted`, in milliseconds;
/// 0 when there is nothing.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Where a benchmark program writes what it measured: every program's `--results` and
/// `--summary`.
#[derive(clap::Args, Debug, Clone)]
pub struct Output {
    /// Where the report is appended. Default `target/bench-results/<program>.txt`.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Outcomes appended here as JSON lines, for `bench_table`. Default none.
    #[arg(long)]
    summary: Option<PathBuf>,
}

impl Output {
    /// The results file of `program` (pass `env!("CARGO_BIN_NAME")`).
    pub fn results_file(&self, program: &str) -> PathBuf {
        self.results
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("target/bench-results/{program}.txt")))
    }

    /// Appends `report` to `program`'s results file.
    pub fn report(&self, program: &str, report: &str) -> std::io::Result<()> {
        append_results(&self.results_file(program), report)
    }

    /// Appends the outcomes to the summary, if one was asked for.
    pub fn outcomes(&self, outcomes: &[Outcome]) -> std::io::Result<()> {
        record_outcomes(self.summary.as_deref(), outcomes)
    }
}

/// Appends a report to a results file, creating its folder.
pub fn append_results(path: &Path, report: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{report}")
}

/// One connection per shard URL, in the order given; each connection's driver runs on the
/// runtime until its client is dropped.
pub async fn connect_shards(
    urls: &[String],
) -> Result<Vec<tokio_postgres::Client>, ShardConnectError> {
    let mut shards = Vec::with_capacity(urls.len());
    for url in urls {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|source| ShardConnectError {
                url: url.clone(),
                source,
            })?;
        tokio::spawn(connection);
        shards.push(client);
    }
    Ok(shards)
}

/// A shard a benchmark could not connect to.
#[derive(Debug, thiserror::Error)]
#[error("connect {url}")]
pub struct ShardConnectError {
    url: String,
    #[source]
    source: tokio_postgres::Error,
}

/// The sum of every sample of metric `name` (all label sets) on a service's `/metrics`.
pub async fn metric_sum(http: &reqwest::Client, base: &str, name: &str) -> reqwest::Result<f64> {
    Ok(metrics_text(http, base)
        .await?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum())
}

/// When db-writer's stored rows grew: the first poll that saw them grow, and the one that saw
/// them reach the count waited for.
#[derive(Debug, Clone, Copy)]
pub struct RowsStored {
    pub first: Instant,
    pub done: Instant,
}

/// Why db-writer's stored rows were not seen to reach a count.
#[derive(Debug, thiserror::Error)]
pub enum RowsStoredError {
    #[error("db-writer's metrics at {url}")]
    Metrics {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("db-writer stored {stored} of {rows} rows within {deadline:?}")]
    Short {
        stored: f64,
        rows: u64,
        deadline: Duration,
    },
}

/// Polls db-writer's `db_writer_rows_inserted_total` at `url` every 50 ms until it grew by
/// `rows` past `before`, for at most `deadline`. With `writer_starting`, metrics that do not
/// answer are a writer not yet up and are polled again; otherwise they are an error.
pub async fn watch_rows_stored(
    http: &reqwest::Client,
    url: &str,
    before: f64,
    rows: u64,
    deadline: Duration,
    writer_starting: bool,
) -> Result<RowsStored, RowsStoredError> {
    let until = Instant::now() + deadline;
    let mut first = None;
    let mut stored = 0.0;
    loop {
        match metric_sum(http, url, "db_writer_rows_inserted_total").await {
            Ok(total) => {
                stored = total - before;
                let now = Instant::now();
                if stored > 0.0 {
                    first.get_or_insert(now);
                }
                if stored >= rows as f64 {
                    return Ok(RowsStored {
                        first: first.unwrap_or(now),
                        done: now,
                    });
                }
            }
            Err(source) if !writer_starting => {
                return Err(RowsStoredError::Metrics {
                    url: url.to_owned(),
                    source,
                })
            }
            Err(_) => {}
        }
        if Instant::now() >= until {
            return Err(RowsStoredError::Short {
                stored,
                rows,
                deadline,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series (`name{labels}` as the exposition prints it) at `base`/metrics; 0
/// when absent.
pub async fn metric_series(
    http: &reqwest::Client,
    base: &str,
    series: &str,
) -> reqwest::Result<f64> {
    Ok(series_value(&metrics_text(http, base).await?, series))
}

/// The value of one series in a Prometheus exposition `text`; 0 when absent.
pub fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The Prometheus exposition text of a service's `/metrics` at `base`.
pub async fn metrics_text(http: &reqwest::Client, base: &str) -> reqwest::Result<String> {
    http.get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// When a request was sent, on both clocks: the monotonic one for what is timed here, the
/// wall clock for comparing with times a shard recorded (commit timestamps).
#[derive(Debug, Clone, Copy)]
pub struct SentAt {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl SentAt {
    pub fn now() -> Self {
        SentAt {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// An acknowledged event whose arrival in its shard is timed.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub id: Uuid,
    pub critical: bool,
    /// When its request was (first) sent.
    pub sent: SentAt,
}

/// What [`watch_stored`] saw, per lane (index 0 normal, 1 critical). A row became visible
/// between its two bounds; a percentile of `after` at most a target proves the target met.
#[derive(Debug, Default)]
pub struct Stored {
    /// Request sent → a time the row was visible by: the shard's clock (`clock_timestamp()`,
    /// read after the statement's snapshot) in the poll that found it. Late by up to the poll
    /// interval, not by the poll's way back or the benchmark's own scheduling.
    pub after: [Vec<Duration>; 2],
    /// Request sent → the latest time the row is known not to have been visible: its commit
    /// timestamp (when the shard keeps them) or the send of the last poll that missed it,
    /// whichever is later. A commit timestamp is taken before the commit's WAL flush, so it
    /// can read early; a poll that missed a committed row corrects it (a wait longer than
    /// the poll interval is always caught).
    pub not_before: [Vec<Duration>; 2],
    /// Events not found within the give-up time.
    pub gave_up: [usize; 2],
    /// Whether the shard keeps commit timestamps (`track_commit_timestamp`).
    pub commit_timestamps: bool,
    /// Rows a poll did not see although their commit timestamp was earlier than the poll was
    /// sent, and the longest such wait seen.
    pub visible_after_commit: usize,
    pub visible_after_commit_max: Duration,
    /// The [`SLOWEST`] rows with the latest `after`, per lane, slowest first: when they were
    /// sent, to be matched with the servers' logs.
    pub slowest: [Vec<Slow>; 2],
}

/// Slow rows kept per lane in [`Stored::slowest`].
pub const SLOWEST: usize = 5;

/// One slow row: its request's send (wall clock), and from then until its commit timestamp
/// (when the shard keeps them) and until a poll saw it.
#[derive(Debug, Clone, Copy)]
pub struct Slow {
    pub sent: SystemTime,
    pub committed: Option<Duration>,
    pub after: Duration,
}

impl Stored {
    /// Keeps `slow` if it is among the lane's [`SLOWEST`].
    fn keep_if_slow(&mut self, lane: usize, slow: Slow) {
        let slowest = &mut self.slowest[lane];
        let at = slowest.partition_point(|s| s.after >= slow.after);
        if at < SLOWEST {
            slowest.insert(at, slow);
            slowest.truncate(SLOWEST);
        }
    }
}

/// Ids asked for in one poll statement, at most.
const POLL_BATCH: usize = 2_000;

/// A timed event not seen yet, and when a poll last asked for it in vain (wall clock, taken
/// before the statement was sent, so the row was not visible then).
struct Pending {
    timed: Timed,
    missed_at: Option<SystemTime>,
}

/// Polls one shard every `every` for the timed events fed to it until it has seen each or
/// given it up (`give_up` after its send), and no more will come: the feed closed or `done`
/// cancelled. Oldest first, one statement per tick over the next [`POLL_BATCH`] ids, so a
/// backlog costs the shard no more than that and no id waits behind one that is slow to
/// appear: each is asked at least every `pending / POLL_BATCH` ticks. Each row found is timed
/// between two bounds ([`Stored`]). At most `max_pending` are held; the rest wait in the feed.
pub async fn watch_stored(
    shard: &tokio_postgres::Client,
    mut feed: mpsc::Receiver<Timed>,
    every: Duration,
    give_up: Duration,
    max_pending: usize,
    done: CancellationToken,
) -> Result<Stored, tokio_postgres::Error> {
    let commit_timestamps = shard
        .query_one(
            "SELECT current_setting('track_commit_timestamp') = 'on'",
            &[],
        )
        .await?
        .get::<_, bool>(0);
    let committed = if commit_timestamps {
        "pg_xact_commit_timestamp(xmin)"
    } else {
        "NULL::timestamptz"
    };
    // The time bound keeps the probe to the newest day partitions (pruned at execution): the
    // poll must not load the shard it measures.
    let statement = shard
        .prepare(&format!(
            "SELECT event_id, {committed}, clock_timestamp() FROM events \
             WHERE event_id = ANY($1) AND ordered_at > now() - interval '10 minutes'"
        ))
        .await?;
    let (mut pending, mut cursor) = (Vec::<Pending>::new(), 0);
    let mut stored = Stored {
        commit_timestamps,
        ..Stored::default()
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Read before draining the feed: nothing is fed after `done`, so an empty feed then
        // stays empty.
        let mut ended = done.is_cancelled();
        while pending.len() < max_pending {
            match feed.try_recv() {
                Ok(timed) => pending.push(Pending {
                    timed,
                    missed_at: None,
                }),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    ended = true;
                    break;
                }
            }
        }
        if pending.is_empty() {
            if ended {
                return Ok(stored);
            }
            continue;
        }
        let asked = poll_window(pending.len(), cursor, POLL_BATCH);
        let ids: Vec<Uuid> = pending[asked.clone()].iter().map(|p| p.timed.id).collect();
        let asked_at = SystemTime::now();
        let rows = shard.query(&statement, &[&ids]).await?;
        let found: HashMap<Uuid, (Option<SystemTime>, SystemTime)> = rows
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
        let (now, mut index) = (Instant::now(), 0);
        cursor = 0;
        pending.retain_mut(|p| {
            let (lane, age) = (usize::from(p.timed.critical), now - p.timed.sent.instant);
            let was_asked = asked.contains(&index);
            index += 1;
            let keep = match found.get(&p.timed.id) {
                Some(&(committed, seen)) => {
                    let (not_before, after) = bounds(&mut stored, p, committed, seen);
                    stored.not_before[lane].push(not_before);
                    stored.after[lane].push(after);
                    let sent = p.timed.sent.wall;
                    let committed = committed.and_then(|c| c.duration_since(sent).ok());
                    stored.keep_if_slow(
                        lane,
                        Slow {
                            sent,
                            committed,
                            after,
                        },
                    );
                    false
                }
                None if age >= give_up => {
                    stored.gave_up[lane] += 1;
                    false
                }
                None => {
                    if was_asked {
                        p.missed_at = Some(asked_at);
                    }
                    true
                }
            };
            // The next statement starts after what this one asked.
            cursor += usize::from(keep && index <= asked.end);
            keep
        });
    }
}

/// A [`watch_stored`] on a thread and a shard connection of its own, for a generator whose
/// one thread is busy sending: polls due every 5 ms waited behind its requests, and at
/// 10,000/s the p99 of the upper bound stood ~40 ms above the commit timestamps
/// (docs/benchmarks.md, "The observer's own thread"). Returns once connected, so a wrong
/// address fails before any load is sent.
pub async fn watch_stored_apart(
    url: &str,
    feed: mpsc::Receiver<Timed>,
    every: Duration,
    give_up: Duration,
    max_pending: usize,
) -> Result<ApartWatch, WatchError> {
    let (connected, ready) = tokio::sync::oneshot::channel();
    let url = url.to_owned();
    let result = run_apart("shard-poll", async move {
        let shard = match connect_shards(std::slice::from_ref(&url)).await {
            Ok(mut shards) if !shards.is_empty() => shards.swap_remove(0),
            Ok(_) => return Err(WatchError::Ended),
            Err(e) => {
                let _ = connected.send(Err(e));
                return Err(WatchError::Ended);
            }
        };
        let _ = connected.send(Ok(()));
        let ends_with_the_feed = CancellationToken::new();
        watch_stored(
            &shard,
            feed,
            every,
            give_up,
            max_pending,
            ends_with_the_feed,
        )
        .await
        .map_err(WatchError::Poll)
    })
    .map_err(WatchError::Runtime)?;
    match ready.await {
        Ok(Ok(())) => Ok(ApartWatch { result }),
        Ok(Err(e)) => Err(WatchError::Connect(e)),
        Err(_) => Err(WatchError::Ended),
    }
}

/// Runs `work` on a thread and a single-threaded runtime of its own, for an observer that
/// must keep its own timing beside a generator whose one thread is busy sending. The receiver
/// gets the output; it closes without one if `work` panicked.
pub fn run_apart<F>(
    name: &str,
    work: F,
) -> std::io::Result<tokio::sync::oneshot::Receiver<F::Output>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (output_tx, output) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // The caller may have gone (its own error); nobody to tell then.
            let _ = output_tx.send(runtime.block_on(work));
        })?;
    Ok(output)
}

/// A running [`watch_stored_apart`].
pub struct ApartWatch {
    result: tokio::sync::oneshot::Receiver<Result<Stored, WatchError>>,
}

impl ApartWatch {
    /// What the poll found, once its feed closed and every event fed was seen or given up.
    /// Awaited, not joined: the caller's runtime keeps running its other tasks meanwhile.
    pub async fn finished(self) -> Result<Stored, WatchError> {
        self.result.await.unwrap_or(Err(WatchError::Vanished))
    }
}

/// Why a [`watch_stored_apart`] failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the poll's thread or runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Connect(#[from] ShardConnectError),
    #[error("shard poll: {0}")]
    Poll(tokio_postgres::Error),
    #[error("the poll's thread ended before it connected")]
    Ended,
    #[error("the poll's thread ended without a result (it panicked)")]
    Vanished,
}

/// The two bounds ([`Stored`]) of a row just found: committed at `committed` (if the shard
/// keeps commit timestamps), seen by a poll whose shard clock read `seen`.
fn bounds(
    stored: &mut Stored,
    pending: &Pending,
    committed: Option<SystemTime>,
    seen: SystemTime,
) -> (Duration, Duration) {
    if let (Some(committed), Some(missed)) = (committed, pending.missed_at) {
        if let Ok(wait) = missed.duration_since(committed) {
            stored.visible_after_commit += 1;
            stored.visible_after_commit_max = stored.visible_after_commit_max.max(wait);
        }
    }
    let sent = pending.timed.sent.wall;
    let not_visible_at = committed.max(pending.missed_at).unwrap_or(sent);
    // The clocks are the same machine's; a span that would end before the send is a clock
    // step, read as zero rather than as a huge number.
    let since_sent = |at: SystemTime| at.duration_since(sent).unwrap_or_default();
    let after = since_sent(seen);
    (since_sent(not_visible_at).min(after), after)
}

/// The pending ids (`len` of them, oldest first) one poll asks for: all while they fit in
/// one statement, or else the next `batch` after `cursor` (wrapping to the oldest), so a
/// backlog is walked through in turns. Asking only from the cursor when everything fits
/// skipped the oldest unseen ids for several polls, which added tens of ms to the slowest
/// measurements (a critical p99 of 75 ms whose rows the shards had committed within 8 ms).
fn poll_window(len: usize, cursor: usize, batch: usize) -> std::ops::Range<usize> {
    if len <= batch {
        return 0..len;
    }
    let start = if cursor < len { cursor } else { 0 };
    start..(start + batch).min(len)
}

/// What a measured number must reach.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    pub fn met_by(self, value: f64) -> bool {
        match self {
            Target::AtLeast(bound) => value >= bound,
            Target::AtMost(bound) => value <= bound,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::AtLeast(bound) => write!(f, "≥ {}", number(*bound)),
            Target::AtMost(bound) => write!(f, "≤ {}", number(*bound)),
        }
    }
}

/// One measured number of one scenario, with the target it is held to (if any): a line of
/// the table `tests/bench` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub scenario: String,
    pub measure: String,
    pub value: f64,
    pub unit: String,
    pub target: Option<Target>,
}

impl Outcome {
    pub fn new(scenario: &str, measure: &str, value: f64, unit: &str) -> Self {
        Outcome {
            scenario: scenario.to_owned(),
            measure: measure.to_owned(),
            value,
            unit: unit.to_owned(),
            target: None,
        }
    }

    pub fn target(self, target: Target) -> Self {
        self.target_if(Some(target))
    }

    /// The same for a target a flag may leave unset.
    pub fn target_if(mut self, target: Option<Target>) -> Self {
        self.target = target;
        self
    }

    /// `None` when the number is reported without a target.
    pub fn met(&self) -> Option<bool> {
        self.target.map(|t| t.met_by(self.value))
    }
}

/// Appends outcomes as JSON lines to `path` (a program run without `--summary` writes none).
pub fn record_outcomes(path: Option<&Path>, outcomes: &[Outcome]) -> std::io::Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let lines: Vec<String> = outcomes
        .iter()
        .map(|o| serde_json::to_string(o).map_err(std::io::Error::other))
        .collect::<Result<_, _>>()?;
    append_results(path, &lines.join("\n"))
}

/// The outcomes as a Markdown table: scenario, measure, value, target, met.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| scenario | measure | value | target | met |\n| --- | --- | --- | --- | --- |\n",
    );
    for o in outcomes {
        let target = o
            .target
            .map(|t| format!("{t} {}", o.unit))
            .unwrap_or_default();
        let met = match o.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} {} | {target} | {met} |\n",
            o.scenario,
            o.measure,
            number(o.value),
            o.unit
        ));
    }
    out
}

/// Three significant digits at most below 1,000; whole numbers with thousands separators above.
fn number(value: f64) -> String {
    if value.abs() >= 1000.0 {
        let whole = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if value < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if value.fract() == 0.0 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// When [`pending`] was sent, on the wall clock; a second after the epoch, so that a
    /// clock step back from it stays representable.
    fn sent_wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1)
    }

    fn pending(missed_at: Option<SystemTime>) -> Pending {
        let sent = SentAt {
            instant: Instant::now(),
            wall: sent_wall(),
        };
        Pending {
            timed: Timed {
                id: Uuid::nil(),
                critical: true,
                sent,
            },
            missed_at,
        }
    }

    /// `n` ms after the send of [`pending`].
    fn at(n: u64) -> SystemTime {
        sent_wall() + ms(n)
    }

    #[test]
    fn a_row_is_timed_between_its_commit_or_a_later_miss_and_the_poll_that_saw_it() {
        let mut stored = Stored::default();
        // Committed 7 ms after the send, seen by a poll at 12 ms.
        let seen = bounds(&mut stored, &pending(None), Some(at(7)), at(12));
        assert_eq!(seen, (ms(7), ms(12)));
        // A poll sent at 5 ms (before the commit) missed it: the commit stands.
        let seen = bounds(&mut stored, &pending(Some(at(5))), Some(at(7)), at(12));
        assert_eq!(seen, (ms(7), ms(12)));
        assert_eq!(stored.visible_after_commit, 0);
        // A poll sent at 9 ms missed a row committed at 7 ms: not visible before 9 ms, and
        // the wait after the commit is counted.
        let seen = bounds(&mut stored, &pending(Some(at(9))), Some(at(7)), at(12));
        assert_eq!(seen, (ms(9), ms(12)));
        assert_eq!(stored.visible_after_commit, 1);
        assert_eq!(stored.visible_after_commit_max, ms(2));
    }

    #[test]
    fn without_a_commit_timestamp_the_last_miss_is_the_lower_bound() {
        let mut stored = Stored::default();
        let seen = bounds(&mut stored, &pending(Some(at(4))), None, at(9));
        assert_eq!(seen, (ms(4), ms(9)));
        // Found by the first poll: nothing is known before it but the send.
        assert_eq!(
            bounds(&mut stored, &pending(None), None, at(9)),
            (ms(0), ms(9))
        );
    }

    #[test]
    fn a_clock_step_reads_as_zero_not_as_a_huge_span_and_never_inverts_the_bounds() {
        let mut stored = Stored::default();
        let before_the_send = sent_wall() - ms(3);
        let seen = bounds(
            &mut stored,
            &pending(None),
            Some(before_the_send),
            before_the_send,
        );
        assert_eq!(seen, (ms(0), ms(0)));
        let (before, after) = bounds(&mut stored, &pending(None), Some(at(8)), at(6));
        assert!(before <= after, "{before:?} > {after:?}");
    }

    #[test]
    fn a_poll_asks_every_pending_id_while_they_fit_and_walks_a_backlog_in_turns() {
        // Fitting: every poll asks all of them, whatever the cursor says.
        for cursor in [0, 3, 10, 99] {
            assert_eq!(poll_window(10, cursor, 2_000), 0..10);
        }
        // A backlog: turns of `batch` from the cursor, back to the oldest past the end.
        assert_eq!(poll_window(5_000, 0, 2_000), 0..2_000);
        assert_eq!(poll_window(5_000, 2_000, 2_000), 2_000..4_000);
        assert_eq!(poll_window(5_000, 4_000, 2_000), 4_000..5_000);
        assert_eq!(poll_window(5_000, 5_000, 2_000), 0..2_000);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&ms, 0.5), 51.0);
        assert_eq!(percentile_ms(&ms, 0.99), 99.0);
        assert_eq!(percentile_ms(&ms, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn targets_judge_their_side_and_the_table_says_so() {
        let rate = Outcome::new("single POST", "acknowledged", 20_600.4, "events/s")
            .target(Target::AtLeast(30_000.0));
        let p99 = Outcome::new("single POST", "p99", 7.25, "ms").target(Target::AtMost(8.0));
        let bare = Outcome::new("fleet", "SSE events", 12.0, "events");
        assert_eq!(rate.met(), Some(false));
        assert_eq!(p99.met(), Some(true));
        assert_eq!(bare.met(), None);
        let table = table(&[rate, p99, bare]);
        assert!(
            table.contains(
                "| single POST | acknowledged | 20,600 events/s | ≥ 30,000 events/s | **no** |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| single POST | p99 | 7.25 ms | ≤ 8 ms | yes |"),
            "{table}"
        );
        assert!(
            table.contains("| fleet | SSE events | 12 events |  |  |"),
            "{table}"
        );
    }

    #[test]
    fn outcomes_survive_their_json_lines() {
        let dir = std::env::temp_dir().join(format!("outcomes-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join("summary.jsonl");
        let written = vec![
            Outcome::new("a", "p99", 1.5, "ms").target(Target::AtMost(3.0)),
            Outcome::new("b", "rate", 10.0, "events/s"),
        ];
        record_outcomes(Some(&path), &written).expect("written");
        record_outcomes(None, &written).expect("nothing to write");
        let read: Vec<Outcome> = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("an outcome"))
            .collect();
        assert_eq!(read, written);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_slowest_rows_are_kept_per_lane_slowest_first() {
        let mut stored = Stored::default();
        for (n, after) in [5, 30, 10, 50, 1, 40, 20, 60, 30].into_iter().enumerate() {
            let slow = Slow {
                sent: sent_wall() + ms(n as u64),
                committed: None,
                after: ms(after),
            };
            stored.keep_if_slow(1, slow);
        }
        stored.keep_if_slow(
            0,
            Slow {
                sent: sent_wall(),
                committed: Some(ms(2)),
                after: ms(3),
            },
        );
        let kept: Vec<_> = stored.slowest[1].iter().map(|s| s.after).collect();
        assert_eq!(kept, [60, 50, 40, 30, 30].map(ms));
        // Of two as slow, the first seen is listed first.
        assert_eq!(stored.slowest[1][3].sent, sent_wall() + ms(1));
        assert_eq!(stored.slowest[0].len(), 1);
    }
}
