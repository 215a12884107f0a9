use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::{ShardRouter, StoreError, StoreSettings};

/// One PostgreSQL server holding the rows of the clients that hash to it.
#[derive(Clone)]
pub struct Shard {
    pub index: usize,
    pub(crate) pool: Pool,
}

impl Shard {
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|source| StoreError::Pool {
            shard: self.index,
            source,
        })
    }

    pub(crate) fn pg(&self) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        move |source| StoreError::Postgres {
            shard: self.index,
            source,
        }
    }
}

/// All shards with their connection pools and the router that picks among them.
#[derive(Clone)]
pub struct ShardSet {
    shards: Vec<Shard>,
    router: ShardRouter,
}

impl ShardSet {
    /// Builds the pools (connections open lazily) and, if configured, migrates every shard.
    pub async fn connect(settings: &StoreSettings) -> Result<Self, StoreError> {
        // Pools open no connection until used: made first, they refuse an empty list before
        // any migration runs.
        let set = Self::pools(settings, true)?;
        if settings.migrate_on_start {
            settings.migrate().await?;
        }
        Ok(set)
    }

    /// Pools whose sessions commit without waiting for the WAL flush (`synchronous_commit`
    /// off): a write's rows are visible at once and durable only once the shard's WAL is
    /// flushed past them (`FlushWatch`). No migration: `connect` runs them.
    pub fn connect_unflushed(settings: &StoreSettings) -> Result<Self, StoreError> {
        Self::pools(settings, false)
    }

    fn pools(settings: &StoreSettings, synchronous_commit: bool) -> Result<Self, StoreError> {
        if settings.shards.is_empty() {
            return Err(StoreError::Config {
                shard: 0,
                reason: "no shards configured".into(),
            });
        }
        let shards = settings
            .shards
            .iter()
            .enumerate()
            .map(|(index, url)| {
                build_pool(index, url, settings, synchronous_commit)
                    .map(|pool| Shard { index, pool })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let router = ShardRouter::new(shards.len());
        Ok(ShardSet { shards, router })
    }

    pub fn router(&self) -> ShardRouter {
        self.router
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn shard_for(&self, client_id: &str) -> &Shard {
        &self.shards[self.router.shard_for(client_id)]
    }
}

fn build_pool(
    index: usize,
    url: &str,
    settings: &StoreSettings,
    synchronous_commit: bool,
) -> Result<Pool, StoreError> {
    let config_err = |reason: String| StoreError::Config {
        shard: index,
        reason,
    };
    let mut link = settings.link(index, url)?;
    if !synchronous_commit {
        // After the URL's own options, so that this one wins.
        let options = match link.config.get_options() {
            Some(options) if !options.is_empty() => format!("{options} -c synchronous_commit=off"),
            _ => "-c synchronous_commit=off".to_owned(),
        };
        link.config.options(options);
    }
    let manager = Manager::from_config(
        link.config,
        link.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.connect_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()
        .map_err(|e| config_err(e.to_string()))
}

impl Shard {
    /// A round trip to the server, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(self.pg())?;
        Ok(())
    }

    /// Empties the events table. Only the benchmarks call this, on scratch databases.
    pub async fn truncate_for_benchmark(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute("TRUNCATE events, event_ids")
            .await
            .map_err(self.pg())
    }
}
