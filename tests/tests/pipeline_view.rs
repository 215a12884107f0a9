//! The pipeline view an operator reads (`GET /pipeline` on query-service and the metrics the
//! services export): how far behind storing is, and where.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use pipeline_tests::{eventually, eventually_seen, PrivateShard, Stack};
use schemas::{PersistedBatch, PersistedCodec, ShardWrite};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

async fn view(stack: &Stack, query: &str) -> Value {
    let answer = stack
        .http
        .get(format!("{query}/pipeline"))
        .send()
        .await
        .expect("query-service answers");
    if answer.status() != 200 {
        return Value::Null;
    }
    answer.json().await.expect("JSON")
}

/// Polls the view until `check` accepts it; a timeout shows the last view read.
async fn view_until(
    stack: &Stack,
    query: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually_seen(DEADLINE, what, || async {
        let v = view(stack, query).await;
        if !v.is_null() && check(&v) {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await
}

fn events(n: usize, tag: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut e =
                json!({"client_id": format!("{tag}{}", i % 17), "type": "t", "payload": {"i": i}});
            if i % 5 == 0 {
                e["priority"] = "critical".into();
            }
            e
        })
        .collect()
}

/// Rows stored per the view's shards (a sample taken once a second).
fn shard_rows(view: &Value) -> i64 {
    view["shards"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["rows_stored"].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn rows_in_batches(view: &Value) -> i64 {
    view["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .flat_map(|b| b["shards"].as_array().expect("shards").clone())
        .map(|pair| pair[1].as_i64().expect("rows"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_view_shows_depth_age_lanes_shards_writers_and_batches() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let writer = stack.start_writer().await;

    // Stored: the batches that landed name every row, per shard; nothing is behind.
    let first = events(200, "v");
    stack.post_events(&gateway, &first).await;
    let caught_up = view_until(&stack, &query, "the first events stored", |v| {
        rows_in_batches(v) == 200
            && v["writers"].as_array().is_some_and(|w| w.len() == 1)
            // The writer's two members (one per lane) join one after the other.
            && v["writers"][0]["partitions"].as_array().map(Vec::len)
                == v["partitions"].as_array().map(Vec::len)
            && shard_rows(v) == 200
    })
    .await;
    let shards = caught_up["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| s["up"] == true), "{shards:?}");
    let lanes: BTreeSet<&str> = caught_up["lanes"]
        .as_array()
        .expect("lanes")
        .iter()
        .map(|l| l["topic"].as_str().expect("topic"))
        .collect();
    assert_eq!(lanes, BTreeSet::from(stack.topics()));
    // One writer owns every partition of both lanes.
    let partitions: BTreeSet<String> = caught_up["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| format!("{}/{}", p["topic"].as_str().expect("topic"), p["partition"]))
        .collect();
    let writers = caught_up["writers"].as_array().expect("writers");
    let owned: BTreeSet<String> = writers[0]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p.as_str().expect("topic/partition").to_owned())
        .collect();
    assert_eq!(owned, partitions);
    for p in caught_up["partitions"].as_array().expect("partitions") {
        assert!(
            p["end_offset"].as_i64() >= p["writer_committed"].as_i64(),
            "{p}"
        );
    }
    // Idle: what is behind is a few clock ticks per partition, not the events.
    view_until(&stack, &query, "caught up", |v| {
        v["depth"].as_u64().is_some_and(|d| d < 200)
            && v["oldest_unstored_age_seconds"]
                .as_f64()
                .is_some_and(|a| a < 1.0)
    })
    .await;

    // The writer stops: depth grows with what is acknowledged, the oldest unstored event
    // ages, the writer leaves the group; the lag metrics say the same.
    writer.cancel();
    view_until(&stack, &query, "the stopped writer out of the group", |v| {
        v["writers"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    let second = events(300, "w");
    stack.post_events(&gateway, &second).await;
    let behind = view_until(&stack, &query, "depth and age grow", |v| {
        v["depth"].as_u64().is_some_and(|d| d >= 300)
            && v["oldest_unstored_age_seconds"]
                .as_f64()
                .is_some_and(|a| a >= 1.5)
    })
    .await;
    let lane_depths: u64 = behind["lanes"]
        .as_array()
        .expect("lanes")
        .iter()
        .map(|l| l["depth"].as_u64().expect("depth"))
        .sum();
    assert_eq!(lane_depths, behind["depth"].as_u64().expect("depth"));
    let mut lag = 0.0;
    for topic in stack.topics() {
        for partition in 0..6 {
            lag += stack
                .metric(
                    &query,
                    &format!(
                        "kafka_consumergroup_lag{{consumergroup=\"{}\",partition=\"{partition}\",topic=\"{topic}\"}}",
                        stack.writer_group
                    ),
                )
                .await;
        }
    }
    assert!(lag >= 300.0, "kafka_consumergroup_lag sums to {lag}");

    // A record that can never be stored is counted as a dead letter once the writer is back,
    // and everything drains. The shards' counts are the last second's sample while the batch
    // list is live (and holds the first 200 rows too), so the wait is on the counts
    // themselves: waiting on the list once read counts of 303.
    stack
        .kafka
        .produce_raw(&stack.topic, "v0", b"not an event")
        .await;
    let _writer = stack.start_writer().await;
    let drained = view_until(&stack, &query, "drained, with a dead letter", |v| {
        shard_rows(v) >= 500
            && rows_in_batches(v) >= 300
            && v["dead_letters"].as_u64() == Some(1)
            && v["depth"].as_u64().is_some_and(|d| d < 200)
            && v["oldest_unstored_age_seconds"]
                .as_f64()
                .is_some_and(|a| a < 1.0)
            && v["writers"].as_array().is_some_and(|w| w.len() == 1)
    })
    .await;
    // Each acknowledged event counted once: a redelivered batch would count past 500.
    assert_eq!(shard_rows(&drained), 500);
    let drained_at = drained["at_ms"].as_i64().expect("at_ms");
    let later = view_until(&stack, &query, "two samples later", |v| {
        v["at_ms"]
            .as_i64()
            .is_some_and(|at| at >= drained_at + 2000)
    })
    .await;
    assert_eq!(shard_rows(&later), 500);
}

/// The view counts what the writers store from the replica's start on: a notice written the
/// moment query-service is up is in it (a group subscription would have started at the ends
/// found once the group was joined, later, and never shown it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_stored_right_after_the_start_is_in_the_view() {
    let stack = Stack::new().await;
    let query = stack.start_query().await;
    let batch = PersistedBatch {
        batch_id: uuid::Uuid::new_v4().to_string(),
        writer: "a-writer".into(),
        shards: vec![ShardWrite {
            shard: 1,
            rows: 7,
            event_ids: Vec::new(),
            client_ids: Vec::new(),
        }],
        ranges: Vec::new(),
        batch_size: 7,
        first_ingested_at: 0,
        last_ingested_at: 0,
        persisted_at: 0,
    };
    let notice = PersistedCodec::default().encode(&batch).expect("notice");
    stack
        .kafka
        .produce_raw(&stack.persisted_topic, "a-writer", &notice)
        .await;
    view_until(&stack, &query, "the batch's rows in the view", |v| {
        v["shards"][1]["rows_stored"] == 7
    })
    .await;
}

/// A partition added to a lane that no writer has taken yet (its writer refreshes topic
/// metadata only every few minutes here): the view lists it as nobody's and counts it in the
/// gauge the alert reads, while the other partitions stay with their writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_no_writer_holds_is_named_and_counted() {
    let stack = Stack::new().await;
    // A process of its own: the gauge is process-wide, and the other tests here run
    // replicas in this one.
    let replica = stack.spawn_query_process().await;
    let query = replica.url();
    let mut settings = stack.writer_settings();
    settings.kafka.metadata_refresh = Duration::from_secs(600);
    let _writer = stack.start_writer_with(settings).await;
    let unheld = |v: &Value| -> Option<Vec<String>> {
        let held: BTreeSet<&str> = v["writers"]
            .as_array()?
            .iter()
            .filter_map(|w| w["partitions"].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        Some(
            v["partitions"]
                .as_array()?
                .iter()
                .map(|p| format!("{}/{}", p["topic"].as_str().unwrap_or("?"), p["partition"]))
                .filter(|p| !held.contains(p.as_str()))
                .collect(),
        )
    };
    let held = view_until(&stack, query, "every partition held", |v| {
        v["writers_known"] == true
            && v["writers"].as_array().is_some_and(|w| w.len() == 1)
            && unheld(v).is_some_and(|u| u.is_empty())
    })
    .await;
    let normal = held["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| p["topic"] == stack.topic.as_str())
        .count();
    stack.kafka.add_partitions(&stack.topic, normal + 1).await;
    let added = format!("{}/{normal}", stack.topic);
    let partial = view_until(&stack, query, "the added partition as nobody's", |v| {
        unheld(v).is_some_and(|u| u == [added.clone()])
    })
    .await;
    // The list the gauge counts and `eventpipe-admin status` prints.
    assert_eq!(
        partial["partitions_without_writer"],
        json!([added]),
        "{partial:#}"
    );
    eventually(DEADLINE, "the gauge counting it", || async {
        (stack
            .metric(query, "eventpipe_partitions_without_writer")
            .await
            == 1.0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_down_shows_in_the_view() {
    let shard = PrivateShard::start().await;
    let mut stack = Stack::new().await;
    stack.shard_urls[1] = shard.url();
    let stack = Arc::new(stack);
    let query = stack.start_query().await;
    view_until(&stack, &query, "both shards up", |v| {
        v["shards"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["up"] == true))
    })
    .await;
    shard.stop();
    view_until(&stack, &query, "shard 1 down", |v| {
        v["shards"][1]["up"] == false && v["shards"][0]["up"] == true
    })
    .await;
    shard.start_again().await;
    view_until(&stack, &query, "shard 1 up again", |v| {
        v["shards"][1]["up"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_exports_its_process_metrics() {
    let stack = Stack::new().await;
    let gateway = stack.spawn_gateway_process().await;
    let writer = stack.spawn_writer_process();
    let query = stack.spawn_query_process().await;
    for url in [gateway.url(), writer.metrics_url(), query.url()] {
        eventually(DEADLINE, "process metrics", || async {
            let text = stack
                .http
                .get(format!("{url}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            [
                "process_resident_memory_bytes",
                "process_cpu_seconds_total",
                "process_open_fds",
            ]
            .iter()
            .all(|name| text.lines().any(|l| l.starts_with(&format!("{name} "))))
            .then_some(())
        })
        .await;
    }
    writer.terminate().await;
}
