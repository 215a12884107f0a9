//! `status`: query-service's pipeline view (GET /pipeline) as tables in a terminal.

use std::{fmt::Write as _, time::Duration};

use serde_json::Value;

use crate::{error::AdminError, services::Configs};

#[derive(clap::Args)]
pub struct Args {
    /// query-service's base URL. Default: from its configured `listen` address.
    #[arg(long)]
    query_url: Option<String>,
    /// Print the view as JSON instead.
    #[arg(long)]
    json: bool,
}

pub async fn run(configs: &Configs, args: Args) -> Result<(), AdminError> {
    let url = match args.query_url {
        Some(url) => url,
        None => {
            let listen = configs.query()?.listen;
            let host = if listen.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                listen.ip().to_string()
            };
            format!("http://{host}:{}", listen.port())
        }
    };
    let view = fetch(&url).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
    } else {
        print!("{}", render(&view));
    }
    Ok(())
}

async fn fetch(url: &str) -> Result<Value, AdminError> {
    let failed = |reason: String| AdminError::Query {
        url: url.to_owned(),
        reason,
    };
    let answer = reqwest::Client::new()
        .get(format!("{url}/pipeline"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = answer.status();
    let body: Value = answer.json().await.map_err(|e| failed(e.to_string()))?;
    if !status.is_success() {
        return Err(failed(format!(
            "{status}: {}",
            body["detail"].as_str().unwrap_or("")
        )));
    }
    Ok(body)
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::Bool(b) => if *b { "up" } else { "DOWN" }.to_owned(),
        Value::Null => "-".to_owned(),
        other => other
            .as_str()
            .map_or_else(|| other.to_string(), str::to_owned),
    }
}

/// A table with a header row, columns padded to their widest cell.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
    let _ = writeln!(out);
}

fn rows(view: &Value, key: &str, columns: &[&str]) -> Vec<Vec<String>> {
    view[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| columns.iter().map(|c| num(&item[*c])).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// What an operator must not miss about the writers: none at all, or partitions none of them
/// owns (their events are not being stored); or that the replica does not know them yet (a
/// consumer-protocol group whose writers have not reported), which is no alarm.
fn unowned(view: &Value) -> Option<String> {
    // A view from before the field knew its writers whenever it listed them.
    if view["writers_known"] == Value::Bool(false) {
        return Some(
            "writers not known yet: the group is on the consumer protocol and no writer has \
             reported (every 2 s on kafka.persisted_topic; none when it is empty)"
                .to_owned(),
        );
    }
    if view["writers"].as_array()?.is_empty() {
        return Some("!! no writer in the group: nothing is being stored".to_owned());
    }
    // As query-service judged them (the same list its gauge counts).
    let nobodys: Vec<&str> = view["partitions_without_writer"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!nobodys.is_empty()).then(|| {
        format!(
            "!! partitions no writer owns (not being stored): {}",
            nobodys.join(" ")
        )
    })
}

pub fn render(view: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "depth {} records · oldest unstored {}s · release lag {}s · dead letters {} · in flight {} events ({} bytes{}) · streams {} · queries {}/s p50 {} ms p99 {} ms\n",
        num(&view["depth"]),
        num(&view["oldest_unstored_age_seconds"]),
        num(&view["release_lag_seconds"]),
        num(&view["dead_letters"]),
        num(&view["in_flight"]["events"]),
        num(&view["in_flight"]["bytes"]),
        if view["in_flight"]["full"].as_bool() == Some(true) { ", FULL" } else { "" },
        num(&view["streams"]),
        num(&view["queries"]["per_second"]),
        num(&view["queries"]["p50_ms"]),
        num(&view["queries"]["p99_ms"]),
    );
    table(
        &mut out,
        &["lane", "ingest/s", "depth", "oldest unstored s"],
        &rows(
            view,
            "lanes",
            &[
                "topic",
                "ingest_per_second",
                "depth",
                "oldest_unstored_age_seconds",
            ],
        ),
    );
    table(
        &mut out,
        &["shard", "state", "rows/s", "rows stored"],
        &rows(
            view,
            "shards",
            &["shard", "up", "rows_per_second", "rows_stored"],
        ),
    );
    let writers: Vec<Vec<String>> = view["writers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| {
                    let parts: Vec<&str> = w["partitions"]
                        .as_array()
                        .map(|p| p.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    // The process's name; its member ids (one per lane, long) are in `--json`.
                    vec![num(&w["host"]), num(&w["client_id"]), parts.join(" ")]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&mut out, &["writer host", "writer", "partitions"], &writers);
    if let Some(warning) = unowned(view) {
        // Above the table's blank line: it belongs to the writers.
        out.pop();
        let _ = writeln!(out, "{warning}\n");
    }
    table(
        &mut out,
        &[
            "topic",
            "partition",
            "end offset",
            "writer commit",
            "writer lag",
            "query position",
            "query lag",
        ],
        &rows(
            view,
            "partitions",
            &[
                "topic",
                "partition",
                "end_offset",
                "writer_committed",
                "writer_lag",
                "query_position",
                "query_lag",
            ],
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_every_section_with_aligned_columns() {
        let view = json!({
            "depth": 12, "oldest_unstored_age_seconds": 0.25, "release_lag_seconds": null,
            "dead_letters": 1, "in_flight": {"events": 3, "bytes": 900, "full": true},
            "streams": 0, "queries": {"per_second": 1.5, "p50_ms": 2, "p99_ms": 9.75},
            "lanes": [{"topic": "events", "ingest_per_second": 10.5, "depth": 12, "oldest_unstored_age_seconds": 0.25}],
            "shards": [{"shard": 0, "up": true, "rows_per_second": 3, "rows_stored": 100}, {"shard": 1, "up": false, "rows_per_second": 0, "rows_stored": 7}],
            "writers": [{"host": "10.0.0.1", "member_id": "m-1", "client_id": "db-writer-1", "partitions": ["events/0", "events/1"]}],
            "partitions": [{"topic": "events", "partition": 0, "end_offset": 40, "writer_committed": 28, "writer_lag": 12, "query_position": 40, "query_lag": 0}],
        });
        let text = render(&view);
        assert!(text.contains("depth 12 records"), "{text}");
        assert!(text.contains("3 events (900 bytes, FULL)"), "{text}");
        assert!(text.contains("shard  state  rows/s  rows stored"), "{text}");
        assert!(text.contains("1      DOWN   0       7"), "{text}");
        assert!(
            text.contains("10.0.0.1     db-writer-1  events/0 events/1"),
            "{text}"
        );
        assert!(!text.contains("!!"), "{text}");
        assert!(
            text.contains("events  0          40          28             12"),
            "{text}"
        );
    }

    #[test]
    fn says_when_no_writer_stores_or_a_partition_has_no_owner() {
        let partitions = json!([
            {"topic": "events", "partition": 0, "end_offset": 40, "writer_committed": 28},
            {"topic": "events", "partition": 1, "end_offset": 9, "writer_committed": 9},
        ]);
        let none = render(&json!({"writers": [], "partitions": partitions}));
        assert!(
            none.contains("!! no writer in the group: nothing is being stored"),
            "{none}"
        );
        let one = render(&json!({
            "writers": [{"host": "h", "client_id": "w", "partitions": ["events/0"]}],
            "partitions_without_writer": ["events/1"],
            "partitions": partitions,
        }));
        assert!(
            one.contains("!! partitions no writer owns (not being stored): events/1"),
            "{one}"
        );
        // Not known is not none: no alarm, but a word on why the list is empty.
        let unknown = render(&json!({
            "writers": [], "writers_known": false, "partitions": partitions,
        }));
        assert!(!unknown.contains("!!"), "{unknown}");
        assert!(unknown.contains("writers not known yet"), "{unknown}");
    }
}
