//! How far this replica has consumed each partition, and waiting until a read-your-writes
//! token's events are answerable.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use schemas::{OrderKey, ReadToken};
use tokio::sync::watch;

use crate::{in_flight::InFlight, release::Frontier};

#[derive(Debug, Clone, Copy)]
struct Position {
    /// Next offset to consume: everything below is in the in-flight set or in PostgreSQL.
    next: i64,
    /// The partition's log clock after the record before `next`.
    clock: Option<i64>,
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
            let slot = partitions
                .entry(partition)
                .or_insert(Position { next, clock });
            slot.next = slot.next.max(next);
            slot.clock = slot.clock.max(clock);
        }
    }

    fn position(&self, topic: &str, partition: i32) -> Option<Position> {
        let map = self.positions.lock().ok()?;
        map.get(topic)?.get(&partition).copied()
    }

    pub fn next(&self, topic: &str, partition: i32) -> Option<i64> {
        self.position(topic, partition).map(|p| p.next)
    }

    /// Wakes waiting readers; called by the tail after consuming or releasing, only when
    /// someone waits.
    pub fn notify(&self) {
        if self.changed.receiver_count() > 0 {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Once every position of `token` is consumed: the largest clock of its partitions, which
    /// is at or after the `ordered_at` of each of the token's events.
    fn covered_until(&self, token: &ReadToken) -> Option<i64> {
        let mut until = i64::MIN;
        for (topic, partition, offset) in token.positions() {
            let position = self.position(topic, partition)?;
            if position.next <= offset {
                return None;
            }
            until = until.max(position.clock.unwrap_or(i64::MIN));
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
