//! A gateway that survives abuse: hostile bodies get a clear 4xx and publish nothing; slow
//! clients are cut off (headers) or answered 408 (bodies); past the bounds on requests in
//! progress and bytes buffered, requests get 503 at once while other clients keep being
//! served; compressed bodies are decoded, and one that inflates past the body limit is
//! refused there.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{
    collections::HashSet,
    io::Write,
    time::{Duration, Instant},
};

use pipeline_tests::Stack;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use uuid::Uuid;

/// One POST on a connection of its own: a refused request's connection is closed by the
/// gateway when it answers before reading the body, which a pooled client would reuse.
async fn post(
    gateway: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let unpooled = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    pipeline_tests::post_via(&unpooled, gateway, content_type, body).await
}

async fn answer(_stack: &Stack, gateway: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    read_answer(post(gateway, content_type, body).await).await
}

/// Status and JSON body of an answer; an error answer must be problem+json.
async fn read_answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let problem_json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap() == "application/problem+json");
    let body: Value = response.json().await.unwrap();
    if status >= 400 {
        assert!(problem_json, "{status} is problem+json: {body}");
    }
    (status, body)
}

/// A request whose head has been sent and whose body never ends: the gateway holds what it
/// admitted for it (a request slot, its declared bytes) until its body timeout.
struct Held {
    addr: String,
    head: Vec<u8>,
    stream: TcpStream,
}

impl Held {
    async fn open(addr: &str, head: Vec<u8>) -> Held {
        let stream = Held::send(addr, &head).await;
        Held {
            addr: addr.to_owned(),
            head,
            stream,
        }
    }

    async fn send(addr: &str, head: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        stream
    }

    /// A probe sent after this request can still reach the handler first (the gateway's tasks
    /// run in any order) and take the capacity this one meant to hold; this one is then
    /// refused and its connection closed. Sends it again in that case, so that what fills the
    /// bound is held requests, not probes that end.
    async fn keep_holding(&mut self) {
        let mut answer = [0u8; 512];
        match self.stream.try_read(&mut answer) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => self.stream = Held::send(&self.addr, &self.head).await,
        }
    }
}

fn deep(depth: usize) -> String {
    format!(
        r#"{{"client_id":"h","type":"t","payload":{}1{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bodies_get_a_clear_4xx_and_publish_nothing() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let max_body = stack.gateway_settings().limits.max_body_bytes;
    // Ticks are records too: compare what the events alone add, through ids we can see.
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "invalid UTF-8",
            "application/json",
            b"{\"client_id\":\"h\",\"type\":\"\xff\xfe\"}".to_vec(),
            400,
            "malformed-json",
        ),
        (
            "nesting deeper than 128 levels (PostgreSQL would stall on it)",
            "application/json",
            deep(30_000).into_bytes(),
            422,
            "invalid-events",
        ),
        (
            "a number PostgreSQL cannot store",
            "application/json",
            br#"{"client_id":"h","type":"t","payload":{"n":1e999999}}"#.to_vec(),
            422,
            "invalid-events",
        ),
        (
            "\\u0000 in the payload",
            "application/json",
            br#"{"client_id":"h","type":"t","payload":{"s":"a\u0000b"}}"#.to_vec(),
            422,
            "invalid-events",
        ),
        (
            "\\u0000 in a field",
            "application/json",
            br#"{"client_id":"h","type":"t\u0000"}"#.to_vec(),
            422,
            "invalid-events",
        ),
        (
            "duplicate keys in the event",
            "application/json",
            br#"{"client_id":"h","client_id":"other","type":"t"}"#.to_vec(),
            422,
            "invalid-events",
        ),
        (
            "one event more than the limit",
            "application/x-ndjson",
            "{\"client_id\":\"h\",\"type\":\"t\"}\n"
                .repeat(stack.gateway_settings().limits.max_events + 1)
                .into_bytes(),
            413,
            "",
        ),
        (
            "a body that is a string",
            "application/json",
            br#""events""#.to_vec(),
            422,
            "",
        ),
    ];
    for (what, content_type, body, status, problem) in cases {
        let started = Instant::now();
        let (got, body) = answer(&stack, &gateway, content_type, body).await;
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            body["type"].as_str().unwrap().ends_with(problem),
            "{what}: {body}"
        );
        assert!(
            !body["detail"].as_str().unwrap().is_empty(),
            "{what}: says why"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: answered at once"
        );
    }
    // Nothing of any refused request was published: a writer drains both lanes and stores
    // no event.
    let _writer = stack.start_writer().await;
    stack.drained(Duration::from_secs(60)).await;
    assert!(
        stack.row_counts().await.is_empty(),
        "a refused event was stored"
    );

    // An NDJSON line larger than the body limit: refused from its Content-Length, before a
    // byte of it is read (a client that keeps sending would only see its connection closed).
    let addr = gateway.trim_start_matches("http://").to_owned();
    let mut huge = TcpStream::connect(&addr).await.unwrap();
    huge.write_all(
        format!(
            "POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n{{\"client_id\":\"h\",\"type\":\"t\",\"payload\":{{\"s\":\"xxxx",
            max_body * 2
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), huge.read(&mut head))
        .await
        .expect("answered before the body is sent")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("body-too-large"), "{head}");

    // At the limits, accepted: 10,000 tiny events in one request, a deep but legal payload.
    let max_events = stack.gateway_settings().limits.max_events;
    let tiny = "{\"client_id\":\"h\",\"type\":\"t\"}\n".repeat(max_events);
    let (status, body) = answer(&stack, &gateway, "application/x-ndjson", tiny.into_bytes()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], max_events);
    let (status, body) = answer(&stack, &gateway, "application/json", deep(100).into_bytes()).await;
    assert_eq!(status, 202, "{body}");
    // A byte order mark before the JSON (some .NET and Windows clients send one) is ignored,
    // and an array of one is still answered as an array.
    let marked = "\u{feff}[{\"client_id\":\"h\",\"type\":\"bom\"}]";
    let (status, body) = answer(&stack, &gateway, "application/json", marked.into()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);
    assert!(body.get("event_id").is_none(), "{body}");
    assert!(stack.service_failures().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_and_bounds_answer_503_while_others_are_served() {
    let stack = Stack::new().await;
    let mut settings = stack.gateway_settings();
    settings.limits.header_timeout = Duration::from_millis(500);
    settings.limits.body_timeout = Duration::from_millis(800);
    let gateway = stack.start_gateway_with(settings).await;
    let addr = gateway.trim_start_matches("http://").to_owned();
    let event = br#"{"client_id":"ok","type":"t"}"#.to_vec();

    // Slow-loris: headers never finished → the connection is closed.
    let mut loris = TcpStream::connect(&addr).await.unwrap();
    loris
        .write_all(b"POST /events HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), loris.read_to_end(&mut rest))
        .await
        .expect("the gateway closes a connection whose headers never end")
        .ok();
    assert!(started.elapsed() < Duration::from_secs(5));

    // A body that trickles: 408 after body_timeout, nothing published.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"client_id\":",
    )
    .await
    .unwrap();
    let mut answer_text = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer_text))
        .await
        .expect("answered")
        .unwrap();
    let answer_text = String::from_utf8_lossy(&answer_text[..n]).into_owned();
    assert!(answer_text.starts_with("HTTP/1.1 408"), "{answer_text}");
    assert!(answer_text.contains("body-timeout"), "{answer_text}");

    // Two requests held open (bodies still coming, well within the body timeout of a gateway
    // bounded at two): a third is refused at once with 503, and health keeps answering; once
    // they end, requests pass again.
    let mut bounded = stack.gateway_settings();
    bounded.limits.max_concurrent_requests = 2;
    let gateway = stack.start_gateway_with(bounded).await;
    let addr = gateway.trim_start_matches("http://").to_owned();
    // Answering 202 at once needs broker metadata: wait for it, so a probe is quick.
    stack.ready(&gateway, Duration::from_secs(30)).await;
    let head = b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    let held = tokio::sync::Mutex::new(vec![
        Held::open(&addr, head.to_vec()).await,
        Held::open(&addr, head.to_vec()).await,
    ]);
    let refused =
        pipeline_tests::eventually(Duration::from_secs(5), "a 503 at the bound", || async {
            for open in held.lock().await.iter_mut() {
                open.keep_holding().await;
            }
            let response = post(&gateway, "application/json", event.clone()).await;
            (response.status() == 503).then_some(response)
        })
        .await;
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["type"].as_str().unwrap().ends_with("overloaded"),
        "{problem}"
    );
    let live = stack
        .http
        .get(format!("{gateway}/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200, "health is outside the bound");
    drop(held);
    pipeline_tests::eventually(
        Duration::from_secs(10),
        "202 once the held requests end",
        || async {
            let response = post(&gateway, "application/json", event.clone()).await;
            (response.status() == 202).then_some(())
        },
    )
    .await;
    assert!(
        stack
            .metric(&gateway, "gateway_overloaded_total{bound=\"requests\"}")
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bytes_buffered_across_requests_are_bounded() {
    let stack = Stack::new().await;
    let mut settings = stack.gateway_settings();
    settings.limits.max_buffered_bytes = 64 * 1024;
    // The slow request holds its bytes until its body times out: that is the window in which
    // the probes below must be refused, so it is far longer than their deadline (a loaded
    // machine can take seconds to parse the slow request's head).
    settings.limits.body_timeout = Duration::from_secs(60);
    let gateway = stack.start_gateway_with(settings).await;
    let addr = gateway.trim_start_matches("http://").to_owned();
    // Answering 202 at once needs broker metadata: wait for it, so a probe is quick.
    stack.ready(&gateway, Duration::from_secs(30)).await;
    // One request announces 48 KiB and sends them slowly: another of 32 KiB does not fit.
    let big = tokio::sync::Mutex::new(
        Held::open(
            &addr,
            format!(
                "POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n[",
                48 * 1024
            )
            .into_bytes(),
        )
        .await,
    );
    let payload = format!(
        r#"[{{"client_id":"b","type":"t","payload":{{"s":"{}"}}}}]"#,
        "y".repeat(32 * 1024)
    );
    let refused = pipeline_tests::eventually(
        Duration::from_secs(30),
        "503 past the byte bound",
        || async {
            big.lock().await.keep_holding().await;
            let response = post(&gateway, "application/json", payload.clone()).await;
            (response.status() == 503).then_some(response)
        },
    )
    .await;
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("buffered bytes"),
        "{problem}"
    );
    // A small request still fits beside the big one.
    let (status, body) = answer(
        &stack,
        &gateway,
        "application/json",
        br#"{"client_id":"b","type":"small"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    drop(big);
    pipeline_tests::eventually(
        Duration::from_secs(10),
        "the big one fits once the other is gone",
        || async {
            let response = post(&gateway, "application/json", payload.clone()).await;
            (response.status() == 202).then_some(())
        },
    )
    .await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compressed_bodies_are_stored_as_sent_and_a_bomb_stops_at_the_body_limit() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let query = stack.start_query().await;
    let max_body = stack.gateway_settings().limits.max_body_bytes;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let send = |content_type: &'static str, coding: &'static str, body: Vec<u8>| {
        let http = http.clone();
        let url = format!("{gateway}/events");
        async move {
            let answer = http
                .post(url)
                .header("content-type", content_type)
                .header("content-encoding", coding)
                .body(body)
                .send()
                .await
                .unwrap();
            let accept_encoding = answer
                .headers()
                .get("accept-encoding")
                .map(|v| v.to_str().unwrap().to_owned());
            let (status, body) = read_answer(answer).await;
            (status, body, accept_encoding)
        }
    };

    // A gzip NDJSON batch and a deflate (zlib) array: taken as if sent plain.
    let lines: String = (0..50)
        .map(|n| format!("{{\"client_id\":\"zipped\",\"type\":\"t\",\"payload\":{{\"n\":{n},\"s\":\"ä€\"}}}}\n"))
        .collect();
    let (status, gzipped, _) = send("application/x-ndjson", "gzip", gzip(lines.as_bytes())).await;
    assert_eq!(status, 202, "{gzipped}");
    assert_eq!(gzipped["accepted"], 50);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    zlib.write_all(br#"[{"client_id":"zipped","type":"u","payload":{"n":50}}]"#)
        .unwrap();
    let (status, deflated, _) = send("application/json", "deflate", zlib.finish().unwrap()).await;
    assert_eq!(status, 202, "{deflated}");

    // A few KiB that inflate to three times the body limit: refused once the decoded body
    // passes it, publishing nothing.
    let mut bomb = b"{\"client_id\":\"zipped\",\"type\":\"bomb\",\"payload\":{\"s\":\"".to_vec();
    bomb.resize(3 * max_body, b'x');
    bomb.extend_from_slice(b"\"}}");
    let bomb = gzip(&bomb);
    assert!(bomb.len() < max_body / 100, "{} bytes", bomb.len());
    let started = Instant::now();
    let (status, problem, _) = send("application/json", "gzip", bomb).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["type"], "/problems/body-too-large");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
    // Not gzip at all, and a coding the gateway does not take.
    let (status, problem, _) = send(
        "application/json",
        "gzip",
        br#"{"client_id":"zipped","type":"plain"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "/problems/undecodable-body");
    let (status, problem, accepted) = send("application/json", "br", b"anything".to_vec()).await;
    assert_eq!(status, 415, "{problem}");
    assert_eq!(problem["type"], "/problems/unsupported-content-encoding");
    assert_eq!(accepted.as_deref(), Some("gzip, deflate, identity"));
    assert!(stack.service_failures().is_empty());

    // Stored once each, nothing else; read back as sent.
    let acknowledged: HashSet<Uuid> = gzipped["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(deflated["events"].as_array().unwrap())
        .map(|e| e["event_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(acknowledged.len(), 51);
    let _writer = stack.start_writer().await;
    stack.drained(Duration::from_secs(60)).await;
    let rows = stack.row_counts().await;
    assert_eq!(rows.keys().copied().collect::<HashSet<_>>(), acknowledged);
    assert!(rows.values().all(|&n| n == 1), "{rows:?}");
    let history = stack.history(&query, "zipped", 100).await;
    let payloads: Vec<&Value> = history.iter().map(|e| &e["payload"]).collect();
    assert_eq!(payloads.len(), 51);
    for (n, payload) in payloads.iter().enumerate() {
        assert_eq!(payload["n"], n, "{payload}");
    }
    assert_eq!(payloads[7]["s"], "ä€");
}
