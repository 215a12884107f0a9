//! `dlq list`: the dead-letter topic read from its beginning up to where it ended when the
//! command started, without joining or committing for any consumer group.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    message::{Headers, OwnedMessage},
    Message, Offset, TopicPartitionList,
};
use serde::Serialize;

use crate::{error::AdminError, services::Configs};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
/// Reading the whole topic must not hang on a partition that stops answering.
const READ_DEADLINE: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub select: Selection,
    /// Print one JSON object per dead letter instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which dead letters a command works on.
#[derive(clap::Args, Clone)]
pub struct Selection {
    /// Bootstrap servers; default: db-writer's `kafka.brokers`.
    #[arg(long)]
    pub brokers: Option<String>,
    /// The dead-letter topic; default: db-writer's `kafka.dead_letter_topic`.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only dead letters whose class, SQLSTATE or message contains this text.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only these dead letters, as `partition:offset` of the dead-letter topic. Repeatable.
    #[arg(long = "offset", value_name = "PARTITION:OFFSET")]
    pub offsets: Vec<String>,
    /// At most this many (the oldest first).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// One dead letter: where it sits, where it came from, why, and the original record.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub error_class: Option<String>,
    pub sqlstate: Option<String>,
    pub error_message: Option<String>,
    /// Size of the original value when the dead letter could not carry it (too large for the
    /// dead-letter topic): the record is only at its source position.
    pub value_omitted: Option<String>,
    pub event_id: Option<String>,
    pub client_id: Option<String>,
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    #[serde(skip)]
    pub value: Option<Vec<u8>>,
    /// The original record's own headers (`dlq.*` left out).
    #[serde(skip)]
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    fn from_message(message: &OwnedMessage, codec: &schemas::EventCodec) -> DeadLetter {
        let mut dlq = BTreeMap::new();
        let mut headers = Vec::new();
        if let Some(all) = message.headers() {
            for header in all.iter() {
                let value = header.value.map(<[u8]>::to_vec);
                if header.key.starts_with("dlq.") {
                    dlq.insert(
                        header.key.to_owned(),
                        value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    );
                } else {
                    headers.push((header.key.to_owned(), value));
                }
            }
        }
        let text = |key: &str| dlq.get(key).cloned().flatten();
        let event = message.payload().and_then(|bytes| codec.decode(bytes).ok());
        DeadLetter {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            source_topic: text("dlq.source.topic"),
            source_partition: text("dlq.source.partition").and_then(|p| p.parse().ok()),
            source_offset: text("dlq.source.offset").and_then(|o| o.parse().ok()),
            error_class: text("dlq.error.class"),
            sqlstate: text("dlq.error.sqlstate"),
            error_message: text("dlq.error.message"),
            value_omitted: text("dlq.value.omitted"),
            event_id: event.as_ref().map(|e| e.event_id.to_string()),
            client_id: event.map(|e| e.client_id),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    fn matches(&self, select: &Selection, offsets: &[(i32, i64)]) -> bool {
        let reason_ok = select.reason.as_deref().is_none_or(|wanted| {
            [&self.error_class, &self.sqlstate, &self.error_message]
                .iter()
                .any(|field| field.as_deref().is_some_and(|f| f.contains(wanted)))
        });
        let offset_ok = offsets.is_empty() || offsets.contains(&(self.partition, self.offset));
        reason_ok && offset_ok
    }
}

/// `partition:offset` → the pair.
pub fn parse_offsets(offsets: &[String]) -> Result<Vec<(i32, i64)>, AdminError> {
    offsets
        .iter()
        .map(|o| {
            o.split_once(':')
                .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
                .ok_or_else(|| {
                    AdminError::Usage(format!("--offset {o:?}: expected PARTITION:OFFSET"))
                })
        })
        .collect()
}

/// Brokers and topic from the flags, else from db-writer's configuration; TLS and SASL
/// always from db-writer's `kafka.security` (the tool reaches the brokers as the writer does).
pub fn source(configs: &Configs, select: &Selection) -> Result<(ClientConfig, String), AdminError> {
    let writer = configs.writer()?;
    let brokers = select.brokers.clone().unwrap_or(writer.kafka.brokers);
    let topic = select
        .topic
        .clone()
        .unwrap_or(writer.kafka.dead_letter_topic);
    Ok((writer.kafka.security.client_config(&brokers)?, topic))
}

/// The selected dead letters, oldest first within each partition.
pub fn read(
    kafka: &ClientConfig,
    topic: &str,
    select: &Selection,
) -> Result<Vec<DeadLetter>, AdminError> {
    let offsets = parse_offsets(&select.offsets)?;
    let consumer: BaseConsumer = kafka
        .clone()
        // Never used to commit: the tool only assigns partitions to itself.
        .set(
            "group.id",
            format!("eventpipe-admin-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(AdminError::Usage(format!("topic {topic} not found")));
    }
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, KAFKA_TIMEOUT)?;
        if high > low {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Offset(low))?;
        }
    }
    let codec = schemas::EventCodec::new();
    let mut found = Vec::new();
    if ends.is_empty() {
        return Ok(found);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + READ_DEADLINE;
    while !ends.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AdminError::Usage(format!(
                "{topic}: partitions {:?} did not deliver up to their end in {READ_DEADLINE:?}",
                ends.keys().collect::<Vec<_>>()
            )));
        }
        let Some(message) = consumer.poll(left.min(Duration::from_secs(1))) else {
            continue;
        };
        let message = message?.detach();
        let partition = message.partition();
        if let Some(end) = ends.get(&partition).copied() {
            if message.offset() + 1 >= end {
                ends.remove(&partition);
            }
            if message.offset() < end {
                let letter = DeadLetter::from_message(&message, &codec);
                if letter.matches(select, &offsets) {
                    found.push(letter);
                }
            }
        }
    }
    found.sort_by_key(|l| (l.timestamp_ms, l.partition, l.offset));
    if let Some(limit) = select.limit {
        found.truncate(limit);
    }
    Ok(found)
}

pub async fn run(configs: &Configs, args: ListArgs) -> Result<(), AdminError> {
    let (kafka, topic) = source(configs, &args.select)?;
    let select = args.select.clone();
    let letters = tokio::task::spawn_blocking(move || read(&kafka, &topic, &select))
        .await
        .map_err(|e| AdminError::Usage(e.to_string()))??;
    if args.json {
        for letter in &letters {
            println!("{}", serde_json::to_string(letter).unwrap_or_default());
        }
        return Ok(());
    }
    println!(
        "{:<14} {:<28} {:<22} {:<8} {:<36} message",
        "dlq position", "source", "class", "sqlstate", "event_id"
    );
    for l in &letters {
        let source = match (&l.source_topic, l.source_partition, l.source_offset) {
            (Some(t), Some(p), Some(o)) => format!("{t}/{p}@{o}"),
            _ => "-".into(),
        };
        println!(
            "{:<14} {:<28} {:<22} {:<8} {:<36} {}",
            format!("{}:{}", l.partition, l.offset),
            source,
            l.error_class.as_deref().unwrap_or("-"),
            l.sqlstate.as_deref().unwrap_or("-"),
            l.event_id.as_deref().unwrap_or("-"),
            l.error_message.as_deref().unwrap_or("-"),
        );
    }
    println!("{} dead letter(s)", letters.len());
    Ok(())
}
