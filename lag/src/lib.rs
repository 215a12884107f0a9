//! How far db-writer is behind, read from Kafka without joining any group: its committed
//! offsets (with the log clocks in their metadata) against the end of every partition, the
//! time of the oldest record it has not stored, its group's members, the dead-letter topic's
//! size. The pipeline view (query-service), admission control (producer-gateway) and the admin
//! tool all judge "behind" the same way, from here.
//!
//! Every call blocks on the network (bounded by a timeout): run them off the async runtime.

mod behind;
mod observe;
mod oldest;

pub use behind::{behind, lagging, Behind, LaneBehind};
pub use observe::{
    assignment, layout, members, partitions, partitions_of, topic_size, GroupView, Member,
    Observed, Slot,
};
pub use oldest::oldest_timestamps;

use rdkafka::{config::ClientConfig, consumer::BaseConsumer, error::KafkaError};

/// A client that reads `group`'s commits and peeks at records, never committing and never
/// joining the group (it only assigns partitions to itself).
/// `kafka`: the brokers and the service's `kafka.security`
/// (`chassis::kafka_security::KafkaSecurity::client_config`).
pub fn observer(kafka: &ClientConfig, group: &str) -> Result<BaseConsumer, KafkaError> {
    kafka
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A peek wants one record per partition, not the default 50 MB prefetch.
        .set("fetch.max.bytes", "1048576")
        .set("max.partition.fetch.bytes", "65536")
        .set("queued.max.messages.kbytes", "1024")
        .create()
}
