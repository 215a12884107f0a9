//! What the tail knows of every partition — its log clock, the events it holds in offset
//! order, the writer's commit, when it was last consumed to its end — and what follows from
//! each record, commit and duplicate check: the in-flight set, the release frontier, and
//! read-your-writes progress. Kafka-free, so the whole ordering logic can be driven by a
//! model in tests.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use event_store::{KafkaPosition, StoredCopy, StoredEvent};
use schemas::{Event, LogClock};

use crate::{
    in_flight::{Held, InFlight},
    metrics,
    progress::Progress,
    release::Release,
};

pub use lag::Slot;

struct Partition {
    clock: LogClock,
    /// The writer's committed offset: everything below is in PostgreSQL.
    committed: i64,
    /// When (micros) this replica last knew it had consumed the partition to its end.
    caught_up_at: Option<i64>,
    /// Held events in offset order, for eviction.
    held: VecDeque<Held>,
    /// Committed events still waiting for their duplicate check.
    deferred: Vec<Held>,
}

pub struct Partitions {
    parts: BTreeMap<Slot, Partition>,
    /// Events consumed so far, per topic (for rates).
    consumed: BTreeMap<String, u64>,
    in_flight: Arc<InFlight>,
    progress: Arc<Progress>,
    release: Release,
    quiet_bound_micros: i64,
}

impl Partitions {
    pub fn new(
        in_flight: Arc<InFlight>,
        progress: Arc<Progress>,
        release: Release,
        quiet_bound_micros: i64,
    ) -> Self {
        Partitions {
            parts: BTreeMap::new(),
            consumed: BTreeMap::new(),
            in_flight,
            progress,
            release,
            quiet_bound_micros,
        }
    }

    pub fn contains(&self, slot: &Slot) -> bool {
        self.parts.contains_key(slot)
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Starts following a partition from `next`, where its clock is `clock` and the writer
    /// has committed up to `committed`.
    pub fn assign(&mut self, slot: Slot, next: i64, committed: i64, clock: Option<i64>) {
        // Everything below `next` is in PostgreSQL (or will be read): consumed, in effect.
        self.progress.advance(&slot.0, slot.1, next, clock);
        if let Some(clock) = clock {
            self.release.started_at(clock);
        }
        self.parts.insert(
            slot,
            Partition {
                clock: LogClock::resume(clock),
                committed,
                caught_up_at: None,
                held: VecDeque::new(),
                deferred: Vec::new(),
            },
        );
    }

    /// A tick at `offset`: the partition's clock moves.
    pub fn tick(&mut self, slot: &Slot, offset: i64, at: i64) {
        if let Some(partition) = self.parts.get_mut(slot) {
            partition.clock.observe(at);
        }
        self.consumed(slot, offset);
    }

    /// A record that is neither an event nor a tick: the writer dead-letters it; the clock
    /// stays, as it does for every other consumer.
    pub fn unreadable(&mut self, slot: &Slot, offset: i64) {
        metrics::UNDECODABLE.inc();
        self.consumed(slot, offset);
    }

    /// An event at `offset`. Returns it when a producer chose its id and the shard must be
    /// asked whether a copy is stored already (answer with [`Partitions::checked`]).
    pub fn event(
        &mut self,
        slot: &Slot,
        offset: i64,
        event: Event,
        id_assigned: bool,
    ) -> Option<Held> {
        let partition = self.parts.get_mut(slot)?;
        match self.consumed.get_mut(&slot.0) {
            Some(count) => *count += 1,
            None => {
                self.consumed.insert(slot.0.clone(), 1);
            }
        }
        let ordered_at_micros = partition.clock.observe(event.ingested_at_micros);
        let held = Arc::new(StoredEvent {
            event,
            position: KafkaPosition {
                topic: slot.0.clone(),
                partition: slot.1,
                offset,
            },
            ordered_at_micros,
            id_assigned,
        });
        let (needs_check, change) = self.in_flight.insert(held.clone(), id_assigned);
        partition.held.push_back(held.clone());
        self.release.apply(change);
        if needs_check {
            self.release.check_started(&held.event.client_id);
            metrics::UNVERIFIED.inc();
        }
        self.consumed(slot, offset);
        needs_check.then_some(held)
    }

    /// Records the position only: the frontier moves (and readers wake) at
    /// [`Partitions::advance`], once per batch of records the tail has drained, not per record.
    fn consumed(&mut self, slot: &Slot, offset: i64) {
        let clock = self.parts.get(slot).and_then(|p| p.clock.latest());
        // After the insert: a reader woken at the next `advance` finds the event.
        self.progress.advance(&slot.0, slot.1, offset + 1, clock);
    }

    /// The shard's answer to a duplicate check.
    pub fn checked(&mut self, held: &Held, found: Option<&StoredCopy>) {
        metrics::UNVERIFIED.dec();
        let change = self.in_flight.verified(held, found);
        self.release.apply(change);
        self.release.check_done(&held.event.client_id);
        let slot = (held.position.topic.clone(), held.position.partition);
        if let Some(partition) = self.parts.get_mut(&slot) {
            if held.position.offset < partition.committed {
                if let Some(at) = partition.deferred.iter().position(|d| Arc::ptr_eq(d, held)) {
                    partition.deferred.swap_remove(at);
                    self.in_flight.evict(held);
                }
            }
        }
        self.progress.notify();
    }

    /// The writer has committed the partition up to `committed`: what it holds below is in
    /// PostgreSQL now.
    pub fn committed(&mut self, slot: &Slot, committed: i64) {
        let Some(partition) = self.parts.get_mut(slot) else {
            return;
        };
        partition.committed = partition.committed.max(committed);
        while partition
            .held
            .front()
            .is_some_and(|h| h.position.offset < partition.committed)
        {
            let Some(held) = partition.held.pop_front() else {
                break;
            };
            // Until its duplicate check answers, the copy stays.
            if !self.in_flight.evict_checked(&held) {
                partition.deferred.push(held);
            }
        }
    }

    /// Events consumed so far, per topic.
    pub fn consumed_counts(&self) -> BTreeMap<String, u64> {
        self.consumed.clone()
    }

    /// `ingested_at` of the oldest event held (consumed, not yet stored).
    pub fn oldest_held(&self) -> Option<i64> {
        self.parts
            .values()
            .flat_map(|p| p.held.front().into_iter().chain(p.deferred.iter()))
            .map(|h| h.event.ingested_at_micros)
            .min()
    }

    /// This replica had consumed the partition to its end at `at` (micros).
    pub fn caught_up(&mut self, slot: &Slot, at: i64) {
        if let Some(partition) = self.parts.get_mut(slot) {
            partition.caught_up_at = Some(at);
        }
    }

    /// Moves the release frontier to the smallest clock over all partitions, a partition
    /// consumed to its end counting as `caught_up_at - quiet_bound` at least.
    pub fn advance(&mut self) {
        let mut frontier = i64::MAX;
        for partition in self.parts.values() {
            let idle = partition
                .caught_up_at
                .map(|at| at.saturating_sub(self.quiet_bound_micros));
            match partition.clock.latest().max(idle) {
                Some(at) => frontier = frontier.min(at),
                None => return,
            }
        }
        if frontier == i64::MAX {
            return;
        }
        if self.release.advance(frontier) {
            metrics::FRONTIER_LAG.set((now_micros() - frontier) as f64 / 1e6);
            self.progress.notify();
        }
    }
}

pub fn now_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)
        .unwrap_or(i64::MAX)
}
