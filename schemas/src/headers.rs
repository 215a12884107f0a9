//! Kafka headers of the event topics, part of the contract like the Avro schemas.

/// What a record carries when it is not an event; absent on events.
pub const KIND: &str = "eventpipe-kind";
/// [`KIND`] of a tick (`crate::Tick`).
pub const KIND_TICK: &str = "tick";
/// [`KIND`] of a writer's report on the notices' topic (`crate::WriterReport`), so that a
/// reader of persisted notices can pass over it without decoding it.
pub const KIND_WRITER_REPORT: &str = "writer-report";

/// Who chose the `event_id`, on records written before `event.v3` (whose `id_origin` field
/// says it since). A gateway-assigned id is a fresh UUIDv7 and cannot repeat an earlier
/// event, so readers skip the duplicate check for it; without the header (a producer's own
/// id, or a record from another writer) readers check.
pub const ID_ORIGIN: &str = "eventpipe-id-origin";
/// [`ID_ORIGIN`] of an id the gateway assigned.
pub const ID_ORIGIN_GATEWAY: &str = "gateway";

/// Whether a record's headers, as `(key, value)` pairs, mark its id as the gateway's: how a
/// record written before `event.v3` says it (`crate::Event::id_assigned`).
pub fn marks_gateway_id<'a>(headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>) -> bool {
    has(headers, ID_ORIGIN, ID_ORIGIN_GATEWAY)
}

/// Whether a record's headers, as `(key, value)` pairs, mark it as a tick
/// (`crate::TickCodec::is_tick`).
pub fn marks_tick<'a>(headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>) -> bool {
    has(headers, KIND, KIND_TICK)
}

fn has<'a>(
    mut headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
    key: &str,
    value: &str,
) -> bool {
    headers.any(|(k, v)| k == key && v == Some(value.as_bytes()))
}

/// W3C trace context of the request that carried the event.
pub const TRACEPARENT: &str = "traceparent";
