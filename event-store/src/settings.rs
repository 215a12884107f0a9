use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

/// Where the shards are and how to talk to them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// PostgreSQL URL of each shard, in shard order. The position is the shard number that
    /// client ids hash to, so shards may be appended but never reordered. `sslmode` (and
    /// `sslrootcert`) as in libpq: `disable`, `prefer` (the default), `require`, `verify-ca`,
    /// `verify-full`. Default: the two local shards of `deploy/local`.
    pub shards: Vec<String>,
    /// PEM file of the CA(s) that sign the shards' server certificates, for
    /// `sslmode=verify-ca|verify-full` (and `require`, which then checks the chain too, as
    /// libpq does). A URL's own `sslrootcert` wins. Default none: the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<PathBuf>,
    /// File holding the shards' password (a mounted Kubernetes secret, say), read at start;
    /// it overrides any password in the URLs. One trailing newline is ignored.
    /// Default none: the URLs' own password, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Connections kept per shard. Default 8.
    pub pool_size: usize,
    /// How long to wait for a connection, from the pool or from the server. Default 5s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Run the versioned migrations against every shard at service start. Default true.
    pub migrate_on_start: bool,
    /// How db-writer bulk-inserts: `direct_copy`, `unnest` or `copy` (docs/benchmarks.md).
    /// Default `direct_copy`.
    pub insert_method: crate::InsertMethod,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            shards: vec![
                "postgres://postgres@127.0.0.1:5433/events".into(),
                "postgres://postgres@127.0.0.1:5434/events".into(),
            ],
            ssl_root_cert: None,
            password_file: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            migrate_on_start: true,
            insert_method: crate::InsertMethod::default(),
        }
    }
}
