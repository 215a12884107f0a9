//! Copies of one event: which one *is* the event.
//!
//! A producer that retries with the same `event_id` creates several records of one event,
//! possibly in different partitions (both lanes, or before and after partitions were added).
//! Everywhere — the row in PostgreSQL, the in-flight set, every answer — the copy that comes
//! first by [`CopyRank`] stands for the event; the others are duplicates. The rank depends only
//! on the records, so the writer and every reader pick the same copy whatever order they see
//! them in, and the answer shows the same copy before and after it is stored.

use std::sync::Arc;

use uuid::Uuid;

use crate::StoredEvent;

/// `(ordered_at, topic, partition, offset)`: lower is first. Topics compare as bytes, which
/// is what `COLLATE "C"` does in the insert statements.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CopyRank {
    pub ordered_at_micros: i64,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl StoredEvent {
    pub fn copy_rank(&self) -> CopyRank {
        CopyRank {
            ordered_at_micros: self.ordered_at_micros,
            topic: self.position.topic.clone(),
            partition: self.position.partition,
            offset: self.position.offset,
        }
    }

    /// Whether this copy comes before `other` (a copy of the same event).
    pub fn precedes(&self, other: &StoredEvent) -> bool {
        (
            self.ordered_at_micros,
            &*self.position.topic,
            self.position.partition,
            self.position.offset,
        ) < (
            other.ordered_at_micros,
            &*other.position.topic,
            other.position.partition,
            other.position.offset,
        )
    }
}

/// What became of one row handed to `Shard::insert_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOutcome {
    /// Stored; the event was new.
    Inserted,
    /// Stored in place of a copy of the same event that comes after it.
    Replaced,
    /// Not stored: a copy that comes first is stored already, or is in the same batch.
    Duplicate,
    /// Not stored: another client's event has this `event_id`.
    Taken,
}

impl RowOutcome {
    pub fn is_stored(self) -> bool {
        matches!(self, RowOutcome::Inserted | RowOutcome::Replaced)
    }
}

/// Splits a batch into the rows to send (one per `event_id`: its first copy) and the
/// outcome of the others. A statement must not touch one row twice, so repeats are settled
/// here. Returns the indexes of the rows to send, in batch order.
pub(crate) fn first_copies(
    rows: &[StoredEvent],
    outcomes: &mut [Option<RowOutcome>],
) -> Vec<usize> {
    let mut first: std::collections::HashMap<Uuid, usize> =
        std::collections::HashMap::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        match first.entry(row.event.event_id) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(index);
            }
            std::collections::hash_map::Entry::Occupied(mut slot) => {
                let kept = *slot.get();
                let (winner, loser) = if row.precedes(&rows[kept]) {
                    slot.insert(index);
                    (index, kept)
                } else {
                    (kept, index)
                };
                outcomes[loser] = Some(
                    if rows[loser].event.client_id == rows[winner].event.client_id {
                        RowOutcome::Duplicate
                    } else {
                        RowOutcome::Taken
                    },
                );
            }
        }
    }
    let mut send: Vec<usize> = first.into_values().collect();
    send.sort_unstable();
    send
}

#[cfg(test)]
mod tests {
    use schemas::{Event, Priority};

    use super::*;
    use crate::KafkaPosition;

    fn copy(id: Uuid, client: &str, at: i64, topic: &str, offset: i64) -> StoredEvent {
        StoredEvent {
            event: Event {
                event_id: id,
                client_id: client.into(),
                event_type: "t".into(),
                ts_micros: None,
                ingested_at_micros: at,
                priority: Priority::Normal,
                payload: "{}".into(),
                sdk: None,
                id_origin: None,
            },
            position: KafkaPosition {
                topic: topic.into(),
                partition: 0,
                offset,
            },
            ordered_at_micros: at,
            id_assigned: false,
        }
    }

    #[test]
    fn the_first_copy_by_rank_is_kept_whatever_the_batch_order() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let rows = vec![
            copy(a, "x", 200, "events", 7),
            copy(b, "x", 150, "events", 8),
            copy(a, "x", 100, "events-critical", 3),
            copy(a, "x", 200, "events", 9),
            copy(b, "y", 150, "events", 9),
        ];
        let mut outcomes = vec![None; rows.len()];
        assert_eq!(first_copies(&rows, &mut outcomes), vec![1, 2]);
        assert_eq!(
            outcomes,
            vec![
                Some(RowOutcome::Duplicate),
                None,
                None,
                Some(RowOutcome::Duplicate),
                Some(RowOutcome::Taken),
            ]
        );
    }

    #[test]
    fn rank_breaks_ties_by_topic_bytes_then_position() {
        let id = Uuid::from_u128(1);
        let a = copy(id, "x", 100, "events", 5);
        let b = copy(id, "x", 100, "events-critical", 1);
        assert!(a.precedes(&b), "\"events\" < \"events-critical\" as bytes");
        let later = copy(id, "x", 100, "events", 6);
        assert!(a.precedes(&later) && !later.precedes(&a));
        assert_eq!(a.copy_rank() < b.copy_rank(), a.precedes(&b));
    }
}
