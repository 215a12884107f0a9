//! One HTTP/1.1 connection kept open per load-generator worker, requests written and answers
//! read by the worker's own task: no pool, no per-request URL parsing, no connection task
//! between the worker and its socket. The generators share the two cores with what they
//! measure: hyper's client connection (a task of its own per connection, so two tasks woken a
//! request) took ~15.8 µs of CPU per single POST at 256 connections, this ~12.6 µs in the
//! same hour (docs/benchmarks.md, "The generator's own cost"; `reqwest` before hyper cost
//! about twice hyper's, "The generators' HTTP client").

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum KeepAliveError {
    #[error("{0} is not an http:// address with a host and port")]
    Address(String),
    #[error("connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("connection to {authority}: {source}")]
    Io {
        authority: String,
        source: std::io::Error,
    },
    #[error("connection to {authority} closed before the whole answer arrived")]
    Closed { authority: String },
    #[error("malformed answer from {authority}: {what}")]
    Malformed {
        authority: String,
        what: &'static str,
    },
}

/// What the generators look at in an answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when the answer has one.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

/// Answers' heads larger than this are refused (the services send a handful of headers).
const MAX_HEAD: usize = 16 * 1024;
/// Answers' bodies larger than this are refused: a page of GET results is well under it.
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_HEADERS: usize = 32;

pub struct KeepAlive {
    authority: String,
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed; kept between requests only when empty.
    read: BytesMut,
    write: Vec<u8>,
}

impl KeepAlive {
    /// A connection to `base` (`http://host:port`), opened on the first request.
    pub fn new(base: &str) -> Result<KeepAlive, KeepAliveError> {
        let authority = base
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| valid_authority(a))
            .ok_or_else(|| KeepAliveError::Address(base.to_owned()))?;
        Ok(KeepAlive {
            authority: authority.to_owned(),
            stream: None,
            read: BytesMut::with_capacity(8 * 1024),
            write: Vec::with_capacity(1024),
        })
    }

    async fn open(&self) -> Result<TcpStream, KeepAliveError> {
        let connect = |source| KeepAliveError::Connect {
            authority: self.authority.clone(),
            source,
        };
        let stream = TcpStream::connect(&self.authority).await.map_err(connect)?;
        // Small requests answered one at a time: Nagle would hold each for the peer's ACK.
        stream.set_nodelay(true).map_err(connect)?;
        Ok(stream)
    }

    /// POSTs `body` to `path` and reads the whole answer (so the connection can carry the
    /// next request).
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<Answer, KeepAliveError> {
        self.send("POST", path, Some(content_type), &body).await
    }

    /// GETs `path` and reads the whole answer.
    pub async fn get(&mut self, path: &str) -> Result<Answer, KeepAliveError> {
        self.send("GET", path, None, &[]).await
    }

    /// One request and its whole answer. A connection the server closed while it was idle is
    /// opened again before the request is written, so a request is never sent twice.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Answer, KeepAliveError> {
        let mut stream = match self.stream.take() {
            Some(s) if still_open(&s) => s,
            _ => self.open().await?,
        };
        self.read.clear();
        self.write.clear();
        head(
            &mut self.write,
            method,
            path,
            &self.authority,
            content_type,
            body.len(),
        );
        self.write.extend_from_slice(body);
        let io = |source| KeepAliveError::Io {
            authority: self.authority.clone(),
            source,
        };
        stream.write_all(&self.write).await.map_err(io)?;
        let (answer, keep) = self.answer(&mut stream).await?;
        if keep {
            self.stream = Some(stream);
        }
        Ok(answer)
    }

    /// Reads one answer from `stream`; also whether the connection may carry the next request.
    async fn answer(&mut self, stream: &mut TcpStream) -> Result<(Answer, bool), KeepAliveError> {
        let (status, retry_after, framing, close, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.read) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = response.code.unwrap_or(0);
                    // 1xx answers are not final; the services send none unasked.
                    let (framing, close, retry_after) =
                        framing(status, response.version, response.headers)
                            .map_err(|what| self.malformed(what))?;
                    break (status, retry_after, framing, close, head_len);
                }
                Ok(httparse::Status::Partial) if self.read.len() < MAX_HEAD => {
                    self.fill(stream).await?;
                }
                Ok(httparse::Status::Partial) => return Err(self.malformed("head too large")),
                Err(_) => return Err(self.malformed("head does not parse")),
            }
        };
        self.read.advance(head_len);
        let body = match framing {
            Framing::Length(len) => {
                if len > MAX_BODY {
                    return Err(self.malformed("body too large"));
                }
                while self.read.len() < len {
                    self.fill(stream).await?;
                }
                self.read.split_to(len).freeze()
            }
            Framing::Chunked => self.chunked(stream).await?,
        };
        // A server sending more than it framed is out of step with its requests.
        let keep = !close && self.read.is_empty();
        Ok((
            Answer {
                status,
                retry_after,
                body,
            },
            keep,
        ))
    }

    /// A chunked body (RFC 9112 §7.1), trailers read and ignored.
    async fn chunked(&mut self, stream: &mut TcpStream) -> Result<Bytes, KeepAliveError> {
        let mut body = BytesMut::new();
        loop {
            let line = self.line(stream).await?;
            let size = line
                .split(|b| *b == b';')
                .next()
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| usize::from_str_radix(hex.trim(), 16).ok())
                .ok_or_else(|| self.malformed("chunk size"))?;
            if size == 0 {
                // Trailer fields, then the empty line.
                while !self.line(stream).await?.is_empty() {}
                return Ok(body.freeze());
            }
            if body.len() + size > MAX_BODY {
                return Err(self.malformed("body too large"));
            }
            while self.read.len() < size + 2 {
                self.fill(stream).await?;
            }
            body.extend_from_slice(&self.read[..size]);
            if &self.read[size..size + 2] != b"\r\n" {
                return Err(self.malformed("chunk not followed by CRLF"));
            }
            self.read.advance(size + 2);
        }
    }

    /// The next CRLF-terminated line, without its CRLF.
    async fn line(&mut self, stream: &mut TcpStream) -> Result<Bytes, KeepAliveError> {
        loop {
            if let Some(at) = self.read.windows(2).position(|w| w == b"\r\n") {
                let line = self.read.split_to(at).freeze();
                self.read.advance(2);
                return Ok(line);
            }
            if self.read.len() >= MAX_HEAD {
                return Err(self.malformed("line too long"));
            }
            self.fill(stream).await?;
        }
    }

    async fn fill(&mut self, stream: &mut TcpStream) -> Result<(), KeepAliveError> {
        self.read.reserve(8 * 1024);
        match stream.read_buf(&mut self.read).await {
            Ok(0) => Err(KeepAliveError::Closed {
                authority: self.authority.clone(),
            }),
            Ok(_) => Ok(()),
            Err(source) => Err(KeepAliveError::Io {
                authority: self.authority.clone(),
                source,
            }),
        }
    }

    fn malformed(&self, what: &'static str) -> KeepAliveError {
        KeepAliveError::Malformed {
            authority: self.authority.clone(),
            what,
        }
    }
}

/// How an answer's body is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// The body's framing, whether the server closes after it, and `Retry-After` in seconds.
fn framing(
    status: u16,
    version: Option<u8>,
    headers: &[httparse::Header<'_>],
) -> Result<(Framing, bool, Option<u64>), &'static str> {
    let mut length = None;
    let mut chunked = false;
    // HTTP/1.0 closes unless told otherwise.
    let mut close = version == Some(0);
    let mut retry_after = None;
    for h in headers {
        let value = std::str::from_utf8(h.value).map_err(|_| "header value not UTF-8")?;
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| "content-length")?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let tokens = || value.split(',').map(str::trim);
            if tokens().any(|t| t.eq_ignore_ascii_case("close")) {
                close = true;
            } else if tokens().any(|t| t.eq_ignore_ascii_case("keep-alive")) {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.trim().parse().ok();
        }
    }
    let framing = if matches!(status, 100..=199 | 204 | 304) {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else {
        // A body delimited by the connection's end is not kept alive; none is expected.
        Framing::Length(length.ok_or("neither content-length nor chunked")?)
    };
    Ok((framing, close, retry_after))
}

/// The request line and headers, written into `out`.
fn head(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    authority: &str,
    content_type: Option<&str>,
    body_len: usize,
) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{method} {path} HTTP/1.1\r\nhost: {authority}\r\n");
    if let Some(content_type) = content_type {
        let _ = write!(out, "content-type: {content_type}\r\n");
    }
    if method != "GET" || body_len > 0 {
        let _ = write!(out, "content-length: {body_len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether an idle connection is still usable: not closed by the server, nothing unasked
/// waiting on it.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(
        stream.try_read(&mut probe),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// `host:port`, the port a number.
fn valid_authority(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    #[test]
    fn takes_only_plain_http_addresses_with_a_port() {
        assert!(KeepAlive::new("http://127.0.0.1:8080").is_ok());
        assert!(KeepAlive::new("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "127.0.0.1:8080",
            "https://127.0.0.1:8443",
            "http://localhost",
            "http://:80",
            "http://host:port",
            "::",
        ] {
            assert!(
                matches!(KeepAlive::new(bad), Err(KeepAliveError::Address(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn framing_follows_the_headers() {
        let h = |name: &'static str, value: &'static [u8]| httparse::Header { name, value };
        assert_eq!(
            framing(200, Some(1), &[h("Content-Length", b"12")]),
            Ok((Framing::Length(12), false, None))
        );
        assert_eq!(
            framing(
                503,
                Some(1),
                &[
                    h("transfer-encoding", b"gzip, chunked"),
                    h("Retry-After", b"2")
                ]
            ),
            Ok((Framing::Chunked, false, Some(2)))
        );
        assert_eq!(
            framing(204, Some(1), &[h("connection", b"close")]),
            Ok((Framing::Length(0), true, None))
        );
        assert_eq!(
            framing(200, Some(0), &[h("content-length", b"0")]),
            Ok((Framing::Length(0), true, None))
        );
        assert!(framing(200, Some(1), &[]).is_err());
        assert!(framing(200, Some(1), &[h("content-length", b"-1")]).is_err());
    }

    /// A server that answers each request on one connection with the next of `answers`
    /// (written in pieces, to cross reads), then closes. Returns its address and the
    /// number of connections it accepted.
    async fn server(answers: Vec<&'static [u8]>) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let mut connections = 0;
            let mut answers = answers.into_iter();
            while let Some(first) = answers.next() {
                let (socket, _) = listener.accept().await.expect("accept");
                connections += 1;
                let mut socket = tokio::io::BufStream::new(socket);
                let mut next = Some(first);
                while let Some(answer) = next.take() {
                    // The head, then the body its content-length names.
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if socket.read_line(&mut line).await.expect("read") == 0 {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().expect("length");
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    socket.read_exact(&mut body).await.expect("body");
                    for piece in answer.chunks(7) {
                        socket.write_all(piece).await.expect("write");
                        socket.flush().await.expect("flush");
                    }
                    if !answer.windows(17).any(|w| w == b"connection: close") {
                        next = answers.next();
                    }
                }
            }
            connections
        });
        (address, task)
    }

    #[tokio::test]
    async fn reads_answers_by_length_and_by_chunks_on_one_connection() {
        let (address, server) = server(vec![
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nt: 1\r\n\r\n",
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 3\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let mut client = KeepAlive::new(&address).expect("address");
        let a = client
            .post("/events", "application/json", Bytes::from_static(b"{}"))
            .await
            .expect("first");
        assert_eq!((a.status, &a.body[..]), (202, &b"hello"[..]));
        let b = client.get("/events?clientId=c").await.expect("second");
        assert_eq!((b.status, &b.body[..]), (200, &b"abcde"[..]));
        let c = client
            .post("/events", "application/json", Bytes::from_static(b"{}"))
            .await
            .expect("third");
        assert_eq!((c.status, c.retry_after), (429, Some(3)));
        // The server closed after the third: the fourth goes over a new connection.
        let d = client.get("/").await.expect("fourth");
        assert_eq!((d.status, d.body.len()), (204, 0));
        assert_eq!(server.await.expect("server"), 2);
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_an_error_not_an_answer() {
        let (address, _server) = server(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nshort",
        ])
        .await;
        let mut client = KeepAlive::new(&address).expect("address");
        assert!(matches!(
            client.get("/").await,
            Err(KeepAliveError::Closed { .. })
        ));
    }
}
