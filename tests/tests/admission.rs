//! Lag-aware admission: with the writer stopped, the backlog grows past the normal lane's
//! limit and the gateway refuses normal events with 503 + `Retry-After` (problem type
//! `pipeline-behind`) while critical events are still accepted; a gateway without admission
//! keeps accepting; once the writer is back, normal events are accepted again. Every 202 is
//! stored once, every refused event never.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::time::{Duration, Instant};

use pipeline_tests::{eventually, Stack};
use serde_json::{json, Value};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);
/// Well above the clock ticks between two writer commits (gateways tick idle partitions
/// every 20 ms, and ticks count in the depth like events).
const NORMAL_MAX_DEPTH: u64 = 3_000;

fn events(priority: &str, n: usize) -> (Vec<Value>, Vec<Uuid>) {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let events = ids
        .iter()
        .map(|id| json!({"client_id": format!("adm-{}", id.as_u128() % 7), "type": "t", "priority": priority, "event_id": id.to_string()}))
        .collect();
    (events, ids)
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

async fn post(stack: &Stack, gateway: &str, events: &[Value]) -> Answer {
    let answer = stack
        .post(
            gateway,
            "application/json",
            serde_json::to_vec(events).unwrap(),
        )
        .await;
    Answer {
        status: answer.status().as_u16(),
        retry_after: answer
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: answer.json().await.unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_normal_lane_sheds_while_the_writer_is_behind_and_critical_still_passes() {
    let stack = Stack::new().await;
    let mut settings = stack.gateway_settings();
    settings.admission.enabled = true;
    settings.admission.writer_group = stack.writer_group.clone();
    settings.admission.sample_interval = Duration::from_millis(100);
    settings.admission.normal.max_depth = NORMAL_MAX_DEPTH;
    settings.admission.normal.max_oldest_age = Duration::ZERO;
    settings.admission.critical.max_depth = 100_000;
    // Not the default, so the header is seen to come from the settings.
    settings.limits.retry_after = Duration::from_secs(2);
    let gateway = stack.start_gateway_with(settings).await;
    let open_gateway = stack.start_gateway().await;
    let writer = stack.start_writer().await;
    // Shared with the polling closures below.
    let stored = std::sync::Mutex::new(Vec::new());
    let refused = std::sync::Mutex::new(Vec::new());
    let keep =
        |list: &std::sync::Mutex<Vec<Uuid>>, ids: Vec<Uuid>| list.lock().unwrap().extend(ids);

    // Caught up: accepted (once admission sampled the writer's first commits).
    stack.drained(DEADLINE).await;
    eventually(DEADLINE, "normal events accepted while caught up", || {
        let (batch, ids) = events("normal", 10);
        let (stack, gateway, stored) = (&stack, &gateway, &stored);
        async move {
            let answer = post(stack, gateway, &batch).await;
            (answer.status == 202).then(|| keep(stored, ids))
        }
    })
    .await;

    // The writer stops; normal events pile up until the gateway refuses them.
    writer.cancel();
    let stopped = Instant::now();
    let shed = eventually(DEADLINE, "a 503 for normal events", || {
        let (batch, ids) = events("normal", 200);
        let (stack, gateway, stored, refused) = (&stack, &gateway, &stored, &refused);
        async move {
            let answer = post(stack, gateway, &batch).await;
            match answer.status {
                202 => {
                    keep(stored, ids);
                    None
                }
                503 => {
                    keep(refused, ids);
                    Some(answer)
                }
                other => panic!("unexpected {other}: {}", answer.body),
            }
        }
    })
    .await;
    assert!(
        shed.body["type"]
            .as_str()
            .unwrap()
            .ends_with("pipeline-behind"),
        "{}",
        shed.body
    );
    let to_shed = stopped.elapsed();
    assert_eq!(
        shed.retry_after.as_deref(),
        Some("2"),
        "503 carries Retry-After"
    );
    let detail = shed.body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("(limit {NORMAL_MAX_DEPTH})")),
        "the detail names the depth and its limit: {detail}"
    );
    assert!(
        stack.metric(&gateway, "gateway_admission_depth").await > NORMAL_MAX_DEPTH as f64,
        "shed only past the limit"
    );

    // Still shedding normal events, a request with both lanes is refused whole, and critical
    // events pass.
    let (mixed, mixed_ids) = events("normal", 1);
    let (critical_one, critical_one_ids) = events("critical", 1);
    let mixed: Vec<Value> = mixed.into_iter().chain(critical_one).collect();
    let answer = post(&stack, &gateway, &mixed).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body["type"]
        .as_str()
        .unwrap()
        .ends_with("pipeline-behind"));
    keep(
        &refused,
        mixed_ids.into_iter().chain(critical_one_ids).collect(),
    );
    let (batch, ids) = events("critical", 20);
    let answer = post(&stack, &gateway, &batch).await;
    assert_eq!(
        answer.status, 202,
        "critical still accepted: {}",
        answer.body
    );
    keep(&stored, ids);
    assert!(
        stack
            .metric(&gateway, "gateway_admission_shed_total{lane=\"normal\"}")
            .await
            >= 1.0
    );

    // Admission is per gateway and off by default: this one still accepts normal events.
    let (batch, ids) = events("normal", 20);
    assert_eq!(post(&stack, &open_gateway, &batch).await.status, 202);
    keep(&stored, ids);

    // The writer is back: once the backlog is stored, normal events are accepted again.
    let _writer = stack.start_writer().await;
    let restarted = Instant::now();
    eventually(DEADLINE, "normal events accepted again", || {
        let (batch, ids) = events("normal", 5);
        let (stack, gateway, stored) = (&stack, &gateway, &stored);
        async move {
            let answer = post(stack, gateway, &batch).await;
            (answer.status == 202).then(|| keep(stored, ids))
        }
    })
    .await;
    let to_recover = restarted.elapsed();

    stack.drained(DEADLINE).await;
    let counts = stack.row_counts().await;
    let (stored, refused) = (stored.into_inner().unwrap(), refused.into_inner().unwrap());
    for id in &stored {
        assert_eq!(counts.get(id), Some(&1), "{id} answered 202: stored once");
    }
    for id in &refused {
        assert_eq!(counts.get(id), None, "{id} refused: never stored");
    }
    println!(
        "admission: shed {:.1} s after the writer stopped, admitted again {:.1} s after it \
         restarted; {} stored once, {} refused and absent",
        to_shed.as_secs_f64(),
        to_recover.as_secs_f64(),
        stored.len(),
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_critical_limit_below_the_normal_one_is_refused_at_start() {
    let stack = Stack::new().await;
    let mut settings = stack.gateway_settings();
    settings.admission.enabled = true;
    settings.admission.normal.max_depth = 1_000;
    settings.admission.critical.max_depth = 10;
    let refused = producer_gateway::Gateway::bind(&settings).await;
    let error = refused.err().expect("refused at start").to_string();
    assert!(error.contains("critical.max_depth"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn samples_that_go_stale_before_the_next_one_are_refused_at_start() {
    let stack = Stack::new().await;
    let mut settings = stack.gateway_settings();
    settings.admission.enabled = true;
    settings.admission.writer_group = stack.writer_group.clone();
    settings.admission.sample_interval = Duration::from_secs(5);
    settings.admission.stale_after = Duration::from_secs(5);
    let refused = producer_gateway::Gateway::bind(&settings).await;
    let error = refused.err().expect("refused at start").to_string();
    assert!(error.contains("admission.stale_after"), "{error}");
}
