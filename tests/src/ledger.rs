//! What a test posted and what it was told: the record that checks of reads and rows are
//! made against.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use uuid::Uuid;

use crate::{assert_same_content, event_id, eventually, ids, Stack};

/// How long a POST in progress may take to be answered.
const ANSWER: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Entries {
    /// Events the gateway acknowledged, as posted.
    acknowledged: HashMap<Uuid, Value>,
    /// Events of requests that did not get a 202 (with their own ids): each may appear, at
    /// most once.
    maybe: HashMap<Uuid, Value>,
}

impl Entries {
    fn posted(&self, id: &Uuid) -> Option<&Value> {
        self.acknowledged.get(id).or_else(|| self.maybe.get(id))
    }
}

/// Shared between the tasks that post and the test that checks.
#[derive(Default, Clone)]
pub struct Ledger {
    entries: Arc<Mutex<Entries>>,
}

/// What the shards hold against a ledger of what was posted (`Ledger::stored_counts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredCounts {
    /// Rows over all shards.
    pub rows: usize,
    pub acknowledged: usize,
    /// Acknowledged events with no row.
    pub lost: usize,
    /// Events with more than one row.
    pub duplicated: usize,
    /// Events whose POST failed or was not answered: stored at most once.
    pub maybe: usize,
    pub failed_but_stored: usize,
    /// Rows of events nobody posted.
    pub unexpected: usize,
}

impl Ledger {
    pub fn acknowledged(&self, events: &[Value], ids: &[Uuid]) {
        let mut entries = self.entries.lock().expect("ledger");
        for (event, id) in events.iter().zip(ids) {
            entries.maybe.remove(id);
            entries.acknowledged.insert(*id, event.clone());
        }
    }

    /// Events (with their own `event_id`) of a request that got no 202.
    pub fn maybe(&self, events: &[Value]) {
        let mut entries = self.entries.lock().expect("ledger");
        for event in events {
            let id: Uuid = event["event_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("a maybe event carries its own event_id");
            if !entries.acknowledged.contains_key(&id) {
                entries.maybe.insert(id, event.clone());
            }
        }
    }

    /// The acknowledged events so far, by client.
    pub fn by_client(&self) -> BTreeMap<String, Vec<Uuid>> {
        let entries = self.entries.lock().expect("ledger");
        let mut clients: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
        for (id, event) in &entries.acknowledged {
            let client = event["client_id"].as_str().expect("client_id").to_owned();
            clients.entry(client).or_default().push(*id);
        }
        clients
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("ledger").acknowledged.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every event acknowledged so far of the clients `which` accepts is answered by `query`
    /// exactly once, with what was posted, in increasing `ordered_at`; nothing it answers is
    /// unknown, and each maybe event appears at most once. Waits (bounded) for the latest
    /// events to be released.
    pub async fn assert_readable(
        &self,
        stack: &Stack,
        query: &str,
        which: impl Fn(&str) -> bool,
        deadline: Duration,
    ) {
        let expected = self.by_client();
        for (client, want) in expected.iter().filter(|(c, _)| which(c)) {
            let want: HashSet<Uuid> = want.iter().copied().collect();
            let history = eventually(deadline, "acknowledged events readable", || async {
                let history = stack.history(query, client, 97).await;
                let seen: HashSet<Uuid> = ids(&history).into_iter().collect();
                want.is_subset(&seen).then_some(history)
            })
            .await;
            // An event can be answered before the answer to its own POST reaches the ledger
            // (traffic goes on while this checks): such ids are checked once known.
            let mut unknown = Vec::new();
            {
                let entries = self.entries.lock().expect("ledger");
                let mut seen = HashSet::new();
                let mut last = time::OffsetDateTime::UNIX_EPOCH;
                for event in &history {
                    let id = event_id(event);
                    assert!(seen.insert(id), "{client}: {id} answered twice");
                    match entries.posted(&id) {
                        Some(posted) => assert_same_content(posted, event),
                        None => unknown.push(event),
                    }
                    let ordered_at = time::OffsetDateTime::parse(
                        event["ordered_at"].as_str().expect("ordered_at"),
                        &time::format_description::well_known::Rfc3339,
                    )
                    .expect("RFC 3339");
                    assert!(ordered_at >= last, "{client}: out of order at {id}");
                    last = ordered_at;
                }
            }
            for event in unknown {
                let id = event_id(event);
                let what = format!("{client}: {id} answered, and its POST answered");
                let posted = eventually(ANSWER, &what, || async {
                    self.entries.lock().expect("ledger").posted(&id).cloned()
                })
                .await;
                assert_same_content(&posted, event);
            }
        }
    }

    /// The checks of `assert_stored`, counted instead of asserted.
    pub async fn stored_counts(&self, stack: &Stack) -> StoredCounts {
        let counts = stack.row_counts().await;
        let entries = self.entries.lock().expect("ledger");
        StoredCounts {
            rows: counts.values().sum(),
            acknowledged: entries.acknowledged.len(),
            lost: entries
                .acknowledged
                .keys()
                .filter(|id| !counts.contains_key(id))
                .count(),
            duplicated: counts.values().filter(|n| **n > 1).count(),
            maybe: entries.maybe.len(),
            failed_but_stored: entries
                .maybe
                .keys()
                .filter(|id| counts.contains_key(id))
                .count(),
            unexpected: counts
                .keys()
                .filter(|id| entries.posted(id).is_none())
                .count(),
        }
    }

    /// Every acknowledged event stored exactly once, every maybe at most once; returns the
    /// ledger line a fault test prints: acknowledged, lost, duplicated, failed-but-stored.
    pub async fn assert_stored(&self, stack: &Stack) -> String {
        let counts = stack.row_counts().await;
        let entries = self.entries.lock().expect("ledger");
        let lost: Vec<&Uuid> = entries
            .acknowledged
            .keys()
            .filter(|id| !counts.contains_key(id))
            .collect();
        let duplicated: Vec<(&Uuid, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
        let failed_but_stored = entries
            .maybe
            .keys()
            .filter(|id| counts.contains_key(id))
            .count();
        let line = format!(
            "ledger: acknowledged={} lost={} duplicated={} maybe={} failed-but-stored={}",
            entries.acknowledged.len(),
            lost.len(),
            duplicated.len(),
            entries.maybe.len(),
            failed_but_stored
        );
        println!("{line}");
        assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
        assert!(duplicated.is_empty(), "stored twice: {duplicated:?}");
        let unknown: Vec<&Uuid> = counts
            .keys()
            .filter(|id| !entries.acknowledged.contains_key(id) && !entries.maybe.contains_key(id))
            .collect();
        assert!(unknown.is_empty(), "rows nobody posted: {unknown:?}");
        line
    }
}
