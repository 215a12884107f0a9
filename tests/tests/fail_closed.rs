//! db-writer fails closed: a shard that refuses writes for any reason but the data itself (a
//! read-only standby after a failover, a table missing a column because a migration was
//! skipped) pauses the writer, commits nothing past the events, and dead-letters nothing;
//! once the shard is fixed every event is stored once.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::time::Duration;

use pipeline_tests::{eventually, Stack};
use rdkafka::Message;
use serde_json::{json, Value};
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(60);

async fn paused(stack: &Stack, metrics: &str) -> f64 {
    let mut paused = 0.0;
    for shard in 0..stack.shard_urls.len() {
        paused += stack
            .metric(
                metrics,
                &format!("db_writer_shard_paused{{shard=\"{shard}\"}}"),
            )
            .await;
    }
    paused
}

/// Posts events, holds until the writer reports a paused shard, then checks that nothing was
/// committed past the events and nothing dead-lettered. Returns the events' ids.
async fn pauses(stack: &Stack, gateway: &str, metrics: &str, tag: &str) -> Vec<Uuid> {
    let events: Vec<Value> = (0..20)
        .map(|n| json!({"client_id": format!("{tag}-{}", n % 5), "type": "t", "payload": {"n": n}}))
        .collect();
    let posted = stack.post_events(gateway, &events).await;
    eventually(DRAIN, "the writer to pause on the shard", || async {
        (paused(stack, metrics).await >= 1.0).then_some(())
    })
    .await;
    // Nothing committed past any of these events, nothing dead-lettered.
    let committed = stack
        .kafka
        .committed_offsets(&stack.writer_group, &stack.topic);
    let mut first: std::collections::BTreeMap<i32, i64> = Default::default();
    for message in stack
        .kafka
        .read_events(&stack.topic, Duration::from_secs(20))
    {
        let id: Uuid = schemas::EventCodec::new()
            .decode(message.payload().unwrap())
            .unwrap()
            .event_id;
        if posted.event_ids.contains(&id) {
            let slot = first.entry(message.partition()).or_insert(message.offset());
            *slot = (*slot).min(message.offset());
        }
    }
    for (partition, offset) in &first {
        assert!(
            committed.get(partition).copied().unwrap_or(0) <= *offset,
            "{tag}: partition {partition} committed past an unstored event"
        );
    }
    assert!(
        stack
            .kafka
            .read_all(&stack.dead_letter_topic, Duration::from_secs(20))
            .is_empty(),
        "{tag}: good events dead-lettered"
    );
    posted.event_ids
}

/// After the shard is fixed: every event stored once, the writer no longer paused, nothing
/// dead-lettered.
async fn recovers(stack: &Stack, metrics: &str, tag: &str, ids: &[Uuid]) {
    stack.drained(DRAIN).await;
    let counts = stack.row_counts().await;
    for id in ids {
        assert_eq!(counts.get(id), Some(&1), "{tag}: {id} stored once");
    }
    eventually(DRAIN, "the writer to resume", || async {
        (paused(stack, metrics).await == 0.0).then_some(())
    })
    .await;
    assert!(stack
        .kafka
        .read_all(&stack.dead_letter_topic, Duration::from_secs(20))
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_or_unmigrated_shard_pauses_the_writer_and_loses_nothing() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let mut settings = stack.writer_settings();
    settings.retry.max_backoff = Duration::from_millis(200);
    let (_writer, metrics) = stack.start_writer_with(settings).await;
    let database = stack.database();
    let end_sessions = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    );

    // A standby after a failover: every session read-only (SQLSTATE 25006).
    stack
        .on_shard_servers(&format!(
            "ALTER DATABASE {database} SET default_transaction_read_only = on; {end_sessions}"
        ))
        .await;
    let ids = pauses(&stack, &gateway, &metrics, "read-only").await;
    stack
        .on_shard_servers(&format!(
            "ALTER DATABASE {database} RESET default_transaction_read_only; {end_sessions}"
        ))
        .await;
    recovers(&stack, &metrics, "read-only", &ids).await;

    // A shard that missed a migration: a column the insert names is absent (42703).
    stack
        .on_shards("ALTER TABLE events RENAME COLUMN sdk TO sdk_missing")
        .await;
    let ids = pauses(&stack, &gateway, &metrics, "unmigrated").await;
    stack
        .on_shards("ALTER TABLE events RENAME COLUMN sdk_missing TO sdk")
        .await;
    recovers(&stack, &metrics, "unmigrated", &ids).await;
}
