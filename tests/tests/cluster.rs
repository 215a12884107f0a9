//! Broker failures under continuous traffic on a three-broker cluster (replication factor 3,
//! `min.insync.replicas=2`): every event that got 202 is stored once and read once; events of
//! requests that got 503 are stored at most once. Each test prints its ledger.
//!
//! The cluster is `deploy/local/cluster` (tests/run starts it); the tests take turns on it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use pipeline_tests::{eventually, Cluster, Feeder, Stack};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(120);

/// Prints how long each step of a drill took, so a slow suite shows where its time goes.
struct Steps {
    name: &'static str,
    started: Instant,
}

impl Steps {
    fn new(name: &'static str) -> Steps {
        Steps {
            name,
            started: Instant::now(),
        }
    }

    fn done(&self, step: &str) {
        println!(
            "{}: {step} done at {:.1?}",
            self.name,
            self.started.elapsed()
        );
    }
}

fn batch(round: usize) -> Vec<Value> {
    (0..20)
        .map(|i| {
            let n = round * 20 + i;
            let mut e =
                json!({"client_id": format!("k{}", n % 40), "type": "t", "payload": {"n": n}});
            if n % 5 == 0 {
                e["priority"] = "critical".into();
            }
            e
        })
        .collect()
}

/// Brings every broker back when a test ends, passed or failed, so the next one starts on a
/// whole cluster.
struct AllBack<'a>(&'a Cluster);

impl Drop for AllBack<'_> {
    fn drop(&mut self) {
        for node in 1..=self.0.brokers as i32 {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local/cluster");
            for action in ["resume", "start"] {
                let _ = std::process::Command::new(script)
                    .args(["kafka-node", action, &node.to_string()])
                    .output();
            }
        }
    }
}

fn replicated_topics(stack: &Stack) -> Vec<&str> {
    vec![
        stack.topic.as_str(),
        stack.critical_topic.as_str(),
        stack.dead_letter_topic.as_str(),
        stack.persisted_topic.as_str(),
        "__consumer_offsets",
    ]
}

/// Ends the traffic, waits for the writer to drain, and checks the ledger against the shards
/// and the read API.
async fn settle(stack: &Stack, feeder: Feeder, query: &str, name: &str) {
    let ledger = feeder.ledger();
    let refused = feeder.refused();
    feeder.stop().await;
    stack.drained(DEADLINE).await;
    let line = ledger.assert_stored(stack).await;
    println!("{name}: {line} refused-requests={refused}");
    ledger
        .assert_readable(stack, query, |_| true, DEADLINE)
        .await;
}

/// Waits until every partition of the stack's topics (and the offsets topic) has all three
/// replicas in sync again.
async fn healed(cluster: &Cluster, stack: &Stack) {
    cluster
        .fully_replicated(&replicated_topics(stack), DEADLINE)
        .await;
}

/// A stack on the cluster with traffic flowing: a gateway (with `gateway` applied to its
/// settings), a reader, a writer, and a feeder that already has 500 events acknowledged.
struct Drill {
    stack: Arc<Stack>,
    gateway: String,
    query: String,
    feeder: Feeder,
    _writer: CancellationToken,
}

async fn drill(cluster: &Cluster, gateway: impl FnOnce(&mut producer_gateway::Settings)) -> Drill {
    let stack = Arc::new(Stack::on_brokers(cluster.bootstrap.clone()).await);
    healed(cluster, &stack).await;
    let mut settings = stack.gateway_settings();
    gateway(&mut settings);
    let gateway = stack.start_gateway_with(settings).await;
    let query = stack.start_query().await;
    let writer = stack.start_writer().await;
    let feeder = Feeder::start_tolerant(stack.clone(), gateway.clone(), batch);
    feeder.more(500, DEADLINE).await;
    Drill {
        stack,
        gateway,
        query,
        feeder,
        _writer: writer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_and_a_rolling_restart_lose_and_duplicate_nothing() {
    let _turn = Cluster::lock().await;
    let steps = Steps::new("killed leader");
    let cluster = Cluster::local();
    let _back = AllBack(&cluster);
    let Drill {
        stack,
        query,
        feeder,
        ..
    } = drill(&cluster, |_| {}).await;
    steps.done("stack and first traffic");

    // A crash of the leader of a busy partition: the survivors take over its partitions.
    let victim = cluster.leader(&stack.topic, 0);
    assert!(victim > 0, "partition 0 has a leader");
    cluster.node("kill", victim);
    feeder.more(600, DEADLINE).await;
    steps.done("traffic with the leader killed");
    cluster.node("start", victim);
    healed(&cluster, &stack).await;
    steps.done("leader back in sync");

    // A rolling restart of the others, one broker at a time, traffic flowing throughout:
    // every broker has been restarted once, the first by a crash.
    for node in (1..=cluster.brokers as i32).filter(|n| *n != victim) {
        cluster.node("stop", node);
        steps.done(&format!("broker {node} stopped"));
        feeder.more(300, DEADLINE).await;
        steps.done("traffic");
        cluster.node("start", node);
        healed(&cluster, &stack).await;
        steps.done(&format!("broker {node} back in sync"));
    }
    feeder.more(500, DEADLINE).await;
    settle(&stack, feeder, &query, "killed leader + rolling restart").await;
    steps.done("settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_paused_past_its_session_timeout_loses_and_duplicates_nothing() {
    let _turn = Cluster::lock().await;
    let steps = Steps::new("paused broker");
    let cluster = Cluster::local();
    let _back = AllBack(&cluster);
    let Drill {
        stack,
        query,
        feeder,
        ..
    } = drill(&cluster, |_| {}).await;
    steps.done("stack and first traffic");

    // A hung broker: alive, silent. The cluster fences it once its session times out
    // (broker.session.timeout.ms, 9 s — longer than the writer's 6 s group session), and
    // another replica leads its partitions.
    let victim = cluster.leader(&stack.topic, 0);
    assert!(victim > 0, "partition 0 has a leader");
    cluster.node("pause", victim);
    let paused_at = Instant::now();
    eventually(DEADLINE, "another leader for partition 0", || async {
        let leader = cluster.leader(&stack.topic, 0);
        (leader > 0 && leader != victim).then_some(())
    })
    .await;
    feeder.more(300, DEADLINE).await;
    println!("broker {victim} paused for {:?}", paused_at.elapsed());
    cluster.node("resume", victim);
    healed(&cluster, &stack).await;
    steps.done("paused broker back in sync");
    feeder.more(500, DEADLINE).await;
    settle(&stack, feeder, &query, "paused broker").await;
    steps.done("settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_brokers_down_the_gateway_answers_503_in_time_and_recovers() {
    let _turn = Cluster::lock().await;
    let steps = Steps::new("two brokers down");
    let cluster = Cluster::local();
    let _back = AllBack(&cluster);
    let deadline = Duration::from_secs(5);
    let Drill {
        stack,
        gateway,
        query,
        feeder,
        ..
    } = drill(&cluster, |settings| {
        settings.kafka.delivery_timeout = deadline
    })
    .await;
    steps.done("stack and first traffic");

    // One replica left of three, fewer than min.insync.replicas: nothing can be acknowledged.
    cluster.node("kill", 2);
    cluster.node("kill", 3);
    // Probes are in the ledger too: a 503'd one may still be stored (at most once), a 202'd
    // one must be.
    let ledger = feeder.ledger();
    let probe = || {
        let id = uuid::Uuid::now_v7();
        let events = vec![json!({"client_id": "probe", "type": "t", "event_id": id.to_string()})];
        ledger.maybe(&events);
        (events, id)
    };
    // The first request after the loss may still be acknowledged by replicas not yet known
    // to be gone; within a few the answer is 503.
    let (status, retry_after, took) =
        eventually(DEADLINE, "a 503 while two brokers are down", || async {
            let (probe, id) = probe();
            let started = Instant::now();
            let answer = stack
                .http
                .post(format!("{gateway}/events"))
                .json(&probe)
                .timeout(DEADLINE)
                .send()
                .await
                .ok()?;
            let took = started.elapsed();
            let status = answer.status().as_u16();
            if status == 202 {
                ledger.acknowledged(&probe, &[id]);
            }
            let retry_after = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (status == 503).then_some((status, retry_after, took))
        })
        .await;
    assert_eq!(status, 503);
    assert!(retry_after.is_some(), "503 carries Retry-After");
    // Its deadline, plus the margin the gateway keeps for a lost callback.
    assert!(
        took <= deadline + Duration::from_secs(3),
        "503 within the delivery deadline ({deadline:?}), took {took:?}"
    );
    println!("503 after {took:?} (delivery deadline {deadline:?})");

    // One broker back: two in sync again, the gateway acknowledges again.
    cluster.node("start", 2);
    let back = Instant::now();
    eventually(DEADLINE, "202 again with two brokers", || async {
        let (probe, id) = probe();
        let answer = stack
            .http
            .post(format!("{gateway}/events"))
            .json(&probe)
            .timeout(DEADLINE)
            .send()
            .await
            .ok()?;
        (answer.status() == 202).then(|| ledger.acknowledged(&probe, &[id]))
    })
    .await;
    println!(
        "acknowledging again {:?} after one broker returned",
        back.elapsed()
    );
    feeder.more(500, DEADLINE).await;
    cluster.node("start", 3);
    healed(&cluster, &stack).await;
    steps.done("both brokers back in sync");
    settle(&stack, feeder, &query, "two brokers down").await;
    steps.done("settled");
}

/// The members of the writer group as a reader's pipeline view shows them.
async fn writers_seen(stack: &Stack, query: &str) -> Option<usize> {
    let view = stack.pipeline_view(query).await?;
    Some(view["writers"].as_array()?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_writers_and_readers_scaled_under_traffic_lose_and_duplicate_nothing() {
    let _turn = Cluster::lock().await;
    let steps = Steps::new("scaled");
    let cluster = Cluster::local();
    let _back = AllBack(&cluster);
    let stack = Arc::new(Stack::on_brokers(cluster.bootstrap.clone()).await);
    healed(&cluster, &stack).await;
    let gateway = stack.start_gateway().await;
    let reader = stack.spawn_query_process().await;
    let mut writers = vec![stack.spawn_writer_process()];
    let feeder = Feeder::start_tolerant(stack.clone(), gateway, batch);
    feeder.more(500, DEADLINE).await;
    steps.done("stack and first traffic");

    // Both lanes 6 → 12 partitions: keys move, new partitions fill.
    stack.kafka.add_partitions(&stack.topic, 12).await;
    stack.kafka.add_partitions(&stack.critical_topic, 12).await;
    feeder.more(1500, DEADLINE).await;
    let grown = stack.kafka.end_offsets(&stack.topic);
    assert_eq!(grown.len(), 12, "twelve partitions");
    assert!(
        grown.range(6..).any(|(_, end)| *end > 0),
        "the new partitions receive events"
    );
    steps.done("partitions added");

    // Writers 1 → 3.
    writers.push(stack.spawn_writer_process());
    writers.push(stack.spawn_writer_process());
    eventually(DEADLINE, "three writers in the group", || async {
        (writers_seen(&stack, reader.url()).await == Some(3)).then_some(())
    })
    .await;
    feeder.more(1500, DEADLINE).await;
    steps.done("writers added");

    // A second reader, which reads every partition from the writer's commits.
    let second_reader = stack.spawn_query_process().await;
    feeder.more(1000, DEADLINE).await;
    steps.done("second reader");

    // Writers 3 → 1, by SIGTERM (each flushes and commits what it holds).
    for writer in writers.drain(1..) {
        assert!(writer.terminate().await.success(), "a writer stops cleanly");
    }
    eventually(DEADLINE, "one writer in the group", || async {
        (writers_seen(&stack, reader.url()).await == Some(1)).then_some(())
    })
    .await;
    feeder.more(1000, DEADLINE).await;
    steps.done("writers removed");

    let ledger = feeder.ledger();
    let refused = feeder.refused();
    feeder.stop().await;
    stack.drained(DEADLINE).await;
    let line = ledger.assert_stored(&stack).await;
    println!("scaled partitions, writers and readers: {line} refused-requests={refused}");
    steps.done("stored checked");
    for query in [reader.url(), second_reader.url()] {
        ledger
            .assert_readable(&stack, query, |_| true, DEADLINE)
            .await;
    }
    steps.done("read checked");
}
