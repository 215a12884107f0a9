use std::{net::SocketAddr, time::Duration};

use chassis::auth::AuthSettings;
use serde::{Deserialize, Serialize};

pub use crate::tick::ReleaseTicks;

/// Everything producer-gateway can be told. See `chassis::config` for the layering;
/// environment variables use the prefix `GATEWAY_`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address the HTTP API listens on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/livez` and `/readyz` when they should not share `listen`
    /// (with `auth.enabled`, the API can face callers while these stay on an address only
    /// probes and scrapers reach). Default unset: served on `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// At SIGTERM: `/readyz` turns 503, open requests finish, every partition gets a last
    /// tick and the producers flush, all within this. Default 10s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub kafka: KafkaSettings,
    pub limits: Limits,
    pub rate_limit: RateLimitSettings,
    pub admission: AdmissionSettings,
    /// Authentication and authorization of `POST /events` (docs/security.md). Default off.
    pub auth: AuthSettings,
}

/// Lag-aware admission (src/admission.rs): refuse a lane's events with 503 while db-writer is
/// further behind than that lane's limits. Both lanes compare the pipeline's totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSettings {
    /// Default false.
    pub enabled: bool,
    /// db-writer's consumer group, whose commits mark "stored". Default `db-writer`.
    pub writer_group: String,
    /// How often the lag is sampled from Kafka. Default 1s.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
    /// A sample older than this (Kafka's admin side unreachable) is not trusted: admission
    /// fails open and counts `gateway_admission_fail_open_total`. Must be longer than
    /// `sample_interval` (refused at start otherwise). Default 10s.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Limits of the normal lane. Defaults: `max_depth` 1000000, `max_oldest_age` 60s.
    pub normal: LaneLimits,
    /// Limits of the critical lane, each at least the normal lane's (it sheds last); refused
    /// at start otherwise. Defaults: 0 and 0s (never shed).
    pub critical: LaneLimits,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LaneLimits {
    /// Events acknowledged and not yet stored (both lanes) beyond which the lane sheds; 0 is
    /// no limit.
    pub max_depth: u64,
    /// Age of the oldest event not yet stored beyond which the lane sheds; 0s is no limit.
    #[serde(with = "humantime_serde")]
    pub max_oldest_age: Duration,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        AdmissionSettings {
            enabled: false,
            writer_group: "db-writer".into(),
            sample_interval: Duration::from_secs(1),
            stale_after: Duration::from_secs(10),
            normal: LaneLimits {
                max_depth: 1_000_000,
                max_oldest_age: Duration::from_secs(60),
            },
            critical: LaneLimits::default(),
        }
    }
}

/// Per-client token buckets. A request whose clients lack tokens answers 429.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Default false: the pipeline sheds load with 503 when Kafka is saturated anyway.
    pub enabled: bool,
    /// Sustained events per second per client. Default 100.
    pub events_per_second: f64,
    /// Bucket size: events a client may send at once after being idle. Default 1000.
    pub burst: f64,
    /// Most clients tracked; idle buckets are forgotten after a minute. Default 100000.
    pub max_clients: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            enabled: false,
            events_per_second: 100.0,
            burst: 1000.0,
            max_clients: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// TLS, SASL and extra librdkafka properties of every Kafka client of the gateway
    /// (`chassis::kafka_security`). Default plaintext.
    pub security: chassis::kafka_security::KafkaSecurity,
    /// Topic of `normal` events. Default `events`.
    pub topic: String,
    /// Topic of `critical` events. Default `events-critical`.
    pub critical_topic: String,
    /// How long the normal lane's producer may hold messages to build batches. Default 3ms:
    /// a closed-loop client waits it on every request, and here (2026-12-05) 3 ms gave 32
    /// connections 7,100–7,400 single POSTs/s at p99 7.2–8.3 ms against ~5,000 at 9.1–9.4
    /// with 5 ms, and 256 connections 30,000–32,500/s against 25,000–30,300; at 1–2 ms the
    /// smaller produce requests cost 256 connections rate and p99 (docs/benchmarks.md).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Produce requests the normal lane's producer keeps in flight per broker connection
    /// (librdkafka `max.in.flight.requests.per.connection`; 1–5). With `linger` 0 and 1,
    /// events batch while a request is out, as on the critical lane. Measured here
    /// (2026-12-06, two rounds): 32 connections 13,140 / 12,883 single POSTs/s at p99 7.7 /
    /// 8.3 ms against 7,156 / 7,122 at 8.4 / 8.1 ms with the defaults, but 256 connections
    /// 19,279 / 17,587/s at p99 57 / 55 ms against 23,533 / 23,699 at 29 / 29 ms: librdkafka
    /// sends one partition per produce request, so one request in flight takes the
    /// partitions in turn. Default 5.
    pub in_flight: u32,
    /// The same for the critical lane, which has a producer of its own. Default 0ms.
    #[serde(with = "humantime_serde")]
    pub critical_linger: Duration,
    /// Produce requests the critical lane's producer keeps in flight per broker connection
    /// (librdkafka `max.in.flight.requests.per.connection`; 1–5, the idempotent producer
    /// allows no more). With one, critical events that arrive while a request is out go
    /// together in the next: no wait when the lane is quiet (unlike a linger), fewer requests
    /// for the broker and every consumer group when it is busy. At 10,000 single events/s
    /// here (2026-12-05, nine pairs) the critical acknowledgement p99 was 26–49 ms (mean 34)
    /// against 37–57 (mean 45) with 5 and the generator sent more, stored p99 no different;
    /// at 2,000/s no different (docs/benchmarks.md). Default 1.
    pub critical_in_flight: u32,
    /// Messages each lane's local producer queue holds before publishing answers 503. Default 200000.
    pub queue_max_messages: u32,
    /// Bytes (KiB) the local producer queue holds before publishing answers 503. Default 262144 (256 MiB).
    pub queue_max_kbytes: u32,
    /// Deadline for the brokers to acknowledge an event, retries included; past it the
    /// request answers 503. Default 10s.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Compression of produced batches: none, gzip, snappy, lz4, zstd. Default `lz4`.
    pub compression: String,
    /// The event schema version written (`schemas/avro/event.v<n>.avsc`): 3 says in each
    /// value who chose its id (`id_origin`), which readers then take without parsing the
    /// record's headers; 2 writes `event.v2` and says it in the `eventpipe-id-origin` header,
    /// for readers (db-writer, query-service) built before v3, which cannot read v3. In a
    /// rolling upgrade, upgrade the readers first or keep gateways at 2 until they are.
    /// Default 3.
    pub schema_version: u32,
    /// How often topic metadata is re-read, i.e. how soon partitions an operator adds start
    /// receiving events. Default 30s.
    #[serde(with = "humantime_serde")]
    pub metadata_refresh: Duration,
    /// Where a critical acknowledgement sends release ticks (docs/design.md, "Ordering"):
    /// `client`, into the partition of each lane the event's client maps to that has no later
    /// record from this gateway yet (readers with per-client release, query-service's
    /// default, release the event about a broker round trip later); `all`, release rounds
    /// into every partition (readers that release by the slowest of all partitions).
    /// Default client.
    pub release_ticks: ReleaseTicks,
    /// With `release_ticks = "client"`: the least time between two release ticks into one
    /// partition (a critical event's release may wait up to this while critical events keep
    /// coming; each tick is a produce request that every consumer group fetches). Default 5ms.
    #[serde(with = "humantime_serde")]
    pub release_spacing: Duration,
    /// A tick right behind the critical events of each request, into each partition they go
    /// to, through the critical lane's own producer: it rides in their produce request (one
    /// request in flight, no linger), so readers see that partition's clock pass the events in
    /// the same fetch, and no release tick of its own (a produce request, and a fetch answer
    /// for every consumer group) is needed there. The normal lane's partition still gets a
    /// release tick when no later record covers it. Default true.
    pub trailing_ticks: bool,
    /// With `release_ticks = "all"`, release rounds: when the critical lane acknowledges an
    /// event, a tick goes into every partition without a later record from this gateway;
    /// while critical events keep coming, such rounds come at most this often (each round is
    /// up to a produce request per partition). Also how often the ticker wakes for periodic
    /// rounds. Default 20ms.
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
    /// Periodic rounds, while this gateway acknowledges events: a tick into every partition
    /// that received no record from it for this long, so normal events are released within
    /// about this (sooner when a release tick or round passes them). Each round is a produce
    /// request per quiet partition that every consumer group fetches (docs/benchmarks.md,
    /// "Tick cadence"). The ticker checks on its wake-ups (`tick_interval`); at least that.
    /// Default 40ms.
    #[serde(with = "humantime_serde")]
    pub normal_tick_interval: Duration,
    /// While this gateway acknowledged no event for [`crate::tick::ACTIVE_ROUNDS`] normal tick
    /// intervals, it ticks its partitions this often instead: its own events are released
    /// already, and every round of ticks costs the brokers and every consumer group (a
    /// quarter of a core of an idle broker here at 20 ms). An idle pipeline's release
    /// frontier then trails by up to this. At least `normal_tick_interval`. Default 1s.
    #[serde(with = "humantime_serde")]
    pub idle_tick_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted request body in bytes; larger ones answer 413. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Most events in one request; more answer 413. Default 10000.
    pub max_events: usize,
    /// Largest serialized payload of one event in bytes. Default 65536.
    pub max_payload_bytes: usize,
    /// `Retry-After` sent with 503 answers. Default 1s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// `POST /events` requests in progress at once; more answer 503 at once. Default 4096.
    pub max_concurrent_requests: usize,
    /// Request body bytes held at once across requests (each counts its Content-Length, or
    /// `max_body_bytes` without one); beyond it 503. Default 1073741824 (1 GiB).
    pub max_buffered_bytes: usize,
    /// Time to receive a request's body; a slower one answers 408. Default 10s.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Time to receive a request's headers; a slower client is disconnected. Default 10s.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            shutdown_timeout: Duration::from_secs(10),
            kafka: KafkaSettings::default(),
            limits: Limits::default(),
            rate_limit: RateLimitSettings::default(),
            admission: AdmissionSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            security: Default::default(),
            topic: "events".into(),
            critical_topic: "events-critical".into(),
            linger: Duration::from_millis(3),
            critical_linger: Duration::ZERO,
            in_flight: 5,
            critical_in_flight: 1,
            queue_max_messages: 200_000,
            queue_max_kbytes: 256 * 1024,
            delivery_timeout: Duration::from_secs(10),
            compression: "lz4".into(),
            schema_version: 3,
            metadata_refresh: Duration::from_secs(30),
            release_ticks: ReleaseTicks::Client,
            release_spacing: Duration::from_millis(5),
            trailing_ticks: true,
            tick_interval: Duration::from_millis(20),
            normal_tick_interval: Duration::from_millis(40),
            idle_tick_interval: Duration::from_secs(1),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_events: 10_000,
            max_payload_bytes: 64 * 1024,
            retry_after: Duration::from_secs(1),
            max_concurrent_requests: 4096,
            max_buffered_bytes: 1024 * 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
        }
    }
}
