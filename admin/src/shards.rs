//! `shards check`: writer and query-service list the same shards in the same order, and each
//! database is stamped as the shard its position says (event-store's identity stamp). A
//! mismatch would route clients' reads to a database that does not hold them.

use crate::{error::AdminError, migrate::redact, services::Configs};

pub async fn run(configs: &Configs) -> Result<(), AdminError> {
    let writer_store = configs.writer()?.store;
    let query_store = configs.query()?.store;
    let (writer, query) = (&writer_store.shards, &query_store.shards);
    let mut problems = Vec::new();
    if writer != query {
        problems.push(format!(
            "db-writer lists {} shard(s), query-service {}; they differ at position(s) {:?}",
            writer.len(),
            query.len(),
            (0..writer.len().max(query.len()))
                .filter(|i| writer.get(*i) != query.get(*i))
                .collect::<Vec<_>>()
        ));
    }
    for (service, store) in [
        ("db-writer", &writer_store),
        ("query-service", &query_store),
    ] {
        for (index, url) in store.shards.iter().enumerate() {
            let line = match event_store::identity_of(store, index, url).await {
                Ok(Some(identity)) if identity.shard_index == index => {
                    format!(
                        "ok: stamped shard {} of {}",
                        identity.shard_index, identity.shard_count
                    )
                }
                Ok(Some(identity)) => {
                    let problem = format!(
                        "{service} shard {index} ({}) is stamped as shard {}",
                        redact(url),
                        identity.shard_index
                    );
                    problems.push(problem.clone());
                    problem
                }
                Ok(None) => {
                    let problem = format!(
                        "{service} shard {index} ({}) has no identity stamp: run `eventpipe-admin migrate`",
                        redact(url)
                    );
                    problems.push(problem.clone());
                    problem
                }
                Err(e) => {
                    let problem = format!("{service} shard {index} ({}): {e}", redact(url));
                    problems.push(problem.clone());
                    problem
                }
            };
            println!("{service:<13} shard {index}: {} — {line}", redact(url));
        }
    }
    if problems.is_empty() {
        println!("shard lists agree ({} shards)", writer.len());
        Ok(())
    } else {
        Err(AdminError::CheckFailed(problems.join("; ")))
    }
}
