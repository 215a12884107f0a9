//! Follows the unpersisted tail of every partition: starts each partition at the writer's
//! committed offset, adds consumed events to the in-flight set, and drops them once the
//! writer has committed past them.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::KafkaError,
    message::Message,
    Offset, TopicPartitionList,
};
use schemas::EventCodec;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{in_flight::InFlight, metrics, progress::Progress, settings::KafkaSettings};
use event_store::{KafkaPosition, StoredEvent};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

type Partitions = BTreeMap<(String, i32), i64>;

pub struct Tail {
    consumer: StreamConsumer,
    /// A client in the writer's group that never joins it: it only reads its commits.
    writer_offsets: Arc<BaseConsumer>,
    topics: Vec<String>,
    refresh_interval: Duration,
    in_flight: Arc<InFlight>,
    progress: Arc<Progress>,
    live: broadcast::Sender<Arc<StoredEvent>>,
    codec: EventCodec,
    assigned: BTreeSet<(String, i32)>,
}

impl Tail {
    /// Assigns every partition of the topics, each at the writer's committed offset.
    pub async fn start(
        settings: &KafkaSettings,
        in_flight: Arc<InFlight>,
        progress: Arc<Progress>,
        live: broadcast::Sender<Arc<StoredEvent>>,
    ) -> Result<Tail, KafkaError> {
        let group = format!(
            "{}-{}",
            settings.group_prefix,
            uuid::Uuid::new_v4().simple()
        );
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", "65536")
            .create()?;
        let writer_offsets: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.writer_group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tail = Tail {
            consumer,
            writer_offsets: Arc::new(writer_offsets),
            topics: settings.topics.clone(),
            refresh_interval: settings.refresh_interval,
            in_flight,
            progress,
            live,
            codec: EventCodec::new(),
            assigned: BTreeSet::new(),
        };
        let committed = tail.read_writer_progress().await?;
        tail.assign_new(&committed)?;
        info!(
            group,
            partitions = tail.assigned.len(),
            "query-service tailing from the writer's commits"
        );
        Ok(tail)
    }

    /// The writer's committed offset of every partition of the topics (partitions it never
    /// committed map to 0), read off the async runtime.
    async fn read_writer_progress(&self) -> Result<Partitions, KafkaError> {
        let reader = self.writer_offsets.clone();
        let topics = self.topics.clone();
        tokio::task::spawn_blocking(move || writer_progress(&reader, &topics))
            .await
            .map_err(|_| KafkaError::Canceled)?
    }

    fn assign_new(&mut self, committed: &Partitions) -> Result<(), KafkaError> {
        let new: Vec<(&(String, i32), &i64)> = committed
            .iter()
            .filter(|(slot, _)| !self.assigned.contains(*slot))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &new {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(**offset))?;
        }
        self.consumer.incremental_assign(&tpl)?;
        for ((topic, partition), offset) in new {
            // Everything below the writer's commit is in PostgreSQL: consumed, in effect.
            self.progress.advance(topic, *partition, *offset);
            self.assigned.insert((topic.clone(), *partition));
        }
        info!(added = tpl.count(), "partitions assigned");
        Ok(())
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut refresh = tokio::time::interval(self.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = refresh.tick() => match self.read_writer_progress().await {
                    Ok(committed) => self.apply_writer_progress(&committed),
                    Err(e) => warn!(error = %e, "cannot read the writer's progress"),
                },
                message = self.consumer.recv() => match message {
                    Ok(message) => {
                        let position = KafkaPosition {
                            topic: message.topic().to_owned(),
                            partition: message.partition(),
                            offset: message.offset(),
                        };
                        let (partition, next) = (position.partition, position.offset + 1);
                        match message.payload().map(|v| self.codec.decode(v)) {
                            Some(Ok(event)) => {
                                let event = Arc::new(StoredEvent { event, position });
                                if !self.in_flight.insert(event.clone()) {
                                    metrics::IN_FLIGHT_OVERFLOW.inc();
                                }
                                // Live streams; without subscribers this costs nothing.
                                if self.live.receiver_count() > 0 {
                                    let _ = self.live.send(event);
                                }
                            }
                            // The writer dead-letters these; nothing to serve.
                            _ => metrics::UNDECODABLE.inc(),
                        }
                        // After the insert: a reader woken by this finds the event.
                        self.progress.advance(message.topic(), partition, next);
                    }
                    Err(e) => warn!(error = %e, "consumer error"),
                },
            }
        }
        info!("tail stopped");
    }

    fn apply_writer_progress(&mut self, committed: &Partitions) {
        for ((topic, partition), offset) in committed {
            self.in_flight.evict_below(topic, *partition, *offset);
        }
        metrics::IN_FLIGHT.set(self.in_flight.len() as i64);
        // Partitions added by an operator start where the writer is, like the others.
        if let Err(e) = self.assign_new(committed) {
            warn!(error = %e, "cannot assign new partitions");
        }
    }
}

fn writer_progress(reader: &BaseConsumer, topics: &[String]) -> Result<Partitions, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = reader.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    let committed = reader.committed_offsets(tpl, KAFKA_TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect())
}
