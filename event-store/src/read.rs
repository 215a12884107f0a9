use schemas::{Event, Priority};
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    timestamps::{from_micros, to_micros},
    KafkaPosition, Shard, StoreError, StoredEvent,
};

/// A position in a client's ingest order: `(ingested_at, event_id)`, unique and immutable,
/// so pages keyed by it neither skip nor repeat while events move into PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IngestKey {
    pub ingested_at_micros: i64,
    pub event_id: Uuid,
}

impl IngestKey {
    pub fn of(event: &Event) -> Self {
        IngestKey {
            ingested_at_micros: event.ingested_at_micros,
            event_id: event.event_id,
        }
    }
}

/// One page of a client's history.
#[derive(Debug, Clone)]
pub struct ClientQuery<'a> {
    pub client_id: &'a str,
    /// Only events strictly after this key.
    pub after: Option<IngestKey>,
    /// Only events ingested at or after this time (micros).
    pub since_micros: Option<i64>,
    /// Only events ingested before this time (micros).
    pub until_micros: Option<i64>,
    pub limit: usize,
}

/// Earliest and latest representable bounds, so one prepared statement serves every query.
const OPEN_START_MICROS: i64 = -62_135_596_800_000_000; // 0001-01-01
const OPEN_END_MICROS: i64 = 253_402_300_799_000_000; // 9999-12-31

impl Shard {
    /// The client's persisted events matching `query`, in ingest order.
    pub async fn client_events(
        &self,
        query: &ClientQuery<'_>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let after = query.after.unwrap_or(IngestKey {
            ingested_at_micros: OPEN_START_MICROS,
            event_id: Uuid::nil(),
        });
        let since = from_micros(query.since_micros.unwrap_or(OPEN_START_MICROS));
        let until = from_micros(query.until_micros.unwrap_or(OPEN_END_MICROS));
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(include_str!("sql/client_events.sql"))
            .await
            .map_err(self.pg())?;
        let rows = client
            .query(
                &statement,
                &[
                    &query.client_id,
                    &from_micros(after.ingested_at_micros),
                    &after.event_id,
                    &since,
                    &until,
                    &limit,
                ],
            )
            .await
            .map_err(self.pg())?;
        rows.iter().map(StoredEvent::try_from).collect()
    }
}

impl TryFrom<&Row> for StoredEvent {
    type Error = StoreError;

    fn try_from(row: &Row) -> Result<Self, StoreError> {
        let corrupt = |e: tokio_postgres::Error| StoreError::CorruptRow(e.to_string());
        let ts: Option<OffsetDateTime> = row.try_get("ts").map_err(corrupt)?;
        let priority: String = row.try_get("priority").map_err(corrupt)?;
        Ok(StoredEvent {
            event: Event {
                event_id: row.try_get("event_id").map_err(corrupt)?,
                client_id: row.try_get("client_id").map_err(corrupt)?,
                event_type: row.try_get("type").map_err(corrupt)?,
                ts_micros: ts.map(to_micros).transpose()?,
                ingested_at_micros: to_micros(row.try_get("ingested_at").map_err(corrupt)?)?,
                priority: priority
                    .parse::<Priority>()
                    .map_err(|e| StoreError::CorruptRow(e.to_string()))?,
                payload: row.try_get("payload").map_err(corrupt)?,
                sdk: row.try_get("sdk").map_err(corrupt)?,
            },
            position: KafkaPosition {
                topic: row.try_get("topic").map_err(corrupt)?,
                partition: row.try_get("kafka_partition").map_err(corrupt)?,
                offset: row.try_get("kafka_offset").map_err(corrupt)?,
            },
        })
    }
}
