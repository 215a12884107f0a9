//! Publishing validated events to Kafka and waiting for the brokers' acknowledgements.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use rdkafka::{
    config::ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
};
use schemas::{
    headers, partitioning::partition_for, Event, EventCodec, IdOrigin, Priority, Tick, TickCodec,
};
use tracing::warn;

use crate::{
    clock::IngestClock,
    settings::KafkaSettings,
    tick::{host_micros, queue_tick, Activity, ReleaseTicks, TickKind, TickLane},
    EVENTS_PER_TURN,
};

/// Where the brokers stored one event.
#[derive(Debug, Clone)]
pub struct Ack {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The local producer queue is full: the brokers are slower than the producers.
    #[error("producer queue is full")]
    QueueFull,
    /// The brokers did not acknowledge within the delivery timeout.
    #[error("brokers did not acknowledge in time: {0}")]
    NotAcknowledged(KafkaError),
    /// The brokers refused the record's time: this host's clock is further ahead of theirs
    /// than the topic's `message.timestamp.after.max.ms` allows.
    #[error("brokers refused the ingest time: the gateway's clock is ahead of theirs")]
    ClockAhead,
    #[error("event could not be encoded: {0}")]
    Encode(#[from] schemas::EncodeError),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}")]
pub struct ProducerError(#[from] KafkaError);

/// What trailing ticks need beside the critical lane.
struct Trailing {
    codec: TickCodec,
    gateway: String,
}

/// One urgency lane: its topic, a producer tuned for it, and when each partition last got a
/// record from this gateway (for ticks).
struct Lane {
    topic: String,
    producer: FutureProducer,
    activity: Arc<Activity>,
}

pub struct Publisher {
    normal: Lane,
    critical: Lane,
    codec: EventCodec,
    clock: Arc<IngestClock>,
    release_ticks: ReleaseTicks,
    /// Trailing ticks behind critical events (`kafka.trailing_ticks`), signed `gateway`.
    trailing: Option<Trailing>,
    /// Upper bound on waiting for acknowledgements: librdkafka fails a message after
    /// `message.timeout.ms`; this margin only guards against a lost callback.
    ack_deadline: Duration,
}

impl Publisher {
    /// `kafka`: the brokers and `kafka.security`, which every producer starts from; `codec`
    /// writes the schema version `kafka.schema_version` names; `gateway` names this gateway
    /// in its ticks.
    pub fn new(
        kafka: &ClientConfig,
        settings: &KafkaSettings,
        codec: EventCodec,
        clock: Arc<IngestClock>,
        gateway: &str,
    ) -> Result<Self, ProducerError> {
        Ok(Publisher {
            normal: Lane {
                topic: settings.topic.clone(),
                producer: producer(kafka, settings, settings.linger, settings.in_flight)?,
                activity: Arc::default(),
            },
            critical: Lane {
                topic: settings.critical_topic.clone(),
                producer: producer(
                    kafka,
                    settings,
                    settings.critical_linger,
                    settings.critical_in_flight,
                )?,
                activity: Arc::default(),
            },
            codec,
            clock,
            release_ticks: settings.release_ticks,
            trailing: settings.trailing_ticks.then(|| Trailing {
                codec: TickCodec::default(),
                gateway: gateway.to_owned(),
            }),
            ack_deadline: settings.delivery_timeout + Duration::from_secs(2),
        })
    }

    /// The lanes as the ticker sees them: the same producers, so a tick follows the events
    /// this gateway queued before it in each partition.
    pub fn tick_lanes(&self) -> Vec<TickLane> {
        [(&self.normal, false), (&self.critical, true)]
            .into_iter()
            .map(|(lane, urgent)| TickLane {
                urgent,
                topic: lane.topic.clone(),
                producer: lane.producer.clone(),
                activity: lane.activity.clone(),
            })
            .collect()
    }

    fn lane(&self, priority: Priority) -> &Lane {
        match priority {
            Priority::Normal => &self.normal,
            Priority::Critical => &self.critical,
        }
    }

    /// Enqueues every event, then waits until the brokers acknowledged all of them.
    /// On error some events may still be stored: producers retry with their own `event_id`
    /// to stay exactly-once.
    /// Stamps each event's ingest time just before it is queued, so times and queue order
    /// agree as closely as they can. Whether the gateway chose an event's id (readers then
    /// skip the duplicate check) travels in its value (`event.v3`'s `id_origin`).
    pub async fn publish(
        &self,
        events: &mut [Event],
        traceparent: Option<&str>,
    ) -> Result<Vec<Ack>, PublishError> {
        let first = self.clock.reserve(events.len());
        for (tick, event) in (first..).zip(events.iter_mut()) {
            event.ingested_at_micros = tick;
        }
        let events = &*events;
        let mut pending = Vec::with_capacity(events.len());
        let mut value = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if index > 0 && index % EVENTS_PER_TURN == 0 {
                tokio::task::yield_now().await;
            }
            value.clear();
            self.codec.encode_into(event, &mut value)?;
            let lane = self.lane(event.priority);
            // The record's time is the ingest time: brokers refuse one too far ahead of their
            // clocks (`message.timestamp.after.max.ms`), which bounds how far a gateway's
            // clock can pull the order key ahead.
            let mut record = FutureRecord::to(lane.topic.as_str())
                .key(event.client_id.as_str())
                .payload(value.as_slice())
                .timestamp(event.ingested_at_micros / 1_000);
            // Headers only when there is one to carry: every consumer and every copy of a
            // record (db-writer's dead-letter raw) pays for a header list per record. A value
            // older than v3 has no `id_origin`, so a gateway id is marked in a header.
            let marked =
                self.codec.writer().version < 3 && event.id_origin == Some(IdOrigin::Gateway);
            if traceparent.is_some() || marked {
                let mut record_headers = OwnedHeaders::new_with_capacity(2);
                if let Some(traceparent) = traceparent {
                    record_headers = record_headers.insert(Header {
                        key: headers::TRACEPARENT,
                        value: Some(traceparent),
                    });
                }
                if marked {
                    record_headers = record_headers.insert(Header {
                        key: headers::ID_ORIGIN,
                        value: Some(headers::ID_ORIGIN_GATEWAY),
                    });
                }
                record = record.headers(record_headers);
            }
            match lane.producer.send_result(record) {
                Ok(delivery) => {
                    if self.release_ticks == ReleaseTicks::Client {
                        lane.activity
                            .queued(&event.client_id, event.ingested_at_micros);
                    }
                    pending.push((lane, delivery))
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(PublishError::QueueFull)
                }
                Err((e, _)) => return Err(PublishError::NotAcknowledged(e)),
            }
        }
        if let Some(trailing) = &self.trailing {
            self.trail_critical(trailing, events);
        }
        let (lanes, deliveries): (Vec<&Lane>, Vec<_>) = pending.into_iter().unzip();
        let results = tokio::time::timeout(self.ack_deadline, join_all(deliveries))
            .await
            .map_err(|_| PublishError::NotAcknowledged(KafkaError::Canceled))?;
        let acked_at = host_micros();
        lanes
            .into_iter()
            .zip(events)
            .zip(results)
            .map(|((lane, event), result)| match result {
                Ok(Ok(delivery)) => {
                    let stamp = event.ingested_at_micros;
                    if event.priority == Priority::Critical
                        && self.release_ticks == ReleaseTicks::Client
                    {
                        // Readers release it once both partitions its client maps to have
                        // a later record: this one, and the normal lane's.
                        self.critical
                            .activity
                            .want_release(delivery.partition, stamp);
                        self.normal
                            .activity
                            .want_release_of(&event.client_id, stamp);
                    }
                    lane.activity.produced(delivery.partition, stamp, acked_at);
                    Ok(Ack {
                        topic: lane.topic.clone(),
                        partition: delivery.partition,
                        offset: delivery.offset,
                    })
                }
                Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTimestamp), _))) => {
                    Err(PublishError::ClockAhead)
                }
                Ok(Err((e, _))) => Err(PublishError::NotAcknowledged(e)),
                Err(_canceled) => Err(PublishError::NotAcknowledged(KafkaError::Canceled)),
            })
            .collect()
    }

    /// Queues a tick behind the critical `events` just queued, into each partition they went
    /// to. The same producer keeps it behind them, and it joins their produce request whenever
    /// that is built after both were queued: the usual case, since the request waits for the
    /// one in flight or for the broker thread to wake. Readers then see the partition's clock
    /// pass the events in the same fetch, and the partition needs no release tick of its own
    /// after the acknowledgement: a produce request and a fetch answer per consumer group
    /// fewer per critical event at moderate rates. Before the first metadata the partitions
    /// are unknown and release ticks do it all.
    fn trail_critical(&self, trailing: &Trailing, events: &[Event]) {
        let count = self.critical.activity.partitions();
        let mut partitions: Vec<usize> = Vec::new();
        for event in events.iter().filter(|e| e.priority == Priority::Critical) {
            match partition_for(event.client_id.as_bytes(), count) {
                Some(p) if !partitions.contains(&p) => partitions.push(p),
                _ => {}
            }
        }
        for partition in partitions {
            let Ok(partition_id) = i32::try_from(partition) else {
                continue;
            };
            // Stamped after every event of the request, like any tick.
            let tick = Tick {
                at: self.clock.reserve(1),
                gateway: trailing.gateway.clone(),
            };
            // One not queued (the queue full) is left to the release tick after the
            // acknowledgement, which it would have spared; not logged: under overload that
            // would be a line per request.
            if queue_tick(
                &trailing.codec,
                &self.critical.producer,
                &self.critical.topic,
                partition_id,
                &tick,
                TickKind::Trailing,
            )
            .is_ok()
            {
                self.critical.activity.queued_in(partition, tick.at);
            }
        }
    }

    /// Waits for every queued message to be acknowledged, up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        for lane in [&self.normal, &self.critical] {
            if let Err(e) = lane.producer.flush(timeout) {
                warn!(topic = %lane.topic, error = %e, "producer flush at shutdown did not complete");
            }
        }
    }
}

fn request_timeout(delivery_timeout: Duration) -> Duration {
    (delivery_timeout / 2).max(Duration::from_millis(500))
}

fn producer(
    kafka: &ClientConfig,
    settings: &KafkaSettings,
    linger: Duration,
    in_flight: u32,
) -> Result<FutureProducer, KafkaError> {
    kafka
        .clone()
        // Exactly-once per partition from the producer: retries never duplicate or reorder.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Same placement as Kafka's Java clients for the same key.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", linger.as_millis().to_string())
        .set(
            "max.in.flight.requests.per.connection",
            in_flight.to_string(),
        )
        .set(
            "queue.buffering.max.messages",
            settings.queue_max_messages.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            settings.queue_max_kbytes.to_string(),
        )
        .set(
            "message.timeout.ms",
            settings.delivery_timeout.as_millis().to_string(),
        )
        // librdkafka's default (30 s) outlasts the delivery deadline: a request stuck on a
        // hung broker (paused, partitioned away) would use up the whole deadline without one
        // retry on the partition's new leader. Half the deadline leaves room for one.
        .set(
            "request.timeout.ms",
            request_timeout(settings.delivery_timeout)
                .as_millis()
                .to_string(),
        )
        .set("compression.type", &settings.compression)
        .set(
            "topic.metadata.refresh.interval.ms",
            settings.metadata_refresh.as_millis().to_string(),
        )
        .set("batch.num.messages", "10000")
        .create()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(in_flight: u32, critical_in_flight: u32) -> Result<Publisher, String> {
        let settings = KafkaSettings {
            in_flight,
            critical_in_flight,
            ..KafkaSettings::default()
        };
        // Creating producers does not connect: no broker is needed to see the settings taken.
        let kafka = settings
            .security
            .client_config(&settings.brokers)
            .map_err(|e| e.to_string())?;
        let codec = EventCodec::new();
        Publisher::new(
            &kafka,
            &settings,
            codec,
            Arc::new(IngestClock::default()),
            "test",
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn each_lanes_requests_in_flight_reach_its_producer() {
        assert!(publisher(1, 1).is_ok());
        assert!(publisher(5, 5).is_ok());
        // Past what the idempotent producer allows, the start fails naming the property,
        // whichever lane was given it.
        for refused in [0, 6] {
            for (normal, critical) in [(refused, 1), (5, refused)] {
                let error = publisher(normal, critical).err().unwrap_or_default();
                assert!(
                    error.contains("max.in.flight"),
                    "{normal} / {critical} in flight: {error:?}"
                );
            }
        }
    }
}
