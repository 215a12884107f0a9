//! Which offsets a written batch allows to commit.

use std::collections::BTreeMap;

use rdkafka::{error::KafkaResult, Offset, TopicPartitionList};

use crate::batch::Record;

/// For every partition in the batch, the offset after its highest record. The consumer
/// delivers each partition in order and the whole batch is stored before this is used, so
/// every offset below it is persisted or dead-lettered.
pub fn next_offsets(records: &[Record]) -> BTreeMap<(String, i32), i64> {
    let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for record in records {
        let (topic, partition) = record.topic_partition();
        let slot = next.entry((topic.to_owned(), partition)).or_insert(0);
        *slot = (*slot).max(record.offset() + 1);
    }
    next
}

pub fn to_list(next: &BTreeMap<(String, i32), i64>) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
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
        let next = next_offsets(&[
            record("a", 0, 5),
            record("a", 0, 6),
            record("a", 1, 2),
            record("b", 0, 9),
        ]);
        assert_eq!(next[&("a".to_owned(), 0)], 7);
        assert_eq!(next[&("a".to_owned(), 1)], 3);
        assert_eq!(next[&("b".to_owned(), 0)], 10);
        assert_eq!(next.len(), 3);
    }
}
