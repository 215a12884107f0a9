/// Maps a client id to its shard.
///
/// `shard = jump_consistent_hash(fnv1a_64(utf8(client_id)), shard_count)`.
///
/// Both functions are a few lines in any language, so other tools can compute the same
/// placement. The Kafka partition count plays no part, so growing partitions never moves a
/// client's rows, and jump hashing moves only ~1/(n+1) of the clients when a shard is appended
/// (Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", 2014).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardRouter {
    shard_count: u32,
}

impl ShardRouter {
    /// # Panics
    /// If `shard_count` is zero: a configuration without shards is rejected at start-up.
    pub fn new(shard_count: usize) -> Self {
        assert!(shard_count > 0, "at least one shard is required");
        ShardRouter {
            shard_count: u32::try_from(shard_count).unwrap_or(u32::MAX),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count as usize
    }

    pub fn shard_for(&self, client_id: &str) -> usize {
        jump_consistent_hash(fnv1a_64(client_id.as_bytes()), self.shard_count) as usize
    }
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(PRIME)
    })
}

fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_matches_reference_vectors() {
        // Values from the paper's reference implementation.
        assert_eq!(jump_consistent_hash(1, 1), 0);
        assert_eq!(jump_consistent_hash(0xdead_beef, 1), 0);
        assert_eq!(jump_consistent_hash(256, 1024), 520);
    }

    #[test]
    fn placement_is_stable_and_spread() {
        let router = ShardRouter::new(2);
        let mut counts = [0usize; 2];
        for i in 0..10_000 {
            let id = format!("client-{i}");
            let shard = router.shard_for(&id);
            assert_eq!(shard, router.shard_for(&id));
            counts[shard] += 1;
        }
        assert!(
            counts.iter().all(|c| (4_500..5_500).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn appending_a_shard_moves_only_clients_to_the_new_shard() {
        let (two, three) = (ShardRouter::new(2), ShardRouter::new(3));
        let mut moved = 0;
        for i in 0..9_000 {
            let id = format!("client-{i}");
            let (before, after) = (two.shard_for(&id), three.shard_for(&id));
            if before != after {
                assert_eq!(after, 2, "{id} moved between old shards");
                moved += 1;
            }
        }
        assert!((2_500..3_500).contains(&moved), "{moved} of 9000 moved");
    }
}
