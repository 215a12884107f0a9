//! What every service of the pipeline needs at its edges, in one place: layered typed
//! configuration, logging, authentication and authorization of the HTTP APIs, Prometheus exposition, health and readiness routes, RFC 9457 problem responses and the
//! shutdown signal, the security settings of every Kafka client and a consumed record's
//! headers.

pub mod auth;
pub mod config;
pub mod edge;
pub mod health;
pub mod kafka_headers;
pub mod kafka_security;
pub mod launch;
pub mod metrics;
pub mod problem;
pub mod shutdown;
pub mod telemetry;
