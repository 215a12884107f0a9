//! How far this replica has consumed each partition, and waiting until a read-your-writes
//! token's events are answerable.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use schemas::{OrderKey, ReadToken};
use tokio::sync::watch;

use crate::{in_flight::InFlight, release::Frontier};

/// Steps of a partition's consumption remembered, to tell a token's records' clock ([`STEPS`]).
const STEPS: usize = 64;

#[derive(Debug, Clone)]
struct Position {
    /// Next offset to consume: everything below is in the in-flight set or in PostgreSQL.
    next: i64,
    /// The partition's log clock after the record before `next`.
    clock: Option<i64>,
    /// The latest [`STEPS`] steps (the tail reports once per batch it drained): `next` and
    /// `clock` after each. A token's wait needs the clock of its own records, which the
    /// clock after the step that consumed them bounds; the partition's clock now runs ahead
    /// of it as ticks arrive, and waiting for that clock waited for the ticks after it too —
    /// at idle, for the next idle round, a second (docs/design.md, "Read-your-writes").
    steps: VecDeque<(i64, Option<i64>)>,
}

impl Position {
    /// The clock after the step that consumed `offset`: at or after the `ordered_at` of every
    /// record up to it. The oldest step remembered stands for older offsets (its clock is
    /// later than theirs); `None` before `offset` is consumed.
    fn clock_through(&self, offset: i64) -> Option<Option<i64>> {
        if self.next <= offset {
            return None;
        }
        let step = self.steps.iter().find(|(next, _)| *next > offset);
        Some(step.map_or(self.clock, |(_, clock)| *clock))
    }
}

pub struct Progress {
    /// Topic → partition → position (looked up by `&str`, without building a key).
    positions: Mutex<HashMap<String, HashMap<i32, Position>>>,
    changed: watch::Sender<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            positions: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl Progress {
    pub fn advance(&self, topic: &str, partition: i32, next: i64, clock: Option<i64>) {
        self.advance_all([(topic, partition, next, clock)]);
    }

    /// [`Progress::advance`] for several partitions under one lock: the tail reports once per
    /// batch of records it drained.
    pub fn advance_all<'a>(
        &self,
        positions: impl IntoIterator<Item = (&'a str, i32, i64, Option<i64>)>,
    ) {
        let Ok(mut map) = self.positions.lock() else {
            return;
        };
        for (topic, partition, next, clock) in positions {
            let partitions = match map.get_mut(topic) {
                Some(partitions) => partitions,
                None => map.entry(topic.to_owned()).or_default(),
            };
            let slot = partitions.entry(partition).or_insert(Position {
                next: i64::MIN,
                clock,
                steps: VecDeque::with_capacity(STEPS),
            });
            slot.clock = slot.clock.max(clock);
            if next > slot.next {
                slot.next = next;
                if slot.steps.len() == STEPS {
                    slot.steps.pop_front();
                }
                slot.steps.push_back((next, slot.clock));
            }
        }
    }

    pub fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        let map = self.positions.lock().ok()?;
        map.get(topic)?.get(&partition).map(|p| p.next)
    }

    /// Wakes waiting readers; called by the tail after consuming or releasing, only when
    /// someone waits.
    pub fn notify(&self) {
        if self.changed.receiver_count() > 0 {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Once every position of `token` is consumed: the largest clock of its partitions after
    /// the steps that consumed its records, which is at or after the `ordered_at` of each of
    /// the token's events.
    pub(crate) fn covered_until(&self, token: &ReadToken) -> Option<i64> {
        let map = self.positions.lock().ok()?;
        let mut until = i64::MIN;
        for (topic, partition, offset) in token.positions() {
            let clock = map.get(topic)?.get(&partition)?.clock_through(offset)?;
            until = until.max(clock.unwrap_or(i64::MIN));
        }
        Some(until)
    }

    /// Waits until `ready` holds (it is re-checked whenever the tail consumes or releases);
    /// false if `wait` ran out first.
    pub async fn wait_until(&self, ready: impl Fn() -> bool, wait: Duration) -> bool {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if ready() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return ready();
            }
        }
    }

    /// Waits until every event of `token` is consumed and released for `client`; false if
    /// `wait` ran out first.
    pub async fn wait_for(
        &self,
        token: &ReadToken,
        client: &str,
        in_flight: &InFlight,
        frontier: &Frontier,
        wait: Duration,
    ) -> bool {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        // Fixed at first coverage: later records would move it on forever under traffic.
        let mut until: Option<i64> = None;
        loop {
            if until.is_none() {
                until = self.covered_until(token);
            }
            if let Some(until) = until {
                let bound = in_flight.bound(client, frontier.for_client(client));
                if bound
                    > (OrderKey {
                        ordered_at_micros: until,
                        event_id: uuid::Uuid::max(),
                    })
                {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(positions: &[(&str, i32, i64)]) -> ReadToken {
        let mut token = ReadToken::default();
        for (t, p, o) in positions {
            token.observe(t, *p, *o);
        }
        token
    }

    #[test]
    fn covers_only_consumed_positions_and_reports_their_clock() {
        let progress = Progress::default();
        progress.advance("events", 0, 10, Some(500));
        progress.advance("events", 1, 3, Some(700));
        assert_eq!(
            progress.covered_until(&token(&[("events", 0, 9)])),
            Some(500)
        );
        assert_eq!(progress.covered_until(&token(&[("events", 0, 10)])), None);
        assert_eq!(
            progress.covered_until(&token(&[("events", 0, 1), ("events", 1, 2)])),
            Some(700)
        );
        assert_eq!(progress.covered_until(&token(&[("events", 2, 0)])), None);
    }

    #[test]
    fn a_token_waits_for_the_clock_of_its_records_not_the_partitions_clock_now() {
        let progress = Progress::default();
        // Resumed at offset 5 (clock 100), then three batches, the last only ticks.
        progress.advance("events", 0, 5, Some(100));
        progress.advance("events", 0, 8, Some(200));
        progress.advance("events", 0, 9, Some(300));
        progress.advance("events", 0, 12, Some(900));
        let until = |offset| progress.covered_until(&token(&[("events", 0, offset)]));
        assert_eq!(until(3), Some(100));
        assert_eq!(until(5), Some(200));
        assert_eq!(until(7), Some(200));
        assert_eq!(until(8), Some(300));
        assert_eq!(until(11), Some(900));
        assert_eq!(until(12), None);
        // Past the steps remembered, the oldest one stands for older offsets: later, never
        // earlier than their records.
        for n in 0..STEPS as i64 {
            progress.advance("events", 0, 13 + n, Some(1000 + n));
        }
        assert_eq!(until(3), Some(1000));
        assert_eq!(until(13 + STEPS as i64 - 2), Some(1000 + STEPS as i64 - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_wait() {
        let progress = Progress::default();
        let in_flight = InFlight::new(10, 1 << 20, 10);
        let frontier = Frontier::default();
        assert!(
            !progress
                .wait_for(
                    &token(&[("events", 0, 0)]),
                    "c",
                    &in_flight,
                    &frontier,
                    Duration::from_millis(200)
                )
                .await
        );
    }
}
