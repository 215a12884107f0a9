use apache_avro::{
    from_avro_datum, from_value, to_avro_datum, to_value, types::Value, write_avro_datum_ref,
    Schema,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{fingerprint::fingerprint, Event, IdOrigin, Priority};

/// Single-object encoding marker (Avro specification, "Single-object encoding").
const MAGIC: [u8; 2] = [0xC3, 0x01];
pub const HEADER_LEN: usize = 10;

/// The event schema versions this build can read, oldest first. The last one is written.
const VERSIONS: &[(u32, &str)] = &[
    (1, include_str!("../avro/event.v1.avsc")),
    (2, include_str!("../avro/event.v2.avsc")),
    (3, include_str!("../avro/event.v3.avsc")),
];

/// One known writer schema and its fingerprint.
#[derive(Debug)]
pub struct SchemaVersion {
    pub version: u32,
    pub schema: Schema,
    header: [u8; HEADER_LEN],
}

/// apache-avro's generic read of one datum. Under test, apache-avro's process-wide allocation
/// limit is lowered first: it checks an array's item count against that many bytes, then
/// reserves the count times the size of a value, so a damaged count in a property test's
/// datum asked for 25 GB and aborted the test process. The first decode of a process fixes
/// the limit, and every decode of this crate comes through here.
fn read_datum(
    schema: &Schema,
    datum: &mut &[u8],
    reader_schema: Option<&Schema>,
) -> apache_avro::AvroResult<Value> {
    #[cfg(test)]
    apache_avro::util::max_allocation_bytes(TEST_MAX_ALLOCATION);
    from_avro_datum(schema, datum, reader_schema)
}

/// Far above any datum of these tests, far below what aborts them.
#[cfg(test)]
const TEST_MAX_ALLOCATION: usize = 1 << 20;

impl SchemaVersion {
    pub(crate) fn parse(version: u32, json: &str) -> Self {
        // The schemas are compiled in and covered by tests, so a parse failure is a bug in
        // this crate, not an input error.
        #[allow(clippy::expect_used)]
        let schema = Schema::parse_str(json).expect("compiled-in Avro schema must parse");
        let mut header = [0u8; HEADER_LEN];
        header[..2].copy_from_slice(&MAGIC);
        header[2..].copy_from_slice(&fingerprint(&schema).to_le_bytes());
        SchemaVersion {
            version,
            schema,
            header,
        }
    }

    pub(crate) fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// `bytes` read through apache-avro's generic reader with this version's schema: what
    /// the direct readers of `binary` must match, and the reader of rare records.
    pub(crate) fn decode_generic<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<T, DecodeError> {
        let mut datum = self.strip_header(bytes)?;
        let value = read_datum(&self.schema, &mut datum, None)?;
        if !datum.is_empty() {
            return Err(DecodeError::TrailingBytes(datum.len()));
        }
        Ok(apache_avro::from_value(&value)?)
    }

    /// The datum after this version's header, or why `bytes` do not start with it.
    pub(crate) fn strip_header<'b>(&self, bytes: &'b [u8]) -> Result<&'b [u8], DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if bytes[..2] != MAGIC {
            return Err(DecodeError::NotSingleObject);
        }
        if bytes[..HEADER_LEN] != self.header {
            return Err(DecodeError::UnknownFingerprint(hex(&bytes[2..HEADER_LEN])));
        }
        Ok(&bytes[HEADER_LEN..])
    }

    /// The 8-byte CRC-64-AVRO fingerprint, little-endian as written on the wire.
    pub fn fingerprint(&self) -> [u8; 8] {
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&self.header[2..]);
        fp
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("avro encoding failed: {0}")]
    Avro(#[from] apache_avro::Error),
}

/// Why a Kafka value could not be read as an event. Every variant is a property of the
/// message, not of the reader's state: such a message is dead-lettered, never retried.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {0} bytes is shorter than the single-object header")]
    TooShort(usize),
    #[error("missing single-object marker C3 01")]
    NotSingleObject,
    #[error("unknown writer schema fingerprint {0}")]
    UnknownFingerprint(String),
    #[error("avro datum does not match its writer schema: {0}")]
    Avro(#[from] apache_avro::Error),
    #[error("invalid event_id {0:?}")]
    EventId(String),
    #[error("{0} bytes follow the datum: not written with the schema its fingerprint names")]
    TrailingBytes(usize),
    #[error("avro datum is malformed: {0}")]
    Malformed(&'static str),
}

/// Encodes events with the newest schema (or one chosen with [`EventCodec::writing`]) and
/// decodes any known version into it.
#[derive(Debug)]
pub struct EventCodec {
    versions: Vec<SchemaVersion>,
    /// Index into `versions` of the one written.
    writer: usize,
}

/// The oldest version a writer may choose: `event.v1` has no `sdk`, which it would drop.
const OLDEST_WRITABLE: u32 = 2;

#[derive(Debug, thiserror::Error)]
#[error("event schema version {0} cannot be written: this build writes {OLDEST_WRITABLE} to {newest}", newest = VERSIONS[VERSIONS.len() - 1].0)]
pub struct UnwritableVersion(pub u32);

impl Default for EventCodec {
    fn default() -> Self {
        Self::new()
    }
}

/// The Avro record as serde sees it, borrowed for writing.
#[derive(Serialize)]
struct RecordRef<'a> {
    event_id: String,
    client_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    ts: Option<i64>,
    ingested_at: i64,
    priority: Priority,
    payload: &'a str,
    sdk: Option<&'a str>,
    id_origin: IdOrigin,
}

/// The same for `event.v2`, which has no `id_origin`: apache-avro refuses a field its
/// schema does not have, skipped or not, and a `#[serde(flatten)]` of this into
/// `RecordRef` serializes as a map, which it refuses for a record (tried).
#[derive(Serialize)]
struct RecordRefV2<'a> {
    event_id: String,
    client_id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    ts: Option<i64>,
    ingested_at: i64,
    priority: Priority,
    payload: &'a str,
    sdk: Option<&'a str>,
}

/// The Avro record as serde sees it, owned for reading.
#[derive(Deserialize)]
struct Record {
    event_id: String,
    client_id: String,
    #[serde(rename = "type")]
    event_type: String,
    ts: Option<i64>,
    ingested_at: i64,
    priority: Priority,
    payload: String,
    /// Absent from v1 data read without resolution, hence the serde default.
    #[serde(default)]
    sdk: Option<String>,
    /// Absent from v1 and v2 data read without resolution. Present, it is an Avro enum,
    /// not the union serde's `Option` expects.
    #[serde(default, deserialize_with = "present")]
    id_origin: Option<IdOrigin>,
}

fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

impl EventCodec {
    pub fn new() -> Self {
        EventCodec {
            versions: VERSIONS
                .iter()
                .map(|(v, json)| SchemaVersion::parse(*v, json))
                .collect(),
            writer: VERSIONS.len() - 1,
        }
    }

    /// A codec that writes `version` instead of the newest, for producers whose readers do
    /// not all know the newest yet (a rolling upgrade: readers first). It reads every
    /// version as always.
    pub fn writing(version: u32) -> Result<Self, UnwritableVersion> {
        let codec = Self::new();
        match codec.versions.iter().position(|v| v.version == version) {
            Some(writer) if version >= OLDEST_WRITABLE => Ok(EventCodec { writer, ..codec }),
            _ => Err(UnwritableVersion(version)),
        }
    }

    /// Every schema version this codec reads, oldest first.
    pub fn versions(&self) -> &[SchemaVersion] {
        &self.versions
    }

    /// The newest version: what this build writes.
    pub fn latest(&self) -> &SchemaVersion {
        // `VERSIONS` is a non-empty constant.
        &self.versions[self.versions.len() - 1]
    }

    /// A known version by number.
    pub fn version(&self, version: u32) -> Option<&SchemaVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The version this codec writes.
    pub fn writer(&self) -> &SchemaVersion {
        &self.versions[self.writer]
    }

    /// Appends the single-object encoding of `event` to `out`.
    pub fn encode_into(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let writer = self.writer();
        out.extend_from_slice(&writer.header);
        let record = record_ref(event);
        if writer.version >= 3 {
            write_avro_datum_ref(&writer.schema, &record, out)?;
        } else {
            // `writing` allows no version before 2.
            let v2 = RecordRefV2 {
                event_id: record.event_id,
                client_id: record.client_id,
                event_type: record.event_type,
                ts: record.ts,
                ingested_at: record.ingested_at,
                priority: record.priority,
                payload: record.payload,
                sdk: record.sdk,
            };
            write_avro_datum_ref(&writer.schema, &v2, out)?;
        }
        Ok(())
    }

    /// Encodes with an older schema version, as a producer built against it would: fields
    /// that version does not have are left out. The hot path uses `encode_into`.
    pub fn encode_as(
        &self,
        event: &Event,
        version: &SchemaVersion,
    ) -> Result<Vec<u8>, EncodeError> {
        let Value::Record(fields) = to_value(record_ref(event))? else {
            unreachable!("a struct serializes to a record");
        };
        let known = |name: &str| match &version.schema {
            Schema::Record(record) => record.lookup.contains_key(name),
            _ => false,
        };
        let fields = fields.into_iter().filter(|(name, _)| known(name)).collect();
        let mut out = version.header.to_vec();
        out.extend(to_avro_datum(&version.schema, Value::Record(fields))?);
        Ok(out)
    }

    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64 + event.payload.len());
        self.encode_into(event, &mut out)?;
        Ok(out)
    }

    /// Decodes a single-object encoded event written with any known schema version.
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        // The versions this build knows are read directly (`binary`). Resolution to the
        // newest would fill `sdk`'s and `id_origin`'s defaults; read directly, a field the
        // writer did not have stays `None`, so a v2 record's origin is taken from its header.
        match self
            .versions
            .iter()
            .find(|v| v.header == bytes[..HEADER_LEN])
        {
            Some(writer) => crate::binary::event(&bytes[HEADER_LEN..], writer.version),
            None => self.decode_as(bytes, self.latest()),
        }
    }

    /// Decodes with an explicit reader schema: Avro's resolution rules map the writer's
    /// fields onto the reader's (defaults fill fields the writer did not have).
    pub fn decode_as(&self, bytes: &[u8], reader: &SchemaVersion) -> Result<Event, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(bytes.len()));
        }
        if bytes[..2] != MAGIC {
            return Err(DecodeError::NotSingleObject);
        }
        let writer = self
            .versions
            .iter()
            .find(|v| v.header == bytes[..HEADER_LEN])
            .ok_or_else(|| DecodeError::UnknownFingerprint(hex(&bytes[2..HEADER_LEN])))?;
        let mut datum = &bytes[HEADER_LEN..];
        let reader_schema = (reader.header != writer.header).then_some(&reader.schema);
        let value = read_datum(&writer.schema, &mut datum, reader_schema)?;
        if !datum.is_empty() {
            return Err(DecodeError::TrailingBytes(datum.len()));
        }
        let record: Record = from_value(&value)?;
        let event_id =
            Uuid::parse_str(&record.event_id).map_err(|_| DecodeError::EventId(record.event_id))?;
        Ok(Event {
            event_id,
            client_id: record.client_id,
            event_type: record.event_type,
            ts_micros: record.ts,
            ingested_at_micros: record.ingested_at,
            priority: record.priority,
            payload: record.payload,
            sdk: record.sdk,
            id_origin: record.id_origin,
        })
    }
}

fn record_ref(event: &Event) -> RecordRef<'_> {
    RecordRef {
        event_id: event.event_id.hyphenated().to_string(),
        client_id: &event.client_id,
        event_type: &event.event_type,
        ts: event.ts_micros,
        ingested_at: event.ingested_at_micros,
        priority: event.priority,
        payload: &event.payload,
        sdk: event.sdk.as_deref(),
        id_origin: event.id_origin.unwrap_or_default(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event_id: Uuid::now_v7(),
            client_id: "device-42".into(),
            event_type: "temperature".into(),
            ts_micros: Some(1_763_000_000_123_456),
            ingested_at_micros: 1_763_000_000_223_456,
            priority: Priority::Critical,
            payload: r#"{"celsius":21.5,"tags":["a","b"]}"#.into(),
            sdk: Some("ios/3.2.1".into()),
            id_origin: Some(IdOrigin::Gateway),
        }
    }

    #[test]
    fn round_trips_through_single_object_encoding() {
        let codec = EventCodec::new();
        let event = sample();
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(&bytes[..2], &MAGIC);
        assert_eq!(&bytes[2..10], &codec.writer().fingerprint());
        assert_eq!(codec.decode(&bytes).unwrap(), event);
    }

    #[test]
    fn round_trips_without_optional_device_time() {
        let codec = EventCodec::new();
        let event = Event {
            ts_micros: None,
            priority: Priority::Normal,
            sdk: None,
            ..sample()
        };
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(codec.decode(&bytes).unwrap(), event);
    }

    #[test]
    fn writes_the_latest_version() {
        let codec = EventCodec::new();
        let bytes = codec.encode(&sample()).unwrap();
        assert_eq!(codec.latest().version, 3);
        assert_eq!(&bytes[2..10], &codec.latest().fingerprint());
    }

    /// Avro's resolution between neighbouring versions: a newer reader fills what the writer
    /// did not have with its default, an older one skips what it does not know.
    #[test]
    fn each_version_is_read_by_its_neighbours() {
        let codec = EventCodec::new();
        let event = sample();
        let without = |sdk: bool, id_origin: bool| Event {
            sdk: if sdk { None } else { event.sdk.clone() },
            id_origin: if id_origin { None } else { event.id_origin },
            ..event.clone()
        };
        // (writer, reader, what the reader reads back)
        for (writer, reader, expected) in [
            (1, 2, without(true, true)),
            (2, 1, without(true, true)),
            (
                2,
                3,
                Event {
                    id_origin: Some(IdOrigin::Producer),
                    ..without(false, false)
                },
            ),
            (3, 2, without(false, true)),
        ] {
            let (w, r) = (
                codec.version(writer).unwrap(),
                codec.version(reader).unwrap(),
            );
            let bytes = codec.encode_as(&event, w).unwrap();
            assert_eq!(&bytes[2..10], &w.fingerprint());
            assert_eq!(
                codec.decode_as(&bytes, r).unwrap(),
                expected,
                "v{writer} by v{reader}"
            );
        }
        assert_eq!(
            codec.encode_as(&event, codec.latest()).unwrap(),
            codec.encode(&event).unwrap(),
            "fast and generic writers agree"
        );
    }

    /// What makes a consumer fall back to the `eventpipe-id-origin` header: a record written
    /// before v3 is read with no origin, not with v3's default (a producer's id), which would
    /// send every gateway-assigned id of a v2 record to the duplicate check.
    #[test]
    fn a_record_older_than_v3_leaves_the_origin_to_its_header() {
        let codec = EventCodec::new();
        let event = sample();
        for version in [1, 2] {
            let bytes = codec
                .encode_as(&event, codec.version(version).unwrap())
                .unwrap();
            let read = codec.decode(&bytes).unwrap();
            assert_eq!(read.id_origin, None, "v{version}");
            assert!(read.id_assigned(|| true), "v{version}: the header decides");
            assert!(
                !read.id_assigned(|| false),
                "v{version}: the header decides"
            );
        }
        let read = codec.decode(&codec.encode(&event).unwrap()).unwrap();
        assert_eq!(read.id_origin, Some(IdOrigin::Gateway));
        assert!(
            read.id_assigned(|| false),
            "v3: the value decides, not the header"
        );
        let own_id = Event {
            id_origin: Some(IdOrigin::Producer),
            ..event
        };
        let read = codec.decode(&codec.encode(&own_id).unwrap()).unwrap();
        assert!(
            !read.id_assigned(|| true),
            "v3: the value decides, not the header"
        );
    }

    #[test]
    fn a_codec_writing_v2_writes_what_a_v2_writer_writes() {
        let codec = EventCodec::writing(2).unwrap();
        let newest = EventCodec::new();
        let event = sample();
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(
            bytes,
            newest
                .encode_as(&event, newest.version(2).unwrap())
                .unwrap()
        );
        assert_eq!(
            codec.decode(&bytes).unwrap(),
            Event {
                id_origin: None,
                ..event.clone()
            },
            "the origin is left to the header"
        );
        assert_eq!(
            codec.decode(&newest.encode(&event).unwrap()).unwrap(),
            event
        );
    }

    #[test]
    fn only_known_versions_with_every_field_a_gateway_fills_are_written() {
        assert_eq!(EventCodec::writing(3).unwrap().writer().version, 3);
        for version in [0, 1, 4] {
            let err = EventCodec::writing(version).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "event schema version {version} cannot be written: this build writes 2 to 3"
                )
            );
        }
    }

    #[test]
    fn fingerprints_of_versions_differ() {
        let codec = EventCodec::new();
        let fingerprints: std::collections::HashSet<[u8; 8]> = codec
            .versions()
            .iter()
            .map(SchemaVersion::fingerprint)
            .collect();
        assert_eq!(fingerprints.len(), codec.versions().len());
    }

    #[test]
    fn rejects_unknown_fingerprint_with_its_value() {
        let codec = EventCodec::new();
        let mut bytes = codec.encode(&sample()).unwrap();
        bytes[2..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let err = codec.decode(&bytes).unwrap_err();
        assert!(
            matches!(&err, DecodeError::UnknownFingerprint(fp) if fp == "0102030405060708"),
            "{err}"
        );
    }

    #[test]
    fn rejects_plain_json_and_truncated_datum() {
        let codec = EventCodec::new();
        assert!(matches!(
            codec.decode(br#"{"client_id":"x","type":"y"}"#),
            Err(DecodeError::NotSingleObject)
        ));
        assert!(matches!(
            codec.decode(&[0xC3]),
            Err(DecodeError::TooShort(1))
        ));
        let bytes = codec.encode(&sample()).unwrap();
        let truncated = codec.decode(&bytes[..bytes.len() / 2]);
        assert!(
            matches!(truncated, Err(DecodeError::Malformed(_))),
            "{truncated:?}"
        );
        let mut trailing = bytes.clone();
        trailing.extend_from_slice(b"junk");
        assert!(matches!(
            codec.decode(&trailing),
            Err(DecodeError::TrailingBytes(4))
        ));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Any event the codec can be handed: any text (NUL, control characters, any script),
    /// any times, either priority.
    fn events() -> impl Strategy<Value = Event> {
        crate::event::arbitrary_events(prop_oneof![
            any::<String>(),
            "\\PC{0,30}",
            prop::collection::vec(any::<char>(), 0..300).prop_map(String::from_iter),
        ])
    }

    proptest! {
        #[test]
        fn every_event_survives_encode_then_decode_in_every_version(event in events()) {
            let codec = EventCodec::new();
            let bytes = codec.encode(&event).unwrap();
            prop_assert_eq!(&codec.decode(&bytes).unwrap(), &event);
            prop_assert_eq!(&codec.decode_as(&bytes, codec.latest()).unwrap(), &event);
            let v2 = codec.version(2).unwrap();
            let older = codec.encode_as(&event, v2).unwrap();
            let without_origin = Event { id_origin: None, ..event.clone() };
            prop_assert_eq!(&codec.decode(&older).unwrap(), &without_origin);
            prop_assert_eq!(&codec.decode_as(&older, v2).unwrap(), &without_origin);
            let v1 = codec.version(1).unwrap();
            let old = codec.encode_as(&event, v1).unwrap();
            let without_sdk = Event { sdk: None, id_origin: None, ..event };
            prop_assert_eq!(&codec.decode(&old).unwrap(), &without_sdk);
            prop_assert_eq!(&codec.decode_as(&old, v2).unwrap(), &without_sdk);
        }

        #[test]
        fn arbitrary_bytes_are_refused_and_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let codec = EventCodec::new();
            // Without a known header nothing is an event.
            prop_assume!(!codec.versions().iter().any(|v| bytes.starts_with(v.header())));
            prop_assert!(codec.decode(&bytes).is_err());
            prop_assert!(codec.decode_as(&bytes, codec.latest()).is_err());
            prop_assert!(crate::TickCodec::default().decode(&bytes).is_err());
        }

        #[test]
        fn arbitrary_datums_behind_a_known_header_never_panic(
            version in 1u32..=3,
            datum in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let codec = EventCodec::new();
            let writer = codec.version(version).unwrap();
            let mut bytes = writer.header().to_vec();
            bytes.extend(&datum);
            // Whatever is read back is what an encoder writes for it, read the same again.
            if let Ok(event) = codec.decode(&bytes) {
                let again = codec.encode_as(&event, writer).unwrap();
                prop_assert_eq!(codec.decode(&again).unwrap(), event);
            }
            let _ = codec.decode_as(&bytes, codec.latest());
        }
    }
}

/// Fuzz target of everything that reads a Kafka value of the event topics. Under `cargo test`
/// it runs a bounded number of random inputs; `cargo bolero test` runs it under libFuzzer
/// (README, "Tests").
#[cfg(test)]
mod fuzz {
    use std::time::Duration;

    use super::*;
    use crate::{contract, TickCodec};

    #[test]
    fn decode_any_value() {
        let codec = EventCodec::new();
        let ticks = TickCodec::default();
        let headers: Vec<[u8; HEADER_LEN]> = codec
            .versions()
            .iter()
            .map(|v| *v.header())
            .chain([*ticks.version().header()])
            .collect();
        bolero::check!()
            .with_type::<(u8, Vec<u8>)>()
            .with_iterations(20_000)
            .with_test_time(Duration::from_secs(3))
            .for_each(|(prefix, rest)| {
                // Mostly behind a header this build knows, or random bytes would only ever
                // test the header check.
                let mut bytes = headers
                    .get(usize::from(*prefix) % (headers.len() + 1))
                    .map(|h| h.to_vec())
                    .unwrap_or_default();
                bytes.extend(rest);
                if let Ok(event) = codec.decode(&bytes) {
                    let _ = contract::check_record(&event, Some(event.client_id.as_bytes()), None);
                    let again = codec.encode(&event).expect("a decoded event encodes");
                    let read = codec.decode(&again).expect("an encoded event decodes");
                    // Written as v3, an origin an older record left to its header reads as
                    // the field's default.
                    let origin = Some(event.id_origin.unwrap_or_default());
                    assert_eq!(
                        read,
                        Event {
                            id_origin: origin,
                            ..event
                        }
                    );
                }
                let _ = codec.decode_as(&bytes, codec.latest());
                let _ = ticks.decode(&bytes);
            });
    }
}
