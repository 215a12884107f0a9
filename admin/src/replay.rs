//! `dlq replay`: dead letters back to the topic they came from, with their original key,
//! bytes and headers, through an idempotent producer. The store keeps one row per event id,
//! so replaying an event that meanwhile got stored (or replaying twice) stores it once; the
//! gateway's id-origin mark is left off, since a replay is a copy.

use std::time::Duration;

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::{
    dlq::{self, Selection},
    error::AdminError,
    services::Configs,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    select: Selection,
    /// Replay every dead letter (otherwise --reason or --offset must select some).
    #[arg(long)]
    all: bool,
    /// Show what would be replayed and publish nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn run(configs: &Configs, args: Args) -> Result<(), AdminError> {
    if !args.all && args.select.reason.is_none() && args.select.offsets.is_empty() {
        return Err(AdminError::Usage(
            "select dead letters with --reason or --offset, or pass --all".into(),
        ));
    }
    let (kafka, topic) = dlq::source(configs, &args.select)?;
    let letters = {
        let (kafka, topic, select) = (kafka.clone(), topic.clone(), args.select.clone());
        tokio::task::spawn_blocking(move || dlq::read(&kafka, &topic, &select))
            .await
            .map_err(|e| AdminError::Usage(e.to_string()))??
    };
    let producer: FutureProducer = kafka
        .clone()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        // Same placement as the gateway for the same key.
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut replayed = 0;
    for letter in &letters {
        let Some(target) = &letter.source_topic else {
            println!(
                "{}:{} skipped: no dlq.source.topic header",
                letter.partition, letter.offset
            );
            continue;
        };
        if let Some(bytes) = &letter.value_omitted {
            // Replaying the letter would publish a record without its value.
            println!(
                "{}:{} skipped: its {bytes}-byte value was too large for the dead-letter topic",
                letter.partition, letter.offset
            );
            continue;
        }
        println!(
            "{} {}:{} → {target} (event {})",
            if args.dry_run {
                "would replay"
            } else {
                "replaying"
            },
            letter.partition,
            letter.offset,
            letter.event_id.as_deref().unwrap_or("undecodable")
        );
        if args.dry_run {
            continue;
        }
        let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len());
        // A replayed record is a copy of the refused one (a second replay, a copy of the
        // first): without the gateway's id-origin mark, writers and readers check its id
        // against the copies stored, as they do for a producer's own id.
        for (key, value) in letter
            .headers
            .iter()
            .filter(|(k, _)| k != schemas::headers::ID_ORIGIN)
        {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let mut record = FutureRecord::to(target).headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        if let Some(value) = &letter.value {
            record = record.payload(value);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| AdminError::Kafka(e))?;
        replayed += 1;
    }
    println!(
        "{replayed} replayed, {} selected (from {topic})",
        letters.len()
    );
    Ok(())
}
