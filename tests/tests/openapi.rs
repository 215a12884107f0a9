//! `GET /openapi.json` of each service describes the routes it really serves: every documented
//! operation is answered (not 404/405) with a documented status, and real answers — pages,
//! the pipeline view, problem+json errors — validate against the documented schemas.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::time::Duration;

use pipeline_tests::{eventually, Stack};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(60);

async fn document(stack: &Stack, base: &str) -> Value {
    let answer = stack
        .http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let document: Value = answer.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "an OpenAPI 3 document"
    );
    document
}

/// Checks `body` against the schema the document gives for `path`/`method`/`status`.
fn assert_matches(document: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let errors = mismatches(document, path, method, status, body);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the answer does not match the document: {errors:?}\n{body}"
    );
}

fn mismatches(
    document: &Value,
    path: &str,
    method: &str,
    status: u16,
    body: &Value,
) -> Vec<String> {
    let responses = &document["paths"][path][method]["responses"];
    let response = &responses[status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {path} answered {status}, which it does not document: {responses}"
    );
    let content = response["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} {status}: no content documented"));
    let (_, media) = content
        .iter()
        .find(|(media, _)| media.contains("json"))
        .unwrap_or_else(|| panic!("{method} {path} {status}: no JSON content documented"));
    // The schema refers into the document's components; validate with them alongside.
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [media["schema"]],
        "components": document["components"],
    });
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: schema does not compile: {e}"));
    validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_service_documents_what_it_serves() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;
    let query = stack.start_query().await;
    let events: Vec<Value> = (0..6)
        .map(|n| {
            json!({"client_id": "doc-reader", "type": "t", "priority": if n % 2 == 0 { "normal" } else { "critical" }, "payload": {"n": n}})
        })
        .collect();
    stack.post_events(&gateway, &events).await;
    let document = document(&stack, &query).await;

    let mut documented: Vec<&str> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort_unstable();
    assert_eq!(
        documented,
        [
            "/dashboard",
            "/events",
            "/events/stream",
            "/pipeline",
            "/pipeline/stream"
        ]
    );

    // Every documented operation is served, with a documented status.
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            assert_eq!(method, "get", "{path}: only reads here");
            let mut request = stack
                .http
                .get(format!("{query}{path}"))
                .query(&[("clientId", "doc-reader")]);
            if path.ends_with("/stream") {
                // Only the head of a stream: its status and content type.
                request = request.timeout(Duration::from_secs(5));
            }
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            assert!(
                !operations[method]["responses"][status.to_string()].is_null(),
                "GET {path} answered {status}, not a documented status"
            );
            if status == 200 {
                let documented_type = operations[method]["responses"]["200"]["content"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .next()
                    .unwrap()
                    .clone();
                let served_type = answer.headers()["content-type"].to_str().unwrap();
                assert!(
                    served_type.starts_with(&documented_type),
                    "GET {path}: serves {served_type}, documents {documented_type}"
                );
            }
        }
    }

    // Real answers match their schemas: a page with both lanes, the pipeline view, errors.
    let page = eventually(DEADLINE, "six events readable", || async {
        let (status, body, _) = stack.get(&query, &[("clientId", "doc-reader")]).await;
        (status == 200 && body["events"].as_array()?.len() == 6).then_some(body)
    })
    .await;
    assert_matches(&document, "/events", "get", 200, &page);
    // The check can fail: a page whose event lost its id, or whose status is a number, does not
    // match.
    let mut mangled = page.clone();
    mangled["events"][0]
        .as_object_mut()
        .unwrap()
        .remove("event_id");
    mangled["complete"] = json!("yes");
    assert_eq!(
        mismatches(&document, "/events", "get", 200, &mangled).len(),
        2,
        "a mangled page is refused"
    );
    let (status, problem, _) = stack.get(&query, &[("order", "sideways")]).await;
    assert_eq!(status, 400);
    assert_matches(&document, "/events", "get", 400, &problem);
    let view = eventually(DEADLINE, "a pipeline sample", || {
        stack.pipeline_view(&query)
    })
    .await;
    assert_matches(&document, "/pipeline", "get", 200, &view);

    // A parameter given twice, a client id no event can have, and a token for a topic this
    // replica does not read: documented 400s, not axum's plain text, an empty history or a
    // wait that cannot end.
    for (query_string, said) in [
        ("clientId=doc-reader&clientId=other", "duplicate field"),
        ("clientId=doc%20reader", "not allowed"),
        (
            "clientId=doc-reader&after=v1~elsewhere~0~5",
            "does not read",
        ),
    ] {
        for path in ["/events", "/events/stream"] {
            let answer = stack
                .http
                .get(format!("{query}{path}?{query_string}"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 400, "{path}?{query_string}");
            let problem: Value = answer.json().await.unwrap();
            assert!(
                problem["detail"].as_str().unwrap().contains(said),
                "{path}?{query_string}: {problem}"
            );
            assert_matches(&document, path, "get", 400, &problem);
        }
    }
    assert_problems_outside_the_document(&stack, &query, "/events", "POST", "GET,HEAD").await;
}

/// What no operation covers is still answered with problem+json: an unknown path (404) and a
/// method the route does not take (405, with the route's `Allow`).
async fn assert_problems_outside_the_document(
    stack: &Stack,
    base: &str,
    path: &str,
    method: &str,
    allowed: &str,
) {
    let problem = |method: &str, path: String, status: u16| {
        let request = stack.http.request(method.parse().unwrap(), path);
        async move {
            let answer = request.send().await.unwrap();
            assert_eq!(answer.status(), status);
            assert_eq!(answer.headers()["content-type"], "application/problem+json");
            let allow = answer.headers().get("allow").cloned();
            (answer.json::<Value>().await.unwrap(), allow)
        }
    };
    let (unknown, _) = problem("GET", format!("{base}/no/such/path"), 404).await;
    assert!(unknown["detail"]
        .as_str()
        .unwrap()
        .contains("/no/such/path"));
    let (wrong, allow) = problem(method, format!("{base}{path}"), 405).await;
    assert_eq!(wrong["type"], "/problems/method-not-allowed");
    assert_eq!(allow.unwrap(), allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producer_gateway_documents_what_it_serves() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let document = document(&stack, &gateway).await;
    let paths: Vec<&String> = document["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/events"]);
    let operations = document["paths"]["/events"].as_object().unwrap();
    assert_eq!(operations.keys().collect::<Vec<_>>(), ["post"]);

    // The documented request body: its example-like events validate, and the gateway takes
    // them; what the schema refuses, the gateway refuses too.
    let body_schema = &document["paths"]["/events"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    let validator = jsonschema::validator_for(&json!({
        "allOf": [body_schema],
        "components": document["components"],
    }))
    .unwrap();
    let one = json!({"client_id": "doc-writer", "type": "t", "payload": {"n": 1}, "priority": "critical", "ts": "2026-11-23T10:00:00Z", "sdk": "docs/1"});
    let many = json!([{"client_id": "doc-writer", "type": "t"}, {"client_id": "doc-writer", "type": "u", "payload": [1, 2]}]);
    let refused = json!({"client_id": "doc writer!", "type": "t"});
    for (body, valid) in [(&one, true), (&many, true), (&refused, false)] {
        assert_eq!(validator.is_valid(body), valid, "schema on {body}");
        let answer = stack
            .post(
                &gateway,
                "application/json",
                serde_json::to_vec(body).unwrap(),
            )
            .await;
        let status = answer.status().as_u16();
        let content_type = answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(status == 202, valid, "gateway on {body}: {status} {answer}");
        assert!(
            content_type.starts_with(if valid {
                "application/json"
            } else {
                "application/problem+json"
            }),
            "{content_type}"
        );
        assert_matches(&document, "/events", "post", status, &answer);
    }

    // NDJSON is documented and served; a wrong content type is a documented 415.
    let ndjson = "{\"client_id\":\"doc-writer\",\"type\":\"t\"}\n{\"client_id\":\"doc-writer\",\"type\":\"t\"}\n";
    assert!(
        !document["paths"]["/events"]["post"]["requestBody"]["content"]["application/x-ndjson"]
            .is_null()
    );
    let answer = stack.post(&gateway, "application/x-ndjson", ndjson).await;
    assert_eq!(answer.status(), 202);
    assert_matches(
        &document,
        "/events",
        "post",
        202,
        &answer.json().await.unwrap(),
    );
    let answer = stack.post(&gateway, "text/plain", "hello").await;
    assert_eq!(answer.status(), 415);
    assert_matches(
        &document,
        "/events",
        "post",
        415,
        &answer.json().await.unwrap(),
    );
    // So is a content coding it does not take; the ones it takes are documented.
    let described = document["paths"]["/events"]["post"]["requestBody"]["description"]
        .as_str()
        .unwrap();
    assert!(described.contains("gzip"), "{described}");
    let answer = stack
        .http
        .post(format!("{gateway}/events"))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 415);
    assert!(answer.headers().contains_key("accept-encoding"));
    assert_matches(
        &document,
        "/events",
        "post",
        415,
        &answer.json().await.unwrap(),
    );
    assert_problems_outside_the_document(&stack, &gateway, "/events", "GET", "POST").await;
}
