//! The ids seen last, each with a value, the oldest forgotten beyond a bound: what the
//! in-flight set remembers of evicted copies, and what the release remembers of the ids it
//! handed to streams.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

pub struct RecentIds<V> {
    values: HashMap<Uuid, V, ahash::RandomState>,
    /// Oldest first; exactly the keys of `values`.
    order: VecDeque<Uuid>,
    bound: usize,
}

impl<V> RecentIds<V> {
    /// Remembers at most `bound` ids, its memory sized for them at once: growing it
    /// reallocated and rehashed it on the tail's thread while the first evictions came in.
    pub fn new(bound: usize) -> Self {
        RecentIds {
            values: HashMap::with_capacity_and_hasher(bound + 1, ahash::RandomState::new()),
            order: VecDeque::with_capacity(bound + 1),
            bound,
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<&V> {
        self.values.get(id)
    }

    pub fn get_mut(&mut self, id: &Uuid) -> Option<&mut V> {
        self.values.get_mut(id)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.values.values_mut()
    }

    /// Sets `id`'s value (an id already remembered keeps its place), then forgets the oldest
    /// beyond the bound, handing each forgotten value to `forgotten`.
    pub fn insert(&mut self, id: Uuid, value: V, mut forgotten: impl FnMut(V)) {
        if self.values.insert(id, value).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.bound {
            if let Some(dropped) = self
                .order
                .pop_front()
                .and_then(|old| self.values.remove(&old))
            {
                forgotten(dropped);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_the_bound_and_a_replaced_value_keeps_its_place() {
        let ids: Vec<Uuid> = (0..4u128).map(Uuid::from_u128).collect();
        let mut recent = RecentIds::new(2);
        let mut forgotten = Vec::new();
        recent.insert(ids[0], "a", |v| forgotten.push(v));
        recent.insert(ids[1], "b", |v| forgotten.push(v));
        // Replacing the oldest's value does not make it the newest.
        recent.insert(ids[0], "a2", |v| forgotten.push(v));
        assert!(forgotten.is_empty());
        recent.insert(ids[2], "c", |v| forgotten.push(v));
        assert_eq!(forgotten, ["a2"]);
        assert_eq!(recent.get(&ids[0]), None);
        assert_eq!(recent.get(&ids[1]), Some(&"b"));
        if let Some(v) = recent.get_mut(&ids[2]) {
            *v = "c2";
        }
        recent.insert(ids[3], "d", |v| forgotten.push(v));
        assert_eq!(forgotten, ["a2", "b"]);
        let mut left: Vec<_> = recent.values_mut().map(|v| *v).collect();
        left.sort_unstable();
        assert_eq!(left, ["c2", "d"]);
    }
}
