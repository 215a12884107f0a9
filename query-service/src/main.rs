use chassis::launch::{launch, Service};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = Service {
        name: "query-service",
        about: "Serves client histories: persisted events merged with those still in flight",
        version: env!("CARGO_PKG_VERSION"),
        env_prefix: "QUERY_",
    };
    launch(service, query_service::run).await
}
