//! The day-partitioned `events` table (migration V5, event_store::partitions): retention under
//! traffic, the migration of an existing table, copies of one event on different days, and
//! reads that touch only the days they ask for.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{collections::HashMap, sync::Arc, time::Duration};

use event_store::{
    InsertMethod, KafkaPosition, PartitionSettings, RowOutcome, ShardSet, StoredEvent,
};
use pipeline_tests::{eventually, ids, Feeder, Ledger, Stack};
use schemas::{Event, Priority};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

const DRAIN: Duration = Duration::from_secs(90);
const DAY_MICROS: i64 = 86_400_000_000;

fn now_micros() -> i64 {
    to_micros(OffsetDateTime::now_utc())
}

fn to_micros(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000) as i64
}

/// `events_pYYYYMMDD` of the UTC day `micros` falls on.
fn day_partition(micros: i64) -> String {
    let day = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000).unwrap();
    format!(
        "events_p{:04}{:02}{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

async fn query(url: &str, sql: &str) -> Vec<Row> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client.query(sql, &[]).await.unwrap()
}

/// Rows per partition of `events`, over every shard.
async fn rows_per_partition(stack: &Stack) -> HashMap<String, i64> {
    let mut counts = HashMap::new();
    for url in &stack.shard_urls {
        for row in query(
            url,
            "SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1",
        )
        .await
        {
            *counts.entry(row.get::<_, String>(0)).or_insert(0) += row.get::<_, i64>(1);
        }
    }
    counts
}

/// Partition names of `events` on every shard.
async fn partitions(stack: &Stack) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for url in &stack.shard_urls {
        all.push(
            query(
                url,
                "SELECT inhrelid::regclass::text FROM pg_inherits \
                 WHERE inhparent = 'events'::regclass ORDER BY 1",
            )
            .await
            .iter()
            .map(|r| r.get(0))
            .collect(),
        );
    }
    all
}

async fn guarded_ids(stack: &Stack) -> Vec<Uuid> {
    let mut all = Vec::new();
    for url in &stack.shard_urls {
        all.extend(
            query(url, "SELECT event_id FROM event_ids")
                .await
                .iter()
                .map(|r| r.get::<_, Uuid>(0)),
        );
    }
    all
}

/// A session on `url` with the statement query-service runs prepared as `page`, planned once
/// for every parameter value the way a prepared statement is reused.
async fn page_statement(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan; PREPARE page AS {}",
            include_str!("../../event-store/src/sql/client_events.sql")
        ))
        .await
        .unwrap();
    client
}

/// The lines of an `EXPLAIN`.
async fn plan_of(client: &tokio_postgres::Client, explain: &str) -> String {
    client
        .query(explain, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

fn fast_upkeep(retention: Duration) -> PartitionSettings {
    PartitionSettings {
        retention,
        interval: Duration::from_millis(300),
        ..PartitionSettings::default()
    }
}

/// Half the events carry their producer's own id (guarded in `event_ids`), half get the
/// gateway's; every fifth request repeats the previous one with the same ids (a retry after
/// a lost answer).
fn mixed_batch(prefix: &'static str) -> impl Fn(usize) -> Vec<Value> + Send + 'static {
    move |round| {
        let round = if round % 5 == 4 { round - 1 } else { round };
        (0..40)
            .map(|n| {
                let mut event = json!({
                    "client_id": format!("{prefix}{}", n % 8),
                    "type": "reading",
                    "priority": if n % 10 == 0 { "critical" } else { "normal" },
                    "payload": {"round": round, "n": n},
                });
                if n % 2 == 0 {
                    event["event_id"] = json!(Uuid::from_u128(
                        (u128::from(prefix.as_bytes()[0]) << 64)
                            | ((round as u128) << 16)
                            | n as u128
                    ));
                }
                event
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_drops_an_old_day_under_traffic_and_nothing_newer_is_lost() {
    let stack = Arc::new(Stack::new().await);
    let ten_days = 10 * DAY_MICROS;
    let old_day = day_partition(now_micros() - ten_days);
    let mut settings = stack.writer_settings();
    settings.partitions = fast_upkeep(Duration::ZERO);
    let (first_writer, _) = stack.start_writer_with(settings.clone()).await;
    // The day of ten days ago was made ahead by a pass back then.
    let shards = ShardSet::connect(&stack.store_settings()).await.unwrap();
    let ten_days_ago = OffsetDateTime::now_utc() - time::Duration::days(10);
    for shard in shards.shards() {
        let back_then = PartitionSettings {
            premake_days: 0,
            ..PartitionSettings::default()
        };
        let made = shard
            .maintain_partitions(&back_then, ten_days_ago)
            .await
            .unwrap();
        assert_eq!(made.created, vec![old_day.clone()]);
    }

    // A gateway whose clock is ten days behind: its events are ordered ten days ago, and land
    // in that day's partition.
    let (old_gateway, old_stop) = stack
        .start_gateway_clocked(
            stack.gateway_settings(),
            producer_gateway::IngestClock::with_offset_micros(-ten_days),
        )
        .await;
    let old = Ledger::default();
    let old_batch = mixed_batch("old-");
    for round in 0..4 {
        let events = old_batch(round);
        old.acknowledged(
            &events,
            &stack.post_events(&old_gateway, &events).await.event_ids,
        );
    }
    old_stop.cancel();
    stack.drained(DRAIN).await;
    old.assert_stored(&stack).await;
    let old_rows = old.len() as i64;
    assert_eq!(
        rows_per_partition(&stack).await.get(&old_day),
        Some(&old_rows)
    );
    let old_guarded = guarded_ids(&stack).await;
    assert_eq!(old_guarded.len(), 80, "the producers' own ids are guarded");

    // Live traffic through a gateway with a true clock, then a writer with a 5-day retention.
    let gateway = stack.start_gateway().await;
    let query_service = stack.start_query().await;
    let feeder = Feeder::start(stack.clone(), gateway, mixed_batch("live-"));
    let live = feeder.ledger();
    feeder.more(1000, DRAIN).await;
    first_writer.cancel();
    settings.partitions = fast_upkeep(Duration::from_secs(5 * 86_400));
    let _second_writer = stack.start_writer_with(settings).await;
    eventually(DRAIN, "the old day dropped on every shard", || async {
        partitions(&stack)
            .await
            .iter()
            .all(|names| !names.contains(&old_day))
            .then_some(())
    })
    .await;
    feeder.more(1000, DRAIN).await;
    feeder.stop().await;
    stack.drained(DRAIN).await;

    // Everything acknowledged live is stored once and read once; the old day is gone, its
    // guarded ids forgotten with it, and its clients read nothing.
    println!("{}", live.assert_stored(&stack).await);
    live.assert_readable(&stack, &query_service, |_| true, DRAIN)
        .await;
    let guarded = guarded_ids(&stack).await;
    assert!(
        old_guarded.iter().all(|id| !guarded.contains(id)),
        "ids of dropped rows are forgotten"
    );
    assert!(!guarded.is_empty(), "live ids stay guarded");
    for client in old.by_client().keys() {
        assert!(stack.history(&query_service, client, 50).await.is_empty());
    }
    let today = day_partition(now_micros());
    let counts = rows_per_partition(&stack).await;
    assert!(
        counts
            .keys()
            .all(|p| *p == today || p.starts_with("events_p")),
        "live rows sit in day partitions: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_existing_table_is_migrated_read_as_before_and_retired_by_retention() {
    let stack = Stack::new().await;
    // The table as versions 1 to 4 made it, with three weeks old rows in it.
    for migration in [
        include_str!("../../event-store/migrations/V1__create_events.sql"),
        include_str!("../../event-store/migrations/V2__add_sdk.sql"),
        include_str!("../../event-store/migrations/V3__order_by_log_time.sql"),
        include_str!("../../event-store/migrations/V4__shard_identity.sql"),
    ] {
        stack.on_shards(migration).await;
    }
    let retried = Uuid::now_v7();
    let shard = event_store::ShardRouter::new(stack.shard_urls.len()).shard_for("legacy");
    query(
        &stack.shard_urls[shard],
        &format!(
            "INSERT INTO events (event_id, client_id, type, ingested_at, ordered_at, priority, \
                                 payload, topic, kafka_partition, kafka_offset) \
             SELECT CASE WHEN i = 1 THEN '{retried}'::uuid ELSE gen_random_uuid() END, \
                    'legacy', 'old', now() - interval '21 days' + i * interval '1 ms', \
                    now() - interval '21 days' + i * interval '1 ms', 'normal', \
                    jsonb_build_object('i', i), 'events', 0, i \
             FROM generate_series(1, 30) i"
        ),
    )
    .await;

    // The writer's start migrates: the old table becomes a partition, readable as before.
    let mut settings = stack.writer_settings();
    settings.partitions = fast_upkeep(Duration::ZERO);
    let (writer, _) = stack.start_writer_with(settings.clone()).await;
    let names = partitions(&stack).await;
    assert!(
        names[shard].contains(&"events_legacy".to_owned()),
        "{names:?}"
    );
    let gateway = stack.start_gateway().await;
    // A replica serves a page it cached for up to `cache.page_ttl`, dropped rows too.
    let mut query_settings = stack.query_settings();
    query_settings.cache.page_ttl = Duration::from_millis(500);
    let (query_service, _) = stack.start_query_with(query_settings).await;
    // (Once the release frontier is known: a replica answers nothing before it.)
    let before = eventually(DRAIN, "the legacy rows readable", || async {
        let history = stack.history(&query_service, "legacy", 7).await;
        (history.len() == 30).then_some(history)
    })
    .await;
    assert_eq!(before[0]["payload"], json!({"i": 1}));

    // A device retries the legacy event with its id (three weeks later): still one event,
    // the copy stored first. A new event goes to today's partition.
    let retry = json!({"event_id": retried, "client_id": "legacy", "type": "old", "payload": {"i": "again"}});
    let fresh = json!({"client_id": "legacy", "type": "new", "payload": {}});
    let posted = stack.post_events(&gateway, &[retry, fresh]).await;
    stack.drained(DRAIN).await;
    let after = eventually(DRAIN, "the new event readable", || async {
        let history = stack.history(&query_service, "legacy", 7).await;
        (history.len() >= 31).then_some(history)
    })
    .await;
    assert_eq!(after.len(), 31);
    assert_eq!(ids(&after)[0], retried);
    assert_eq!(after[0]["payload"], json!({"i": 1}), "the first copy stays");
    assert_eq!(stack.row_counts().await[&retried], 1);
    let counts = rows_per_partition(&stack).await;
    assert_eq!(counts.get("events_legacy"), Some(&30));
    assert_eq!(counts.get(&day_partition(now_micros())), Some(&1));
    assert_eq!(ids(&after)[30], posted.event_ids[1]);

    // With a two-week retention the legacy partition goes whole; today's row stays.
    writer.cancel();
    settings.partitions = fast_upkeep(Duration::from_secs(14 * 86_400));
    let _writer = stack.start_writer_with(settings).await;
    eventually(DRAIN, "the legacy partition dropped", || async {
        partitions(&stack)
            .await
            .iter()
            .all(|names| !names.contains(&"events_legacy".to_owned()))
            .then_some(())
    })
    .await;
    let fresh_only = vec![posted.event_ids[1]];
    eventually(DRAIN, "only the new event left to read", || async {
        let left = ids(&stack.history(&query_service, "legacy", 7).await);
        (left == fresh_only).then_some(())
    })
    .await;
    assert_eq!(stack.row_counts().await.len(), 1);
    assert!(!guarded_ids(&stack).await.contains(&retried));
}

fn copy(id: Uuid, client: &str, at: i64, topic: &str, offset: i64) -> StoredEvent {
    StoredEvent {
        event: Event {
            event_id: id,
            client_id: client.into(),
            event_type: "t".into(),
            ts_micros: None,
            ingested_at_micros: at,
            priority: Priority::Normal,
            payload: format!("{{\"offset\": {offset}}}"),
            sdk: None,
            id_origin: None,
        },
        position: KafkaPosition {
            topic: topic.into(),
            partition: 0,
            offset,
        },
        ordered_at_micros: at,
        id_assigned: false,
    }
}

#[tokio::test]
async fn copies_of_one_event_on_different_days_are_one_row_the_first_copy() {
    let stack = Stack::new().await;
    let shards = ShardSet::connect(&stack.store_settings()).await.unwrap();
    let shard = shards.shard_for("c");
    let today = now_micros();
    let yesterday = today - DAY_MICROS;
    shard
        .maintain_partitions(&PartitionSettings::default(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    let id = Uuid::new_v4();
    for method in [
        InsertMethod::Unnest,
        InsertMethod::Copy,
        InsertMethod::DirectCopy,
    ] {
        let id = if method != InsertMethod::Unnest {
            Uuid::new_v4()
        } else {
            id
        };
        let later = copy(id, "c", today, "events", 10);
        let earlier = copy(id, "c", yesterday, "events-critical", 3);
        let store = |rows: Vec<StoredEvent>| async move {
            shard.insert_events(&rows, method).await.unwrap()
        };
        assert_eq!(store(vec![later.clone()]).await, vec![RowOutcome::Inserted]);
        // The earlier copy arrives after the later one was stored: it replaces it, on
        // another day's partition.
        assert_eq!(
            store(vec![earlier.clone()]).await,
            vec![RowOutcome::Replaced]
        );
        // Redeliveries of both, together, change nothing; another client's event with the
        // same id is refused.
        assert_eq!(
            store(vec![later.clone(), earlier.clone()]).await,
            vec![RowOutcome::Duplicate, RowOutcome::Duplicate]
        );
        assert_eq!(
            store(vec![copy(id, "d", yesterday - 1, "events", 1)]).await,
            vec![RowOutcome::Taken]
        );
        let rows = query(
            &stack.shard_urls[shard.index],
            &format!(
                "SELECT tableoid::regclass::text, kafka_offset FROM events WHERE event_id = '{id}'"
            ),
        )
        .await;
        assert_eq!(rows.len(), 1, "{method:?}: one row per event id");
        assert_eq!(rows[0].get::<_, i64>(1), 3, "{method:?}: the first copy");
        let placed: String = rows[0].get(0);
        assert!(
            placed == day_partition(yesterday) || placed == "events_default",
            "{method:?}: stored on its own day, not today's: {placed}"
        );
    }
    // A gateway-assigned id: its redelivery is absorbed by the key, without the guard.
    let mut assigned = copy(Uuid::now_v7(), "c", today, "events", 11);
    assigned.id_assigned = true;
    let outcomes = shard
        .insert_events(&[assigned.clone(), assigned.clone()], InsertMethod::Unnest)
        .await
        .unwrap();
    assert_eq!(outcomes, vec![RowOutcome::Inserted, RowOutcome::Duplicate]);
    let again = shard
        .insert_events(&[assigned.clone()], InsertMethod::Copy)
        .await
        .unwrap();
    assert_eq!(again, vec![RowOutcome::Duplicate]);
    let fresh = |count: i64, first_offset: i64| -> Vec<StoredEvent> {
        (0..count)
            .map(|n| {
                let mut fresh = copy(Uuid::now_v7(), "c", today, "events", first_offset + n);
                fresh.id_assigned = true;
                fresh
            })
            .collect()
    };
    let stored_once = |batch: &[StoredEvent]| {
        let ids: Vec<String> = batch
            .iter()
            .map(|e| format!("'{}'", e.event.event_id))
            .collect();
        let url = stack.shard_urls[shard.index].clone();
        async move {
            let stored = query(
                &url,
                &format!(
                    "SELECT count(*), count(DISTINCT event_id) FROM events WHERE event_id IN ({})",
                    ids.join(",")
                ),
            )
            .await;
            (stored[0].get::<_, i64>(0), stored[0].get::<_, i64>(1))
        }
    };
    // A batch too small for a direct COPY (the critical lane's) is one statement, outside a
    // transaction: stored once, and a redelivery of it changes nothing.
    let small = fresh(5, 5_000);
    for expected in [RowOutcome::Inserted, RowOutcome::Duplicate] {
        let outcomes = shard
            .insert_events(&small, InsertMethod::DirectCopy)
            .await
            .unwrap();
        assert_eq!(outcomes, vec![expected; 5]);
    }
    assert_eq!(stored_once(&small).await, (5, 5), "each once");
    // A batch of new rows large enough for a direct COPY is stored by it, every row once.
    let new_rows = fresh(200, 1_000);
    let outcomes = shard
        .insert_events(&new_rows, InsertMethod::DirectCopy)
        .await
        .unwrap();
    assert_eq!(outcomes, vec![RowOutcome::Inserted; 200]);
    assert_eq!(stored_once(&new_rows).await, (200, 200), "each once");
    // A direct COPY that meets a stored record, a redelivery among new ones, is refused by
    // the key as a whole and goes through the conflict-checking insert instead: the new rows
    // stored, the stored one left alone.
    let mut batch = fresh(300, 100);
    batch.insert(150, assigned.clone());
    let outcomes = shard
        .insert_events(&batch, InsertMethod::DirectCopy)
        .await
        .unwrap();
    let mut expected = vec![RowOutcome::Inserted; 301];
    expected[150] = RowOutcome::Duplicate;
    assert_eq!(outcomes, expected);
    assert_eq!(stored_once(&batch).await, (301, 301), "each once");
    let guarded = guarded_ids(&stack).await;
    assert!(!guarded.contains(&assigned.event.event_id));
}

#[tokio::test]
async fn a_read_of_a_time_window_or_after_a_cursor_touches_only_its_days() {
    let stack = Stack::new().await;
    let shards = ShardSet::connect(&stack.store_settings()).await.unwrap();
    let settings = PartitionSettings {
        premake_days: 5,
        ..PartitionSettings::default()
    };
    for shard in shards.shards() {
        shard
            .maintain_partitions(&settings, OffsetDateTime::now_utc())
            .await
            .unwrap();
    }
    let client = page_statement(&stack.shard_urls[0]).await;
    let tomorrow = day_partition(now_micros() + DAY_MICROS);
    let window = plan_of(
        &client,
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE page('c', '-infinity', \
         '00000000-0000-0000-0000-000000000000', date_trunc('day', now(), 'UTC') + interval '1 day 1 hour', \
         date_trunc('day', now(), 'UTC') + interval '1 day 2 hours', 10)",
    )
    .await;
    let scanned: Vec<&str> = window.lines().filter(|l| l.contains("Scan")).collect();
    assert_eq!(scanned.len(), 1, "one day's partition: {window}");
    assert!(scanned[0].contains(&tomorrow), "{window}");
    // A page after a cursor four days ahead skips every day before it.
    let after_cursor = plan_of(
        &client,
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE page('c', \
         date_trunc('day', now(), 'UTC') + interval '4 days', '00000000-0000-0000-0000-000000000000', \
         '-infinity', 'infinity', 10)",
    )
    .await;
    let scanned = after_cursor.lines().filter(|l| l.contains("Scan")).count();
    // Days 4 and 5 ahead, and the default partition (any later day).
    assert_eq!(scanned, 3, "{after_cursor}");
}

/// Autovacuum analyzes a day again and again while it fills, on every shard at once: it must
/// gather only what the reads' plans use (migration V6), on days db-writer creates as on the
/// partitions the migration found, and the reads must still be planned on the client index.
#[tokio::test]
async fn analyze_of_a_day_gathers_only_what_reads_are_planned_by() {
    let stack = Stack::new().await;
    let shards = ShardSet::connect(&stack.store_settings()).await.unwrap();
    let shard = shards.shard_for("c0");
    shard
        .maintain_partitions(&PartitionSettings::default(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    let today = now_micros();
    let rows: Vec<StoredEvent> = (0..2_000)
        .map(|n| {
            let mut row = copy(
                Uuid::now_v7(),
                &format!("c{}", n % 50),
                today + n,
                "events",
                n,
            );
            row.id_assigned = true;
            row
        })
        .collect();
    shard
        .insert_events(&rows, InsertMethod::DirectCopy)
        .await
        .unwrap();
    let url = &stack.shard_urls[shard.index];
    let day = day_partition(today);
    query(url, &format!("ANALYZE {day}")).await;
    let gathered: Vec<String> = query(
        url,
        &format!("SELECT attname::text FROM pg_stats WHERE tablename = '{day}' ORDER BY 1"),
    )
    .await
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(gathered, ["client_id", "event_id", "ordered_at"], "{day}");
    // The partition the migration found (the default one) has the same targets as the parent.
    let targets = |table: &'static str| async move {
        query(
            url,
            &format!(
                "SELECT attname::text, attstattarget::int FROM pg_attribute \
                 WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped \
                 ORDER BY attnum"
            ),
        )
        .await
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
        .collect::<Vec<_>>()
    };
    let parent = targets("events").await;
    assert!(parent.contains(&("payload".into(), 0)), "{parent:?}");
    assert_eq!(targets("events_default").await, parent);
    // A client's page, as query-service plans it, is still read through the client index.
    let plan = plan_of(
        &page_statement(url).await,
        "EXPLAIN (COSTS OFF) EXECUTE page('c7', '-infinity', \
         '00000000-0000-0000-0000-000000000000', '-infinity', 'infinity', 100)",
    )
    .await;
    assert!(
        plan.contains(&format!(
            "Scan using {day}_client_id_ordered_at_event_id_idx"
        )),
        "{plan}"
    );
}

/// A rolling upgrade that adds a migration: once the first instance of the new release has
/// migrated a shard, an instance of the old one that restarts must still start and store
/// (refinery alone refuses a migration it does not know; the bench's older replica did).
#[tokio::test]
async fn a_shard_a_later_release_migrated_still_serves_this_one() {
    let stack = Stack::new().await;
    let settings = stack.store_settings();
    settings.migrate().await.unwrap();
    for url in &stack.shard_urls {
        query(
            url,
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (1000, 'from_a_later_release', '2026-12-06T00:00:00Z', '0')",
        )
        .await;
    }
    let shards = ShardSet::connect(&settings).await.unwrap();
    let shard = shards.shard_for("c");
    shard
        .maintain_partitions(&PartitionSettings::default(), OffsetDateTime::now_utc())
        .await
        .unwrap();
    let row = copy(Uuid::new_v4(), "c", now_micros(), "events", 1);
    assert_eq!(
        shard
            .insert_events(&[row], InsertMethod::DirectCopy)
            .await
            .unwrap(),
        vec![RowOutcome::Inserted]
    );
    let newest = query(
        &stack.shard_urls[shard.index],
        "SELECT max(version)::bigint FROM refinery_schema_history",
    )
    .await;
    assert_eq!(
        newest[0].get::<_, i64>(0),
        1000,
        "the later release's history stays"
    );
}

/// Found by the suite: a day made while a read held `events` deadlocked with it (the pass
/// locked the default partition and then the parent; a read locks the parent and then the
/// partitions). Now the pass waits for the read, and the read for nothing.
#[tokio::test]
async fn a_day_made_during_a_read_waits_for_the_read_without_a_deadlock() {
    let stack = Stack::new().await;
    let shards = ShardSet::connect(&stack.store_settings()).await.unwrap();
    let shard = shards.shards()[0].clone();
    let url = stack.shard_urls[0].clone();
    let settings = PartitionSettings {
        premake_days: 0,
        // Longer than PostgreSQL's deadlock_timeout (1 s): a deadlock is found before the
        // pass would give up waiting.
        lock_timeout: Duration::from_secs(10),
        ..PartitionSettings::default()
    };
    let (reader, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    tokio::spawn(connection);
    // A read in progress: it holds the parent, as every read of `events` does first.
    reader
        .batch_execute("BEGIN; LOCK TABLE ONLY events IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let later = OffsetDateTime::now_utc() + time::Duration::days(40);
    let pass = tokio::spawn(async move { shard.maintain_partitions(&settings, later).await });
    eventually(
        Duration::from_secs(10),
        "the pass to wait for a lock",
        || async {
            let waiting = query(
                &url,
                "SELECT count(*) FROM pg_locks WHERE NOT granted \
                 AND relation = 'events'::regclass",
            )
            .await;
            (waiting[0].get::<_, i64>(0) > 0).then_some(())
        },
    )
    .await;
    // The read goes on to the partitions.
    reader
        .batch_execute("SET statement_timeout = 5000")
        .await
        .unwrap();
    let read = reader
        .query_one("SELECT count(*) FROM events_default", &[])
        .await;
    assert!(read.is_ok(), "the read: {read:?}");
    reader.batch_execute("COMMIT").await.unwrap();
    let made = pass.await.unwrap().unwrap();
    assert_eq!(made.created, vec![day_partition(to_micros(later))]);
}
