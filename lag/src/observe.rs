//! What Kafka says: the writer's commits
//! (with the log clocks in their metadata), every partition's end offset, the dead-letter
//! topic's size, and which writer owns which partitions. Blocking calls: run off the async
//! runtime.

use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    Offset, TopicPartitionList,
};
use schemas::order::parse_commit_metadata;
use serde::Serialize;

pub type Slot = (String, i32);

const KAFKA_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's commit of a partition and the end of the partition, read together.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    pub committed: i64,
    pub clock: Option<i64>,
    pub end: Option<i64>,
}

/// Reads the writer's commits (with their clocks) and the end offsets of every partition of
/// `topics`. Partitions the writer never committed map to offset 0 without a clock.
pub fn partitions(
    observer: &BaseConsumer,
    topics: &[String],
) -> Result<BTreeMap<Slot, Observed>, KafkaError> {
    partitions_of(observer, &layout(observer, topics)?)
}

/// [`partitions`] for a list of partitions read before ([`layout`]): a caller that reads often
/// saves the metadata request per topic, since partitions change only when added.
pub fn partitions_of(
    observer: &BaseConsumer,
    slots: &[Slot],
) -> Result<BTreeMap<Slot, Observed>, KafkaError> {
    let tpl = list(slots);
    let committed = observer.committed_offsets(tpl.clone(), KAFKA_TIMEOUT)?;
    let ends = end_offsets(observer, &tpl)?;
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

/// Every partition of `topics`, from the brokers' metadata (a request per topic).
pub fn layout(observer: &BaseConsumer, topics: &[String]) -> Result<Vec<Slot>, KafkaError> {
    let mut slots = Vec::new();
    for topic in topics {
        let metadata = observer.fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                slots.push((t.name().to_owned(), p.id()));
            }
        }
    }
    Ok(slots)
}

fn list(slots: &[Slot]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in slots {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

/// ListOffsets for "latest" of every partition in one request per broker.
fn end_offsets(
    observer: &BaseConsumer,
    tpl: &TopicPartitionList,
) -> Result<BTreeMap<Slot, i64>, KafkaError> {
    let mut latest = TopicPartitionList::new();
    for e in tpl.elements() {
        latest.add_partition_offset(e.topic(), e.partition(), Offset::End)?;
    }
    Ok(observer
        .offsets_for_times(latest, KAFKA_TIMEOUT)?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(end) => Some(((e.topic().to_owned(), e.partition()), end)),
            _ => None,
        })
        .collect())
}

/// Records ever written to `topic` (the sum of its end offsets).
pub fn topic_size(observer: &BaseConsumer, topic: &str) -> Result<u64, KafkaError> {
    let tpl = list(&layout(observer, &[topic.to_owned()])?);
    Ok(end_offsets(observer, &tpl)?
        .values()
        .map(|end| u64::try_from(*end).unwrap_or(0))
        .sum())
}

/// One writer process of the group and the partitions it owns: its members (a db-writer has
/// one per lane) share a client id.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Member {
    /// The group member ids of the process, comma-separated; empty for a writer known from
    /// its own report (the consumer protocol's members are not described).
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// `topic/partition`.
    pub partitions: Vec<String>,
}

/// A consumer group as the classic `DescribeGroups` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    /// Whether the group answered as a classic-protocol group (`Stable`, `Empty`, a
    /// rebalance). A group on the consumer protocol (KIP-848) answers as `Dead`, like one
    /// that does not exist: its members are not known this way.
    pub described: bool,
    /// The members, those of one process (same client id and host) as one.
    pub members: Vec<Member>,
}

/// `group` through `DescribeGroups`.
pub fn members(observer: &BaseConsumer, group: &str) -> Result<GroupView, KafkaError> {
    let groups = observer
        .client()
        .fetch_group_list(Some(group), KAFKA_TIMEOUT)?;
    let described = groups
        .groups()
        .iter()
        .any(|g| g.name() == group && g.state() != "Dead");
    let members = by_process(
        groups
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .flat_map(|g| g.members())
            .map(|m| Member {
                member_id: m.id().to_owned(),
                client_id: m.client_id().to_owned(),
                host: m.client_host().to_owned(),
                partitions: m
                    .assignment()
                    .and_then(assignment)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(topic, partition)| format!("{topic}/{partition}"))
                    .collect(),
            }),
    );
    Ok(GroupView { described, members })
}

/// Members with the same client id and host as one, in the order each was first seen.
fn by_process(members: impl Iterator<Item = Member>) -> Vec<Member> {
    let mut processes: Vec<Member> = Vec::new();
    for m in members {
        match processes
            .iter_mut()
            .find(|p| p.client_id == m.client_id && p.host == m.host)
        {
            Some(process) => {
                process.member_id.push(',');
                process.member_id.push_str(&m.member_id);
                process.partitions.extend(m.partitions);
            }
            None => processes.push(m),
        }
    }
    processes
}

/// The partitions of a consumer-protocol assignment (`ConsumerProtocolAssignment`: version,
/// then topics with their partitions; every version starts so). `None` if it does not parse.
pub fn assignment(bytes: &[u8]) -> Option<Vec<Slot>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let slice = bytes.get(at..at.checked_add(n)?)?;
        at += n;
        Some(slice)
    };
    let int16 = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
    let int32 = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let _version = int16(take(2)?);
    let topics = int32(take(4)?);
    let mut slots = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(int16(take(2)?)).ok()?;
        let topic = std::str::from_utf8(take(len)?).ok()?.to_owned();
        let partitions = int32(take(4)?);
        for _ in 0..partitions.max(0) {
            slots.push((topic.clone(), int32(take(4)?)));
        }
    }
    Some(slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_with_a_member_per_lane_is_one_writer() {
        let member = |id: &str, client: &str, host: &str, partitions: &[&str]| Member {
            member_id: id.into(),
            client_id: client.into(),
            host: host.into(),
            partitions: partitions.iter().map(|p| (*p).to_owned()).collect(),
        };
        let writers = by_process(
            [
                member("a1", "w-a", "/10.0.0.1", &["events/0"]),
                member("b1", "w-b", "/10.0.0.1", &["events/1"]),
                member("a2", "w-a", "/10.0.0.1", &["events-critical/0"]),
                // The same client id on another host is another process.
                member("c1", "w-a", "/10.0.0.2", &["events-critical/1"]),
            ]
            .into_iter(),
        );
        assert_eq!(
            writers,
            vec![
                member(
                    "a1,a2",
                    "w-a",
                    "/10.0.0.1",
                    &["events/0", "events-critical/0"]
                ),
                member("b1", "w-b", "/10.0.0.1", &["events/1"]),
                member("c1", "w-a", "/10.0.0.2", &["events-critical/1"]),
            ]
        );
    }

    #[test]
    fn reads_a_consumer_protocol_assignment() {
        let mut bytes = vec![0, 3, 0, 0, 0, 2];
        for (topic, partitions) in [("events", vec![0i32, 4]), ("events-critical", vec![1])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend([0, 0, 0, 0]); // user data
        assert_eq!(
            assignment(&bytes).unwrap(),
            vec![
                ("events".to_owned(), 0),
                ("events".to_owned(), 4),
                ("events-critical".to_owned(), 1)
            ]
        );
        assert_eq!(assignment(&bytes[..9]), None, "truncated");
        assert_eq!(assignment(&[]), None);
    }
}
