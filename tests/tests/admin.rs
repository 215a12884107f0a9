//! `eventpipe-admin` against the real stack, run as operators run it: the binary, the
//! services' own configuration files, its output and exit code.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{path::PathBuf, process::Command, time::Duration};

use pipeline_tests::{sibling_binary, Stack};
use serde_json::{json, Value};
use tokio_postgres::NoTls;

const DRAIN: Duration = Duration::from_secs(60);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The services' configuration files, as a deployment would have them.
struct Configs {
    writer: PathBuf,
    query: PathBuf,
}

impl Configs {
    fn write(writer: &db_writer::Settings, query: &query_service::Settings) -> Configs {
        let dir = std::env::temp_dir();
        let id = uuid::Uuid::new_v4().simple();
        let configs = Configs {
            writer: dir.join(format!("admin-writer-{id}.toml")),
            query: dir.join(format!("admin-query-{id}.toml")),
        };
        std::fs::write(&configs.writer, chassis::config::render(writer)).unwrap();
        std::fs::write(&configs.query, chassis::config::render(query)).unwrap();
        configs
    }

    async fn admin(&self, args: &[&str]) -> Run {
        let mut command = Command::new(sibling_binary("eventpipe-admin"));
        command
            .arg("--writer-config")
            .arg(&self.writer)
            .arg("--query-config")
            .arg(&self.query)
            .args(args);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("eventpipe-admin runs (cargo build --bins)");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Drop for Configs {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.writer);
        let _ = std::fs::remove_file(&self.query);
    }
}

async fn one_value(url: &str, sql: &str) -> Option<i32> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query_opt(sql, &[])
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_stamps_each_shard_and_shards_check_catches_a_swapped_list() {
    let stack = Stack::new().await;
    let mut writer = stack.writer_settings();
    writer.store.migrate_on_start = false;
    let query = stack.query_settings();
    let configs = Configs::write(&writer, &query);

    // Fresh databases: nothing to check against yet.
    let unmigrated = configs.admin(&["shards", "check"]).await;
    assert_eq!(
        unmigrated.code, 1,
        "{}{}",
        unmigrated.stdout, unmigrated.stderr
    );
    assert!(
        unmigrated.stderr.contains("no identity stamp"),
        "{}",
        unmigrated.stderr
    );

    let migrated = configs.admin(&["migrate"]).await;
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    for (index, url) in stack.shard_urls.iter().enumerate() {
        assert_eq!(
            one_value(url, "SELECT count(*)::int FROM events").await,
            Some(0),
            "shard {index} has the events table"
        );
        assert_eq!(
            one_value(url, "SELECT shard_index FROM shard_identity").await,
            Some(index as i32),
            "shard {index} stamped"
        );
    }
    let agree = configs.admin(&["shards", "check"]).await;
    assert_eq!(agree.code, 0, "{}{}", agree.stdout, agree.stderr);
    assert!(
        agree.stdout.contains("shard lists agree (2 shards)"),
        "{}",
        agree.stdout
    );

    // query-service with the two URLs swapped: its reads would go to the wrong databases.
    let mut swapped = query.clone();
    swapped.store.shards.reverse();
    let configs = Configs::write(&writer, &swapped);
    let check = configs.admin(&["shards", "check"]).await;
    assert_eq!(check.code, 1, "{}{}", check.stdout, check.stderr);
    assert!(
        check.stderr.contains("query-service shard 0")
            && check.stderr.contains("is stamped as shard 1"),
        "{}",
        check.stderr
    );
    // And a service started with the swapped list refuses to run.
    let mut swapped_writer = writer.clone();
    swapped_writer.store.shards.reverse();
    swapped_writer.store.migrate_on_start = true;
    let refused = db_writer::DbWriter::connect(swapped_writer).await;
    let error = refused
        .err()
        .expect("a swapped list is refused")
        .to_string();
    assert!(error.contains("stamped as shard"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_prints_the_pipeline_view() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let writer = stack.start_writer().await;
    let query = stack.start_query().await;
    let events: Vec<Value> = (0..20)
        .map(|n| json!({"client_id": format!("st-{}", n % 4), "type": "t"}))
        .collect();
    stack.post_events(&gateway, &events).await;
    stack.drained(DRAIN).await;
    let configs = Configs::write(&stack.writer_settings(), &stack.query_settings());

    let shown = pipeline_tests::eventually(DRAIN, "status shows both lanes and shards", || async {
        let run = configs.admin(&["status", "--query-url", &query]).await;
        (run.code == 0
            && run.stdout.contains(&stack.topic)
            && run.stdout.contains(&stack.critical_topic)
            && run.stdout.contains("shard  state")
            // The writer listed, owning every partition: no warning.
            && run.stdout.contains("writer host")
            && !run.stdout.contains("!!"))
        .then_some(run)
    })
    .await;
    assert!(shown.stdout.starts_with("depth "), "{}", shown.stdout);
    let json = configs
        .admin(&["status", "--query-url", &query, "--json"])
        .await;
    let view: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(view["shards"].as_array().unwrap().len(), 2);

    let down = configs
        .admin(&["status", "--query-url", "http://127.0.0.1:9"])
        .await;
    assert_eq!(down.code, 2, "a connection error is exit code 2");

    // The only writer stops: nothing is being stored, and status says so.
    writer.cancel();
    pipeline_tests::eventually(DRAIN, "status warns that no writer stores", || async {
        let run = configs.admin(&["status", "--query-url", &query]).await;
        run.stdout
            .contains("!! no writer in the group: nothing is being stored")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_and_after_the_fix_replayed_and_stored_once() {
    let stack = Stack::new().await;
    let gateway = stack.start_gateway().await;
    let _writer = stack.start_writer().await;
    // A shard rule too strict for what producers send: the database refuses these events
    // (SQLSTATE 23514) and the writer dead-letters them.
    stack
        .on_shards("ALTER TABLE events ADD CONSTRAINT no_legacy CHECK (type <> 'legacy')")
        .await;
    let legacy: Vec<Value> = (0..8)
        .map(|n| json!({"client_id": format!("dl-{}", n % 3), "type": "legacy", "payload": {"n": n}}))
        .collect();
    let fine: Vec<Value> = (0..8)
        .map(|n| json!({"client_id": format!("dl-{}", n % 3), "type": "fine"}))
        .collect();
    let legacy_ids = stack.post_events(&gateway, &legacy).await.event_ids;
    let fine_ids = stack.post_events(&gateway, &fine).await.event_ids;
    stack.drained(DRAIN).await;
    let configs = Configs::write(&stack.writer_settings(), &stack.query_settings());

    let listed = configs.admin(&["dlq", "list", "--json"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let letters: Vec<Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), legacy_ids.len(), "{}", listed.stdout);
    for letter in &letters {
        assert_eq!(letter["error_class"], "rejected-by-database");
        assert_eq!(letter["sqlstate"], "23514");
        assert_eq!(letter["source_topic"], stack.topic);
        let id: uuid::Uuid = letter["event_id"].as_str().unwrap().parse().unwrap();
        assert!(
            legacy_ids.contains(&id),
            "{id} is one of the refused events"
        );
    }
    let table = configs.admin(&["dlq", "list", "--reason", "23514"]).await;
    assert!(
        table.stdout.contains("8 dead letter(s)"),
        "{}",
        table.stdout
    );
    let none = configs
        .admin(&["dlq", "list", "--reason", "no-such-reason"])
        .await;
    assert!(none.stdout.contains("0 dead letter(s)"), "{}", none.stdout);
    let refused = configs.admin(&["dlq", "replay"]).await;
    assert_eq!(refused.code, 2, "replay needs a selection");

    // The fix: a migration that drops the rule. Then the dead letters go back.
    stack
        .on_shards("ALTER TABLE events DROP CONSTRAINT no_legacy")
        .await;
    let dry = configs
        .admin(&["dlq", "replay", "--reason", "23514", "--dry-run"])
        .await;
    assert!(
        dry.stdout.contains("0 replayed, 8 selected"),
        "{}",
        dry.stdout
    );
    let replayed = configs.admin(&["dlq", "replay", "--reason", "23514"]).await;
    assert_eq!(replayed.code, 0, "{}", replayed.stderr);
    assert!(
        replayed.stdout.contains("8 replayed"),
        "{}",
        replayed.stdout
    );
    stack.drained(DRAIN).await;
    let counts = stack.row_counts().await;
    for id in legacy_ids.iter().chain(&fine_ids) {
        assert_eq!(counts.get(id), Some(&1), "{id} stored once");
    }
    // Replayed again by mistake: still once.
    let again = configs.admin(&["dlq", "replay", "--all"]).await;
    assert!(again.stdout.contains("8 replayed"), "{}", again.stdout);
    stack.drained(DRAIN).await;
    let counts = stack.row_counts().await;
    for id in legacy_ids.iter().chain(&fine_ids) {
        assert_eq!(
            counts.get(id),
            Some(&1),
            "{id} stored once after a second replay"
        );
    }
    assert_eq!(counts.len(), legacy_ids.len() + fine_ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_are_listed_made_ahead_and_rows_past_a_retention_given_on_the_command_line_go() {
    let stack = Stack::new().await;
    let mut writer = stack.writer_settings();
    writer.store.migrate_on_start = false;
    writer.partitions.premake_days = 2;
    let configs = Configs::write(&writer, &stack.query_settings());
    assert_eq!(configs.admin(&["migrate"]).await.code, 0);
    let now = time::OffsetDateTime::now_utc();
    let day = |offset: i64| {
        let at = now + time::Duration::days(offset);
        format!(
            "events_p{:04}{:02}{:02}",
            at.year(),
            u8::from(at.month()),
            at.day()
        )
    };

    let first = configs.admin(&["partitions", "maintain"]).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    for offset in 0..=2 {
        assert!(first.stdout.contains(&day(offset)), "{}", first.stdout);
    }
    assert!(!first.stdout.contains(&day(3)), "{}", first.stdout);
    // A second pass has nothing to do; a row of a day without a partition (a device whose
    // gateway clock was a week behind) waits in the default partition.
    let again = configs.admin(&["partitions", "maintain"]).await;
    assert!(again.stdout.contains("created []"), "{}", again.stdout);
    stack
        .on_shards(
            "INSERT INTO events (event_id, client_id, type, ingested_at, ordered_at, priority, \
                                 payload, topic, kafka_partition, kafka_offset) \
             VALUES (gen_random_uuid(), 'c', 't', now() - interval '7 days', \
                     now() - interval '7 days', 'normal', '{}', 'events', 0, 0)",
        )
        .await;
    let listed = configs.admin(&["partitions", "list"]).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(
        listed.stdout.contains("events_default"),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains(&day(-7)), "{}", listed.stdout);

    // With a 3-day retention for this pass: the old row goes (row by row: it sits in the
    // default partition); every day partition stays.
    let retired = configs
        .admin(&["partitions", "maintain", "--retention", "3days"])
        .await;
    assert_eq!(retired.code, 0, "{}{}", retired.stdout, retired.stderr);
    assert!(
        retired
            .stdout
            .contains("dropped [], deleted 1 expired rows of the default partition"),
        "{}",
        retired.stdout
    );
    let listed = configs.admin(&["partitions", "list"]).await;
    assert!(!listed.stdout.contains(&day(-7)), "{}", listed.stdout);
    assert!(listed.stdout.contains(&day(2)), "{}", listed.stdout);
    for url in &stack.shard_urls {
        assert_eq!(
            one_value(url, "SELECT count(*)::int FROM events").await,
            Some(0)
        );
    }
}
