use tokio_postgres::error::SqlState;

/// What the caller should do about a failed statement: the decision is made here, where
/// the error is understood, not in a `match` far away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// The shard is unreachable, restarting or busy: the same write will succeed later.
    Retry,
    /// The data itself was refused: retrying cannot help; isolate and dead-letter it.
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
}

impl StoreError {
    pub fn shard(&self) -> Option<usize> {
        match self {
            StoreError::Postgres { shard, .. }
            | StoreError::Pool { shard, .. }
            | StoreError::Config { shard, .. }
            | StoreError::Migration { shard, .. } => Some(*shard),
            StoreError::CorruptRow(_) => None,
        }
    }

    pub fn retry_hint(&self) -> RetryHint {
        match self {
            StoreError::Pool { .. } | StoreError::Migration { .. } | StoreError::Config { .. } => {
                RetryHint::Retry
            }
            StoreError::CorruptRow(_) => RetryHint::DeadLetter,
            StoreError::Postgres { source, .. } => match source.code() {
                // No SQLSTATE: the connection broke or the server went away.
                None => RetryHint::Retry,
                Some(code) if is_transient(code) => RetryHint::Retry,
                Some(_) => RetryHint::DeadLetter,
            },
        }
    }
}

fn is_transient(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    matches!(
        class,
        "08" // connection exception
            | "40" // transaction rollback: serialization failure, deadlock
            | "53" // insufficient resources: disk full, too many connections
            | "57" // operator intervention: admin shutdown, cannot connect now
            | "58" // system error: I/O
            | "XX" // internal error
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_sqlstates() {
        assert!(is_transient(&SqlState::T_R_SERIALIZATION_FAILURE));
        assert!(is_transient(&SqlState::T_R_DEADLOCK_DETECTED));
        assert!(is_transient(&SqlState::ADMIN_SHUTDOWN));
        assert!(is_transient(&SqlState::CONNECTION_FAILURE));
        assert!(!is_transient(&SqlState::INVALID_TEXT_REPRESENTATION));
        assert!(!is_transient(&SqlState::CHECK_VIOLATION));
        assert!(!is_transient(&SqlState::UNTRANSLATABLE_CHARACTER));
    }
}
