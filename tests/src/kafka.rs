use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    error::KafkaResult,
    message::{Header, Headers, Message, OwnedHeaders, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
    Offset, TopicPartitionList,
};

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a harness read keeps asking a cluster that answers with errors.
const SETTLED: Duration = Duration::from_secs(60);

/// `ask` until it succeeds; panics naming `what` and the last error once `SETTLED` passed.
fn retried<T>(what: &str, mut ask: impl FnMut() -> KafkaResult<T>) -> T {
    let deadline = Instant::now() + SETTLED;
    loop {
        match ask() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what}: {e}; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{what}: {e} for {SETTLED:?}"),
        }
    }
}

pub struct KafkaAdmin {
    /// Brokers and security every client of the harness starts from.
    base: ClientConfig,
    admin: AdminClient<DefaultClientContext>,
}

impl KafkaAdmin {
    pub fn new(brokers: &str) -> Self {
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", brokers);
        KafkaAdmin::with_config(base)
    }

    /// Clients built on `base` (the brokers, TLS and SASL).
    pub fn with_config(base: ClientConfig) -> Self {
        let admin = base.create().expect("admin client");
        KafkaAdmin { base, admin }
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, &[]).await;
    }

    /// Creates a topic with topic-level configuration, e.g.
    /// `("message.timestamp.after.max.ms", "2000")`.
    pub async fn create_topic_with(&self, name: &str, partitions: i32, config: &[(&str, &str)]) {
        // The brokers' default replication (KIP-464): 1 on the single-node stack, 3 on the
        // cluster, which also sets min.insync.replicas for its topics.
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        for (key, value) in config {
            topic = topic.set(key, value);
        }
        let results = self
            .admin
            .create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
            )
            .await
            .expect("create topic request");
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
        }
    }

    pub async fn add_partitions(&self, name: &str, total: usize) {
        let results = self
            .admin
            .create_partitions(
                [&NewPartitions::new(name, total)],
                &AdminOptions::new().operation_timeout(Some(TIMEOUT)),
            )
            .await
            .expect("create partitions request");
        for result in results {
            result.unwrap_or_else(|(t, e)| panic!("add partitions to {t}: {e}"));
        }
    }

    fn consumer(&self, group: &str) -> BaseConsumer {
        self.base
            .clone()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    }

    /// High watermark of every partition of `topic`. A cluster that is moving leaders (a
    /// broker just resumed or restarted) answers with retriable errors for a while, so this
    /// asks again until `SETTLED` has passed.
    pub fn end_offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        let consumer = self.consumer("end-offsets-probe");
        retried(&format!("end offsets of {topic}"), || {
            let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
            let mut ends = BTreeMap::new();
            for t in metadata.topics() {
                for p in t.partitions() {
                    let (_, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
                    ends.insert(p.id(), high);
                }
            }
            Ok(ends)
        })
    }

    /// Offsets `group` committed for every partition of `topic` (0 where none).
    pub fn committed_offsets(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        let consumer = self.consumer(group);
        let mut tpl = TopicPartitionList::new();
        for partition in self.end_offsets(topic).keys() {
            tpl.add_partition(topic, *partition);
        }
        let committed = retried(&format!("offsets {group} committed on {topic}"), || {
            consumer.committed_offsets(tpl.clone(), TIMEOUT)
        });
        committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                };
                (e.partition(), offset)
            })
            .collect()
    }
}

impl KafkaAdmin {
    /// Every message of `topic` from the beginning up to its end offsets as they are now,
    /// so a message written twice is seen twice. Panics if they cannot be read within
    /// `deadline` (polling, not sleeping).
    pub fn read_all(&self, topic: &str, deadline: Duration) -> Vec<OwnedMessage> {
        let ends = self.end_offsets(topic);
        let consumer = self.consumer(&format!("reader-{}", uuid::Uuid::new_v4().simple()));
        let mut tpl = TopicPartitionList::new();
        for partition in ends.keys() {
            tpl.add_partition_offset(topic, *partition, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let until = std::time::Instant::now() + deadline;
        let mut next: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
        let mut messages = Vec::new();
        while ends.iter().any(|(p, end)| next[p] < *end) {
            assert!(
                std::time::Instant::now() < until,
                "{topic}: read {} messages, not up to the end offsets {ends:?}",
                messages.len()
            );
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                let partition = message.partition();
                if message.offset() < ends[&partition] {
                    next.insert(partition, message.offset() + 1);
                    messages.push(message.detach());
                }
            }
        }
        messages
    }

    /// Messages of `topic` that are events (not gateway ticks).
    pub fn read_events(&self, topic: &str, deadline: Duration) -> Vec<OwnedMessage> {
        self.read_all(topic, deadline)
            .into_iter()
            .filter(|m| header(m, schemas::headers::KIND).is_none())
            .collect()
    }

    /// Persisted notices of `topic`, without the writers' reports that share it (marked by
    /// the same `eventpipe-kind` header as ticks are on the event topics).
    pub fn read_notices(&self, topic: &str, deadline: Duration) -> Vec<OwnedMessage> {
        self.read_events(topic, deadline)
    }

    /// Produces raw bytes, bypassing the gateway: how a foreign or broken producer looks.
    pub async fn produce_raw(&self, topic: &str, key: &str, value: &[u8]) -> (i32, i64) {
        self.produce_raw_with(topic, key, value, &[]).await
    }

    /// The same with headers; returns the record's partition and offset.
    pub async fn produce_raw_with(
        &self,
        topic: &str,
        key: &str,
        value: &[u8],
        headers: &[(&str, &str)],
    ) -> (i32, i64) {
        let producer: FutureProducer = self.base.create().expect("producer");
        let mut owned = OwnedHeaders::new();
        for (key, value) in headers {
            owned = owned.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let delivery = producer
            .send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(value)
                    .headers(owned),
                TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e)
            .expect("raw message acknowledged");
        (delivery.partition, delivery.offset)
    }
}

/// The value of a header as text.
pub fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
