use std::{net::SocketAddr, time::Duration};

use event_store::{PartitionSettings, StoreSettings};
use serde::{Deserialize, Serialize};

/// Everything db-writer can be told. Environment variables use the prefix `DB_WRITER_`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    /// Batching of the normal lane: large batches, for throughput.
    pub batch: BatchSettings,
    /// Batching of the critical lane: flushed within milliseconds.
    pub critical_batch: BatchSettings,
    pub store: StoreSettings,
    /// Day partitions of `events` on every shard: made ahead, dropped past the retention.
    pub partitions: PartitionSettings,
    pub retry: RetrySettings,
    /// The normal lane yields to the critical lane (src/priority.rs).
    pub critical_first: CriticalFirstSettings,
    /// Batches written at the same time per lane, each lane committing its own in order (a
    /// critical batch never waits for a normal one). More overlap consuming with writing;
    /// memory grows by one batch each. A backlog of 600,000 drained at 84,876 events/s with
    /// 1 and 75,000-89,000 with 4 (2026-12-04, once a full lane no longer paused per batch;
    /// before, 15,073 with 1 and ~41,000 with 4). Default 4.
    pub max_in_flight_batches: usize,
    /// Address of `/metrics`, `/livez` and `/readyz` (ready: every shard answers
    /// and the group has assigned this member). Default `127.0.0.1:9101`.
    pub metrics_listen: SocketAddr,
    /// How long a shutdown may take to flush and commit before the process gives up. Default 15s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// For a lane whose `synchronous_commit` is off: the least time between two checks that a
    /// shard's WAL is flushed past the lane's writes (each a round trip on a session of its
    /// own, and a flush if the shard has not flushed meanwhile). The writes of that interval
    /// share one flush; their offsets commit after it, which `kafka.commit_interval` (50ms)
    /// spaces anyway. At 10ms the rounds cost the machine more than they saved: critical
    /// stored p99 at 2,000 events/s was lower waiting for the flush in five pairs of six
    /// (docs/benchmarks.md, 2026-12-06). Default 50ms.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// TLS, SASL and extra librdkafka properties of every Kafka client of the writer
    /// (`chassis::kafka_security`). Default plaintext.
    pub security: chassis::kafka_security::KafkaSecurity,
    /// Consumer group; every db-writer process of one deployment shares it. Default `db-writer`.
    pub group_id: String,
    /// Topic of the normal lane. Default `events`.
    pub topic: String,
    /// Topic of the critical lane. Default `events-critical`.
    pub critical_topic: String,
    /// Where messages that can never be stored go, with headers saying why. Default `events-dlq`.
    pub dead_letter_topic: String,
    /// Where a notice goes after each committed batch, and this writer's report of the
    /// partitions it owns every 2 s (the pipeline view's writers on the consumer group
    /// protocol); empty turns both off. Default `events-persisted`.
    pub persisted_topic: String,
    /// How long notices wait to be sent together (librdkafka `linger.ms`). They are
    /// advisory, and the critical lane commits a batch every few milliseconds: at 1ms each
    /// notice was a produce request of its own (notices on cost the broker, db-writer and
    /// query-service ~8 % of a core at 2,000 events/s here; docs/benchmarks.md). Default 100ms.
    #[serde(with = "humantime_serde")]
    pub persisted_linger: Duration,
    /// Least time between two offset commits of a lane: the batches stored meanwhile are
    /// committed with one request. Rows are stored before their commit either way; a later
    /// commit only means a longer replay after a crash (absorbed by the event id) and stored
    /// events held a little longer in query-service's memory. At most 1m. Default 50ms.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// The consumer group protocol: `classic` (JoinGroup/SyncGroup rounds, assignment by
    /// the members, `cooperative-sticky`) or `consumer` (KIP-848: the broker assigns, and a
    /// member that joins or leaves moves only the partitions that change owner, without a
    /// round every member must join; Kafka 4.0+ brokers). With `consumer` the session timeout
    /// and heartbeat interval are the brokers' (`group.consumer.session.timeout.ms`,
    /// `group.consumer.heartbeat.interval.ms`, or the group's own configs), and
    /// `session_timeout` / `heartbeat_interval` below are not used. In a rolling restart
    /// (docs/benchmarks.md, 2026-12-06) critical stored p99 0.59 s with the local brokers' 1 s
    /// heartbeat, against 0.34–0.47 s on `classic` with `heartbeat_interval` 300ms.
    /// Default `classic`.
    pub group_protocol: GroupProtocol,
    /// Group session timeout: how fast a crashed writer's partitions move on (`classic`).
    /// Default 10s.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// How often the writer heartbeats to the group coordinator, which is also how soon it
    /// learns that a rebalance began (a writer joined or left): each round of a cooperative
    /// rebalance waits for every member's next heartbeat, and the partitions that move are
    /// consumed by nobody meanwhile. Measured in the fleet rollout (rolling restart of two
    /// writers, docs/benchmarks.md, 2026-12-06): critical stored p99 0.34–0.47 s with 300ms
    /// (six runs) against 2.3–5.0 s with librdkafka's 3s (seven) and 1.7 s with 1s; a
    /// heartbeat costs the coordinator one small request per lane member. Below
    /// `session_timeout` (`classic`). Default 300ms.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often topic metadata is re-read, i.e. how soon partitions an operator adds are
    /// consumed. Default 30s.
    #[serde(with = "humantime_serde")]
    pub metadata_refresh: Duration,
    /// The normal lane's fetches: the broker answers once this many bytes are ready or after
    /// `fetch_wait` (librdkafka `fetch.min.bytes`). With 1, every produce request into the
    /// lane answers the writer's fetch at once: a fetch per request. 65536 with a 10ms wait
    /// saved ~300 fetches a second at 2,000 and 10,000 single events/s here, ~2-4 % of a core,
    /// and stored normal events 6-12 ms later at the median (docs/benchmarks.md, 2026-12-06).
    /// The critical lane always fetches at once. Default 1.
    pub fetch_min_bytes: u32,
    /// Longest the broker holds a normal-lane fetch for `fetch_min_bytes` (librdkafka
    /// `fetch.wait.max.ms`); a normal event may reach its batch this much later. Default 500ms
    /// (with `fetch_min_bytes` 1, only an idle lane waits).
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSettings {
    /// A batch is written once it holds this many events. Default 10000 (normal lane),
    /// 500 (critical lane).
    pub max_rows: usize,
    /// ... or this many bytes of Kafka values. Default 8 MiB.
    pub max_bytes: usize,
    /// ... or this long after its first event arrived. Default 25ms (normal lane: against
    /// 50ms, normal stored p99 at 2,000 single events/s 41-45 against 73-78 ms, critical
    /// unchanged; docs/benchmarks.md), 2ms (critical lane).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// ... or this long after its first record when it holds only ticks (nothing to store;
    /// the offsets still move, so an idle pipeline's depth stays at a few ticks per
    /// partition and its oldest unstored age under this wait). Default 200ms.
    #[serde(with = "humantime_serde")]
    pub idle_wait: Duration,
    /// Whether the lane's writes wait for the shard's WAL flush before their rows are
    /// visible (PostgreSQL's `synchronous_commit`). Off, a row is visible as soon as it is
    /// committed, and the lane commits its Kafka offsets (so query-service lets go of its
    /// copies) only once the shard's WAL is flushed past it (`flush_interval`); if the shard
    /// crashes first, the rows are written again from the batch. Either way nothing
    /// acknowledged is lost; off keeps a slow disk flush (a bulk load's WAL ahead of it, or
    /// this disk's occasional 50-300 ms stalls) out of the row's time to visible: critical
    /// stored p50 0.3-2.0 ms lower in 13 pairs of 13 at 2,000 events/s and beside a backlog,
    /// p99 lower in 8; no gain on a saturated machine (10,000/s here; docs/benchmarks.md,
    /// 2026-12-06). Default on (normal lane), off (critical lane).
    pub synchronous_commit: bool,
}

/// How the normal lane yields to the critical lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriticalFirstSettings {
    /// The normal lane yields while the critical lane took an event within this long.
    /// `0s` never yields. Default 1s.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Rows of a normal batch at most while yielding (at most `batch.max_rows`), written one
    /// batch at a time instead of `max_in_flight_batches`. Default 1000.
    pub max_rows: usize,
}

impl Default for CriticalFirstSettings {
    fn default() -> Self {
        CriticalFirstSettings {
            window: Duration::from_secs(1),
            max_rows: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// First wait after a transient database error; doubles per attempt, with jitter. Default 100ms.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Default 5s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            kafka: KafkaSettings::default(),
            batch: BatchSettings::default(),
            critical_batch: BatchSettings {
                max_rows: 500,
                max_bytes: 1024 * 1024,
                max_wait: Duration::from_millis(2),
                idle_wait: Duration::from_millis(200),
                synchronous_commit: false,
            },
            store: StoreSettings::default(),
            partitions: PartitionSettings::default(),
            retry: RetrySettings::default(),
            critical_first: CriticalFirstSettings::default(),
            max_in_flight_batches: 4,
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            shutdown_timeout: Duration::from_secs(15),
            flush_interval: Duration::from_millis(50),
        }
    }
}

/// How the writers' consumer group assigns partitions ([`KafkaSettings::group_protocol`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    Classic,
    Consumer,
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;

    /// The names the settings use.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            other => Err(format!(
                "unknown group protocol {other:?}: classic or consumer"
            )),
        }
    }
}

/// Longest `kafka.commit_interval` taken.
const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(60);

impl KafkaSettings {
    /// Settings the writer could not work with (librdkafka would take them).
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            return Err(format!(
                "kafka.heartbeat_interval ({:?}) must be above zero and below kafka.session_timeout ({:?})",
                self.heartbeat_interval, self.session_timeout
            ));
        }
        // Commits further apart only lengthen the replay after a crash.
        if self.commit_interval > MAX_COMMIT_INTERVAL {
            return Err(format!(
                "kafka.commit_interval ({:?}) must be at most {MAX_COMMIT_INTERVAL:?}",
                self.commit_interval
            ));
        }
        Ok(())
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            security: Default::default(),
            group_id: "db-writer".into(),
            group_protocol: GroupProtocol::Classic,
            topic: "events".into(),
            critical_topic: "events-critical".into(),
            dead_letter_topic: "events-dlq".into(),
            persisted_topic: "events-persisted".into(),
            persisted_linger: Duration::from_millis(100),
            commit_interval: Duration::from_millis(50),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_millis(300),
            metadata_refresh: Duration::from_secs(30),
            fetch_min_bytes: 1,
            fetch_wait: Duration::from_millis(500),
        }
    }
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_rows: 10_000,
            max_bytes: 8 * 1024 * 1024,
            max_wait: Duration::from_millis(25),
            idle_wait: Duration::from_millis(200),
            synchronous_commit: true,
        }
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_must_come_within_the_session() {
        assert!(KafkaSettings::default().check().is_ok());
        for heartbeat in [
            Duration::ZERO,
            Duration::from_secs(10),
            Duration::from_secs(20),
        ] {
            let settings = KafkaSettings {
                heartbeat_interval: heartbeat,
                ..KafkaSettings::default()
            };
            let refused = settings.check().expect_err("refused");
            assert!(refused.contains("kafka.heartbeat_interval"), "{refused}");
        }
    }

    #[test]
    fn commits_come_at_least_once_a_minute() {
        for (interval, taken) in [
            (Duration::ZERO, true),
            (MAX_COMMIT_INTERVAL, true),
            (Duration::from_secs(3600), false),
        ] {
            let settings = KafkaSettings {
                commit_interval: interval,
                ..KafkaSettings::default()
            };
            assert_eq!(settings.check().is_ok(), taken, "{interval:?}");
        }
    }

    #[test]
    fn group_protocols_parse_by_the_names_the_settings_use() {
        for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
            let name = serde_json::to_value(protocol).expect("serializes");
            let name = name.as_str().expect("a name");
            assert_eq!(name.parse::<GroupProtocol>(), Ok(protocol));
        }
        assert!("eager".parse::<GroupProtocol>().is_err());
    }
}
