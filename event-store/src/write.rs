use schemas::Event;
use time::OffsetDateTime;
use tracing::instrument;
use uuid::Uuid;

use crate::{timestamps::from_micros, Shard, StoreError};

/// Where an event sits in Kafka: kept with the row so a reader can tell which records the
/// writer has persisted, and an operator can trace a row back to its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// An event together with its Kafka position: the unit the writer stores and the reader
/// returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub event: Event,
    pub position: KafkaPosition,
}

impl Shard {
    /// Inserts `rows` in one statement, skipping ids already present (including duplicates
    /// inside `rows`). Returns how many rows were new.
    #[instrument(skip_all, fields(shard = self.index, rows = rows.len()), err)]
    pub async fn insert_events(&self, rows: &[StoredEvent]) -> Result<u64, StoreError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        let mut ids = Vec::<Uuid>::with_capacity(n);
        let mut clients = Vec::<&str>::with_capacity(n);
        let mut types = Vec::<&str>::with_capacity(n);
        let mut device_ts = Vec::<Option<OffsetDateTime>>::with_capacity(n);
        let mut ingested = Vec::<OffsetDateTime>::with_capacity(n);
        let mut priorities = Vec::<&str>::with_capacity(n);
        let mut payloads = Vec::<&str>::with_capacity(n);
        let mut topics = Vec::<&str>::with_capacity(n);
        let mut partitions = Vec::<i32>::with_capacity(n);
        let mut offsets = Vec::<i64>::with_capacity(n);
        let mut sdks = Vec::<Option<&str>>::with_capacity(n);
        for StoredEvent { event, position } in rows {
            ids.push(event.event_id);
            clients.push(&event.client_id);
            types.push(&event.event_type);
            device_ts.push(event.ts_micros.map(from_micros));
            ingested.push(from_micros(event.ingested_at_micros));
            priorities.push(event.priority.as_str());
            payloads.push(&event.payload);
            topics.push(&position.topic);
            partitions.push(position.partition);
            offsets.push(position.offset);
            sdks.push(event.sdk.as_deref());
        }
        let client = self.client().await?;
        let statement = client
            .prepare_cached(include_str!("sql/insert_unnest.sql"))
            .await
            .map_err(self.pg())?;
        client
            .execute(
                &statement,
                &[
                    &ids,
                    &clients,
                    &types,
                    &device_ts,
                    &ingested,
                    &priorities,
                    &payloads,
                    &topics,
                    &partitions,
                    &offsets,
                    &sdks,
                ],
            )
            .await
            .map_err(self.pg())
    }
}
