//! From what was observed to "how far behind", per lane (topic) and in total.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Observed, Slot};

/// How far the writer is behind in one lane.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LaneBehind {
    /// Records (events, and the few clock ticks among them) appended and not yet stored and
    /// committed by the writer: Σ (end offset − committed offset).
    pub depth: u64,
    /// Age in seconds of the oldest record not yet stored; 0 when the lane is caught up.
    pub oldest_age_seconds: f64,
}

/// How far the writer is behind, per lane and in total.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Behind {
    pub lanes: BTreeMap<String, LaneBehind>,
    pub depth: u64,
    pub oldest_age_seconds: f64,
}

/// Sums `observed` per topic; `oldest` holds the timestamp (Unix ms) of the record at the
/// commit of partitions that are behind (see [`crate::oldest_timestamps`]). A partition that
/// is behind but whose oldest record could not be read counts its depth and no age.
pub fn behind(
    observed: &BTreeMap<Slot, Observed>,
    oldest: &BTreeMap<Slot, i64>,
    now_ms: i64,
) -> Behind {
    let mut all = Behind::default();
    for (slot, o) in observed {
        let lane = all.lanes.entry(slot.0.clone()).or_default();
        let depth = o
            .end
            .map_or(0, |end| u64::try_from(end - o.committed).unwrap_or(0));
        lane.depth += depth;
        if depth > 0 {
            if let Some(at) = oldest.get(slot) {
                let age = (now_ms - at).max(0) as f64 / 1000.0;
                lane.oldest_age_seconds = lane.oldest_age_seconds.max(age);
            }
        }
    }
    for lane in all.lanes.values() {
        all.depth += lane.depth;
        all.oldest_age_seconds = all.oldest_age_seconds.max(lane.oldest_age_seconds);
    }
    all
}

/// The committed offsets of the partitions that are behind: where to peek for the oldest
/// unstored record.
pub fn lagging(observed: &BTreeMap<Slot, Observed>) -> BTreeMap<Slot, i64> {
    observed
        .iter()
        .filter(|(_, o)| o.end.is_some_and(|end| end > o.committed))
        .map(|(slot, o)| (slot.clone(), o.committed))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(committed: i64, end: i64) -> Observed {
        Observed {
            committed,
            clock: None,
            end: Some(end),
        }
    }

    #[test]
    fn depth_and_age_per_lane_and_in_total() {
        let observed = BTreeMap::from([
            (("events".to_owned(), 0), at(10, 15)),
            (("events".to_owned(), 1), at(7, 7)),
            (("events-critical".to_owned(), 0), at(3, 4)),
        ]);
        let peeks = lagging(&observed);
        assert_eq!(
            peeks.keys().cloned().collect::<Vec<_>>(),
            vec![("events".to_owned(), 0), ("events-critical".to_owned(), 0)]
        );
        let oldest = BTreeMap::from([
            (("events".to_owned(), 0), 1_000),
            // Stale: partition 1 is caught up, its peek does not count.
            (("events".to_owned(), 1), 0),
            (("events-critical".to_owned(), 0), 4_500),
        ]);
        let b = behind(&observed, &oldest, 5_000);
        assert_eq!(b.depth, 6);
        assert_eq!(b.lanes["events"].depth, 5);
        assert_eq!(b.lanes["events"].oldest_age_seconds, 4.0);
        assert_eq!(b.lanes["events-critical"].oldest_age_seconds, 0.5);
        assert_eq!(b.oldest_age_seconds, 4.0);
    }

    #[test]
    fn a_partition_never_committed_counts_from_its_start() {
        let observed = BTreeMap::from([(("events".to_owned(), 0), at(0, 3))]);
        assert_eq!(behind(&observed, &BTreeMap::new(), 0).depth, 3);
    }
}
