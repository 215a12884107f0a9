//! Follows the unpersisted tail of every partition: starts each partition at the writer's
//! committed offset (with the log clock the writer committed there), orders and holds what it
//! consumes, drops events once the writer has committed past them, and moves the release
//! frontier.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use chassis::{health::Readiness, kafka_headers};
use futures::{FutureExt, StreamExt};
use lag::{GroupView, Observed, Slot};
use prometheus::Histogram;
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Message, Timestamp},
    Offset, TopicPartitionList,
};
use schemas::{contract, headers, EventCodec, TickCodec};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    in_flight::{Held, InFlight},
    indexing, metrics,
    partitions::{OnRead, Partitions},
    pipeline::{PartitionView, Pipeline, TailReport},
    progress::Progress,
    release::Release,
    settings::{CacheSettings, KafkaSettings, OrderSettings},
    verify::Checked,
    wall_clock::{now_micros, seconds_since},
};

/// How often the topics' partitions, the dead-letter topic and the writer group's members
/// are read.
const SLOW_REFRESH: Duration = Duration::from_secs(1);
/// How long start-up waits for Kafka to answer before the service gives up.
const START_PATIENCE: Duration = Duration::from_secs(60);
/// Most records consumed in one turn of the tail before it looks at its other work (the
/// shard checks' answers, the readings of Kafka, shutdown) again.
const DRAIN_BOUND: usize = 512;
/// Most index requests served in one pass over the held events.
const INDEX_BOUND: usize = 64;
/// Readiness check: consumed every partition up to the end offsets seen at start.
pub const READY_CAUGHT_UP: &str = "caught-up";

pub struct Tail {
    consumer: StreamConsumer,
    core: Core,
}

/// Everything but the consumer, so a borrowed message and the state it updates can live
/// side by side.
struct Core {
    /// A client in the writer's group that never joins it: reads its commits and the
    /// partitions' end offsets.
    observer: Arc<BaseConsumer>,
    /// The topics' partitions as last read; the readings between slow ones reuse it.
    layout: Option<Arc<Vec<Slot>>>,
    topics: Vec<String>,
    refresh_interval: Duration,
    partitions: Partitions,
    in_flight: Arc<InFlight>,
    progress: Arc<Progress>,
    checks: mpsc::Sender<Held>,
    checked: mpsc::UnboundedReceiver<Checked>,
    index_requests: mpsc::Receiver<indexing::Request>,
    events: EventCodec,
    ticks: TickCodec,
    readiness: Readiness,
    /// End offsets seen at start: ready once consumption has passed them all.
    start_ends: HashMap<Slot, i64>,
    pipeline: Arc<Pipeline>,
    writer_group: String,
    dead_letter_topic: String,
    dead_letters: u64,
    group: GroupView,
    /// `query_consume_delay_seconds` of each kind, looked up once (every record observes one).
    event_delay: Histogram,
    tick_delay: Histogram,
    /// When (micros) the drain under way began: the consume delay of each of its records is
    /// measured against it, not against a clock read per record.
    drained_at: i64,
}

/// One reading of Kafka by [`Core::read`].
struct Reading {
    observed: Result<BTreeMap<Slot, Observed>, KafkaError>,
    /// The partitions the reading covered, read or reused; `None` when they could not be read.
    layout: Option<Arc<Vec<Slot>>>,
    slowly: Option<SlowReading>,
}

/// The dead-letter topic's size and the writer group's members.
struct SlowReading {
    dead_letters: Result<u64, KafkaError>,
    group: Result<GroupView, KafkaError>,
}

/// What the tail is given by the service.
pub struct Wiring {
    pub in_flight: Arc<InFlight>,
    pub progress: Arc<Progress>,
    pub release: Release,
    pub checks: mpsc::Sender<Held>,
    pub checked: mpsc::UnboundedReceiver<Checked>,
    pub index_requests: mpsc::Receiver<indexing::Request>,
    pub readiness: Readiness,
    pub pipeline: Arc<Pipeline>,
}

impl Tail {
    /// Assigns every partition of the topics, each at the writer's committed offset.
    /// `base`: the brokers and `kafka.security`, which every client starts from.
    pub async fn start(
        base: &ClientConfig,
        kafka: &KafkaSettings,
        order: &OrderSettings,
        cache: &CacheSettings,
        wiring: Wiring,
    ) -> Result<Tail, KafkaError> {
        let group = format!("{}-{}", kafka.group_prefix, uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = base
            .clone()
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", "65536")
            .set("fetch.min.bytes", kafka.fetch_min_bytes.to_string())
            .set(
                "fetch.wait.max.ms",
                kafka.fetch_wait.as_millis().to_string(),
            )
            .create()?;
        let observer = lag::observer(base, &kafka.writer_group)?;
        let Wiring {
            in_flight,
            progress,
            release,
            checks,
            checked,
            index_requests,
            readiness,
            pipeline,
        } = wiring;
        let quiet_bound = i64::try_from(order.quiet_bound.as_micros()).unwrap_or(i64::MAX);
        let mut core = Core {
            observer: Arc::new(observer),
            layout: None,
            topics: kafka.topics.clone(),
            refresh_interval: kafka.refresh_interval,
            partitions: Partitions::new(
                in_flight.clone(),
                progress.clone(),
                release,
                quiet_bound,
                order
                    .per_client_release
                    .then(|| i64::try_from(order.growth_settle.as_micros()).unwrap_or(i64::MAX)),
                now_micros(),
                cache.index_on_read.then(|| {
                    OnRead::new(
                        i64::try_from(cache.read_client_ttl.as_micros()).unwrap_or(i64::MAX),
                        cache.max_read_clients,
                    )
                }),
            ),
            in_flight,
            progress,
            checks,
            checked,
            index_requests,
            events: EventCodec::new(),
            ticks: TickCodec::default(),
            readiness,
            start_ends: HashMap::new(),
            pipeline,
            writer_group: kafka.writer_group.clone(),
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            dead_letters: 0,
            group: GroupView::default(),
            event_delay: metrics::CONSUME_DELAY.with_label_values(&["event"]),
            tick_delay: metrics::CONSUME_DELAY.with_label_values(&["tick"]),
            drained_at: 0,
        };
        // A broker that just started may not have a group coordinator yet: wait for it.
        let mut backoff = Duration::from_millis(100);
        let started = tokio::time::Instant::now();
        let observed = loop {
            match core.observe().await {
                Ok(observed) => break observed,
                Err(e) if started.elapsed() < START_PATIENCE => {
                    warn!(error = %e, "cannot read the writer's progress yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        };
        core.assign_new(&consumer, &observed)?;
        core.start_ends = observed
            .iter()
            .filter_map(|(slot, o)| o.end.map(|end| (slot.clone(), end)))
            .collect();
        info!(
            group,
            partitions = core.partitions.len(),
            "query-service tailing from the writer's commits"
        );
        Ok(Tail { consumer, core })
    }

    /// Runs the tail on a thread of its own, on a single-threaded runtime: librdkafka's
    /// wake-ups (hundreds a second under load) reach one thread, not the service's
    /// work-stealing workers, which measured ~10 % more CPU per event (docs/benchmarks.md).
    /// Ends when `shutdown` is cancelled.
    pub fn spawn(self, shutdown: CancellationToken) -> std::io::Result<oneshot::Receiver<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tail")
            .build()?;
        let (stopped, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("tail".into())
            .spawn(move || {
                runtime.block_on(self.run(shutdown));
                let _ = stopped.send(());
            })?;
        Ok(done)
    }

    async fn run(self, shutdown: CancellationToken) {
        let Tail { consumer, mut core } = self;
        // One stream for the whole run: each `recv` would register a waker slot and drop it.
        let mut records = consumer.stream();
        let mut refresh = tokio::time::interval(core.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slow_refresh = tokio::time::Instant::now() - SLOW_REFRESH;
        // The reading under way and when it was asked for. Kafka's answers take round trips
        // (several ms on a busy broker); consumption goes on meanwhile, or every reading
        // would hold back the records, ticks included, that release events.
        let mut reading: Option<(i64, JoinHandle<Reading>)> = None;
        let turns = metrics::TailTurns::resolve();
        loop {
            let full = core.in_flight.is_full();
            metrics::TAIL_PAUSED.set(i64::from(full));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(checked) = core.checked.recv() => {
                    let _turn = turns.checked.start_timer();
                    core.partitions.checked(&checked.held, checked.found.as_ref());
                }
                // Before records: a read waits for it.
                Some(request) = core.index_requests.recv() => {
                    let _turn = turns.index.start_timer();
                    // Requests that queued meanwhile share one pass over what is held.
                    let mut requests = vec![request];
                    while requests.len() < INDEX_BOUND {
                        match core.index_requests.try_recv() {
                            Ok(request) => requests.push(request),
                            Err(_) => break,
                        }
                    }
                    core.index(requests).await;
                }
                _ = refresh.tick(), if reading.is_none() => {
                    let slowly = slow_refresh.elapsed() >= SLOW_REFRESH;
                    if slowly {
                        slow_refresh = tokio::time::Instant::now();
                    }
                    reading = Some((now_micros(), core.read(slowly)));
                }
                done = async {
                    match reading.as_mut() {
                        Some((_, task)) => task.await,
                        None => std::future::pending().await,
                    }
                }, if reading.is_some() => {
                    let sent_at = reading.take().map_or(0, |(at, _)| at);
                    let _turn = turns.reading.start_timer();
                    match done {
                        Ok(done) => core.apply_reading(&consumer, done, sent_at),
                        Err(e) => warn!(error = %e, "reading the writer's progress failed"),
                    }
                }
                // At the in-flight bound, stop consuming until the writer's commits make room:
                // nothing consumed is ever dropped, answers only lag.
                message = records.next(), if !full => {
                    let _turn = turns.records.start_timer();
                    core.drained_at = now_micros();
                    core.received(message).await;
                    // What librdkafka holds already is taken in the same turn, and the frontier
                    // (a walk over every partition) moves once for all of it, not per record.
                    for _ in 1..DRAIN_BOUND {
                        if core.in_flight.is_full() {
                            break;
                        }
                        match records.next().now_or_never() {
                            Some(message) => core.received(message).await,
                            None => break,
                        }
                    }
                    core.partitions.advance();
                }
            }
        }
        info!("tail stopped");
    }
}

impl Core {
    /// The writer's commit and the end offset of every partition of the topics, read off the
    /// async runtime.
    async fn observe(&self) -> Result<BTreeMap<Slot, Observed>, KafkaError> {
        self.read(false)
            .await
            .map_err(|_| KafkaError::Canceled)?
            .observed
    }

    /// The writer's commits and the end offsets of every partition, and with `slowly` the
    /// topics' partitions, the dead-letter topic's size and the writer group's members (they
    /// change slowly), read off the async runtime. Between slow readings the partitions read
    /// last are reused: their metadata is a request per topic, and they change only when an
    /// operator adds some, which are then followed within `SLOW_REFRESH`.
    fn read(&self, slowly: bool) -> JoinHandle<Reading> {
        let observer = self.observer.clone();
        let topics = self.topics.clone();
        let known = if slowly { None } else { self.layout.clone() };
        let (dead_letter_topic, writer_group) =
            (self.dead_letter_topic.clone(), self.writer_group.clone());
        tokio::task::spawn_blocking(move || {
            let layout = match known {
                Some(known) => Ok(known),
                None => lag::layout(&observer, &topics).map(Arc::new),
            };
            let (observed, layout) = match layout {
                Ok(layout) => (lag::partitions_of(&observer, &layout), Some(layout)),
                Err(e) => (Err(e), None),
            };
            Reading {
                observed,
                layout,
                slowly: slowly.then(|| SlowReading {
                    dead_letters: lag::topic_size(&observer, &dead_letter_topic),
                    group: lag::members(&observer, &writer_group),
                }),
            }
        })
    }

    /// Applies a reading; what Kafka did not answer keeps its previous value.
    fn apply_reading(&mut self, consumer: &StreamConsumer, reading: Reading, sent_at: i64) {
        let slowly = reading.slowly.is_some();
        if let Some(layout) = reading.layout {
            self.layout = Some(layout);
        }
        if let Some(SlowReading {
            dead_letters: dead,
            group,
        }) = reading.slowly
        {
            match dead {
                Ok(dead) => self.dead_letters = dead,
                Err(e) => warn!(error = %e, "cannot count dead letters"),
            }
            match group {
                Ok(group) => self.group = group,
                Err(e) => warn!(error = %e, "cannot describe the writer group"),
            }
        }
        match reading.observed {
            Ok(observed) => self.apply_observed(consumer, &observed, sent_at),
            Err(e) => warn!(error = %e, "cannot read the writer's progress"),
        }
        if slowly {
            self.partitions.unindex_idle(now_micros());
        }
    }

    /// Indexes the held events of clients about to be read, then lets the reads go on.
    async fn index(&mut self, requests: Vec<indexing::Request>) {
        metrics::INDEXINGS.inc_by(requests.len() as u64);
        let clients: Vec<String> = requests.iter().map(|r| r.client.clone()).collect();
        for held in self.partitions.index_clients(&clients, now_micros()) {
            if self.checks.send(held).await.is_err() {
                warn!("duplicate checker stopped");
            }
        }
        for request in requests {
            // The reader may be gone (timed out): nothing to tell then.
            let _ = request.done.send(());
        }
    }

    fn assign_new(
        &mut self,
        consumer: &StreamConsumer,
        observed: &BTreeMap<Slot, Observed>,
    ) -> Result<(), KafkaError> {
        let new: Vec<(&Slot, &Observed)> = observed
            .iter()
            .filter(|(slot, _)| !self.partitions.contains(slot))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        // At start every partition begins at the writer's commit: everything before it is
        // in PostgreSQL, ordered before the clock the commit carries (readers wait until the
        // frontier has passed those clocks, see `Frontier::started`). A partition added later
        // is read from its beginning: the writer may already have stored some of its events,
        // and this replica must place each of them in the order itself.
        let starting = self.start_ends.is_empty();
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), o) in &new {
            let offset = if starting {
                Offset::Offset(o.committed)
            } else {
                Offset::Beginning
            };
            tpl.add_partition_offset(topic, *partition, offset)?;
        }
        consumer.incremental_assign(&tpl)?;
        if !starting {
            self.partitions.grown(now_micros());
        }
        for (slot, o) in new {
            if starting {
                self.partitions
                    .assign(slot.clone(), o.committed, o.committed, o.clock);
            } else {
                self.partitions.assign(slot.clone(), 0, o.committed, None);
            }
        }
        info!(added = tpl.count(), "partitions assigned");
        Ok(())
    }

    async fn received(&mut self, message: Option<Result<BorrowedMessage<'_>, KafkaError>>) {
        match message {
            Some(Ok(message)) => self.consume(&message).await,
            Some(Err(e)) => warn!(error = %e, "consumer error"),
            // A consumer's stream never ends.
            None => {}
        }
    }

    async fn consume(&mut self, message: &BorrowedMessage<'_>) {
        let Some(slot) = self.partitions.find(message.topic(), message.partition()) else {
            warn!(
                topic = message.topic(),
                partition = message.partition(),
                "record of a partition not followed"
            );
            return;
        };
        let offset = message.offset();
        // Only for a tick's value or an event older than v3 (`kafka_headers::pairs`).
        let header_pairs = || kafka_headers::pairs(message);
        let check = match message.payload() {
            Some(value)
                if self
                    .ticks
                    .is_tick(value, || headers::marks_tick(header_pairs())) =>
            {
                match self.ticks.decode(value) {
                    Ok(tick) => {
                        self.tick_delay
                            .observe(seconds_since(self.drained_at, tick.at));
                        self.partitions.tick(slot, offset, tick.at)
                    }
                    Err(_) => self.partitions.unreadable(slot, offset),
                }
                None
            }
            Some(value) => match self.events.decode(value) {
                // db-writer dead-letters what breaks the contract: serving it in flight would
                // show an event that is never stored (or one whose payload breaks the page).
                Ok(event)
                    if contract::check_record(&event, message.key(), create_time(message))
                        .is_ok() =>
                {
                    self.event_delay
                        .observe(seconds_since(self.drained_at, event.ingested_at_micros));
                    let id_assigned =
                        event.id_assigned(|| headers::marks_gateway_id(header_pairs()));
                    self.partitions.event(slot, offset, event, id_assigned)
                }
                Ok(_) | Err(_) => {
                    self.partitions.unreadable(slot, offset);
                    None
                }
            },
            None => {
                self.partitions.unreadable(slot, offset);
                None
            }
        };
        if let Some(held) = check {
            if self.checks.send(held).await.is_err() {
                warn!("duplicate checker stopped");
            }
        }
    }

    fn apply_observed(
        &mut self,
        consumer: &StreamConsumer,
        observed: &BTreeMap<Slot, Observed>,
        sent_at: i64,
    ) {
        for (slot, o) in observed {
            self.partitions.committed(slot, o.committed);
            let next = self.progress.next(&slot.0, slot.1).unwrap_or(0);
            if o.end.is_some_and(|end| next >= end) {
                self.partitions.caught_up(slot, sent_at);
            }
        }
        metrics::IN_FLIGHT.set(self.in_flight.len() as i64);
        metrics::IN_FLIGHT_BYTES.set(self.in_flight.bytes() as i64);
        // Partitions added by an operator start where the writer is, like the others.
        if let Err(e) = self.assign_new(consumer, observed) {
            warn!(error = %e, "cannot assign new partitions");
        }
        let caught_up = self.start_ends.iter().all(|((topic, partition), end)| {
            self.progress
                .next(topic, *partition)
                .is_some_and(|next| next >= *end)
        });
        if caught_up {
            self.readiness.pass(READY_CAUGHT_UP);
        }
        self.partitions.advance();
        self.report(observed);
    }

    /// Hands what this refresh learned to the pipeline view and to the lag metrics.
    fn report(&self, observed: &BTreeMap<Slot, Observed>) {
        let partitions: Vec<PartitionView> = observed
            .iter()
            .map(|((topic, partition), o)| {
                let end = o.end.unwrap_or(o.committed);
                let position = self.progress.next(topic, *partition).unwrap_or(0);
                let labels = [
                    self.writer_group.as_str(),
                    topic.as_str(),
                    &partition.to_string(),
                ];
                metrics::GROUP_LAG
                    .with_label_values(&labels)
                    .set(end - o.committed);
                metrics::GROUP_OFFSET
                    .with_label_values(&labels)
                    .set(o.committed);
                metrics::PARTITION_OFFSET
                    .with_label_values(&[topic.as_str(), &partition.to_string()])
                    .set(end);
                PartitionView {
                    topic: topic.clone(),
                    partition: *partition,
                    end_offset: end,
                    writer_committed: o.committed,
                    writer_lag: end - o.committed,
                    query_position: position,
                    query_lag: end - position,
                }
            })
            .collect();
        self.pipeline.tail_reported(TailReport {
            partitions,
            oldest_held_micros: self.partitions.oldest_held(),
            consumed: self.partitions.consumed_counts(),
            dead_letters: self.dead_letters,
            members: self.group.members.clone(),
            group_described: self.group.described,
            observed: observed.clone(),
        });
    }
}

/// The producer's time of the record; `None` when the topic stamps records itself.
fn create_time(message: &BorrowedMessage<'_>) -> Option<i64> {
    match message.timestamp() {
        Timestamp::CreateTime(ms) => Some(ms),
        Timestamp::LogAppendTime(_) | Timestamp::NotAvailable => None,
    }
}
