//! Ticks: records without an event that keep an idle partition's log time moving
//! (`order`). Recognised by the [`crate::headers::KIND`] header together with the value's
//! writer schema ([`TickCodec::is_tick`]); the value is a single-object encoded `Tick`
//! (`avro/tick.v1.avsc`).

use apache_avro::write_avro_datum_ref;
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, EncodeError, SchemaVersion};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// Gateway time in microseconds.
    pub at: i64,
    pub gateway: String,
}

pub struct TickCodec {
    version: SchemaVersion,
}

impl Default for TickCodec {
    fn default() -> Self {
        TickCodec {
            version: SchemaVersion::parse(1, include_str!("../avro/tick.v1.avsc")),
        }
    }
}

impl TickCodec {
    pub fn encode(&self, tick: &Tick) -> Result<Vec<u8>, EncodeError> {
        let mut out = self.version.header().to_vec();
        write_avro_datum_ref(&self.version.schema, tick, &mut out)?;
        Ok(out)
    }

    /// Whether a record is a tick: its value written with the tick schema, and `marked`,
    /// asked only then, says its headers carry `eventpipe-kind: tick`
    /// ([`crate::headers::marks_tick`]). The value comes first because the first look at a
    /// record's headers has librdkafka parse and allocate them, which events, nearly every
    /// record, then never pay.
    pub fn is_tick(&self, value: &[u8], marked: impl FnOnce() -> bool) -> bool {
        value.starts_with(self.version.header()) && marked()
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Tick, DecodeError> {
        crate::binary::tick(self.version.strip_header(bytes)?)
    }

    /// The same through apache-avro's generic reader, which the direct one must match.
    #[cfg(test)]
    pub(crate) fn decode_generic(&self, bytes: &[u8]) -> Result<Tick, DecodeError> {
        self.version.decode_generic(bytes)
    }

    pub fn version(&self) -> &SchemaVersion {
        &self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_not_an_event() {
        let codec = TickCodec::default();
        let tick = Tick {
            at: 1_763_000_000_000_001,
            gateway: "gw-1".into(),
        };
        let bytes = codec.encode(&tick).unwrap();
        assert_eq!(codec.decode(&bytes).unwrap(), tick);
        assert!(codec.is_tick(&bytes, || true));
        assert!(
            !codec.is_tick(&bytes, || false),
            "a tick is marked as one too"
        );
        assert!(crate::EventCodec::new().decode(&bytes).is_err());
        assert!(codec.decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn an_event_of_any_version_is_no_tick_and_its_headers_are_not_read() {
        let ticks = TickCodec::default();
        let events = crate::EventCodec::new();
        let event = crate::Event {
            event_id: uuid::Uuid::now_v7(),
            client_id: "c".into(),
            event_type: "t".into(),
            ts_micros: None,
            ingested_at_micros: 1_763_000_000_000_001,
            priority: crate::Priority::Normal,
            payload: "{}".into(),
            sdk: None,
            id_origin: None,
        };
        for version in events.versions() {
            let bytes = events.encode_as(&event, version).unwrap();
            let headers_read = |_| -> bool { panic!("an event's headers were read") };
            assert!(
                !ticks.is_tick(&bytes, || headers_read(())),
                "v{}",
                version.version
            );
        }
        assert!(!ticks.is_tick(&ticks.version().header()[..9], || true));
    }
}
