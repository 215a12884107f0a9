//! A consumed record's Kafka headers in the form `schemas::headers` reads them.

use rdkafka::message::{Headers, Message};

/// `message`'s headers as `(key, value)` pairs. librdkafka parses a record's headers into a
/// list it allocates on the first look, so consumers ask only when the value cannot say
/// what they need (`schemas::TickCodec::is_tick`, `schemas::Event::id_assigned`).
pub fn pairs<M: Message>(message: &M) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
    message
        .headers()
        .into_iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value))
}

#[cfg(test)]
mod tests {
    use rdkafka::{
        message::{Header, OwnedHeaders, OwnedMessage},
        Timestamp,
    };

    use super::*;

    fn message(headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            None,
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            headers,
        )
    }

    #[test]
    fn every_header_in_order_and_none_without_any() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "a",
                value: Some("1"),
            })
            .insert(Header::<&str> {
                key: "b",
                value: None,
            });
        let marked = message(Some(headers));
        let read: Vec<_> = pairs(&marked).collect();
        assert_eq!(read, vec![("a", Some(&b"1"[..])), ("b", None)]);
        assert_eq!(pairs(&message(None)).count(), 0);
    }
}
