use tracing::{info, warn};

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
    let runner = migrations::runner();
    let known = runner
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0);
    let report = match newest_applied(&client).await.map_err(pg)? {
        // A later release migrated this shard (a rolling upgrade under way, or this instance
        // rolled back). Its migrations keep the releases before it working, so this one runs
        // on the schema as it is, as Flyway does with "future" migrations. refinery would
        // refuse to start on a migration it does not know.
        Some(applied) if applied > known => {
            warn!(
                shard,
                applied, known, "the shard's schema is newer than this build: not migrating"
            );
            Ok(0)
        }
        _ => runner
            .run_async(&mut client)
            .await
            .map(|report| report.applied_migrations().len())
            .map_err(|source| StoreError::Migration { shard, source }),
    };
    let stamped = match &report {
        Ok(_) => crate::identity::stamp(&client, shard, count).await,
        Err(_) => Ok(()),
    };
    // Dropping the client closes the session, which releases the advisory lock too.
    drop(client);
    let _ = connection.await;
    let applied = report?;
    stamped?;
    info!(shard, applied, "migrations up to date");
    Ok(())
}

/// The newest migration applied to the shard; `None` before the first.
async fn newest_applied(
    client: &tokio_postgres::Client,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let history = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?;
    if !history.try_get::<_, bool>(0)? {
        return Ok(None);
    }
    client
        .query_one(
            "SELECT max(version)::bigint FROM refinery_schema_history",
            &[],
        )
        .await?
        .try_get(0)
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
