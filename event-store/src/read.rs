use deadpool_postgres::GenericClient;
use schemas::{Event, OrderKey, Priority};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    timestamps::{from_micros, to_micros},
    CopyRank, KafkaPosition, Shard, StoreError, StoredEvent,
};

/// Which way a page runs through a client's history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// One page of a client's history.
#[derive(Debug, Clone, Copy)]
pub struct ClientQuery<'a> {
    pub client_id: &'a str,
    /// Only events strictly beyond this key in `direction` (after it forward, before it
    /// backward).
    pub from: Option<OrderKey>,
    /// Only events ordered at or after this time (micros).
    pub since_micros: Option<i64>,
    /// Only events ordered before this time (micros).
    pub until_micros: Option<i64>,
    pub limit: usize,
    pub direction: Direction,
}

/// Earliest and latest representable bounds, so one prepared statement serves every query.
const OPEN_START_MICROS: i64 = -62_135_596_800_000_000; // 0001-01-01
const OPEN_END_MICROS: i64 = 253_402_300_799_000_000; // 9999-12-31

/// Where one copy of an event is stored, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCopy {
    pub event_id: Uuid,
    pub client_id: String,
    pub rank: CopyRank,
}

impl Shard {
    /// The client's persisted events matching `query`, in its direction.
    pub async fn client_events(
        &self,
        query: &ClientQuery<'_>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (sql, open) = match query.direction {
            Direction::Forward => (
                include_str!("sql/client_events.sql"),
                OrderKey::floor(OPEN_START_MICROS),
            ),
            Direction::Backward => (
                include_str!("sql/client_events_desc.sql"),
                OrderKey {
                    ordered_at_micros: OPEN_END_MICROS,
                    event_id: Uuid::max(),
                },
            ),
        };
        let from = query.from.unwrap_or(open);
        let from_at = from
            .ordered_at_micros
            .clamp(OPEN_START_MICROS, OPEN_END_MICROS);
        let since = from_micros(query.since_micros.unwrap_or(OPEN_START_MICROS));
        let until = from_micros(query.until_micros.unwrap_or(OPEN_END_MICROS));
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(self.pg())?;
        let rows = client
            .query(
                &statement,
                &[
                    &query.client_id,
                    &from_micros(from_at),
                    &from.event_id,
                    &since,
                    &until,
                    &limit,
                ],
            )
            .await
            .map_err(self.pg())?;
        let columns = EventColumns::of(statement.columns())?;
        rows.iter().map(|row| columns.event(row)).collect()
    }

    /// Where the stored copy of each of `ids` is, and whose it is: producer-chosen ids
    /// only (`event_ids`); a gateway-assigned id has no copies to look for.
    pub async fn stored_copies(&self, ids: &[Uuid]) -> Result<Vec<StoredCopy>, StoreError> {
        let client = self.client().await?;
        copies_of(&client, self, ids).await
    }
}

/// [`Shard::stored_copies`] on a connection of the shard's, or in a transaction.
pub(crate) async fn copies_of(
    client: &impl GenericClient,
    shard: &Shard,
    ids: &[Uuid],
) -> Result<Vec<StoredCopy>, StoreError> {
    let statement = client
        .prepare_cached(include_str!("sql/stored_copies.sql"))
        .await
        .map_err(shard.pg())?;
    let rows = client
        .query(&statement, &[&ids])
        .await
        .map_err(shard.pg())?;
    rows.iter()
        .map(|row| {
            let corrupt = |e: tokio_postgres::Error| StoreError::CorruptRow(e.to_string());
            Ok(StoredCopy {
                event_id: row.try_get("event_id").map_err(corrupt)?,
                client_id: row.try_get("client_id").map_err(corrupt)?,
                rank: CopyRank {
                    ordered_at_micros: to_micros(row.try_get("ordered_at").map_err(corrupt)?)?,
                    topic: row.try_get::<_, &str>("topic").map_err(corrupt)?.into(),
                    partition: row.try_get("kafka_partition").map_err(corrupt)?,
                    offset: row.try_get("kafka_offset").map_err(corrupt)?,
                },
            })
        })
        .collect()
}

/// Where each of a page's columns is in the statement's rows: looked up by name once per
/// statement, not once per row and column (that search took ~14 % of a shard read's CPU).
struct EventColumns {
    event_id: usize,
    client_id: usize,
    event_type: usize,
    ts: usize,
    ingested_at: usize,
    ordered_at: usize,
    priority: usize,
    payload: usize,
    topic: usize,
    partition: usize,
    offset: usize,
    sdk: usize,
}

impl EventColumns {
    fn of(columns: &[tokio_postgres::Column]) -> Result<Self, StoreError> {
        let at = |name: &str| {
            columns
                .iter()
                .position(|c| c.name() == name)
                .ok_or_else(|| StoreError::CorruptRow(format!("no column {name} in the page")))
        };
        Ok(EventColumns {
            event_id: at("event_id")?,
            client_id: at("client_id")?,
            event_type: at("type")?,
            ts: at("ts")?,
            ingested_at: at("ingested_at")?,
            ordered_at: at("ordered_at")?,
            priority: at("priority")?,
            payload: at("payload")?,
            topic: at("topic")?,
            partition: at("kafka_partition")?,
            offset: at("kafka_offset")?,
            sdk: at("sdk")?,
        })
    }

    fn event(&self, row: &Row) -> Result<StoredEvent, StoreError> {
        let corrupt = |e: tokio_postgres::Error| StoreError::CorruptRow(e.to_string());
        let ts: Option<OffsetDateTime> = row.try_get(self.ts).map_err(corrupt)?;
        let priority: &str = row.try_get(self.priority).map_err(corrupt)?;
        Ok(StoredEvent {
            event: Event {
                event_id: row.try_get(self.event_id).map_err(corrupt)?,
                client_id: row.try_get(self.client_id).map_err(corrupt)?,
                event_type: row.try_get(self.event_type).map_err(corrupt)?,
                ts_micros: ts.map(to_micros).transpose()?,
                ingested_at_micros: to_micros(row.try_get(self.ingested_at).map_err(corrupt)?)?,
                priority: priority
                    .parse::<Priority>()
                    .map_err(|e| StoreError::CorruptRow(e.to_string()))?,
                payload: row.try_get(self.payload).map_err(corrupt)?,
                sdk: row.try_get(self.sdk).map_err(corrupt)?,
                id_origin: None,
            },
            position: KafkaPosition {
                topic: row.try_get::<_, &str>(self.topic).map_err(corrupt)?.into(),
                partition: row.try_get(self.partition).map_err(corrupt)?,
                offset: row.try_get(self.offset).map_err(corrupt)?,
            },
            ordered_at_micros: to_micros(row.try_get(self.ordered_at).map_err(corrupt)?)?,
            id_assigned: false,
        })
    }
}
