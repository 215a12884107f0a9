//! A shard knows which shard it is: `migrate` stamps each database with its position in the
//! shard list, and refuses a list in which a database sits at another position than the one
//! it was stamped with (two URLs swapped, a shard left out in the middle). Adding a shard at
//! the end keeps every position and only updates the count.

use tokio_postgres::Client;

use crate::{StoreError, StoreSettings};

/// The stamp of one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub shard_index: usize,
    pub shard_count: usize,
}

/// Stamps the database behind `client` as shard `shard` of `count`, or fails if it was
/// stamped as another shard.
pub(crate) async fn stamp(client: &Client, shard: usize, count: usize) -> Result<(), StoreError> {
    let pg = |source| StoreError::Postgres { shard, source };
    let (index, total) = (as_int(shard), as_int(count));
    let stamped = client
        .query_opt(
            "INSERT INTO shard_identity (shard_index, shard_count) VALUES ($1, $2)
             ON CONFLICT (only_row) DO UPDATE
                 SET shard_count = excluded.shard_count, stamped_at = now()
                 WHERE shard_identity.shard_index = excluded.shard_index
             RETURNING shard_index",
            &[&index, &total],
        )
        .await
        .map_err(pg)?;
    if stamped.is_some() {
        return Ok(());
    }
    let claims = read(client, shard)
        .await?
        .map_or(-1, |i| as_int(i.shard_index));
    Err(StoreError::Identity { shard, claims })
}

/// The stamp of the database at `url` (reached with `settings`' TLS and password); `None`
/// before its first migrate.
pub async fn identity_of(
    settings: &StoreSettings,
    shard: usize,
    url: &str,
) -> Result<Option<Identity>, StoreError> {
    let (client, connection) = settings.connect(shard, url).await?;
    let identity = read(&client, shard).await;
    drop(client);
    let _ = connection.await;
    identity
}

async fn read(client: &Client, shard: usize) -> Result<Option<Identity>, StoreError> {
    let row = client
        .query_opt(
            "SELECT shard_index, shard_count FROM shard_identity WHERE to_regclass('shard_identity') IS NOT NULL",
            &[],
        )
        .await;
    let row = match row {
        Ok(row) => row,
        // Not migrated to this version yet: no stamp.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
        Err(source) => return Err(StoreError::Postgres { shard, source }),
    };
    Ok(row.map(|row| Identity {
        shard_index: usize::try_from(row.get::<_, i32>(0)).unwrap_or(usize::MAX),
        shard_count: usize::try_from(row.get::<_, i32>(1)).unwrap_or(usize::MAX),
    }))
}

fn as_int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
