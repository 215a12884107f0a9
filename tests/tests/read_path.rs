//! The read side's promises: exactly once, in order, read-your-writes, from any replica,
//! across restarts and partition growth.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use event_store::ShardRouter;
use pipeline_tests::{by_client, eventually, ids, PrivateShard, Stack};
use serde_json::{json, Value};
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(60);

fn events(clients: usize, per_client: usize, tag: &str) -> Vec<Value> {
    (0..per_client)
        .flat_map(|n| {
            (0..clients).map(move |c| json!({"client_id": format!("r{c}"), "type": "t", "payload": {"n": n, "tag": tag}}))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_always_shows_the_posted_events_over_many_rounds() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let _writer = stack.start_writer().await;
    for round in 0..30 {
        let client = format!("ryw-{}", round % 4);
        let batch: Vec<Value> = (0..10)
            .map(|n| json!({"client_id": client, "type": "t", "payload": {"round": round, "n": n}}))
            .collect();
        let posted = stack.post_events(&gateway, &batch).await;
        // What is asserted is that the token's events are answered, not how soon (that is
        // benchmarked): the longest wait, so a machine loaded by the parallel groups does
        // not turn a slow release into a 504.
        let (status, page, _) = stack
            .get(
                &query,
                &[
                    ("clientId", &client),
                    ("after", &posted.token),
                    ("limit", "1000"),
                    ("wait_ms", "10000"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let seen: HashSet<Uuid> = ids(page["events"].as_array().unwrap())
            .into_iter()
            .collect();
        for id in &posted.event_ids {
            assert!(
                seen.contains(id),
                "round {round}: {id} missing right after its 202"
            );
        }
    }
}

/// A critical event is answered without waiting for the gateway's periodic rounds of ticks:
/// its acknowledgement sends a release tick into its client's partition of the normal lane
/// (its own partition has the tick trailing it), and the replica releases a client's events
/// by those partitions alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_critical_event_is_released_by_the_ticks_its_acknowledgement_sends() {
    let stack = Stack::new().await;
    // Per-client release once the gateway's first round (at its start, after the replica's)
    // has passed the replica's start.
    let (query, _stop) = stack.start_query_with(per_client_release(&stack)).await;
    // Periodic rounds a minute apart after that first one, and a safety net later than the
    // test's deadline: only release ticks can answer the event in time.
    let gateway = stack.start_gateway_with(rare_rounds(&stack)).await;
    stack.ready(&gateway, Duration::from_secs(30)).await;
    let critical = stack
        .post_events(
            &gateway,
            &[json!({"client_id": "rel-c", "type": "t", "priority": "critical"})],
        )
        .await;
    eventually(
        Duration::from_secs(20),
        "the critical event answered without a token",
        || async {
            let events = stack.history(&query, "rel-c", 100).await;
            (ids(&events) == critical.event_ids).then_some(())
        },
    )
    .await;
}

/// A critical event's own partition needs no release tick: the tick queued right behind it,
/// in its produce request, carries that partition's clock past it (`kafka.trailing_ticks`).
/// Release ticks here are a minute apart after the first, so only the trailing tick can
/// answer the second critical event in time; a later normal event of its client in the same
/// request passes the normal lane's partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_critical_event_is_released_by_the_tick_trailing_it() {
    let stack = Stack::new().await;
    let (query, _stop) = stack.start_query_with(per_client_release(&stack)).await;
    let mut gateway_settings = rare_rounds(&stack);
    gateway_settings.kafka.release_spacing = Duration::from_secs(60);
    let gateway = stack.start_gateway_with(gateway_settings).await;
    stack.ready(&gateway, Duration::from_secs(30)).await;
    let client = "trail-c";
    let critical = json!({"client_id": client, "type": "t", "priority": "critical"});
    // The first one spends each partition's release tick for a minute.
    let first = stack
        .post_events(&gateway, std::slice::from_ref(&critical))
        .await;
    eventually(
        Duration::from_secs(20),
        "the first critical event answered",
        || async {
            (ids(&stack.history(&query, client, 100).await) == first.event_ids).then_some(())
        },
    )
    .await;
    let second = stack
        .post_events(
            &gateway,
            &[critical, json!({"client_id": client, "type": "t"})],
        )
        .await;
    // The normal event waits for a later record in its partition; the critical one does not.
    let expected: HashSet<Uuid> = [first.event_ids[0], second.event_ids[0]].into();
    eventually(
        Duration::from_secs(20),
        "the second critical event answered within the release ticks' minute",
        || async {
            let seen: HashSet<Uuid> = ids(&stack.history(&query, client, 100).await)
                .into_iter()
                .collect();
            (seen == expected).then_some(())
        },
    )
    .await;
}

/// With release rounds (`release_ticks = "all"`) and a replica releasing by the slowest of
/// all partitions, a critical acknowledgement's round also passes the normal events before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_round_answers_a_critical_event_and_the_normal_events_before_it() {
    let stack = Stack::new().await;
    let mut gateway_settings = rare_rounds(&stack);
    gateway_settings.kafka.release_ticks = producer_gateway::settings::ReleaseTicks::All;
    gateway_settings.kafka.tick_interval = Duration::from_secs(60);
    let gateway = stack.start_gateway_with(gateway_settings).await;
    let mut query_settings = stack.query_settings();
    query_settings.order.quiet_bound = Duration::from_secs(120);
    query_settings.order.per_client_release = false;
    let (query, _stop) = stack.start_query_with(query_settings).await;
    stack.ready(&gateway, Duration::from_secs(30)).await;
    let normal = stack
        .post_events(&gateway, &[json!({"client_id": "rel-n", "type": "t"})])
        .await;
    let critical = stack
        .post_events(
            &gateway,
            &[json!({"client_id": "rel-c", "type": "t", "priority": "critical"})],
        )
        .await;
    for (client, posted) in [("rel-n", &normal), ("rel-c", &critical)] {
        eventually(
            Duration::from_secs(20),
            &format!("{client}'s event answered without a token"),
            || async {
                let events = stack.history(&query, client, 100).await;
                (ids(&events) == posted.event_ids).then_some(())
            },
        )
        .await;
    }
}

/// Replica settings that release a client's events by its own partitions from the start,
/// with a safety net (`order.quiet_bound`) later than any test's deadline: only ticks
/// release events in time.
fn per_client_release(stack: &Stack) -> query_service::Settings {
    let mut settings = stack.query_settings();
    settings.order.quiet_bound = Duration::from_secs(120);
    settings.order.growth_settle = Duration::ZERO;
    settings
}

/// Gateway settings whose periodic rounds are a minute apart (the first, at start, passes
/// nothing posted).
fn rare_rounds(stack: &Stack) -> producer_gateway::Settings {
    let mut settings = stack.gateway_settings();
    settings.kafka.normal_tick_interval = Duration::from_secs(60);
    settings.kafka.idle_tick_interval = Duration::from_secs(60);
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_replica_cannot_reach_answers_504_in_time_and_bad_parameters_400() {
    let stack = Stack::new().await;
    let query = stack.start_query().await;
    // Far beyond anything published: this replica is, deliberately, behind it.
    let token = format!("v1~{}~0~999999", stack.topic);
    let started = Instant::now();
    let (status, problem, _) = stack
        .get(
            &query,
            &[("clientId", "x"), ("after", &token), ("wait_ms", "300")],
        )
        .await;
    assert_eq!(status, 504, "{problem}");
    assert_eq!(problem["type"], "/problems/not-caught-up");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    for params in [
        vec![("limit", "5")],
        vec![("clientId", "x"), ("limit", "0")],
        vec![("clientId", "x"), ("limit", "1001")],
        vec![("clientId", "x"), ("cursor", "garbage")],
        vec![("clientId", "x"), ("since", "yesterday")],
        vec![
            ("clientId", "x"),
            ("since", "2026-12-07T12:00:00Z"),
            ("until", "2026-12-07T12:00:00Z"),
        ],
        vec![("clientId", "x"), ("after", "v9~nope")],
        vec![("clientId", "x"), ("after", "v1"), ("wait_ms", "60000")],
        // A wait that cannot apply is still a mistake worth naming.
        vec![("clientId", "x"), ("wait_ms", "soon")],
        // A topic this replica does not read: no wait could catch up with it, so none is
        // waited for.
        vec![
            ("clientId", "x"),
            ("after", "v1~not-an-event-topic~0~5"),
            ("wait_ms", "8000"),
        ],
    ] {
        let started = Instant::now();
        let (status, problem, headers) = stack.get(&query, &params).await;
        assert_eq!(status, 400, "{params:?}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{params:?}: at once"
        );
    }
}

/// A token read after its partition moved on: the replica has consumed the event, and then
/// the gateway's last ticks past it, and nothing comes after them. The read waits for the
/// clock of its own event, which those ticks passed, not for the partition's clock when it
/// arrived, which only a further record could pass: it waited a second for the next idle
/// round on 2026-12-07, and with no gateway left, until `wait_ms` ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_read_after_the_last_ticks_answers_without_waiting_for_more() {
    let stack = Stack::new().await;
    let query = stack.start_query().await;
    let gateway = stack.spawn_gateway_process().await;
    let posted = stack
        .post_events(
            gateway.url(),
            &[json!({"client_id": "rw-late", "type": "t"})],
        )
        .await;
    // The token is `v1~<topic>~<partition>~<offset>` for one event.
    let offset: i64 = posted.token.rsplit('~').next().unwrap().parse().unwrap();
    let partition = posted.partitions[0];
    // The replica consumed the event before the gateway's final ticks exist, so they come
    // in a later step of its tail.
    eventually(DRAIN, "the replica past the event", || async {
        let view = stack.pipeline_view(&query).await?;
        view["partitions"].as_array()?.iter().find(|p| {
            p["topic"] == stack.topic.as_str()
                && p["partition"] == partition
                && p["query_position"].as_i64().is_some_and(|at| at > offset)
        })?;
        Some(())
    })
    .await;
    assert!(gateway.terminate().await.success());
    eventually(DRAIN, "the event released by the final ticks", || async {
        let (status, page, _) = stack.get(&query, &[("clientId", "rw-late")]).await;
        (status == 200 && !page["events"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let (status, page, _) = stack
        .get(
            &query,
            &[
                ("clientId", "rw-late"),
                ("after", &posted.token),
                ("wait_ms", "5000"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(page["events"].as_array().unwrap()), posted.event_ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_neither_skip_nor_repeat_while_events_move_into_postgres() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let first: Vec<Value> = events(1, 120, "a");
    let mut expected = stack.post_events(&gateway, &first).await.event_ids;

    // Page through while the writer starts, drains, stops, and more events arrive.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut writer = None;
    for page_number in 0.. {
        match page_number {
            3 => writer = Some(stack.start_writer().await),
            6 => {
                stack.drained(DRAIN).await;
                writer.take().unwrap().cancel();
                expected.extend(
                    stack
                        .post_events(&gateway, &events(1, 30, "b"))
                        .await
                        .event_ids,
                );
            }
            9 => writer = Some(stack.start_writer().await),
            _ => {}
        }
        let mut params = vec![("clientId", "r0".to_owned()), ("limit", "9".to_owned())];
        if let Some(c) = &cursor {
            params.push(("cursor", c.clone()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, page, _) = stack.get(&query, &params).await;
        assert_eq!(status, 200);
        seen.extend(ids(page["events"].as_array().unwrap()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None if seen.len() >= expected.len() => break,
            // The end of what is visible so far: read this page again once it has grown.
            None => {
                let shown = page["events"].as_array().unwrap().len();
                seen.truncate(seen.len() - shown);
                eventually(Duration::from_secs(20), "later events visible", || async {
                    let (_, again, _) = stack.get(&query, &params).await;
                    (again["events"].as_array().unwrap().len() > shown).then_some(())
                })
                .await;
            }
        }
        assert!(page_number < 200, "paging did not end");
    }
    assert_eq!(seen, expected, "pages in ingest order, each event once");
    drop(writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_replica_rebuilds_exactly_the_unpersisted_tail_and_replicas_agree() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let writer = stack.start_writer().await;
    let persisted_batch = events(8, 10, "persisted");
    let persisted = stack.post_events(&gateway, &persisted_batch).await;
    stack.drained(DRAIN).await;
    writer.cancel();
    let tail_batch = events(8, 5, "tail");
    let tail = stack.post_events(&gateway, &tail_batch).await;

    let mut expected = by_client(&persisted_batch, &persisted.event_ids);
    for (client, ids) in by_client(&tail_batch, &tail.event_ids) {
        expected.get_mut(&client).unwrap().extend(ids);
    }
    let tail_ids: HashSet<Uuid> = tail.event_ids.iter().copied().collect();

    let (first, first_stop) = stack.start_query_with(stack.query_settings()).await;
    let answers = |query: String| {
        let stack = &stack;
        let expected = &expected;
        let tail_ids = &tail_ids;
        async move {
            let mut all = HashMap::new();
            for (client, want) in expected {
                let history = eventually(Duration::from_secs(20), "tail visible", || async {
                    let h = stack.history(&query, client, 1000).await;
                    (h.len() >= want.len()).then_some(h)
                })
                .await;
                assert_eq!(&ids(&history), want, "{client}");
                for event in &history {
                    let id: Uuid = event["event_id"].as_str().unwrap().parse().unwrap();
                    let status = if tail_ids.contains(&id) {
                        "in_flight"
                    } else {
                        "persisted"
                    };
                    assert_eq!(event["status"], status, "{id}");
                }
                all.insert(client.clone(), history);
            }
            all
        }
    };
    let before = answers(first.clone()).await;
    first_stop.cancel();
    let (second, _second_stop) = stack.start_query_with(stack.query_settings()).await;
    let (third, _third_stop) = stack.start_query_with(stack.query_settings()).await;
    assert_eq!(
        answers(second).await,
        before,
        "a restarted replica answers the same"
    );
    assert_eq!(answers(third).await, before, "replicas answer alike");
}

/// A cold read (a client not read lately) of a client the replica holds nothing of in flight
/// is answered from its shard at once; only a client with events in flight waits for the
/// replica's tail to index them first. Both show in the replica's own metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_cold_read_of_a_client_with_events_in_flight_waits_for_the_tail() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    // A process of its own: its metrics count this test's reads only.
    let query = stack.spawn_query_process().await;
    let writer = stack.start_writer().await;
    let stored = stack.post_events(&gateway, &events(1, 5, "stored")).await;
    stack.drained(DRAIN).await;
    let count = |sample: &'static str| stack.metric(query.url(), sample);
    let holds = |n: f64| async move { (count("query_in_flight_events").await == n).then_some(()) };
    const INDEX_WAITS: &str = "query_read_stage_seconds_count{stage=\"index\"}";
    const UNHELD: &str = "query_unheld_reads_total";
    // The replica has consumed r0's events (a read after their token waits for that; of
    // another client, so r0 stays unread) and seen them committed: none is held any more.
    let after = [
        ("clientId", "nobody"),
        ("after", stored.token.as_str()),
        ("wait_ms", "10000"),
    ];
    assert_eq!(stack.get(query.url(), &after).await.0, 200);
    eventually(Duration::from_secs(30), "r0's events evicted", || {
        holds(0.0)
    })
    .await;
    writer.cancel();
    let held_batch: Vec<Value> = (0..5)
        .map(|n| json!({"client_id": "held", "type": "t", "payload": {"n": n}}))
        .collect();
    let held = stack.post_events(&gateway, &held_batch).await;
    eventually(Duration::from_secs(30), "the held events in flight", || {
        holds(5.0)
    })
    .await;

    let waits = count(INDEX_WAITS).await;
    let history = stack.history(query.url(), "r0", 100).await;
    assert_eq!(ids(&history), stored.event_ids);
    assert!(history.iter().all(|e| e["status"] == "persisted"));
    assert_eq!(count(INDEX_WAITS).await, waits, "nothing of r0 to index");
    let unheld = count(UNHELD).await;
    assert!(unheld >= 1.0, "r0's page was read without the tail");

    let history = eventually(
        Duration::from_secs(20),
        "the held events released",
        || async {
            let h = stack.history(query.url(), "held", 100).await;
            (h.len() >= 5).then_some(h)
        },
    )
    .await;
    assert_eq!(ids(&history), held.event_ids);
    assert!(history.iter().all(|e| e["status"] == "in_flight"));
    assert!(count(INDEX_WAITS).await > waits, "held was indexed first");
    assert_eq!(
        count(UNHELD).await,
        unheld,
        "no read of held went past the tail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_added_under_traffic_keep_answers_complete_and_ordered() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let _writer = stack.start_writer().await;
    let mut expected: HashMap<String, Vec<Uuid>> = HashMap::new();
    let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
    let mut record = |batch: &[Value], posted: &pipeline_tests::Posted| {
        for ((event, id), partition) in batch.iter().zip(&posted.event_ids).zip(&posted.partitions)
        {
            let client = event["client_id"].as_str().unwrap().to_owned();
            expected.entry(client.clone()).or_default().push(*id);
            partitions.entry(client).or_default().insert(*partition);
        }
    };
    for round in 0..5 {
        let batch = events(30, 2, &format!("before-{round}"));
        let posted = stack.post_events(&gateway, &batch).await;
        record(&batch, &posted);
    }
    stack.kafka.add_partitions(&stack.topic, 12).await;
    // Keep posting until the gateway has seen the new partitions.
    let mut round = 0;
    loop {
        let batch = events(30, 2, &format!("after-{round}"));
        let posted = stack.post_events(&gateway, &batch).await;
        let moved = posted.partitions.iter().any(|p| *p >= 6);
        record(&batch, &posted);
        round += 1;
        if moved && round > 3 {
            break;
        }
        assert!(round < 500, "the gateway never used the new partitions");
    }
    assert!(
        partitions.values().any(|p| p.len() > 1),
        "some client now lives in two partitions"
    );
    stack.drained(DRAIN).await;
    for (client, want) in &expected {
        let history = eventually(Duration::from_secs(30), "complete history", || async {
            let h = stack.history(&query, client, 50).await;
            (h.len() >= want.len()).then_some(h)
        })
        .await;
        assert_eq!(
            &ids(&history),
            want,
            "{client}: complete and in ingest order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_shard_answers_503_never_in_flight_only_data() {
    let shard = PrivateShard::start().await;
    let mut stack = Stack::new().await;
    stack.shard_urls[1] = shard.url();
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let router = ShardRouter::new(2);
    let client = (0..)
        .map(|n| format!("s{n}"))
        .find(|c| router.shard_for(c) == 1)
        .unwrap();
    stack
        .post_events(&gateway, &[json!({"client_id": client, "type": "t"})])
        .await;
    let visible = || async {
        let (status, page, _) = stack.get(&query, &[("clientId", &client)]).await;
        (status == 200 && page["events"].as_array().is_some_and(|e| e.len() == 1)).then_some(())
    };
    eventually(Duration::from_secs(20), "event visible", visible).await;
    shard.stop();
    // A page this replica has not read recently must come from the shard: 503.
    let (status, problem, headers) = stack
        .get(&query, &[("clientId", &client), ("limit", "7")])
        .await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["type"], "/problems/shard-unavailable");
    assert!(headers.contains_key("retry-after"));
    shard.start_again().await;
    eventually(Duration::from_secs(20), "shard back", visible).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_in_flight_set_is_reported_not_hidden() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let mut settings = stack.query_settings();
    // Bounded in bytes: room for about five of these events.
    settings.cache.max_in_flight_bytes = 5 * 400;
    let (query, _stop) = stack.start_query_with(settings).await;
    let posted = stack.post_events(&gateway, &events(1, 20, "many")).await;
    let (page, headers) = eventually(Duration::from_secs(20), "overflow noticed", || async {
        let (status, page, headers) = stack.get(&query, &[("clientId", "r0")]).await;
        (status == 200 && page["complete"] == false).then_some((page, headers))
    })
    .await;
    assert_eq!(headers["x-events-incomplete"], "true");
    assert!(page["events"].as_array().unwrap().len() <= 5);

    // Once the writer has persisted what the full set held back, answers are whole again:
    // a read after the write's token holds every event. (`complete` alone says only that
    // nothing is held back; events the frontier has not passed yet are not answered.)
    let _writer = stack.start_writer().await;
    let page = eventually(DRAIN, "complete again", || async {
        let (status, page, _) = stack
            .get(
                &query,
                &[
                    ("clientId", "r0"),
                    ("after", &posted.token),
                    ("wait_ms", "500"),
                ],
            )
            .await;
        (status == 200 && page["complete"] == true).then_some(page)
    })
    .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 20, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_pages_never_hide_events_stored_in_partitions_added_later() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;
    let mut settings = stack.query_settings();
    // This replica notices new partitions late: the writer stores their first events before.
    settings.kafka.refresh_interval = Duration::from_secs(3);
    let (query, _stop) = stack.start_query_with(settings).await;
    let mut expected: HashMap<String, Vec<Uuid>> = HashMap::new();
    let first = events(20, 2, "before");
    let posted = stack.post_events(&gateway, &first).await;
    for (client, ids) in by_client(&first, &posted.event_ids) {
        expected.entry(client).or_default().extend(ids);
    }
    // Read (and cache) every client's page now.
    for (client, want) in &expected {
        let history = eventually(Duration::from_secs(20), "visible", || async {
            let h = stack.history(&query, client, 50).await;
            (h.len() >= want.len()).then_some(h)
        })
        .await;
        assert_eq!(&ids(&history), want);
    }
    stack.kafka.add_partitions(&stack.topic, 12).await;
    let mut moved = HashSet::new();
    for round in 0..500 {
        let batch = events(20, 1, &format!("after-{round}"));
        let posted = stack.post_events(&gateway, &batch).await;
        for ((event, id), partition) in batch.iter().zip(&posted.event_ids).zip(&posted.partitions)
        {
            let client = event["client_id"].as_str().unwrap().to_owned();
            if *partition >= 6 {
                moved.insert(client.clone());
            }
            expected.entry(client).or_default().push(*id);
        }
        if !moved.is_empty() && round > 3 {
            break;
        }
    }
    assert!(
        !moved.is_empty(),
        "the gateway never used the new partitions"
    );
    stack.drained(DRAIN).await;
    for client in &moved {
        let want = &expected[client];
        let history = eventually(Duration::from_secs(30), "complete history", || async {
            let h = stack.history(&query, client, 50).await;
            (h.len() >= want.len()).then_some(h)
        })
        .await;
        assert_eq!(
            &ids(&history),
            want,
            "{client}: the same page, now with every event"
        );
    }
}

/// Reads Server-Sent Events of type `event` until `count` arrived; returns (id, data).
async fn read_sse(response: &mut reqwest::Response, count: usize) -> Vec<(String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} events streamed",
            events.len()
        );
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("stream stalled")
            .unwrap()
            .expect("stream ended");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut kind, mut id, mut data) = ("", "", "");
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim();
                }
            }
            assert_ne!(kind, "error", "stream error: {data}");
            if kind == "event" {
                events.push((id.to_owned(), serde_json::from_str(data).unwrap()));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_replays_then_follows_one_clients_events_live_and_resumes() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let event =
        |client: &str, n: usize| json!({"client_id": client, "type": "t", "payload": {"n": n}});

    let mut expected = stack
        .post_events(&gateway, &[event("sse-a", 0), event("sse-b", 0)])
        .await
        .event_ids;
    expected.truncate(1);
    // The earlier event must be visible before the stream opens, to be replayed.
    eventually(Duration::from_secs(20), "first event visible", || async {
        (stack.history(&query, "sse-a", 10).await.len() == 1).then_some(())
    })
    .await;
    let mut stream = stack
        .http
        .get(format!("{query}/events/stream"))
        .query(&[("clientId", "sse-a")])
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    for n in 1..10 {
        let posted = stack
            .post_events(&gateway, &[event("sse-b", n), event("sse-a", n)])
            .await;
        expected.push(posted.event_ids[1]);
    }
    let received = read_sse(&mut stream, 10).await;
    assert!(
        received.iter().all(|(_, e)| e["client_id"] == "sse-a"),
        "only its own events"
    );
    assert_eq!(
        received
            .iter()
            .map(|(_, e)| e["event_id"].as_str().unwrap().parse::<Uuid>().unwrap())
            .collect::<Vec<_>>(),
        expected
    );

    // Reconnecting with the id of the fifth event resumes right after it.
    drop(stream);
    let mut resumed = stack
        .http
        .get(format!("{query}/events/stream"))
        .query(&[("clientId", "sse-a")])
        .header("last-event-id", received[4].0.clone())
        .send()
        .await
        .unwrap();
    let again = read_sse(&mut resumed, 5).await;
    assert_eq!(
        again
            .iter()
            .map(|(_, e)| e["event_id"].as_str().unwrap().parse::<Uuid>().unwrap())
            .collect::<Vec<_>>(),
        expected[5..].to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_reader_that_falls_behind_is_disconnected_not_buffered() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let mut settings = stack.query_settings();
    settings.api.stream_buffer = 16;
    let (query, _stop) = stack.start_query_with(settings).await;
    let mut stream = stack
        .http
        .get(format!("{query}/events/stream"))
        .query(&[("clientId", "firehose")])
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    // Far more than socket buffers hold (~400 bytes an event), while nobody reads.
    let total = 60_000usize;
    for round in 0..total / 1000 {
        let body = (0..1000)
            .map(|n| {
                json!({"client_id": "firehose", "type": "t", "payload": {"n": round * 1000 + n}})
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            stack
                .post(&gateway, "application/x-ndjson", body)
                .await
                .status(),
            202
        );
    }
    let consumed = stack.published_count();
    assert_eq!(consumed, total as i64);

    // Reading now: some events, then an error event, then the end of the stream.
    let (mut events, mut error) = (0usize, None);
    let mut buffer = String::new();
    // Bounds for a loaded machine: the replica consumes all 60,000 events meanwhile.
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), stream.chunk())
        .await
        .expect("stream stalled")
        .unwrap()
    {
        assert!(Instant::now() < deadline, "stream did not end");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if block.contains("event: error") || block.contains("event:error") {
                error = Some(block);
            } else if block.contains("event: event") || block.contains("event:event") {
                events += 1;
            }
        }
    }
    let error = error.expect("an error event before the disconnect");
    assert!(error.contains("too slow"), "{error}");
    assert!(
        events < total,
        "the slow reader was not sent everything ({events})"
    );
}
