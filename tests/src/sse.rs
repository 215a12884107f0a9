//! A Server-Sent Events reader for `GET /events/stream`.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// One `event` of a stream: its SSE id (a cursor) and its data.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub id: String,
    pub event: Value,
}

pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

/// What the next block of the stream was.
#[derive(Debug)]
pub enum Block {
    Event(Streamed),
    Error(String),
    /// The server ended the stream.
    End,
}

impl SseReader {
    /// Opens a stream; `params` as for `GET /events/stream`, `last_event_id` to resume.
    pub async fn open(
        http: &reqwest::Client,
        query: &str,
        params: &[(&str, &str)],
        last_event_id: Option<&str>,
    ) -> Result<SseReader, (u16, String)> {
        let mut request = http.get(format!("{query}/events/stream")).query(params);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("query-service answers");
        if response.status() != 200 {
            let status = response.status().as_u16();
            return Err((status, response.text().await.unwrap_or_default()));
        }
        Ok(SseReader {
            response,
            buffer: String::new(),
        })
    }

    /// The next event, error or end; panics if nothing comes within `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> Block {
        self.try_next(deadline).await.expect("stream stalled")
    }

    /// The next event, error or end; `None` if nothing comes within `wait` (what arrived of
    /// a block so far stays buffered for the next call).
    pub async fn try_next(&mut self, wait: Duration) -> Option<Block> {
        let until = Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut kind, mut id, mut data) = ("", "", String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                match kind {
                    "event" => {
                        return Some(Block::Event(Streamed {
                            id: id.to_owned(),
                            event: serde_json::from_str(&data).expect("event data is JSON"),
                        }))
                    }
                    "error" => return Some(Block::Error(data)),
                    _ => {} // heartbeat comments
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .ok()?
                .expect("stream readable");
            match chunk {
                Some(chunk) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                None => return Some(Block::End),
            }
        }
    }

    /// The next `count` events; panics on an error, the end, or a stall.
    pub async fn events(&mut self, count: usize, deadline: Duration) -> Vec<Streamed> {
        let until = Instant::now() + deadline;
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            let left = until.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Block::Event(e) => events.push(e),
                other => panic!("after {} of {count} events: {other:?}", events.len()),
            }
        }
        events
    }
}
