use std::{collections::HashMap, pin::pin};

use bytes::{BufMut, BytesMut};
use schemas::{Event, OrderKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::{
    binary_copy::BinaryCopyInWriter,
    types::{to_sql_checked, IsNull, ToSql, Type},
};
use tracing::instrument;
use uuid::Uuid;

use crate::{
    copies::{first_copies, RowOutcome},
    timestamps::from_micros,
    Shard, StoreError,
};

/// How a batch reaches its shard. Both keep one row per event id (`copies`); see
/// docs/benchmarks.md for how they compare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsertMethod {
    /// Binary `COPY` into a per-connection staging table, then one
    /// `INSERT … SELECT … ON CONFLICT DO UPDATE … WHERE`, in one transaction.
    Copy,
    /// One `INSERT … SELECT FROM unnest($1, …) ON CONFLICT DO UPDATE … WHERE` with array parameters:
    /// one round trip; as fast as `Copy` from 5000 rows and faster below.
    #[default]
    Unnest,
}

/// Where an event sits in Kafka: kept with the row so a reader can tell which records the
/// writer has persisted, and an operator can trace a row back to its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// An event together with its Kafka position and its place in the order: the unit the writer
/// stores and the reader returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub event: Event,
    pub position: KafkaPosition,
    /// `ingested_at` raised to its partition's log time (`schemas::order`).
    pub ordered_at_micros: i64,
}

impl StoredEvent {
    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            ordered_at_micros: self.ordered_at_micros,
            event_id: self.event.event_id,
        }
    }
}

impl Shard {
    /// Stores `rows`, atomically: of the copies of one event (in the batch and in the table)
    /// the first by `CopyRank` is kept. Returns what became of each row, in order.
    #[instrument(skip_all, fields(shard = self.index, rows = rows.len(), ?method), err)]
    pub async fn insert_events(
        &self,
        rows: &[StoredEvent],
        method: InsertMethod,
    ) -> Result<Vec<RowOutcome>, StoreError> {
        let mut outcomes: Vec<Option<RowOutcome>> = vec![None; rows.len()];
        let send = first_copies(rows, &mut outcomes);
        if send.is_empty() {
            return Ok(outcomes.into_iter().flatten().collect());
        }
        let batch: Vec<&StoredEvent> = send.iter().map(|i| &rows[*i]).collect();
        let returned = match method {
            InsertMethod::Copy => self.insert_copy(&batch).await?,
            InsertMethod::Unnest => self.insert_unnest(&batch).await?,
        };
        let mut stored: HashMap<Uuid, RowOutcome> = returned
            .into_iter()
            .map(|(id, inserted)| {
                let outcome = if inserted {
                    RowOutcome::Inserted
                } else {
                    RowOutcome::Replaced
                };
                (id, outcome)
            })
            .collect();
        // Rows the statement skipped: a copy that comes first is stored, unless the id belongs
        // to another client. Only redeliveries and retries get here, so the extra query is rare.
        let skipped: Vec<&StoredEvent> = batch
            .iter()
            .filter(|row| !stored.contains_key(&row.event.event_id))
            .copied()
            .collect();
        let owners = if skipped.is_empty() {
            HashMap::new()
        } else {
            let ids: Vec<Uuid> = skipped.iter().map(|r| r.event.event_id).collect();
            self.stored_copies(&ids)
                .await?
                .into_iter()
                .map(|copy| (copy.event_id, copy.client_id))
                .collect()
        };
        for row in skipped {
            let id = row.event.event_id;
            let outcome = match owners.get(&id) {
                Some(owner) if *owner != row.event.client_id => RowOutcome::Taken,
                _ => RowOutcome::Duplicate,
            };
            stored.insert(id, outcome);
        }
        Ok(outcomes
            .into_iter()
            .zip(rows)
            .map(|(settled, row)| {
                settled.unwrap_or_else(|| {
                    stored
                        .get(&row.event.event_id)
                        .copied()
                        .unwrap_or(RowOutcome::Duplicate)
                })
            })
            .collect())
    }

    async fn insert_copy(&self, rows: &[&StoredEvent]) -> Result<Vec<(Uuid, bool)>, StoreError> {
        const TYPES: [Type; 12] = [
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::JSONB,
            Type::TEXT,
            Type::INT4,
            Type::INT8,
            Type::TEXT,
        ];
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.pg())?;
        tx.batch_execute(include_str!("sql/create_staging.sql"))
            .await
            .map_err(self.pg())?;
        let sink = tx
            .copy_in(include_str!("sql/copy_staging.sql"))
            .await
            .map_err(self.pg())?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &TYPES));
        for row in rows {
            let StoredEvent {
                event,
                position,
                ordered_at_micros,
            } = row;
            let ts = event.ts_micros.map(from_micros);
            let ingested = from_micros(event.ingested_at_micros);
            let ordered = from_micros(*ordered_at_micros);
            writer
                .as_mut()
                .write(&[
                    &event.event_id,
                    &event.client_id,
                    &event.event_type,
                    &ts,
                    &ingested,
                    &ordered,
                    &event.priority.as_str(),
                    &JsonbText(&event.payload),
                    &position.topic,
                    &position.partition,
                    &position.offset,
                    &event.sdk,
                ])
                .await
                .map_err(self.pg())?;
        }
        writer.as_mut().finish().await.map_err(self.pg())?;
        let statement = tx
            .prepare_cached(include_str!("sql/insert_from_staging.sql"))
            .await
            .map_err(self.pg())?;
        let returned = tx.query(&statement, &[]).await.map_err(self.pg())?;
        // ON COMMIT DELETE ROWS empties the staging table for the connection's next batch.
        tx.commit().await.map_err(self.pg())?;
        returned.iter().map(returned_row).collect()
    }

    async fn insert_unnest(&self, rows: &[&StoredEvent]) -> Result<Vec<(Uuid, bool)>, StoreError> {
        let n = rows.len();
        let mut ids = Vec::<Uuid>::with_capacity(n);
        let mut clients = Vec::<&str>::with_capacity(n);
        let mut types = Vec::<&str>::with_capacity(n);
        let mut device_ts = Vec::<Option<OffsetDateTime>>::with_capacity(n);
        let mut ingested = Vec::<OffsetDateTime>::with_capacity(n);
        let mut ordered = Vec::<OffsetDateTime>::with_capacity(n);
        let mut priorities = Vec::<&str>::with_capacity(n);
        let mut payloads = Vec::<&str>::with_capacity(n);
        let mut topics = Vec::<&str>::with_capacity(n);
        let mut partitions = Vec::<i32>::with_capacity(n);
        let mut offsets = Vec::<i64>::with_capacity(n);
        let mut sdks = Vec::<Option<&str>>::with_capacity(n);
        for row in rows {
            let (event, position) = (&row.event, &row.position);
            ids.push(event.event_id);
            clients.push(&event.client_id);
            types.push(&event.event_type);
            device_ts.push(event.ts_micros.map(from_micros));
            ingested.push(from_micros(event.ingested_at_micros));
            ordered.push(from_micros(row.ordered_at_micros));
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
        let returned = client
            .query(
                &statement,
                &[
                    &ids,
                    &clients,
                    &types,
                    &device_ts,
                    &ingested,
                    &ordered,
                    &priorities,
                    &payloads,
                    &topics,
                    &partitions,
                    &offsets,
                    &sdks,
                ],
            )
            .await
            .map_err(self.pg())?;
        returned.iter().map(returned_row).collect()
    }
}

fn returned_row(row: &tokio_postgres::Row) -> Result<(Uuid, bool), StoreError> {
    let corrupt = |e: tokio_postgres::Error| StoreError::CorruptRow(e.to_string());
    Ok((
        row.try_get("event_id").map_err(corrupt)?,
        row.try_get("inserted").map_err(corrupt)?,
    ))
}

/// JSON text sent as `jsonb` without parsing it here: binary format version 1 followed by
/// the text. The server validates it, and refuses what jsonb cannot hold (`\u0000`).
#[derive(Debug)]
struct JsonbText<'a>(&'a str);

impl ToSql for JsonbText<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.put_u8(1);
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}
