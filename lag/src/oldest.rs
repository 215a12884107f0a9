//! The time of the oldest record the writer has not stored: the record at its committed
//! offset, whose timestamp the gateway set to the event's `ingested_at` (or a tick's time).

use std::{collections::BTreeMap, time::Duration, time::Instant};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    Message, Offset, TopicPartitionList,
};

use crate::Slot;

const PEEK_TIMEOUT: Duration = Duration::from_secs(2);

/// The timestamp (Unix milliseconds) of the record at each given offset, by fetching it.
/// Partitions that do not answer within the timeout are left out.
pub fn oldest_timestamps(
    peeker: &BaseConsumer,
    at: &BTreeMap<Slot, i64>,
) -> Result<BTreeMap<Slot, i64>, KafkaError> {
    let mut found = BTreeMap::new();
    if at.is_empty() {
        return Ok(found);
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in at {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    peeker.assign(&tpl)?;
    let deadline = Instant::now() + PEEK_TIMEOUT;
    while found.len() < at.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(Ok(message)) = peeker.poll(left) {
            let slot = (message.topic().to_owned(), message.partition());
            // Only the first record at or after the asked offset counts (a compacted or
            // deleted offset moves the peek to the next record).
            if at
                .get(&slot)
                .is_some_and(|offset| message.offset() >= *offset)
            {
                if let Some(ms) = message.timestamp().to_millis() {
                    found.entry(slot).or_insert(ms);
                }
            }
        }
    }
    peeker.unassign()?;
    Ok(found)
}
