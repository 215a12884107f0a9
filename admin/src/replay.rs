//! `dlq replay`: dead letters back to the topic they came from, with their original key,
//! bytes and headers, through an idempotent producer. The store keeps one row per event id,
//! so replaying an event that meanwhile got stored (or replaying twice) stores it once; the
//! gateway's id-origin mark is taken off (the value's `id_origin` of `event.v3`, the header of
//! older records), since a replay is a copy.

use std::{borrow::Cow, time::Duration};

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use schemas::{EventCodec, IdOrigin};

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
    let codec = EventCodec::new();
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
        let value = letter
            .value
            .as_deref()
            .map(|v| as_copy(&codec, v))
            .transpose()?;
        if let Some(value) = &value {
            record = record.payload(value.as_ref());
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

/// `value` as a copy is replayed: an event whose value names the gateway as its id's origin
/// is written again naming the producer, so that writers and readers check its id against
/// the copies stored. Anything else (an older version, whose mark was a header; a value that
/// does not decode, which is refused again as before) goes back byte for byte.
fn as_copy<'v>(codec: &EventCodec, value: &'v [u8]) -> Result<Cow<'v, [u8]>, AdminError> {
    match codec.decode(value) {
        Ok(event) if event.id_origin == Some(IdOrigin::Gateway) => {
            let copy = schemas::Event {
                id_origin: Some(IdOrigin::Producer),
                ..event
            };
            codec
                .encode(&copy)
                .map(Cow::Owned)
                .map_err(|e| AdminError::CheckFailed(format!("re-encoding a replayed event: {e}")))
        }
        _ => Ok(Cow::Borrowed(value)),
    }
}

#[cfg(test)]
mod tests {
    use schemas::{Event, Priority};
    use uuid::Uuid;

    use super::*;

    fn event(id_origin: Option<IdOrigin>) -> Event {
        Event {
            event_id: Uuid::now_v7(),
            client_id: "c".into(),
            event_type: "t".into(),
            ts_micros: None,
            ingested_at_micros: 1_763_000_000_000_000,
            priority: Priority::Normal,
            payload: "{}".into(),
            sdk: None,
            id_origin,
        }
    }

    #[test]
    fn a_replayed_gateway_id_is_marked_as_a_copy() {
        let codec = EventCodec::new();
        let original = event(Some(IdOrigin::Gateway));
        let value = codec.encode(&original).unwrap();
        let copy = as_copy(&codec, &value).unwrap();
        let read = codec.decode(&copy).unwrap();
        assert_eq!(read.id_origin, Some(IdOrigin::Producer));
        assert_eq!(
            Event {
                id_origin: original.id_origin,
                ..read
            },
            original,
            "nothing else changes"
        );
    }

    #[test]
    fn other_values_are_replayed_byte_for_byte() {
        let codec = EventCodec::new();
        let own_id = codec.encode(&event(Some(IdOrigin::Producer))).unwrap();
        let v2 = codec
            .encode_as(&event(None), codec.version(2).unwrap())
            .unwrap();
        for value in [own_id.as_slice(), v2.as_slice(), b"not avro".as_slice()] {
            let replayed = as_copy(&codec, value).unwrap();
            assert!(matches!(replayed, Cow::Borrowed(v) if v == value));
        }
    }
}
