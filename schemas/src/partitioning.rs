//! Which partition of a topic a client's records land in: Kafka's default partitioner
//! (murmur2 of the key, the client id), which the gateway's producer uses
//! (`partitioner=murmur2_random`) and every Java client shares. A reader that knows it can
//! tell which partitions may still bring a client's events, so it need not wait for all of
//! them (`query-service`'s per-client release).

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`, librdkafka's
/// `rd_murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka takes the length as a Java int: keys longer than 2 GiB do not exist here.
    let mut h = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition, of a topic with `partitions` partitions, that records keyed `key` go to;
/// `None` for a topic without partitions.
pub fn partition_for(key: &[u8], partitions: usize) -> Option<usize> {
    (partitions > 0).then(|| (murmur2(key) & 0x7fff_ffff) as usize % partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own test vectors (`UtilsTest.testMurmur2`).
    #[test]
    fn matches_kafkas_murmur2() {
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()) as i32, expected, "{key}");
        }
    }

    #[test]
    fn a_topic_without_partitions_has_no_partition_for_a_key() {
        assert_eq!(partition_for(b"device-1", 0), None);
        assert!(partition_for(b"device-1", 6).is_some_and(|p| p < 6));
    }
}
