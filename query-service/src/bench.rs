//! The tail's in-memory work on one consumed event — decode, contract check, in-flight
//! insert, release, eviction at the writer's commit — without Kafka or a network, for
//! `benches/tail.rs`: the share of query-service's CPU per event that this crate's code
//! decides, measured without the noise of a whole stack on the same machine.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use schemas::{contract, Event, EventCodec, Priority};
use uuid::Uuid;

use crate::{
    in_flight::InFlight,
    partitions::{OnRead, Partitions},
    progress::Progress,
    release::Frontier,
    release::Release,
    streams::Streams,
};

/// The shape of the replayed traffic.
#[derive(Debug, Clone)]
pub struct Workload {
    pub events: usize,
    pub clients: usize,
    pub partitions: usize,
    /// Records the tail drains between two moves of the release frontier.
    pub drain: usize,
    /// Events between two commits of the writer, and how far each commit trails what the
    /// tail consumed (events in flight).
    pub commit_every: usize,
    pub in_flight: usize,
    pub payload_bytes: usize,
    /// `cache.index_on_read`, with this many clients read (indexed) from the start; `None`
    /// indexes every event.
    pub read_clients: Option<usize>,
}

/// The local stack's normal topic.
const TOPIC: &str = "events";

/// Replays `workload` through the tail's state and returns the time it took.
pub fn replay(workload: &Workload) -> Duration {
    let codec = EventCodec::new();
    // One encoded record per client: the tail decodes each consumed record; the id and the
    // time are fresh per event (the gateway assigns both).
    let records: Vec<(String, Vec<u8>)> = (0..workload.clients)
        .map(|n| {
            let client_id = format!("device-{n:06}");
            let event = Event {
                event_id: Uuid::now_v7(),
                client_id: client_id.clone(),
                event_type: "reading".into(),
                ts_micros: Some(1_700_000_000_000_000),
                ingested_at_micros: 1_700_000_000_000_000,
                priority: Priority::Normal,
                payload: format!("{{\"pad\":\"{}\"}}", "x".repeat(workload.payload_bytes)),
                sdk: Some("ios-5.2".into()),
                id_origin: None,
            };
            let bytes = codec.encode(&event).expect("a valid event encodes");
            (client_id, bytes)
        })
        .collect();

    let in_flight = Arc::new(InFlight::new(1 << 24, 1 << 34, 262_144));
    let release = Release::new(
        Arc::new(Frontier::default()),
        in_flight.clone(),
        Arc::new(Streams::default()),
    );
    // Per-client release from the start, as a replica has it once settled.
    let mut partitions = Partitions::new(
        in_flight,
        Arc::new(Progress::default()),
        release,
        0,
        Some(0),
        i64::MIN,
        workload
            .read_clients
            .map(|_| OnRead::new(i64::MAX / 4, usize::MAX)),
    );
    let slots: Vec<_> = (0..workload.partitions)
        .map(|p| (TOPIC.to_owned(), p as i32))
        .collect();
    for slot in &slots {
        partitions.assign(slot.clone(), 0, 0, None);
    }
    let read: Vec<String> = records
        .iter()
        .take(workload.read_clients.unwrap_or(0))
        .map(|(client_id, _)| client_id.clone())
        .collect();
    partitions.index_clients(&read, 0);
    let mut next = vec![0_i64; workload.partitions];
    // Offsets consumed, in consumption order, to know where a trailing commit lands.
    let mut consumed: std::collections::VecDeque<(usize, i64)> = Default::default();

    // Time-ordered ids, as the gateway's UUIDv7s are, without a clock read per event.
    let base_id = Uuid::now_v7().as_u128();
    let mut random = 0x9e37_79b9_7f4a_7c15_u64;
    let started = Instant::now();
    for n in 0..workload.events {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let client = (random % workload.clients as u64) as usize;
        let (client_id, bytes) = &records[client];
        let p = client % workload.partitions;
        let at_micros = 1_700_000_000_000_000 + n as i64 * 50;
        let Ok(mut event) = codec.decode(bytes) else {
            continue;
        };
        if contract::check_record(&event, Some(client_id.as_bytes()), Some(at_micros / 1000))
            .is_err()
        {
            continue;
        }
        event.event_id = Uuid::from_u128(base_id + n as u128);
        event.ingested_at_micros = at_micros;
        let Some(part) = partitions.find(TOPIC, p as i32) else {
            continue;
        };
        partitions.event(part, next[p], event, true);
        consumed.push_back((p, next[p]));
        next[p] += 1;
        if n % workload.drain == 0 {
            for (slot, &offset) in slots.iter().zip(&next) {
                if let Some(part) = partitions.find(&slot.0, slot.1) {
                    partitions.tick(part, offset.max(1) - 1, at_micros);
                }
            }
            partitions.advance();
        }
        if n % workload.commit_every == 0 && consumed.len() > workload.in_flight {
            let mut upto = vec![None; workload.partitions];
            while consumed.len() > workload.in_flight {
                if let Some((p, offset)) = consumed.pop_front() {
                    upto[p] = Some(offset + 1);
                }
            }
            for (slot, committed) in slots.iter().zip(upto) {
                if let Some(committed) = committed {
                    partitions.committed(slot, committed);
                }
            }
        }
    }
    started.elapsed()
}
