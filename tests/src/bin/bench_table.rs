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
    print!("{rendered}\n{footer}");
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{rendered}\n{footer}"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
