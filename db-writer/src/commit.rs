//! Which offsets a written batch allows to commit.

use std::collections::BTreeMap;

use rdkafka::{error::KafkaResult, Offset, TopicPartitionList};

use crate::batch::Record;

/// First and last offset of every partition in a batch.
pub type Ranges = BTreeMap<(String, i32), (i64, i64)>;

pub fn ranges(records: &[Record]) -> Ranges {
    let mut ranges = Ranges::new();
    for record in records {
        let (topic, partition) = record.topic_partition();
        let offset = record.offset();
        let slot = ranges
            .entry((topic.to_owned(), partition))
            .or_insert((offset, offset));
        *slot = (slot.0.min(offset), slot.1.max(offset));
    }
    ranges
}

/// For every partition in the batch, the offset after its highest record. The consumer
/// delivers each partition in order and the whole batch is stored before this is used, so
/// every offset below it is persisted or dead-lettered.
pub fn to_list(ranges: &Ranges) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), (_, last)) in ranges {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(last + 1))?;
    }
    Ok(tpl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Poison;

    fn record(topic: &str, partition: i32, offset: i64) -> Record {
        Record::Poison(Poison {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            value: None,
            error_class: "test",
            error: String::new(),
        })
    }

    #[test]
    fn commits_one_past_the_highest_offset_per_partition() {
        let ranges = ranges(&[
            record("a", 0, 5),
            record("a", 0, 6),
            record("a", 1, 2),
            record("b", 0, 9),
        ]);
        assert_eq!(ranges[&("a".to_owned(), 0)], (5, 6));
        let tpl = to_list(&ranges).unwrap();
        let offsets: Vec<(String, i32, Offset)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        assert_eq!(
            offsets,
            vec![
                ("a".into(), 0, Offset::Offset(7)),
                ("a".into(), 1, Offset::Offset(3)),
                ("b".into(), 0, Offset::Offset(10)),
            ]
        );
    }
}
