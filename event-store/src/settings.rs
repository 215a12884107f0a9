use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the shards are and how to talk to them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// PostgreSQL URL of each shard, in shard order. The position is the shard number that
    /// client ids hash to, so shards may be appended but never reordered.
    /// Default: the two local shards of `deploy/local`.
    pub shards: Vec<String>,
    /// Connections kept per shard. Default 8.
    pub pool_size: usize,
    /// How long to wait for a connection, from the pool or from the server. Default 5s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Run the versioned migrations against every shard at service start. Default true.
    pub migrate_on_start: bool,
    /// How db-writer bulk-inserts: `unnest` or `copy` (docs/benchmarks.md). Default `unnest`.
    pub insert_method: crate::InsertMethod,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            shards: vec![
                "postgres://postgres@127.0.0.1:5433/events".into(),
                "postgres://postgres@127.0.0.1:5434/events".into(),
            ],
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            migrate_on_start: true,
            insert_method: crate::InsertMethod::default(),
        }
    }
}
