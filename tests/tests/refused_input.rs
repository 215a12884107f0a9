//! Input PostgreSQL would refuse is refused by the gateway, before anything is acknowledged:
//! otherwise a `202` event would later be dead-lettered by db-writer, unseen by its producer.
//! Input just inside PostgreSQL's limits is acknowledged and stored.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::time::Duration;

use pipeline_tests::{eventually, Stack};
use serde_json::Value;
use tokio_postgres::NoTls;
use uuid::Uuid;

const STORED: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_postgresql_refuses_is_refused_with_422_and_never_published() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;

    // Raw bodies: serde_json::Value can hold neither 1e999999 nor a lone surrogate.
    let cases = [
        (
            "number beyond numeric",
            r#"{"client_id":"h","type":"t","payload":{"n":1e999999}}"#,
            "payload",
        ),
        (
            "tiny number beyond numeric's scale",
            r#"{"client_id":"h","type":"t","payload":{"n":1e-16384}}"#,
            "payload",
        ),
        (
            "NUL in a payload string",
            r#"{"client_id":"h","type":"t","payload":{"text":"nul \u0000 byte"}}"#,
            "payload",
        ),
        (
            "NUL in a payload key",
            r#"{"client_id":"h","type":"t","payload":{"k\u0000":1}}"#,
            "payload",
        ),
        (
            "lone high surrogate",
            r#"{"client_id":"h","type":"t","payload":["\ud800"]}"#,
            "payload",
        ),
        (
            "lone low surrogate",
            r#"{"client_id":"h","type":"t","payload":"\udc00"}"#,
            "payload",
        ),
        (
            "NUL in sdk",
            r#"{"client_id":"h","type":"t","sdk":"ios\u0000"}"#,
            "sdk",
        ),
    ];
    for (case, body, field) in cases {
        let response = stack.post(&gateway, "application/json", body).await;
        assert_eq!(response.status(), 422, "{case}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{case}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["index"], 0, "{case}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{case}: {problem}");
        assert!(
            problem["errors"][0]["reason"]
                .as_str()
                .is_some_and(|r| !r.is_empty()),
            "{case}: {problem}"
        );
    }

    // One bad item refuses the whole request, its good neighbours included.
    let ndjson = concat!(
        r#"{"client_id":"h","type":"t","payload":{"n":1}}"#,
        "\n",
        r#"{"client_id":"h","type":"t","payload":{"n":1e131072}}"#,
    );
    let response = stack.post(&gateway, "application/x-ndjson", ndjson).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["errors"].as_array().unwrap().len(), 1, "{problem}");
    assert_eq!(problem["errors"][0]["index"], 1);
    assert_eq!(problem["errors"][0]["field"], "payload");
    assert!(
        problem["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("number 1e131072 is beyond PostgreSQL's numeric range"),
        "{problem}"
    );

    assert_eq!(
        stack.published_count(),
        0,
        "refused requests published nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn input_at_postgresql_limits_is_acknowledged_and_stored() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;

    let body = r#"{"client_id":"h","type":"t","sdk":"ios/\u00e9",
        "payload":{"big":-1e131071,"small":1e-16383,"zero":0e1073741822,"pair":"\ud83d\ude00",
                   "escaped":"\\u0000","control":"\u0001"}}"#;
    let response = stack.post(&gateway, "application/json", body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let event_id: Uuid = answer["event_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(stack.published_count(), 1);

    let stored = eventually(STORED, "the event at the limits to be stored", || {
        stored_payload(&stack, event_id)
    })
    .await;
    assert_eq!(
        stored,
        (true, true, true, "😀".to_owned(), "\\u0000".to_owned()),
        "stored as sent"
    );
}

/// `(big, small, zero, pair, escaped)` of the event's stored payload, the numbers compared
/// with PostgreSQL's own reading of the literals that were sent.
async fn stored_payload(
    stack: &Stack,
    event_id: Uuid,
) -> Option<(bool, bool, bool, String, String)> {
    for url in &stack.shard_urls {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(connection);
        let exists: bool = client
            .query_one("SELECT to_regclass('events') IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        if !exists {
            continue;
        }
        let row = client
            .query_opt(
                "SELECT payload->'big' = '-1e131071'::jsonb, payload->'small' = '1e-16383'::jsonb,
                        payload->'zero' = '0'::jsonb, payload->>'pair', payload->>'escaped'
                 FROM events WHERE event_id = $1",
                &[&event_id],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return Some((row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)));
        }
    }
    None
}
