use tokio_postgres::error::SqlState;

/// What the caller should do about a failed statement: the decision is made here, where
/// the error is understood, not in a `match` far away. It fails closed: only errors that
/// certainly describe the data dead-letter it; anything else — a read-only standby after a
/// failover, a missing privilege or table, a lock timeout, an error this code has never seen —
/// is retried, so good events are never thrown away because a shard is misconfigured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// The shard is unreachable, misconfigured, restarting or busy: the same write will
    /// succeed once an operator or time fixes it.
    Retry,
    /// The data itself was refused (SQLSTATE classes 22 and 23): retrying cannot help;
    /// isolate and dead-letter it.
    DeadLetter,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("shard {shard}: {source}")]
    Postgres {
        shard: usize,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("shard {shard}: no connection: {source}")]
    Pool {
        shard: usize,
        #[source]
        source: deadpool_postgres::PoolError,
    },
    #[error("shard {shard}: invalid pool configuration: {reason}")]
    Config { shard: usize, reason: String },
    #[error("shard {shard}: migration failed: {source}")]
    Migration {
        shard: usize,
        #[source]
        source: refinery::Error,
    },
    #[error("stored row is not a valid event: {0}")]
    CorruptRow(String),
    #[error("shard {shard}: this database was stamped as shard {claims}; the shard list is out of order (two URLs swapped or one left out?). Fix the list; `eventpipe-admin shards check` shows every position")]
    Identity { shard: usize, claims: i32 },
}

impl StoreError {
    pub fn shard(&self) -> Option<usize> {
        match self {
            StoreError::Postgres { shard, .. }
            | StoreError::Pool { shard, .. }
            | StoreError::Config { shard, .. }
            | StoreError::Migration { shard, .. }
            | StoreError::Identity { shard, .. } => Some(*shard),
            StoreError::CorruptRow(_) => None,
        }
    }

    pub fn retry_hint(&self) -> RetryHint {
        match self {
            StoreError::Postgres { source, .. } => match source.code() {
                // Not the data: an insert routed to the default partition just before a day's
                // partition was attached (its partition check fails); retried, it goes there.
                Some(_) if source.as_db_error().is_some_and(is_partition_change) => {
                    RetryHint::Retry
                }
                Some(code) if is_data_error(code) => RetryHint::DeadLetter,
                // No SQLSTATE (the connection broke) or any other class.
                _ => RetryHint::Retry,
            },
            StoreError::Pool { .. }
            | StoreError::Migration { .. }
            | StoreError::Config { .. }
            | StoreError::Identity { .. }
            | StoreError::CorruptRow(_) => RetryHint::Retry,
        }
    }

    /// A unique key refused a row (SQLSTATE 23505).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Postgres { source, .. } if source.code() == Some(&SqlState::UNIQUE_VIOLATION))
    }

    /// The SQLSTATE, when the server sent one: for logs and dead-letter headers.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            StoreError::Postgres { source, .. } => source.code().map(SqlState::code),
            _ => None,
        }
    }
}

/// "new row for relation events_default violates partition constraint": a check violation
/// without a named constraint, on the default partition.
fn is_partition_change(db: &tokio_postgres::error::DbError) -> bool {
    *db.code() == SqlState::CHECK_VIOLATION
        && db.constraint().is_none()
        && db.table() == Some("events_default")
}

/// SQLSTATE classes that describe the data: 22 data exception (bad value, out of range,
/// invalid text), 23 integrity constraint violation (check, not null, foreign key).
fn is_data_error(code: &SqlState) -> bool {
    matches!(&code.code()[..2], "22" | "23")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_classes_dead_letter() {
        for data in [
            SqlState::INVALID_TEXT_REPRESENTATION,
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            SqlState::UNTRANSLATABLE_CHARACTER,
            SqlState::CHECK_VIOLATION,
            SqlState::NOT_NULL_VIOLATION,
        ] {
            assert!(is_data_error(&data), "{}", data.code());
        }
        for transient_or_operational in [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CONNECTION_FAILURE,
            SqlState::READ_ONLY_SQL_TRANSACTION, // 25006: a standby after failover
            SqlState::INSUFFICIENT_PRIVILEGE,    // 42501
            SqlState::LOCK_NOT_AVAILABLE,        // 55P03
            SqlState::UNDEFINED_TABLE,           // 42P01: a shard that skipped a migration
            SqlState::UNDEFINED_COLUMN,          // 42703
            SqlState::QUERY_CANCELED,            // 57014: statement timeout
            SqlState::from_code("ZZ999"),        // a code nobody knows
        ] {
            assert!(
                !is_data_error(&transient_or_operational),
                "{}",
                transient_or_operational.code()
            );
        }
    }
}
