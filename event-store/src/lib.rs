//! The PostgreSQL side of the pipeline: the shard a client lives on, the `events` table's
//! migrations, bulk idempotent writes (db-writer) and when they reach the disk
//! (`flush_watch`), ordered client reads (query-service) and the day partitions' upkeep
//! (created ahead, dropped past the retention).

mod copies;
mod error;
mod flush_watch;
mod identity;
mod link;
mod migrate;
mod partitions;
mod read;
mod routing;
mod settings;
mod shards;
mod timestamps;
mod write;

pub use copies::{CopyRank, RowOutcome};
pub use error::{RetryHint, StoreError};
pub use flush_watch::{Began, FlushWatch, Unconfirmed};
pub use identity::{identity_of, Identity};
pub use link::{ShardLink, TlsMode};
pub use partitions::{MaintenanceReport, PartitionInfo, PartitionSettings};
pub use read::{ClientQuery, Direction, StoredCopy};
pub use routing::ShardRouter;
pub use settings::StoreSettings;
pub use shards::{Shard, ShardSet};
pub use write::{InsertMethod, KafkaPosition, StoredEvent};
