//! The pipeline over encrypted, authenticated links: Kafka's SASL_SSL listener (SCRAM-SHA-512)
//! and shards that take TLS connections only, checked with `sslmode=verify-full` against the
//! CA `deploy/local/secure` generated. What an operator checks: events go through and are
//! stored once and read back; wrong credentials, plaintext and a wrong host name fail at once,
//! saying why, without showing a password.
//!
//! The stack is `deploy/local/secure up` (tests/run starts it and runs this group beside the
//! main one). Without it every test here fails, naming the command.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use pipeline_tests::{by_client, ids, order_key, sibling_binary, SecureStack, Stack};
use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);
/// A refused start must come well before this: no hang.
const START_DEADLINE: Duration = Duration::from_secs(30);

async fn secure_stack() -> (SecureStack, Stack) {
    let secure = SecureStack::local();
    let stack = Stack::with_links(secure.brokers.clone(), secure.links()).await;
    (secure, stack)
}

fn events(clients: usize, per_client: usize) -> Vec<Value> {
    (0..per_client)
        .flat_map(|n| {
            (0..clients).map(move |c| {
                let mut e = json!({"client_id": format!("tls-{c}"), "type": "reading", "payload": {"n": n}});
                if n % 3 == 0 {
                    e["priority"] = "critical".into();
                }
                e
            })
        })
        .collect()
}

/// An error with its causes, as a service binary prints it at exit (`Caused by: …`).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn password(secure: &SecureStack, file: &str) -> String {
    std::fs::read_to_string(secure.tls_dir.join(file))
        .expect("password file")
        .trim_end()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_flow_end_to_end_over_sasl_ssl_and_verified_tls() {
    let (_secure, stack) = secure_stack().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;
    let query = stack.start_query().await;
    stack.ready(&gateway, DEADLINE).await;
    stack.ready(&query, DEADLINE).await;

    let sent = events(8, 6);
    let posted = stack.post_events(&gateway, &sent).await;
    stack.drained(DEADLINE).await;

    let counts = stack.row_counts().await;
    for id in &posted.event_ids {
        assert_eq!(counts.get(id), Some(&1), "{id} stored once");
    }
    assert_eq!(counts.len(), posted.event_ids.len(), "nothing else stored");
    // The lane each event was posted to: its priority.
    let critical: HashSet<Uuid> = sent
        .iter()
        .zip(&posted.event_ids)
        .filter(|(event, _)| event["priority"] == "critical")
        .map(|(_, id)| *id)
        .collect();
    for (client, want) in by_client(&sent, &posted.event_ids) {
        let history = pipeline_tests::eventually(DEADLINE, "persisted history", || async {
            let h = stack.history(&query, &client, 5).await;
            (h.len() >= want.len() && h.iter().all(|e| e["status"] == "persisted")).then_some(h)
        })
        .await;
        let keys: Vec<_> = history.iter().map(order_key).collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "{client}: read back in (ordered_at, event_id) order: {keys:?}"
        );
        let answered = ids(&history);
        let sorted = |events: &[Uuid]| {
            let mut events = events.to_vec();
            events.sort();
            events
        };
        assert_eq!(
            sorted(&answered),
            sorted(&want),
            "{client}: each posted event read back once"
        );
        // Within a lane, posted order is the read order (one partition, increasing ids);
        // across lanes the critical one's partition may have raised `ordered_at`.
        for (lane, is_critical) in [("critical", true), ("normal", false)] {
            let in_lane = |events: &[Uuid]| -> Vec<Uuid> {
                events
                    .iter()
                    .filter(|id| critical.contains(id) == is_critical)
                    .copied()
                    .collect()
            };
            assert_eq!(
                in_lane(&answered),
                in_lane(&want),
                "{client}: the {lane} lane read back in posted order"
            );
        }
    }

    // Every session of the services to the shards is encrypted (pg_hba allows no other,
    // this shows it from the server's side).
    for url in &stack.shard_urls {
        let client = stack.links.connect(url).await;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = current_database() AND a.backend_type = 'client backend'",
                &[],
            )
            .await
            .expect("pg_stat_ssl");
        let (tls, plain): (i64, i64) = (row.get(0), row.get(1));
        assert!(
            tls >= 2,
            "the services' sessions and this one use TLS: {tls}"
        );
        assert_eq!(plain, 0, "no session without TLS");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sasl_password_stops_each_service_at_start_naming_authentication() {
    let (secure, stack) = secure_stack().await;
    let real = password(&secure, "kafka-pipeline.password");
    let mut wrong = secure.kafka_security();
    wrong.sasl_password_file = None;
    wrong.sasl_password = Some(SecretString::from("not-the-password"));

    let mut gateway = stack.gateway_settings();
    gateway.kafka.security = wrong.clone();
    let failed = tokio::time::timeout(START_DEADLINE, producer_gateway::Gateway::bind(&gateway))
        .await
        .expect("the gateway decides within the deadline")
        .err()
        .expect("the gateway refuses to start");
    let mut writer = stack.writer_settings();
    writer.kafka.security = wrong.clone();
    let writer_failed = tokio::time::timeout(START_DEADLINE, db_writer::DbWriter::connect(writer))
        .await
        .expect("db-writer decides within the deadline")
        .err()
        .expect("db-writer refuses to start");
    let mut query = stack.query_settings();
    query.kafka.security = wrong;
    let query_failed =
        tokio::time::timeout(START_DEADLINE, query_service::QueryService::bind(&query))
            .await
            .expect("query-service decides within the deadline")
            .err()
            .expect("query-service refuses to start");
    for (service, error) in [
        ("producer-gateway", chain(&failed)),
        ("db-writer", chain(&writer_failed)),
        ("query-service", chain(&query_failed)),
    ] {
        assert!(
            error.to_lowercase().contains("authentication"),
            "{service}: {error}"
        );
        assert!(
            !error.contains("not-the-password") && !error.contains(&real),
            "{service} shows a password: {error}"
        );
    }
}

#[tokio::test]
async fn a_plaintext_session_to_a_hostssl_only_shard_is_refused() {
    let (secure, stack) = secure_stack().await;
    let port = secure.pg_ports[0];
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable");
    let error = stack
        .links
        .store(vec![url.clone()])
        .connect(0, &url)
        .await
        .err()
        .map(|e| chain(&e))
        .expect("refused");
    assert!(
        error.contains("no pg_hba.conf entry") && error.contains("no encryption"),
        "{error}"
    );

    // A writer configured that way does not start (its migrations cannot connect).
    let mut writer = stack.writer_settings();
    writer.store.shards = stack
        .shard_urls
        .iter()
        .map(|u| u.replace("sslmode=verify-full", "sslmode=disable"))
        .collect();
    let error = tokio::time::timeout(START_DEADLINE, db_writer::DbWriter::connect(writer))
        .await
        .expect("db-writer decides within the deadline")
        .err()
        .map(|e| chain(&e))
        .expect("db-writer refuses to start");
    assert!(
        error.contains("shard 0") && error.contains("no encryption"),
        "{error}"
    );
    assert!(
        !error.contains(&password(&secure, "pg.password")),
        "{error}"
    );
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_the_ca() {
    let (secure, stack) = secure_stack().await;
    let port = secure.pg_ports[0];
    let attempt = |url: String, root_cert: Option<std::path::PathBuf>| {
        let mut store = stack.links.store(vec![url.clone()]);
        store.ssl_root_cert = root_cert;
        async move { store.connect(0, &url).await.map(|_| ()) }
    };
    // The certificate is for localhost and 127.0.0.1; `hostaddr` reaches the same server
    // under another name.
    let wrong_name = format!(
        "postgres://postgres@shard.wrong.invalid:{port}/postgres?hostaddr=127.0.0.1&sslmode=verify-full"
    );
    let error = attempt(wrong_name.clone(), Some(secure.ca()))
        .await
        .err()
        .map(|e| chain(&e))
        .expect("wrong host name refused");
    assert!(
        error.contains("certificate verify failed") && error.contains("hostname mismatch"),
        "{error}"
    );
    // verify-ca checks the chain only: the same name passes.
    attempt(
        wrong_name.replace("verify-full", "verify-ca"),
        Some(secure.ca()),
    )
    .await
    .expect("verify-ca ignores the host name");
    // The right name with the right CA passes; without that CA (the system's store) it fails.
    let right = format!("postgres://postgres@localhost:{port}/postgres?sslmode=verify-full");
    attempt(right.clone(), Some(secure.ca()))
        .await
        .expect("localhost is in the certificate");
    let error = attempt(right, None)
        .await
        .err()
        .map(|e| chain(&e))
        .expect("a CA the system does not know is refused");
    assert!(error.contains("certificate verify failed"), "{error}");
}

#[tokio::test]
async fn a_wrong_shard_password_in_the_url_is_not_shown() {
    let (secure, stack) = secure_stack().await;
    let port = secure.pg_ports[0];
    let url = format!(
        "postgres://postgres:wrong-url-secret@127.0.0.1:{port}/postgres?sslmode=verify-full"
    );
    let mut store = stack.links.store(vec![url.clone()]);
    store.password_file = None;
    let error = store
        .connect(0, &url)
        .await
        .err()
        .map(|e| chain(&e))
        .expect("wrong password refused");
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!error.contains("wrong-url-secret"), "{error}");
}

/// `--print-config` of every service shows `***` for the SASL password, whatever layer set it.
#[test]
fn print_config_never_shows_the_sasl_password() {
    let secret = "print-config-secret-4711";
    let mut shown = HashMap::new();
    for (binary, prefix) in [
        ("producer-gateway", "GATEWAY_"),
        ("db-writer", "DB_WRITER_"),
        ("query-service", "QUERY_"),
    ] {
        let output = std::process::Command::new(sibling_binary(binary))
            .arg("--print-config")
            .env(
                format!("{prefix}KAFKA__SECURITY__SECURITY_PROTOCOL"),
                "sasl_ssl",
            )
            .env(
                format!("{prefix}KAFKA__SECURITY__SASL_USERNAME"),
                "pipeline",
            )
            .env(format!("{prefix}KAFKA__SECURITY__SASL_PASSWORD"), secret)
            .output()
            .unwrap_or_else(|e| panic!("run {binary} (cargo build --bins): {e}"));
        assert!(output.status.success(), "{binary}: {output:?}");
        shown.insert(binary, String::from_utf8_lossy(&output.stdout).into_owned());
    }
    for (binary, text) in shown {
        assert!(!text.contains(secret), "{binary} printed the password");
        assert!(
            text.contains("sasl_password = \"***\""),
            "{binary} hides that a password is set: {text}"
        );
    }
}
