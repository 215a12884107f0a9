//! Every acknowledged event reaches every reader exactly once, in one stable order: streams
//! and pagers, whatever the order in which events become visible (both lanes of a request,
//! concurrent requests, gateways whose clocks differ), retries with the same `event_id`, and
//! streams whose reader goes away or whose service stops.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use pipeline_tests::{assert_same_content, eventually, ids, Block, SseReader, Stack};
use serde_json::{json, Value};
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(60);
const LIVE: Duration = Duration::from_secs(30);

fn streamed_ids(events: &[pipeline_tests::Streamed]) -> Vec<Uuid> {
    events
        .iter()
        .map(|s| s.event["event_id"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn assert_once(seen: &[Uuid], acknowledged: &[Uuid], who: &str) {
    let unique: HashSet<&Uuid> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "{who}: an event twice");
    let expected: HashSet<&Uuid> = acknowledged.iter().collect();
    assert_eq!(unique, expected, "{who}: not every acknowledged event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_gets_both_lanes_of_every_request_once_and_rereading_gives_the_same_order() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let _writer = stack.start_writer().await;
    let mut stream = SseReader::open(&stack.http, &query, &[("clientId", "x")], None)
        .await
        .unwrap();

    let mut acknowledged = Vec::new();
    let mut posted: HashMap<Uuid, Value> = HashMap::new();
    for n in 0..5 {
        let request = vec![
            json!({"client_id": "x", "type": "n1", "payload": {"n": n}}),
            json!({"client_id": "x", "type": "c1", "priority": "critical", "payload": {"n": n}}),
        ];
        let ack = stack.post_events(&gateway, &request).await;
        for (event, id) in request.iter().zip(&ack.event_ids) {
            posted.insert(*id, event.clone());
        }
        acknowledged.extend(ack.event_ids);
    }
    let live = stream.events(10, LIVE).await;
    let order = streamed_ids(&live);
    assert_once(&order, &acknowledged, "live stream");
    for streamed in &live {
        let id: Uuid = streamed.event["event_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_same_content(&posted[&id], &streamed.event);
    }

    // Paging from the start, while events move into PostgreSQL: the order seen live.
    assert_eq!(ids(&stack.history(&query, "x", 3).await), order, "pager");
    // A new stream from the start: the same order.
    let mut again = SseReader::open(&stack.http, &query, &[("clientId", "x")], None)
        .await
        .unwrap();
    assert_eq!(streamed_ids(&again.events(10, LIVE).await), order, "replay");
    // Resuming after the fourth event: exactly the six after it.
    let mut resumed = SseReader::open(&stack.http, &query, &[("clientId", "x")], Some(&live[3].id))
        .await
        .unwrap();
    assert_eq!(streamed_ids(&resumed.events(6, LIVE).await), order[4..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_through_gateways_with_skewed_clocks_reach_pagers_and_streams_once() {
    let stack = Stack::new().await;
    let (fast, _fast_stop) = stack
        .start_gateway_clocked(
            stack.gateway_settings(),
            producer_gateway::IngestClock::default(),
        )
        .await;
    // A host whose clock runs 700 ms behind: its events are older than others' by their
    // timestamps, yet arrive after them.
    let (slow, _slow_stop) = stack
        .start_gateway_clocked(
            stack.gateway_settings(),
            producer_gateway::IngestClock::with_offset_micros(-700_000),
        )
        .await;
    let query = stack.start_query().await;
    let _writer = stack.start_writer().await;
    let mut stream = SseReader::open(&stack.http, &query, &[("clientId", "k")], None)
        .await
        .unwrap();

    let post = |gateway: String, task: usize| {
        let stack = &stack;
        async move {
            let mut ids = Vec::new();
            for n in 0..15 {
                let priority = if (n + task) % 3 == 0 {
                    "critical"
                } else {
                    "normal"
                };
                let request = [
                    json!({"client_id": "k", "type": "t", "priority": priority, "payload": {"task": task, "n": n}}),
                ];
                ids.extend(stack.post_events(&gateway, &request).await.event_ids);
            }
            ids
        }
    };
    // A pager that follows its resume cursor while the posting goes on, polling when it
    // has reached the end of what is released.
    let pager = async {
        let mut seen: Vec<Uuid> = Vec::new();
        let mut cursor: Option<String> = None;
        let deadline = tokio::time::Instant::now() + LIVE;
        while seen.len() < 60 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pager saw {} of 60 events",
                seen.len()
            );
            let mut params = vec![("clientId", "k".to_owned()), ("limit", "2".to_owned())];
            if let Some(c) = &cursor {
                params.push(("cursor", c.clone()));
            }
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, page, _) = stack.get(&query, &params).await;
            assert_eq!(status, 200, "{page}");
            seen.extend(ids(page["events"].as_array().unwrap()));
            if let Some(resume) = page["resume_cursor"].as_str() {
                cursor = Some(resume.to_owned());
            }
            if page["next_cursor"].is_null() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        seen
    };
    let (a, b, c, d, paged) = tokio::join!(
        post(fast.clone(), 0),
        post(slow.clone(), 1),
        post(fast.clone(), 2),
        post(slow.clone(), 3),
        pager
    );
    let acknowledged: Vec<Uuid> = [a, b, c, d].concat();
    let live = streamed_ids(&stream.events(60, LIVE).await);
    assert_once(&live, &acknowledged, "stream");
    assert_once(&paged, &acknowledged, "pager");
    assert_eq!(paged, live, "pager and stream saw one order");
    stack.drained(DRAIN).await;
    assert_eq!(
        ids(&stack.history(&query, "k", 7).await),
        live,
        "re-reading after persisting gives the order seen live"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_retried_with_its_id_is_one_event_everywhere_before_and_after_storing() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let id = Uuid::now_v7();
    let event =
        json!({"event_id": id, "client_id": "r", "type": "t", "payload": {"v": 1}, "sdk": "ios/1"});
    let critical = json!({"event_id": id, "client_id": "r", "type": "t", "payload": {"v": 1}, "sdk": "ios/1", "priority": "critical"});
    let first = stack
        .post_events(&gateway, std::slice::from_ref(&event))
        .await;
    stack
        .post_events(&gateway, std::slice::from_ref(&event))
        .await;
    stack
        .post_events(&gateway, &[event.clone(), event.clone()])
        .await;
    stack.post_events(&gateway, &[critical]).await;
    let marker = stack
        .post_events(&gateway, &[json!({"client_id": "r", "type": "marker"})])
        .await;
    assert_eq!(stack.published_count(), 6);

    // In flight: once, and the first copy.
    let history = eventually(LIVE, "both events visible", || async {
        let h = stack.history(&query, "r", 10).await;
        (h.len() >= 2).then_some(h)
    })
    .await;
    assert_eq!(ids(&history), vec![id, marker.event_ids[0]]);
    let shown = history[0].clone();
    assert_eq!(shown["status"], "in_flight");
    assert_eq!(
        shown["partition"].as_i64().unwrap() as i32,
        first.partitions[0]
    );
    assert_same_content(&event, &shown);
    // A stream sends it once too.
    let mut stream = SseReader::open(&stack.http, &query, &[("clientId", "r")], None)
        .await
        .unwrap();
    assert_eq!(
        streamed_ids(&stream.events(2, LIVE).await),
        vec![id, marker.event_ids[0]]
    );

    // Stored: one row, and the answer shows the same copy as before.
    let _writer = stack.start_writer().await;
    stack.drained(DRAIN).await;
    assert_eq!(stack.row_counts().await.get(&id), Some(&1));
    let after = eventually(LIVE, "persisted", || async {
        let h = stack.history(&query, "r", 10).await;
        h.iter().all(|e| e["status"] == "persisted").then_some(h)
    })
    .await;
    assert_eq!(ids(&after), vec![id, marker.event_ids[0]]);
    for field in ["ingested_at", "ordered_at", "topic", "partition", "offset"] {
        assert_eq!(
            after[0][field], shown[field],
            "{field} before and after storing"
        );
    }

    // A retry long after, seen by a replica that never saw the first copy: still one event,
    // and a stream does not send it again.
    let (fresh, _stop) = stack.start_query_with(stack.query_settings()).await;
    // A replica refuses streams (503, retry) until it has caught up after its start.
    stack.ready(&fresh, LIVE).await;
    let mut fresh_stream = SseReader::open(&stack.http, &fresh, &[("clientId", "r")], None)
        .await
        .unwrap();
    assert_eq!(streamed_ids(&fresh_stream.events(2, LIVE).await).len(), 2);
    stack
        .post_events(&gateway, std::slice::from_ref(&event))
        .await;
    let last = stack
        .post_events(
            &gateway,
            &[json!({"client_id": "r", "type": "after-retry"})],
        )
        .await;
    let next = fresh_stream.events(1, LIVE).await;
    assert_eq!(
        streamed_ids(&next),
        last.event_ids,
        "the retry is not sent again"
    );
    let answered = eventually(LIVE, "the later event visible", || async {
        let h = stack.history(&fresh, "r", 10).await;
        (h.len() >= 3).then_some(h)
    })
    .await;
    assert_eq!(
        ids(&answered),
        vec![id, marker.event_ids[0], last.event_ids[0]]
    );
    stack.drained(DRAIN).await;
    assert_eq!(stack.row_counts().await.get(&id), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_ends_when_its_reader_goes_and_frees_its_slot() {
    let stack = Stack::new().await;
    let mut settings = stack.query_settings();
    settings.api.max_streams = 1;
    settings.api.stream_heartbeat = Duration::from_millis(100);
    let (query, _stop) = stack.start_query_with(settings).await;
    let first = SseReader::open(&stack.http, &query, &[("clientId", "quiet")], None)
        .await
        .unwrap();
    let (status, _) = SseReader::open(&stack.http, &query, &[("clientId", "other")], None)
        .await
        .err()
        .expect("the only slot is taken");
    assert_eq!(status, 503);
    drop(first);
    eventually(Duration::from_secs(10), "the slot freed", || async {
        SseReader::open(&stack.http, &query, &[("clientId", "other")], None)
            .await
            .ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_when_the_service_stops() {
    let stack = Stack::new().await;
    let (query, stop) = stack.start_query_with(stack.query_settings()).await;
    let mut stream = SseReader::open(&stack.http, &query, &[("clientId", "s")], None)
        .await
        .unwrap();
    stop.cancel();
    match stream.next(Duration::from_secs(10)).await {
        Block::End => {}
        other => panic!("expected the end of the stream, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn newest_first_pages_back_through_the_history_once() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let batch: Vec<Value> = (0..5)
            .map(|i| json!({"client_id": "d", "type": "t", "payload": {"n": n * 5 + i}}))
            .collect();
        acknowledged.extend(stack.post_events(&gateway, &batch).await.event_ids);
        if n == 2 {
            // Part of the history persisted, part in flight.
            let writer = stack.start_writer().await;
            stack.drained(DRAIN).await;
            writer.cancel();
        }
    }
    let oldest_first = eventually(LIVE, "all visible", || async {
        let h = stack.history(&query, "d", 100).await;
        (h.len() >= 25).then_some(ids(&h))
    })
    .await;
    assert_eq!(oldest_first, acknowledged);
    let mut newest_first = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = vec![
            ("clientId", "d".to_owned()),
            ("limit", "4".to_owned()),
            ("order", "desc".to_owned()),
        ];
        if let Some(c) = &cursor {
            params.push(("cursor", c.clone()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, page, _) = stack.get(&query, &params).await;
        assert_eq!(status, 200, "{page}");
        newest_first.extend(ids(page["events"].as_array().unwrap()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(newest_first.len() <= 25, "paging back did not end");
    }
    let mut reversed = acknowledged.clone();
    reversed.reverse();
    assert_eq!(newest_first, reversed);
    let (status, problem, _) = stack
        .get(&query, &[("clientId", "d"), ("order", "newest")])
        .await;
    assert_eq!(status, 400, "{problem}");
}
