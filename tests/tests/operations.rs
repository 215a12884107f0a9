//! What operators deploy next to the services: the Prometheus alert rules (tested with
//! promtool) and the Grafana dashboard, both checked against what the services really export.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use pipeline_tests::Stack;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .unwrap_or_else(|e| {
            panic!("run promtool (Debian's `prometheus` package; tests/run installs it): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_fire_as_their_unit_tests_say() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_links_to_its_runbook_section() {
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).expect("rules");
    let runbook =
        std::fs::read_to_string(repo().join("docs/operations/alerts.md")).expect("runbook");
    let headings: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let tests = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.test.yml"))
        .expect("rule tests");
    let mut alerts = 0;
    for line in rules.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            alerts += 1;
            let anchor = name.to_lowercase();
            assert!(
                rules.contains(&format!(
                    "runbook_url: \"docs/operations/alerts.md#{anchor}\""
                )),
                "{name} links to its runbook"
            );
            assert!(
                headings.contains(&anchor),
                "docs/operations/alerts.md has a section {name}"
            );
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "{name} has a promtool test"
            );
        }
    }
    assert!(alerts >= 6, "{alerts} alerts");
}

/// Metric names an expression refers to: the services' own prefixes only (Prometheus's
/// `up` and functions are not the services' to export).
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIXES: [&str; 6] = [
        "gateway_",
        "db_writer_",
        "query_",
        "eventpipe_",
        "kafka_",
        "process_",
    ];
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| PREFIXES.iter().any(|p| word.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// The metric families a `/metrics` page declares.
fn families(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn exported(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_bucket", "_count", "_sum"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|family| families.contains(family))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rules_and_dashboard_use_only_metrics_the_services_export() {
    let rules =
        std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).expect("rules");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/eventpipe.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut expressions = vec![rules];
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            expressions.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    let wanted: BTreeSet<String> = expressions.iter().flat_map(|e| metric_names(e)).collect();
    assert!(wanted.len() > 20, "{wanted:?}");

    // The binaries as they are deployed, one process each, so each page is its own.
    let stack = Stack::new().await;
    let gateway = stack.spawn_gateway_process().await;
    let writer = stack.spawn_writer_process();
    let query = stack.spawn_query_process().await;
    stack
        .post_events(
            gateway.url(),
            &[
                json!({"client_id": "m1", "type": "t"}),
                json!({"client_id": "m2", "type": "t", "priority": "critical"}),
            ],
        )
        .await;
    let pages = [
        gateway.url().to_owned(),
        writer.metrics_url().to_owned(),
        query.url().to_owned(),
    ];
    // Polled with a deadline: query-service's lag series appear after its first refresh.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = BTreeSet::new();
        for url in &pages {
            if let Ok(answer) = stack.http.get(format!("{url}/metrics")).send().await {
                all.extend(families(&answer.text().await.unwrap_or_default()));
            }
        }
        let missing: Vec<&String> = wanted.iter().filter(|n| !exported(n, &all)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "named by the rules or the dashboard but exported by no service: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    writer.terminate().await;
}
