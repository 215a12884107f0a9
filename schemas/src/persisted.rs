//! The persisted notification: db-writer's word, after a commit, that a batch is stored.
//! The read side uses it to drop in-flight events and stale cached pages early; dashboards
//! use it for write rates. Single-object encoded like events.

use apache_avro::write_avro_datum_ref;
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, EncodeError, SchemaVersion};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedBatch {
    pub batch_id: String,
    pub writer: String,
    pub shards: Vec<ShardWrite>,
    pub ranges: Vec<OffsetRange>,
    pub batch_size: i32,
    pub first_ingested_at: i64,
    pub last_ingested_at: i64,
    pub persisted_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardWrite {
    pub shard: i32,
    pub rows: i32,
    pub event_ids: Vec<String>,
    pub client_ids: Vec<String>,
}

/// Offsets `first_offset..=last_offset` of one partition, all persisted or dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

pub struct PersistedCodec {
    version: SchemaVersion,
}

impl Default for PersistedCodec {
    fn default() -> Self {
        PersistedCodec {
            version: SchemaVersion::parse(1, include_str!("../avro/persisted.v1.avsc")),
        }
    }
}

impl PersistedCodec {
    pub fn encode(&self, batch: &PersistedBatch) -> Result<Vec<u8>, EncodeError> {
        let mut out = self.version.header().to_vec();
        write_avro_datum_ref(&self.version.schema, batch, &mut out)?;
        Ok(out)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<PersistedBatch, DecodeError> {
        crate::binary::persisted(self.version.strip_header(bytes)?)
    }

    /// The same through apache-avro's generic reader, which the direct one must match.
    #[cfg(test)]
    pub(crate) fn decode_generic(&self, bytes: &[u8]) -> Result<PersistedBatch, DecodeError> {
        self.version.decode_generic(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let batch = PersistedBatch {
            batch_id: "0190a5e4-7b6c-7cde-8f00-123456789abc".into(),
            writer: "db-writer-1".into(),
            shards: vec![ShardWrite {
                shard: 1,
                rows: 2,
                event_ids: vec!["a".into(), "b".into()],
                client_ids: vec!["c".into()],
            }],
            ranges: vec![OffsetRange {
                topic: "events".into(),
                partition: 3,
                first_offset: 10,
                last_offset: 11,
            }],
            batch_size: 2,
            first_ingested_at: 1,
            last_ingested_at: 2,
            persisted_at: 3,
        };
        let codec = PersistedCodec::default();
        let bytes = codec.encode(&batch).unwrap();
        assert_eq!(codec.decode(&bytes).unwrap(), batch);
        assert!(
            crate::EventCodec::new().decode(&bytes).is_err(),
            "not an event"
        );
    }
}
