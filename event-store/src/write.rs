use std::{
    collections::{HashMap, HashSet},
    pin::pin,
    sync::Arc,
};

use bytes::{BufMut, BytesMut};
use deadpool_postgres::{GenericClient, Transaction};
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
    read::copies_of,
    timestamps::from_micros,
    Shard, StoreError,
};

/// How a batch's rows reach `events` once the id guard has settled the producer-chosen ids.
/// Each keeps one row per event id (`copies`); docs/benchmarks.md compares them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InsertMethod {
    /// Binary `COPY` into a per-connection staging table, then one
    /// `INSERT … SELECT … ON CONFLICT DO NOTHING`, in one transaction.
    Copy,
    /// One `INSERT … SELECT FROM unnest($1, …) ON CONFLICT DO NOTHING` with array parameters:
    /// one round trip; as fast as `Copy` from 5000 rows and faster below.
    Unnest,
    /// Binary `COPY` straight into `events` under a savepoint (`Unnest` below 128 rows, where
    /// round trips dominate). The rows are new unless a redelivery (after a restart or a
    /// rebalance) brings back a stored record; the key then refuses the COPY as a whole and
    /// the batch goes through `Unnest` from the savepoint. Spares the server a second write
    /// of every row and the conflict checks.
    #[default]
    DirectCopy,
}

impl InsertMethod {
    pub const ALL: [InsertMethod; 3] = [
        InsertMethod::Copy,
        InsertMethod::Unnest,
        InsertMethod::DirectCopy,
    ];

    /// The name in `store.insert_method`.
    pub fn as_str(self) -> &'static str {
        match self {
            InsertMethod::Copy => "copy",
            InsertMethod::Unnest => "unnest",
            InsertMethod::DirectCopy => "direct_copy",
        }
    }
}

impl std::str::FromStr for InsertMethod {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        InsertMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = InsertMethod::ALL.iter().map(|m| m.as_str()).collect();
                format!(
                    "unknown insert method {name:?}: one of {}",
                    known.join(", ")
                )
            })
    }
}

/// Where an event sits in Kafka: kept with the row so a reader can tell which records the
/// writer has persisted, and an operator can trace a row back to its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaPosition {
    /// Shared: every record of a partition names the same topic, and a consumer holds many.
    pub topic: Arc<str>,
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
    /// The gateway assigned the id (header `eventpipe-id-origin: gateway`): a fresh UUIDv7,
    /// so the record has no copies but its own redeliveries. False for a producer's own id
    /// and wherever the origin is unknown (rows read back), which is always safe.
    pub id_assigned: bool,
}

impl StoredEvent {
    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            ordered_at_micros: self.ordered_at_micros,
            event_id: self.event.event_id,
        }
    }
}

/// Below this many rows, `DirectCopy` inserts with `unnest`: the COPY's extra round trips
/// (savepoint, copy start) cost more than the conflict checks it saves (writer_bench: unnest
/// faster at 10 and 100 rows, COPY from 200; docs/benchmarks.md). The critical lane's small
/// batches stay on `unnest`.
const DIRECT_COPY_MIN_ROWS: usize = 128;

impl Shard {
    /// Stores `rows` in one transaction: of the copies of one event (in the batch and in the
    /// table) the first by `CopyRank` is kept. Returns what became of each row, in order.
    #[instrument(skip_all, fields(shard = self.index, rows = rows.len(), ?method), err)]
    pub async fn insert_events(
        &self,
        rows: &[StoredEvent],
        method: InsertMethod,
    ) -> Result<Vec<RowOutcome>, StoreError> {
        let mut outcomes: Vec<Option<RowOutcome>> = vec![None; rows.len()];
        let mut send = first_copies(rows, &mut outcomes);
        if send.is_empty() {
            return Ok(outcomes.into_iter().flatten().collect());
        }
        // Rows in key order: two writers holding the same rows (during a rebalance) then lock
        // them in the same order and wait for each other instead of deadlocking.
        send.sort_unstable_by_key(|i| rows[*i].event.event_id);
        let mut client = self.client().await?;
        let chosen: Vec<&StoredEvent> = send
            .iter()
            .map(|i| &rows[*i])
            .filter(|row| !row.id_assigned)
            .collect();
        let unnest = match method {
            InsertMethod::Unnest => true,
            InsertMethod::DirectCopy => send.len() < DIRECT_COPY_MIN_ROWS,
            InsertMethod::Copy => false,
        };
        let (inserted, guarded) = if chosen.is_empty() && unnest {
            // Gateway ids need no guard, so the batch is one statement, and a statement is its
            // own transaction: one round trip instead of three (BEGIN, INSERT, COMMIT), which
            // is most of a small critical batch's time when the machine is busy.
            let batch: Vec<&StoredEvent> = send.iter().map(|i| &rows[*i]).collect();
            (self.insert_unnest(&client, &batch).await?, HashMap::new())
        } else {
            let tx = client.transaction().await.map_err(self.pg())?;
            let guarded = if chosen.is_empty() {
                HashMap::new()
            } else {
                self.guard_ids(&tx, &chosen).await?
            };
            let batch: Vec<&StoredEvent> = send
                .iter()
                .map(|i| &rows[*i])
                .filter(|row| {
                    row.id_assigned
                        || guarded
                            .get(&row.event.event_id)
                            .is_some_and(|outcome| outcome.is_stored())
                })
                .collect();
            let inserted: HashSet<Uuid> = match method {
                InsertMethod::Copy => self.insert_copy(&tx, &batch).await?,
                InsertMethod::Unnest => self.insert_unnest(&tx, &batch).await?,
                InsertMethod::DirectCopy => self.insert_direct_copy(&tx, &batch).await?,
            };
            tx.commit().await.map_err(self.pg())?;
            (inserted, guarded)
        };
        Ok(outcomes
            .into_iter()
            .zip(rows)
            .map(|(settled, row)| {
                settled.unwrap_or_else(|| {
                    let id = row.event.event_id;
                    if !inserted.contains(&id) {
                        // A redelivery of a stored record, or a copy the guard turned down.
                        return guarded.get(&id).copied().unwrap_or(RowOutcome::Duplicate);
                    }
                    guarded.get(&id).copied().unwrap_or(RowOutcome::Inserted)
                })
            })
            .collect())
    }

    /// Settles, in `event_ids`, which copy of each producer-chosen id is the event, and drops
    /// the stored copies that an earlier one replaces. Ids the guard turned down come back as
    /// `Duplicate` or `Taken`.
    async fn guard_ids(
        &self,
        tx: &Transaction<'_>,
        rows: &[&StoredEvent],
    ) -> Result<HashMap<Uuid, RowOutcome>, StoreError> {
        let n = rows.len();
        let mut ids = Vec::<Uuid>::with_capacity(n);
        let mut clients = Vec::<&str>::with_capacity(n);
        let mut ordered = Vec::<OffsetDateTime>::with_capacity(n);
        let mut topics = Vec::<&str>::with_capacity(n);
        let mut partitions = Vec::<i32>::with_capacity(n);
        let mut offsets = Vec::<i64>::with_capacity(n);
        for row in rows {
            ids.push(row.event.event_id);
            clients.push(&row.event.client_id);
            ordered.push(from_micros(row.ordered_at_micros));
            topics.push(&row.position.topic);
            partitions.push(row.position.partition);
            offsets.push(row.position.offset);
        }
        let statement = tx
            .prepare_cached(include_str!("sql/guard_ids.sql"))
            .await
            .map_err(self.pg())?;
        let returned = tx
            .query(
                &statement,
                &[&ids, &clients, &ordered, &topics, &partitions, &offsets],
            )
            .await
            .map_err(self.pg())?;
        let mut settled = HashMap::with_capacity(n);
        let mut replaced = Vec::new();
        for row in &returned {
            let (id, inserted) = returned_row(row)?;
            if inserted {
                settled.insert(id, RowOutcome::Inserted);
            } else {
                settled.insert(id, RowOutcome::Replaced);
                replaced.push(id);
            }
        }
        if !replaced.is_empty() {
            let statement = tx
                .prepare_cached(include_str!("sql/drop_replaced.sql"))
                .await
                .map_err(self.pg())?;
            tx.execute(&statement, &[&replaced])
                .await
                .map_err(self.pg())?;
        }
        // Turned down: a copy that comes first is stored, unless the id belongs to another
        // client. Only redeliveries and retries get here, so the extra query is rare.
        let skipped: Vec<Uuid> = ids
            .iter()
            .filter(|id| !settled.contains_key(id))
            .copied()
            .collect();
        if !skipped.is_empty() {
            let owners: HashMap<Uuid, String> = copies_of(tx, self, &skipped)
                .await?
                .into_iter()
                .map(|copy| (copy.event_id, copy.client_id))
                .collect();
            for row in rows {
                let id = row.event.event_id;
                if settled.contains_key(&id) {
                    continue;
                }
                let outcome = match owners.get(&id) {
                    Some(owner) if *owner != row.event.client_id => RowOutcome::Taken,
                    _ => RowOutcome::Duplicate,
                };
                settled.insert(id, outcome);
            }
        }
        Ok(settled)
    }

    async fn insert_copy(
        &self,
        tx: &Transaction<'_>,
        rows: &[&StoredEvent],
    ) -> Result<HashSet<Uuid>, StoreError> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        tx.batch_execute(include_str!("sql/create_staging.sql"))
            .await
            .map_err(self.pg())?;
        self.copy_rows(tx, include_str!("sql/copy_staging.sql"), rows)
            .await?;
        let statement = tx
            .prepare_cached(include_str!("sql/insert_from_staging.sql"))
            .await
            .map_err(self.pg())?;
        // ON COMMIT DELETE ROWS empties the staging table for the connection's next batch.
        let returned = tx.query(&statement, &[]).await.map_err(self.pg())?;
        returned.iter().map(returned_id).collect()
    }

    async fn insert_direct_copy(
        &self,
        tx: &Transaction<'_>,
        rows: &[&StoredEvent],
    ) -> Result<HashSet<Uuid>, StoreError> {
        if rows.len() < DIRECT_COPY_MIN_ROWS {
            return self.insert_unnest(tx, rows).await;
        }
        tx.batch_execute("SAVEPOINT direct_copy")
            .await
            .map_err(self.pg())?;
        match self
            .copy_rows(tx, include_str!("sql/copy_events.sql"), rows)
            .await
        {
            // The commit that follows releases the savepoint: no round trip for it here.
            Ok(copied) if copied == rows.len() as u64 => {
                Ok(rows.iter().map(|row| row.event.event_id).collect())
            }
            Ok(copied) => Err(StoreError::CorruptRow(format!(
                "COPY stored {copied} of {} rows",
                rows.len()
            ))),
            Err(e) if e.is_unique_violation() => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT direct_copy")
                    .await
                    .map_err(self.pg())?;
                self.insert_unnest(tx, rows).await
            }
            Err(e) => Err(e),
        }
    }

    /// Binary COPY of `rows` with `statement` (the twelve columns of `events`, in its order);
    /// the number of rows the server took.
    async fn copy_rows(
        &self,
        tx: &Transaction<'_>,
        statement: &str,
        rows: &[&StoredEvent],
    ) -> Result<u64, StoreError> {
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
        let sink = tx.copy_in(statement).await.map_err(self.pg())?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &TYPES));
        for row in rows {
            let StoredEvent {
                event,
                position,
                ordered_at_micros,
                id_assigned: _,
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
                    &&*position.topic,
                    &position.partition,
                    &position.offset,
                    &event.sdk,
                ])
                .await
                .map_err(self.pg())?;
        }
        writer.as_mut().finish().await.map_err(self.pg())
    }

    /// `db`: a transaction, or a client (the statement is then its own transaction).
    async fn insert_unnest(
        &self,
        db: &impl GenericClient,
        rows: &[&StoredEvent],
    ) -> Result<HashSet<Uuid>, StoreError> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
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
        let statement = db
            .prepare_cached(include_str!("sql/insert_unnest.sql"))
            .await
            .map_err(self.pg())?;
        let returned = db
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
        returned.iter().map(returned_id).collect()
    }
}

fn returned_id(row: &tokio_postgres::Row) -> Result<Uuid, StoreError> {
    row.try_get("event_id")
        .map_err(|e| StoreError::CorruptRow(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_methods_parse_from_the_names_the_config_takes() {
        for method in InsertMethod::ALL {
            let configured = serde_json::to_value(method).expect("serializes");
            assert_eq!(configured, method.as_str(), "{method:?}");
            assert_eq!(method.as_str().parse::<InsertMethod>(), Ok(method));
        }
        let refused = "bulk".parse::<InsertMethod>().unwrap_err();
        assert!(refused.contains("copy, unnest, direct_copy"), "{refused}");
    }
}
