//! This host's wall clock in the unit of the events' times (microseconds since the Unix
//! epoch), and the delays the metrics report from it.

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000)
        .unwrap_or(i64::MAX)
}

/// Seconds from `since_micros` to `now_micros`, or 0 when `since_micros` is later: it comes
/// from another host's clock (a gateway's), which may run ahead of this one.
pub fn seconds_since(now_micros: i64, since_micros: i64) -> f64 {
    now_micros.saturating_sub(since_micros).max(0) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_ahead_of_now_is_no_delay() {
        assert_eq!(seconds_since(5_000_000, 3_500_000), 1.5);
        assert_eq!(seconds_since(3_500_000, 5_000_000), 0.0);
        assert_eq!(seconds_since(i64::MIN, i64::MAX), 0.0);
    }
}
