//! A direct reader of the event datum (Avro binary encoding of `event.v1`/`event.v2`), so the
//! services need not build a generic Avro value tree for every message they consume. It reads
//! exactly what apache-avro reads for these schemas (a property test holds them to it).

use uuid::Uuid;

use crate::{codec::DecodeError, Event, Priority};

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

/// Reads one event datum written with `event.v1` (`with_sdk` false) or `event.v2`.
pub(crate) fn event(datum: &[u8], with_sdk: bool) -> Result<Event, DecodeError> {
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
    let payload = r.string()?.to_owned();
    let sdk = if with_sdk {
        r.optional(|r| r.string().map(str::to_owned))?
    } else {
        None
    };
    if !r.bytes.is_empty() {
        return Err(DecodeError::TrailingBytes(r.bytes.len()));
    }
    Ok(Event {
        event_id,
        client_id,
        event_type,
        ts_micros,
        ingested_at_micros,
        priority,
        payload,
        sdk,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::{EventCodec, HEADER_LEN};

    use super::*;

    fn events() -> impl Strategy<Value = Event> {
        crate::event::arbitrary_events("\\PC{0,40}")
    }

    proptest! {
        #[test]
        fn reads_what_apache_avro_reads(event in events(), version in 1u32..=2) {
            let codec = EventCodec::new();
            let schema = codec.version(version).unwrap();
            let bytes = codec.encode_as(&event, schema).unwrap();
            let fast = super::event(&bytes[HEADER_LEN..], version >= 2).unwrap();
            let generic = codec.decode_as(&bytes, codec.latest()).unwrap();
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
            prop_assert!(super::event(truncated, true).is_err());
            let mut flipped = datum.to_vec();
            let at = flip.index(flipped.len());
            flipped[at] ^= bits;
            let fast = super::event(&flipped, true);
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
    }
}
