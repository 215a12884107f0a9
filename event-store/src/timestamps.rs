use time::OffsetDateTime;

use crate::StoreError;

pub(crate) fn from_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn to_micros(at: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(at.unix_timestamp_nanos() / 1_000)
        .map_err(|_| StoreError::CorruptRow(format!("timestamp {at} out of range")))
}
