//! Follows the unpersisted tail of every partition: starts each partition at the writer's
//! committed offset (with the log clock the writer committed there), orders and holds what it
//! consumes, drops events once the writer has committed past them, and moves the release
//! frontier.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use chassis::health::Readiness;
use event_store::{KafkaPosition, StoredEvent};
use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers, Message},
    Offset, TopicPartitionList,
};
use schemas::{headers, order::parse_commit_metadata, EventCodec, LogClock, TickCodec};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    in_flight::{Held, InFlight},
    metrics,
    progress::Progress,
    release::Release,
    settings::{KafkaSettings, OrderSettings},
    verify::Checked,
};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);
/// Readiness check: consumed every partition up to the end offsets seen at start.
pub const READY_CAUGHT_UP: &str = "caught-up";

type Slot = (String, i32);

/// The writer's commit of a partition and the end of the partition, read together.
#[derive(Debug, Clone, Copy)]
struct Observed {
    committed: i64,
    clock: Option<i64>,
    end: Option<i64>,
}

struct Partition {
    clock: LogClock,
    /// The writer's committed offset: everything below is in PostgreSQL.
    committed: i64,
    /// Wall time (micros) when this replica last knew it had consumed the partition to its
    /// end.
    caught_up_at: Option<i64>,
    /// Held events in offset order, for eviction.
    held: VecDeque<Held>,
    /// Committed events still waiting for their duplicate check.
    deferred: Vec<Held>,
}

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
    topics: Vec<String>,
    refresh_interval: Duration,
    quiet_bound_micros: i64,
    in_flight: Arc<InFlight>,
    progress: Arc<Progress>,
    release: Release,
    checks: mpsc::Sender<Held>,
    checked: mpsc::UnboundedReceiver<Checked>,
    partitions: BTreeMap<Slot, Partition>,
    events: EventCodec,
    ticks: TickCodec,
    readiness: Readiness,
    /// End offsets seen at start: ready once consumption has passed them all.
    start_ends: HashMap<Slot, i64>,
}

/// What the tail is given by the service.
pub struct Wiring {
    pub in_flight: Arc<InFlight>,
    pub progress: Arc<Progress>,
    pub release: Release,
    pub checks: mpsc::Sender<Held>,
    pub checked: mpsc::UnboundedReceiver<Checked>,
    pub readiness: Readiness,
}

impl Tail {
    /// Assigns every partition of the topics, each at the writer's committed offset.
    pub async fn start(
        kafka: &KafkaSettings,
        order: &OrderSettings,
        wiring: Wiring,
    ) -> Result<Tail, KafkaError> {
        let group = format!("{}-{}", kafka.group_prefix, uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", "65536")
            .create()?;
        let observer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", &kafka.writer_group)
            .set("enable.auto.commit", "false")
            .create()?;
        let Wiring {
            in_flight,
            progress,
            release,
            checks,
            checked,
            readiness,
        } = wiring;
        let mut core = Core {
            observer: Arc::new(observer),
            topics: kafka.topics.clone(),
            refresh_interval: kafka.refresh_interval,
            quiet_bound_micros: i64::try_from(order.quiet_bound.as_micros()).unwrap_or(i64::MAX),
            in_flight,
            progress,
            release,
            checks,
            checked,
            partitions: BTreeMap::new(),
            events: EventCodec::new(),
            ticks: TickCodec::default(),
            readiness,
            start_ends: HashMap::new(),
        };
        let observed = core.observe().await?;
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

    pub async fn run(self, shutdown: CancellationToken) {
        let Tail { consumer, mut core } = self;
        let mut refresh = tokio::time::interval(core.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let full = core.in_flight.is_full();
            metrics::TAIL_PAUSED.set(i64::from(full));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(checked) = core.checked.recv() => core.apply_check(checked),
                _ = refresh.tick() => {
                    let sent_at = now_micros();
                    match core.observe().await {
                        Ok(observed) => core.apply_observed(&consumer, &observed, sent_at),
                        Err(e) => warn!(error = %e, "cannot read the writer's progress"),
                    }
                }
                // At the in-flight bound, stop consuming until the writer's commits make room:
                // nothing consumed is ever dropped, answers only lag.
                message = consumer.recv(), if !full => match message {
                    Ok(message) => core.consume(&message).await,
                    Err(e) => warn!(error = %e, "consumer error"),
                },
            }
        }
        info!("tail stopped");
    }
}

impl Core {
    /// The writer's commit and the end offset of every partition of the topics, read off the
    /// async runtime.
    async fn observe(&self) -> Result<BTreeMap<Slot, Observed>, KafkaError> {
        let observer = self.observer.clone();
        let topics = self.topics.clone();
        tokio::task::spawn_blocking(move || observe(&observer, &topics))
            .await
            .map_err(|_| KafkaError::Canceled)?
    }

    fn assign_new(
        &mut self,
        consumer: &StreamConsumer,
        observed: &BTreeMap<Slot, Observed>,
    ) -> Result<(), KafkaError> {
        let new: Vec<(&Slot, &Observed)> = observed
            .iter()
            .filter(|(slot, _)| !self.partitions.contains_key(*slot))
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
        for ((topic, partition), o) in new {
            let (next, clock) = if starting {
                (o.committed, o.clock)
            } else {
                (0, None)
            };
            // Everything below the writer's commit is in PostgreSQL: consumed, in effect.
            self.progress.advance(topic, *partition, next, clock);
            if let Some(clock) = clock {
                self.release.started_at(clock);
            }
            self.partitions.insert(
                (topic.clone(), *partition),
                Partition {
                    clock: LogClock::resume(clock),
                    committed: o.committed,
                    caught_up_at: None,
                    held: VecDeque::new(),
                    deferred: Vec::new(),
                },
            );
        }
        info!(added = tpl.count(), "partitions assigned");
        Ok(())
    }

    async fn consume(&mut self, message: &BorrowedMessage<'_>) {
        let slot = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        let Some(partition) = self.partitions.get_mut(&slot) else {
            return;
        };
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
        };
        let is_tick = header(headers::KIND) == Some(headers::KIND_TICK.as_bytes());
        let id_assigned = header(headers::ID_ORIGIN) == Some(headers::ID_ORIGIN_GATEWAY.as_bytes());
        let mut check = None;
        match message.payload() {
            Some(value) if is_tick => match self.ticks.decode(value) {
                Ok(tick) => {
                    partition.clock.observe(tick.at);
                }
                Err(_) => metrics::UNDECODABLE.inc(),
            },
            Some(value) => match self.events.decode(value) {
                Ok(event) => {
                    let ordered_at_micros = partition.clock.observe(event.ingested_at_micros);
                    let held = Arc::new(StoredEvent {
                        event,
                        position: KafkaPosition {
                            topic: slot.0.clone(),
                            partition: slot.1,
                            offset,
                        },
                        ordered_at_micros,
                    });
                    let (needs_check, change) = self.in_flight.insert(held.clone(), id_assigned);
                    partition.held.push_back(held.clone());
                    self.release.apply(change);
                    if needs_check {
                        self.release.check_started(&held.event.client_id);
                        check = Some(held);
                    }
                }
                // The writer dead-letters these; nothing to serve, the clock stays.
                Err(_) => metrics::UNDECODABLE.inc(),
            },
            None => metrics::UNDECODABLE.inc(),
        }
        let clock = partition.clock.latest();
        // After the insert: a reader woken by this finds the event.
        self.progress.advance(&slot.0, slot.1, offset + 1, clock);
        if let Some(held) = check {
            metrics::UNVERIFIED.inc();
            if self.checks.send(held).await.is_err() {
                warn!("duplicate checker stopped");
            }
        }
        self.advance_frontier();
    }

    fn apply_check(&mut self, checked: Checked) {
        metrics::UNVERIFIED.dec();
        let Checked { held, found } = checked;
        let change = self.in_flight.verified(&held, found.as_ref());
        self.release.apply(change);
        self.release.check_done(&held.event.client_id);
        let slot = (held.position.topic.clone(), held.position.partition);
        if let Some(partition) = self.partitions.get_mut(&slot) {
            if held.position.offset < partition.committed {
                if let Some(at) = partition
                    .deferred
                    .iter()
                    .position(|d| Arc::ptr_eq(d, &held))
                {
                    partition.deferred.swap_remove(at);
                    self.in_flight.evict(&held);
                }
            }
        }
        self.progress.notify();
    }

    fn apply_observed(
        &mut self,
        consumer: &StreamConsumer,
        observed: &BTreeMap<Slot, Observed>,
        sent_at: i64,
    ) {
        for (slot, o) in observed {
            let Some(partition) = self.partitions.get_mut(slot) else {
                continue;
            };
            partition.committed = partition.committed.max(o.committed);
            while partition
                .held
                .front()
                .is_some_and(|h| h.position.offset < partition.committed)
            {
                let Some(held) = partition.held.pop_front() else {
                    break;
                };
                // The duplicate check decides whether the stored row is this copy or an
                // earlier one: until it answers, the copy stays.
                if self.in_flight.is_unverified(&held) {
                    partition.deferred.push(held);
                } else {
                    self.in_flight.evict(&held);
                }
            }
            let next = self.progress.next(&slot.0, slot.1).unwrap_or(0);
            if o.end.is_some_and(|end| next >= end) {
                partition.caught_up_at = Some(sent_at);
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
        self.advance_frontier();
    }

    /// The smallest clock over all partitions, a partition consumed to its end counting as
    /// `now - quiet_bound` at least.
    fn advance_frontier(&mut self) {
        let mut frontier = i64::MAX;
        for partition in self.partitions.values() {
            let idle = partition
                .caught_up_at
                .map(|at| at.saturating_sub(self.quiet_bound_micros));
            match partition.clock.latest().max(idle) {
                Some(at) => frontier = frontier.min(at),
                None => return,
            }
        }
        if frontier == i64::MAX {
            return;
        }
        if self.release.advance(frontier) {
            metrics::FRONTIER_LAG.set((now_micros() - frontier) as f64 / 1e6);
            self.progress.notify();
        }
    }
}

fn now_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)
        .unwrap_or(i64::MAX)
}

/// Reads the writer's commits (with their clocks) and the end offsets of every partition of
/// `topics`. Partitions the writer never committed map to offset 0 without a clock.
fn observe(
    observer: &BaseConsumer,
    topics: &[String],
) -> Result<BTreeMap<Slot, Observed>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = observer.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = observer.committed_offsets(tpl.clone(), KAFKA_TIMEOUT)?;
    let mut latest = TopicPartitionList::new();
    for e in tpl.elements() {
        latest.add_partition_offset(e.topic(), e.partition(), Offset::End)?;
    }
    // ListOffsets for "latest" of every partition in one request per broker.
    let ends: HashMap<Slot, i64> = observer
        .offsets_for_times(latest, KAFKA_TIMEOUT)?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(end) => Some(((e.topic().to_owned(), e.partition()), end)),
            _ => None,
        })
        .collect();
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let slot = (e.topic().to_owned(), e.partition());
            let (committed, clock) = match e.offset() {
                Offset::Offset(o) => (o, parse_commit_metadata(e.metadata())),
                _ => (0, None),
            };
            let end = ends.get(&slot).copied();
            (
                slot,
                Observed {
                    committed,
                    clock,
                    end,
                },
            )
        })
        .collect())
}
