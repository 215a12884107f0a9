//! Which offsets a stored batch allows to commit, with each partition's log clock as the
//! commit's metadata so whoever resumes there orders the next records the same way.

use std::{collections::BTreeMap, sync::Arc};

use rdkafka::{error::KafkaResult, Offset, TopicPartitionList};
use schemas::{order::commit_metadata, LogClock};

use crate::batch::Record;

/// Per partition in a batch: first and last offset, and the clock after the last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first: i64,
    pub last: i64,
    pub clock: Option<i64>,
}

/// Keyed by the records' own (shared) topic: building a key costs no allocation per record.
pub type Ranges = BTreeMap<(Arc<str>, i32), Range>;

pub fn ranges(records: &[Record]) -> Ranges {
    let mut ranges = Ranges::new();
    for record in records {
        let position = record.position();
        let offset = position.offset;
        let clock = record.clock_after();
        let slot = ranges
            .entry((position.topic.clone(), position.partition))
            .or_insert(Range {
                first: offset,
                last: offset,
                clock,
            });
        slot.first = slot.first.min(offset);
        // A partition's records arrive in offset order, so the last one carries its clock.
        if offset >= slot.last {
            slot.last = offset;
            slot.clock = clock.or(slot.clock);
        }
    }
    ranges
}

/// For every partition in the batch, the offset after its highest record. The consumer
/// delivers each partition in order and the whole batch is stored before this is used, so
/// every offset below it is persisted or dead-lettered.
pub fn to_list(ranges: &Ranges) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), range) in ranges {
        let mut elem = tpl.add_partition(topic, *partition);
        elem.set_offset(Offset::Offset(range.last + 1))?;
        let metadata = commit_metadata(LogClock::resume(range.clock));
        if !metadata.is_empty() {
            elem.set_metadata(metadata);
        }
    }
    Ok(tpl)
}

#[cfg(test)]
mod tests {
    use event_store::KafkaPosition;
    use schemas::order::parse_commit_metadata;

    use super::*;

    fn tick(topic: &str, partition: i32, offset: i64, clock: i64) -> Record {
        Record::Tick {
            position: KafkaPosition {
                topic: topic.into(),
                partition,
                offset,
            },
            clock,
        }
    }

    #[test]
    fn commits_one_past_the_highest_offset_with_the_clock_there() {
        let ranges = ranges(&[
            tick("a", 0, 5, 100),
            tick("a", 0, 6, 110),
            tick("a", 1, 2, 50),
            tick("b", 0, 9, 70),
        ]);
        assert_eq!(
            ranges[&(Arc::from("a"), 0)],
            Range {
                first: 5,
                last: 6,
                clock: Some(110)
            }
        );
        let tpl = to_list(&ranges).unwrap();
        let offsets: Vec<(String, i32, Offset, Option<i64>)> = tpl
            .elements()
            .iter()
            .map(|e| {
                (
                    e.topic().to_owned(),
                    e.partition(),
                    e.offset(),
                    parse_commit_metadata(e.metadata()),
                )
            })
            .collect();
        assert_eq!(
            offsets,
            vec![
                ("a".into(), 0, Offset::Offset(7), Some(110)),
                ("a".into(), 1, Offset::Offset(3), Some(50)),
                ("b".into(), 0, Offset::Offset(10), Some(70)),
            ]
        );
    }
}
