//! Harness for tests against the real servers started by `deploy/local/up`.
//!
//! Every test gets its own topics, consumer groups and a fresh database on every shard, so
//! tests run in parallel and never see each other's data. Endpoints come from
//! the same variables as `deploy/local`: `KAFKA_PORT` (default 9092; or a full
//! `PIPELINE_KAFKA` bootstrap list) and `PIPELINE_PG_PORTS` (default `5433 5434`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed set-up should fail the test loudly

mod kafka;
mod poll;
mod private;
mod services;

pub use kafka::{header, KafkaAdmin};
pub use poll::eventually;
pub use private::{PrivateKafka, PrivateShard};
pub use services::{Posted, Stack, WriterProcess};
