use std::{net::SocketAddr, time::Duration};

use chassis::auth::AuthSettings;
use event_store::StoreSettings;
use serde::{Deserialize, Serialize};

/// Everything query-service can be told. Environment variables use the prefix `QUERY_`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address of the HTTP API. Default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/livez` and `/readyz` when they should not share `listen`
    /// (with `auth.enabled`, the API can face callers while these stay on an address only
    /// probes and scrapers reach). Default unset: served on `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// At SIGTERM, how long open requests may take to finish (streams end at once). Default 10s.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub kafka: KafkaSettings,
    pub store: StoreSettings,
    pub cache: CacheSettings,
    pub order: OrderSettings,
    pub api: ApiSettings,
    /// Authentication and authorization of the API (docs/security.md): reads only of the
    /// client ids a caller's grant covers; `/pipeline*` for operators. Default off.
    pub auth: AuthSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// Bootstrap servers. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// TLS, SASL and extra librdkafka properties of every Kafka client of the replica
    /// (`chassis::kafka_security`). Default plaintext.
    pub security: chassis::kafka_security::KafkaSecurity,
    /// Topics whose unpersisted tail is served. Default `["events", "events-critical"]`.
    pub topics: Vec<String>,
    /// The db-writer's consumer group: its committed offsets mark what is in PostgreSQL.
    /// Default `db-writer`.
    pub writer_group: String,
    /// Prefix of this replica's own group id (a random suffix makes it unique: every
    /// replica reads every partition). Default `query-service`.
    pub group_prefix: String,
    /// How often the writer's committed offsets and the end offsets are re-read (the
    /// partition counts every second, or at this pace if slower). Keep it below the gateways'
    /// `kafka.metadata_refresh`: partitions added later must be known here before gateways
    /// write to them. Answers do not wait for it (an event stays served from memory until a
    /// reading shows it committed); stored events leave memory and `/pipeline` moves at this
    /// pace. Each reading is a few requests to the brokers: at 100ms an idle replica used
    /// 9-10 ms of CPU a second, at 300ms 4, and at 5,000 events/s ~0.9 µs less per event
    /// (docs/benchmarks.md, 2026-12-05). Default 300ms.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// The tail's fetches: the broker answers once this many bytes are ready or after
    /// `fetch_wait` (librdkafka `fetch.min.bytes`). Larger answers cost less CPU per event;
    /// events reach answers and streams up to `fetch_wait` later, and an idle replica's
    /// fetches are answered every `fetch_wait` (65536 with 2ms: 8.9 → 7.7 µs per event at
    /// 20,000 events/s, but idle the broker ~4 % → ~22 % of a core; docs/benchmarks.md).
    /// Default 1.
    pub fetch_min_bytes: u32,
    /// Longest the broker holds a tail fetch for `fetch_min_bytes` (librdkafka
    /// `fetch.wait.max.ms`). Default 500ms (with `fetch_min_bytes` 1, only an idle partition
    /// waits).
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    /// db-writer's dead-letter topic, counted in the pipeline view. Default `events-dlq`.
    pub dead_letter_topic: String,
    /// db-writer's persisted notices, shown in the pipeline view as they land; empty turns
    /// this off. Default `events-persisted`.
    pub persisted_topic: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Most in-flight events held. At this bound (or `max_in_flight_bytes`) the replica stops
    /// consuming until the writer's commits make room, and answers say `"complete": false`
    /// (they lag behind the newest events). Default 1000000.
    pub max_in_flight_events: usize,
    /// Most bytes of in-flight events held (estimated: texts plus index overhead). Default
    /// 1073741824 (1 GiB).
    pub max_in_flight_bytes: usize,
    /// Evicted events remembered (id and stored copy) so retries arriving later need no
    /// database lookup, and reads racing with evictions stay exact. Default 262144.
    pub recent_evictions: usize,
    /// Bytes of recently read persisted pages kept in memory (moka). Default 268435456
    /// (256 MiB).
    pub max_page_bytes: u64,
    /// Longest a cached page is kept, whatever happens. Default 60s.
    #[serde(with = "humantime_serde")]
    pub page_ttl: Duration,
    /// Producer-chosen ids waiting for their duplicate check; beyond it the tail waits.
    /// Default 65536.
    pub max_pending_checks: usize,
    /// Index a client's in-flight events (by client and id) only once it is read: until
    /// then they are only held in offset order, and most are stored and dropped unindexed.
    /// A read of a client not indexed waits for the tail to index what it holds of it.
    /// `false` indexes every event as it is consumed. Default true.
    pub index_on_read: bool,
    /// A client read (a page, a stream's replay) stays indexed this long after its last
    /// read; an open stream keeps it indexed. Should exceed `api.max_wait`. Default 60s.
    #[serde(with = "humantime_serde")]
    pub read_client_ttl: Duration,
    /// Most clients indexed for their reads; beyond it the longest unread go first (none
    /// read in the last 30 s). Default 100000.
    pub max_read_clients: usize,
}

/// The stable order of a client's history (docs/design.md, "Ordering").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderSettings {
    /// A partition this replica has consumed to its end, and that received no record (no
    /// event, no gateway tick) since, is taken to receive nothing ordered earlier than this
    /// long ago. Only matters when no gateway ticks it (all gateways down); must exceed the
    /// gateways' `kafka.delivery_timeout` plus the clock difference between hosts, or events
    /// may arrive behind readers (counted in `query_late_events_total`). Default 15s.
    #[serde(with = "humantime_serde")]
    pub quiet_bound: Duration,
    /// Release each client's events by the clocks of the partitions its id maps to (one per
    /// lane), not by the slowest of all partitions. Default true.
    pub per_client_release: bool,
    /// After this replica starts or sees a lane grow, per-client release waits until the
    /// frontier of all partitions has passed this long after that: meanwhile a gateway may
    /// still map a client by the old partition count. Must exceed the gateways'
    /// `kafka.metadata_refresh` plus `kafka.delivery_timeout` plus the clock difference
    /// between hosts. Default 60s.
    #[serde(with = "humantime_serde")]
    pub growth_settle: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Page size when the request names none. Default 100.
    pub default_limit: usize,
    /// Largest page size a request may ask for. Default 1000.
    pub max_limit: usize,
    /// `Retry-After` of 503 answers. Default 1s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// How long a request with `after=<token>` waits for this replica to catch up when it
    /// names no `wait_ms`. Default 2s.
    #[serde(with = "humantime_serde")]
    pub default_wait: Duration,
    /// Longest `wait_ms` a request may ask for. Default 10s.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Live events a stream may fall behind before it is disconnected. Default 8192.
    pub stream_buffer: usize,
    /// Concurrent streams per replica; more answer 503. Default 1000.
    pub max_streams: usize,
    /// Interval of SSE heartbeat comments on idle streams. Default 15s.
    #[serde(with = "humantime_serde")]
    pub stream_heartbeat: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            metrics_listen: None,
            shutdown_timeout: Duration::from_secs(10),
            kafka: KafkaSettings::default(),
            store: StoreSettings::default(),
            cache: CacheSettings::default(),
            order: OrderSettings::default(),
            api: ApiSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: "127.0.0.1:9092".into(),
            security: Default::default(),
            topics: vec!["events".into(), "events-critical".into()],
            writer_group: "db-writer".into(),
            group_prefix: "query-service".into(),
            refresh_interval: Duration::from_millis(300),
            fetch_min_bytes: 1,
            fetch_wait: Duration::from_millis(500),
            dead_letter_topic: "events-dlq".into(),
            persisted_topic: "events-persisted".into(),
        }
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_in_flight_events: 1_000_000,
            max_in_flight_bytes: 1 << 30,
            recent_evictions: 262_144,
            max_page_bytes: 256 << 20,
            page_ttl: Duration::from_secs(60),
            max_pending_checks: 65_536,
            index_on_read: true,
            read_client_ttl: Duration::from_secs(60),
            max_read_clients: 100_000,
        }
    }
}

impl Default for OrderSettings {
    fn default() -> Self {
        OrderSettings {
            quiet_bound: Duration::from_secs(15),
            per_client_release: true,
            growth_settle: Duration::from_secs(60),
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            default_limit: 100,
            max_limit: 1000,
            retry_after: Duration::from_secs(1),
            default_wait: Duration::from_secs(2),
            max_wait: Duration::from_secs(10),
            stream_buffer: 8192,
            max_streams: 1000,
            stream_heartbeat: Duration::from_secs(15),
        }
    }
}
