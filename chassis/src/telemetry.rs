use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`), and
/// `LOG_FORMAT=json` switches to one JSON object per line for log shippers.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_target(true)
        // Colour codes only for a person at a terminal, never into log files.
        .with_ansi(std::io::stdout().is_terminal())
        // A log line that cannot be written (its file's disk full) is lost, not fatal. By
        // default the subscriber reports the failure with `eprintln!`, which panics when
        // stderr cannot be written either: a full disk under the logs killed db-writer on
        // its next line (2026-12-05), where retrying would have resumed once space was freed.
        .log_internal_errors(false);
    // A second init (tests start several services in one process) keeps the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
