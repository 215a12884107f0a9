//! The contract between the pipeline's services: the event as it travels through Kafka,
//! its Avro schemas (`avro/*.avsc`), the single-object codec every service uses, the Kafka
//! headers, the rules an event keeps beyond its schema (`contract`), and the order of a
//! client's history.
//!
//! A Kafka value is Avro single-object encoded (`C3 01`, the writer schema's CRC-64-AVRO
//! fingerprint, the datum), so a reader resolves the writer's schema from the fingerprint
//! against the versions compiled in here, with no registry service.

mod binary;
mod codec;
pub mod contract;
mod event;
mod fingerprint;
pub mod headers;
pub mod order;
pub mod partitioning;
mod payload;
mod persisted;
mod read_token;
mod tick;
mod writer_report;

pub use codec::{
    DecodeError, EncodeError, EventCodec, SchemaVersion, UnwritableVersion, HEADER_LEN,
};
pub use event::{Event, IdOrigin, Priority, PriorityParseError};
pub use order::{LogClock, OrderKey};
pub use persisted::{OffsetRange, PersistedBatch, PersistedCodec, ShardWrite};
pub use read_token::{ReadToken, TokenError};
pub use tick::{Tick, TickCodec};
pub use writer_report::{WriterReport, WriterReportCodec};
