//! Ticks: records without an event that keep an idle partition's log time moving
//! (`order`). Recognised by the [`crate::headers::KIND`] header; the value is a single-object encoded
//! `Tick` (`avro/tick.v1.avsc`).

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
        assert!(crate::EventCodec::new().decode(&bytes).is_err());
        assert!(codec.decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
