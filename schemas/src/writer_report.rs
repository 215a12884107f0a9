//! A writer's report of the partitions it owns, published beside the persisted notices. The
//! group's own description (DescribeGroups) covers only the classic protocol; on KIP-848's
//! consumer protocol this is how the pipeline view knows its writers. Rare (one per writer
//! every few seconds), so it goes through apache-avro's generic reader.

use apache_avro::write_avro_datum_ref;
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, EncodeError, SchemaVersion};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterReport {
    pub writer: String,
    pub host: String,
    pub group: String,
    /// `topic/partition`.
    pub partitions: Vec<String>,
    /// Milliseconds to the next report; 0 when the writer is leaving.
    pub every_ms: i32,
    pub reported_at: i64,
}

pub struct WriterReportCodec {
    version: SchemaVersion,
}

impl Default for WriterReportCodec {
    fn default() -> Self {
        WriterReportCodec {
            version: SchemaVersion::parse(1, include_str!("../avro/writer.v1.avsc")),
        }
    }
}

impl WriterReportCodec {
    pub fn encode(&self, report: &WriterReport) -> Result<Vec<u8>, EncodeError> {
        let mut out = self.version.header().to_vec();
        write_avro_datum_ref(&self.version.schema, report, &mut out)?;
        Ok(out)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<WriterReport, DecodeError> {
        self.version.decode_generic(bytes)
    }

    /// Whether `bytes` were written with this schema (its single-object header).
    pub fn is_report(&self, bytes: &[u8]) -> bool {
        self.version.strip_header(bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PersistedBatch, PersistedCodec};

    #[test]
    fn round_trips_and_is_told_apart_from_a_persisted_notice() {
        let report = WriterReport {
            writer: "db-writer-1".into(),
            host: "writer-0".into(),
            group: "db-writer".into(),
            partitions: vec!["events/0".into(), "events-critical/1".into()],
            every_ms: 2000,
            reported_at: 1_700_000_000_000_000,
        };
        let codec = WriterReportCodec::default();
        let bytes = codec.encode(&report).unwrap();
        assert!(codec.is_report(&bytes));
        assert_eq!(codec.decode(&bytes).unwrap(), report);
        assert!(PersistedCodec::default().decode(&bytes).is_err());

        let notice = PersistedCodec::default()
            .encode(&PersistedBatch {
                batch_id: "b".into(),
                writer: "db-writer-1".into(),
                shards: vec![],
                ranges: vec![],
                batch_size: 0,
                first_ingested_at: 0,
                last_ingested_at: 0,
                persisted_at: 0,
            })
            .unwrap();
        assert!(!codec.is_report(&notice));
        assert!(codec.decode(&notice).is_err());
        assert!(codec.decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
