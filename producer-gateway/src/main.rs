use chassis::launch::{launch, Service};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = Service {
        name: "producer-gateway",
        about:
            "HTTP ingest for device events: validates, publishes to Kafka, answers after the ack",
        version: env!("CARGO_PKG_VERSION"),
        env_prefix: "GATEWAY_",
    };
    launch(service, producer_gateway::run).await
}
