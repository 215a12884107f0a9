//! Direct readers of the datums the services consume with every message (Avro binary encoding
//! of `event.v1` to `event.v3`, `tick.v1`, `persisted.v1`), so they need not build a generic Avro
//! value tree for each: apache-avro resolved the schema and built a tree of every event id in a
//! persisted notice, twice per id. They read exactly what apache-avro reads for these schemas
//! (property tests hold them to it).

use uuid::Uuid;

use crate::{
    codec::DecodeError,
    persisted::{OffsetRange, PersistedBatch, ShardWrite},
    Event, IdOrigin, Priority, Tick,
};

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A zigzag-encoded variable-length long, as Avro writes `int`, `long`, lengths, union
    /// and enum indexes.
    fn long(&mut self) -> Result<i64, DecodeError> {
        let mut value: u64 = 0;
        for (n, byte) in self.bytes.iter().enumerate().take(10) {
            let bits = u64::from(byte & 0x7f);
            if n == 9 && bits > 1 {
                return Err(malformed("variable-length integer overflows 64 bits"));
            }
            value |= bits << (7 * n);
            if byte & 0x80 == 0 {
                self.bytes = &self.bytes[n + 1..];
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(malformed(if self.bytes.len() < 10 {
            "datum ends inside an integer"
        } else {
            "variable-length integer longer than 10 bytes"
        }))
    }

    fn string(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::try_from(self.long()?).map_err(|_| malformed("negative string length"))?;
        if len > self.bytes.len() {
            return Err(malformed("datum ends inside a string"));
        }
        let (text, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        std::str::from_utf8(text).map_err(|_| malformed("string is not UTF-8"))
    }

    fn int(&mut self) -> Result<i32, DecodeError> {
        i32::try_from(self.long()?).map_err(|_| malformed("int out of range"))
    }

    fn owned_string(&mut self) -> Result<String, DecodeError> {
        self.string().map(str::to_owned)
    }

    /// An array: blocks of items until an empty one; a block with a negative count is
    /// followed by its size in bytes, which reading item by item does not need.
    fn array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut items = Vec::new();
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(items);
            }
            if count < 0 {
                self.long()?;
            }
            // Every item of these schemas takes at least a byte: a count beyond the bytes
            // left is damage, not a reason to reserve memory for it.
            let count = usize::try_from(count.unsigned_abs())
                .ok()
                .filter(|n| *n <= self.bytes.len())
                .ok_or(malformed("array longer than the datum"))?;
            items.reserve(count);
            for _ in 0..count {
                items.push(item(self)?);
            }
        }
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.bytes.len()))
        }
    }

    /// A `["null", T]` union: `None` for its first branch.
    fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.long()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(malformed("union branch out of range")),
        }
    }
}

fn malformed(what: &'static str) -> DecodeError {
    DecodeError::Malformed(what)
}

/// Reads one event datum written with `event.v<version>` (1 to 3): v2 added `sdk`, v3
/// `id_origin`.
pub(crate) fn event(datum: &[u8], version: u32) -> Result<Event, DecodeError> {
    let mut r = Reader { bytes: datum };
    let event_id = r.string()?;
    let event_id = Uuid::parse_str(event_id).map_err(|_| DecodeError::EventId(event_id.into()))?;
    let client_id = r.string()?.to_owned();
    let event_type = r.string()?.to_owned();
    let ts_micros = r.optional(Reader::long)?;
    let ingested_at_micros = r.long()?;
    let priority = match r.long()? {
        0 => Priority::Normal,
        1 => Priority::Critical,
        _ => return Err(malformed("priority symbol out of range")),
    };
    let payload = r.owned_string()?;
    let sdk = if version >= 2 {
        r.optional(Reader::owned_string)?
    } else {
        None
    };
    let id_origin = if version >= 3 {
        Some(match r.long()? {
            0 => IdOrigin::Producer,
            1 => IdOrigin::Gateway,
            _ => return Err(malformed("id_origin symbol out of range")),
        })
    } else {
        None
    };
    r.end()?;
    Ok(Event {
        event_id,
        client_id,
        event_type,
        ts_micros,
        ingested_at_micros,
        priority,
        payload,
        sdk,
        id_origin,
    })
}

/// Reads one datum written with `tick.v1`.
pub(crate) fn tick(datum: &[u8]) -> Result<Tick, DecodeError> {
    let mut r = Reader { bytes: datum };
    let at = r.long()?;
    let gateway = r.owned_string()?;
    r.end()?;
    Ok(Tick { at, gateway })
}

/// Reads one datum written with `persisted.v1`.
pub(crate) fn persisted(datum: &[u8]) -> Result<PersistedBatch, DecodeError> {
    let mut r = Reader { bytes: datum };
    // A uuid string, as apache-avro gives it to serde: parsed, then written hyphenated.
    let batch_id = r.string()?;
    let batch_id = Uuid::parse_str(batch_id)
        .map_err(|_| malformed("batch_id is not a UUID"))?
        .to_string();
    let writer = r.owned_string()?;
    let shards = r.array(|r| {
        Ok(ShardWrite {
            shard: r.int()?,
            rows: r.int()?,
            event_ids: r.array(Reader::owned_string)?,
            client_ids: r.array(Reader::owned_string)?,
        })
    })?;
    let ranges = r.array(|r| {
        Ok(OffsetRange {
            topic: r.owned_string()?,
            partition: r.int()?,
            first_offset: r.long()?,
            last_offset: r.long()?,
        })
    })?;
    let batch = PersistedBatch {
        batch_id,
        writer,
        shards,
        ranges,
        batch_size: r.int()?,
        first_ingested_at: r.long()?,
        last_ingested_at: r.long()?,
        persisted_at: r.long()?,
    };
    r.end()?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::{EventCodec, PersistedCodec, TickCodec, HEADER_LEN};

    use super::*;

    fn events() -> impl Strategy<Value = Event> {
        crate::event::arbitrary_events("\\PC{0,40}")
    }

    fn ticks() -> impl Strategy<Value = Tick> {
        (any::<i64>(), "\\PC{0,40}").prop_map(|(at, gateway)| Tick { at, gateway })
    }

    fn batches() -> impl Strategy<Value = PersistedBatch> {
        let text = || "\\PC{0,12}";
        let shard = (
            any::<i32>(),
            any::<i32>(),
            prop::collection::vec(text(), 0..6),
            prop::collection::vec(text(), 0..6),
        )
            .prop_map(|(shard, rows, event_ids, client_ids)| ShardWrite {
                shard,
                rows,
                event_ids,
                client_ids,
            });
        let range = (text(), any::<i32>(), any::<i64>(), any::<i64>()).prop_map(
            |(topic, partition, first_offset, last_offset)| OffsetRange {
                topic,
                partition,
                first_offset,
                last_offset,
            },
        );
        (
            (any::<u128>(), text()),
            prop::collection::vec(shard, 0..4),
            prop::collection::vec(range, 0..4),
            (any::<i32>(), any::<i64>(), any::<i64>(), any::<i64>()),
        )
            .prop_map(|((id, writer), shards, ranges, (size, first, last, at))| {
                PersistedBatch {
                    batch_id: Uuid::from_u128(id).to_string(),
                    writer,
                    shards,
                    ranges,
                    batch_size: size,
                    first_ingested_at: first,
                    last_ingested_at: last,
                    persisted_at: at,
                }
            })
    }

    /// A datum cut short is refused; one with flipped bits is read as apache-avro reads it,
    /// or refused where apache-avro reads it leniently (then what it read is not what a
    /// writer writes for it).
    fn damage_is_read_alike<T: PartialEq + std::fmt::Debug>(
        bytes: &[u8],
        cut: prop::sample::Index,
        flip: prop::sample::Index,
        bits: u8,
        fast: impl Fn(&[u8]) -> Result<T, DecodeError>,
        generic: impl Fn(&[u8]) -> Result<T, DecodeError>,
        encode: impl Fn(&T) -> Vec<u8>,
    ) -> Result<(), TestCaseError> {
        let datum = &bytes[HEADER_LEN..];
        prop_assert!(fast(&datum[..cut.index(datum.len())]).is_err());
        let mut flipped = datum.to_vec();
        let at = flip.index(flipped.len());
        flipped[at] ^= bits;
        let mut whole = bytes[..HEADER_LEN].to_vec();
        whole.extend(&flipped);
        match (fast(&flipped), generic(&whole)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (Ok(a), Err(b)) => {
                prop_assert!(false, "fast read {a:?} where apache-avro refused: {b}")
            }
            (Err(a), Ok(b)) => {
                prop_assert_ne!(encode(&b), whole, "refused a valid encoding: {}", a)
            }
        }
        Ok(())
    }

    /// Found by the property below: a flipped byte made a notice claim hundreds of millions
    /// of items. The direct reader refuses it without reserving memory; apache-avro's reader
    /// (the tests' reference) asked for 25 GB then (29.7 GB for this count) and aborted the
    /// test process.
    #[test]
    fn a_notice_claiming_millions_of_items_is_refused_by_both_readers() {
        let notices = PersistedCodec::default();
        let empty = PersistedBatch {
            batch_id: Uuid::from_u128(7).to_string(),
            writer: "w".into(),
            shards: Vec::new(),
            ranges: Vec::new(),
            batch_size: 0,
            first_ingested_at: 0,
            last_ingested_at: 0,
            persisted_at: 0,
        };
        let mut bytes = notices.encode(&empty).unwrap();
        // The header, the id (its length and 36 characters), the writer (length and "w"):
        // then the count of shard writes, 0 here.
        let count_at = HEADER_LEN + 1 + 36 + 1 + 1;
        assert_eq!(bytes[count_at], 0);
        let mut zigzag = 530_000_000u64 << 1;
        let mut count = Vec::new();
        while zigzag >= 0x80 {
            count.push((zigzag as u8 & 0x7f) | 0x80);
            zigzag >>= 7;
        }
        count.push(zigzag as u8);
        bytes.splice(count_at..=count_at, count);
        assert!(super::persisted(&bytes[HEADER_LEN..]).is_err());
        assert!(notices.decode_generic(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn reads_what_apache_avro_reads(event in events(), version in 1u32..=3) {
            let codec = EventCodec::new();
            let schema = codec.version(version).unwrap();
            let bytes = codec.encode_as(&event, schema).unwrap();
            let fast = super::event(&bytes[HEADER_LEN..], version).unwrap();
            // Read with the writer's own schema: resolution to a newer one would fill
            // `id_origin`'s default, where the direct reader leaves it to the header.
            let generic = codec.decode_as(&bytes, schema).unwrap();
            prop_assert_eq!(&fast, &generic);
        }

        #[test]
        fn damaged_data_is_refused_alike_and_never_panics(
            event in events(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bits in 1u8..=255,
        ) {
            let codec = EventCodec::new();
            let bytes = codec.encode(&event).unwrap();
            let datum = &bytes[HEADER_LEN..];
            let truncated = &datum[..cut.index(datum.len())];
            prop_assert!(super::event(truncated, 3).is_err());
            let mut flipped = datum.to_vec();
            let at = flip.index(flipped.len());
            flipped[at] ^= bits;
            let fast = super::event(&flipped, 3);
            let mut whole = bytes[..HEADER_LEN].to_vec();
            whole.extend(&flipped);
            let generic = codec.decode_as(&whole, codec.latest());
            match (fast, generic) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (Ok(a), Err(b)) => prop_assert!(false, "fast read {a:?} where apache-avro refused: {b}"),
                // apache-avro reads some damage leniently (an integer cut short at the end of
                // the datum); refusing it is right unless the bytes are what a writer writes.
                (Err(a), Ok(b)) => prop_assert_ne!(
                    codec.encode(&b).unwrap(),
                    whole,
                    "refused a valid encoding: {}",
                    a
                ),
            }
        }

        #[test]
        fn reads_ticks_as_apache_avro_does(tick in ticks()) {
            let codec = TickCodec::default();
            let bytes = codec.encode(&tick).unwrap();
            prop_assert_eq!(&codec.decode(&bytes).unwrap(), &tick);
            prop_assert_eq!(codec.decode_generic(&bytes).unwrap(), tick);
        }

        #[test]
        fn reads_persisted_notices_as_apache_avro_does(batch in batches(), simple in any::<bool>()) {
            let codec = PersistedCodec::default();
            let mut written = batch.clone();
            if simple {
                // Another spelling of the same id: both readers give it hyphenated.
                written.batch_id = written.batch_id.replace('-', "").to_uppercase();
            }
            let bytes = codec.encode(&written).unwrap();
            prop_assert_eq!(&codec.decode(&bytes).unwrap(), &batch);
            prop_assert_eq!(codec.decode_generic(&bytes).unwrap(), batch);
        }

        #[test]
        fn damaged_ticks_and_notices_are_refused_alike_and_never_panic(
            tick in ticks(),
            batch in batches(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bits in 1u8..=255,
        ) {
            let ticks = TickCodec::default();
            damage_is_read_alike(
                &ticks.encode(&tick).unwrap(), cut, flip, bits,
                super::tick,
                |b| ticks.decode_generic(b),
                |t| ticks.encode(t).unwrap(),
            )?;
            let notices = PersistedCodec::default();
            damage_is_read_alike(
                &notices.encode(&batch).unwrap(), cut, flip, bits,
                super::persisted,
                |b| notices.decode_generic(b),
                |b| notices.encode(b).unwrap(),
            )?;
        }
    }
}
