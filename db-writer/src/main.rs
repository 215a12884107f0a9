use chassis::launch::{launch, Service};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let service = Service {
        name: "db-writer",
        about: "Persists events from Kafka into the PostgreSQL shards, committing offsets after the rows",
        version: env!("CARGO_PKG_VERSION"),
        env_prefix: "DB_WRITER_",
    };
    launch(service, db_writer::run).await
}
