use tracing::info;

use crate::{StoreError, StoreSettings};

refinery::embed_migrations!("migrations");

/// Serialises concurrent migrators (several services starting at once) on one shard.
const MIGRATION_LOCK: i64 = 0x6576_656e_7473; // "events"

/// Applies the versioned migrations in `migrations/` to one shard and stamps it as shard
/// `shard` of `count` (`identity`).
pub(crate) async fn migrate_shard(
    settings: &StoreSettings,
    shard: usize,
    url: &str,
) -> Result<(), StoreError> {
    let count = settings.shards.len();
    let pg = |source| StoreError::Postgres { shard, source };
    let (mut client, connection) = settings.connect(shard, url).await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    let report = migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|source| StoreError::Migration { shard, source });
    let stamped = match &report {
        Ok(_) => crate::identity::stamp(&client, shard, count).await,
        Err(_) => Ok(()),
    };
    // Dropping the client closes the session, which releases the advisory lock too.
    drop(client);
    let _ = connection.await;
    let applied = report?.applied_migrations().len();
    stamped?;
    info!(shard, applied, "migrations up to date");
    Ok(())
}

impl StoreSettings {
    /// Applies the migrations to every shard, in shard order.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        for (shard, url) in self.shards.iter().enumerate() {
            migrate_shard(self, shard, url).await?;
        }
        Ok(())
    }
}
