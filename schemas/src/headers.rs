//! Kafka headers of the event topics, part of the contract like the Avro schemas.

/// What a record carries when it is not an event; absent on events.
pub const KIND: &str = "eventpipe-kind";
/// [`KIND`] of a tick (`crate::Tick`).
pub const KIND_TICK: &str = "tick";

/// Who chose the `event_id`. A gateway-assigned id is a fresh UUIDv7 and cannot repeat an
/// earlier event, so readers skip the duplicate check for it; without the header (a
/// producer's own id, or a record from another writer) readers check.
pub const ID_ORIGIN: &str = "eventpipe-id-origin";
/// [`ID_ORIGIN`] of an id the gateway assigned.
pub const ID_ORIGIN_GATEWAY: &str = "gateway";

/// W3C trace context of the request that carried the event.
pub const TRACEPARENT: &str = "traceparent";
