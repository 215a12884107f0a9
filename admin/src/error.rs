use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A check ran and found a problem (exit code 1).
    #[error("{0}")]
    CheckFailed(String),
    #[error("configuration: {0}")]
    Config(#[from] chassis::config::ConfigError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    KafkaSecurity(#[from] chassis::kafka_security::KafkaSecurityError),
    #[error("{0}")]
    Store(#[from] event_store::StoreError),
    #[error("query-service at {url}: {reason}")]
    Query { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
}
