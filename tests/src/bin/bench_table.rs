//! Prints the outcomes the benchmark programs recorded (`--summary`) as one table: scenario,
//! measure, value, target, met. `tests/bench` calls it at the end of a run.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pipeline_tests::bench::{table, Outcome};

#[derive(Parser)]
#[command(about = "The benchmark outcomes of one run as a table")]
struct Args {
    /// The JSON lines the benchmark programs appended.
    summary: PathBuf,
    /// Where the table is also written (Markdown).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Lines saying what the run depended on besides the code (machine speed, the broker's
    /// age, the shards' size), listed above the table.
    #[arg(long)]
    conditions: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.summary)
        .with_context(|| format!("reading {}", args.summary.display()))?;
    let outcomes: Vec<Outcome> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}", args.summary.display(), n + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    let rendered = table(&outcomes);
    let missed = outcomes.iter().filter(|o| o.met() == Some(false)).count();
    let judged = outcomes.iter().filter(|o| o.met().is_some()).count();
    let footer = format!("{} of {judged} targets met\n", judged - missed);
    let header = match &args.conditions {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            conditions(&text)
        }
        None => String::new(),
    };
    print!("{header}{rendered}\n{footer}");
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{header}{rendered}\n{footer}"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// The conditions' lines as a Markdown list followed by a blank line; nothing if there are none.
fn conditions(text: &str) -> String {
    let items: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("- {l}\n"))
        .collect();
    if items.is_empty() {
        items
    } else {
        format!("{items}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::conditions;

    #[test]
    fn conditions_become_a_list_above_the_table() {
        assert_eq!(
            conditions("CPU: 1.3 s\n\n  broker up 40 min \n"),
            "- CPU: 1.3 s\n- broker up 40 min\n\n"
        );
        assert_eq!(conditions("\n \n"), "");
    }
}
