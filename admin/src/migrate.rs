//! `migrate`: the shard migrations (and the shard identity stamp) without starting a writer.

use event_store::StoreSettings;

use crate::{error::AdminError, services::Configs};

#[derive(clap::Args)]
pub struct Args {
    /// Shard URLs in shard order; default: db-writer's `store.shards`.
    #[arg(long = "shard", value_name = "URL")]
    shards: Vec<String>,
}

pub async fn run(configs: &Configs, args: Args) -> Result<(), AdminError> {
    // `--shard` replaces the list; TLS and the password file still come from db-writer's
    // settings, so a URL with `sslmode=verify-full` finds its CA.
    let writer = configs.writer()?.store;
    let store = if args.shards.is_empty() {
        writer
    } else {
        StoreSettings {
            shards: args.shards,
            ..writer
        }
    };
    store.migrate().await?;
    for (index, url) in store.shards.iter().enumerate() {
        println!("shard {index}: migrated and stamped ({})", redact(url));
    }
    Ok(())
}

/// A URL without its password, for output.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_printed() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/events"),
            "postgres://app:***@db:5432/events"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5433/events"),
            "postgres://postgres@127.0.0.1:5433/events"
        );
    }
}
