//! One HTTP/1.1 connection kept open per load-generator worker, requests sent on it with
//! nothing in between: no pool, no per-request URL parsing, no redirect or header policy.
//! The generators share the two cores with what they measure: with `reqwest` the generator
//! spent ~18 µs of CPU per single POST, over this ~9 µs (docs/benchmarks.md, "The generators'
//! HTTP client").

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{client::conn::http1, header, Method, Request, Uri};
use hyper_util::rt::TokioIo;
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
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// What the generators look at in an answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when the answer has one.
    pub retry_after: Option<u64>,
    pub body: Bytes,
}

pub struct KeepAlive {
    authority: String,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
}

impl KeepAlive {
    /// A connection to `base` (`http://host:port`), opened on the first request.
    pub fn new(base: &str) -> Result<KeepAlive, KeepAliveError> {
        let uri: Uri = base
            .parse()
            .map_err(|_| KeepAliveError::Address(base.to_owned()))?;
        let authority = match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(a)) if a.port().is_some() => a.to_string(),
            _ => return Err(KeepAliveError::Address(base.to_owned())),
        };
        Ok(KeepAlive {
            authority,
            sender: None,
        })
    }

    async fn open(&self) -> Result<http1::SendRequest<Full<Bytes>>, KeepAliveError> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|source| KeepAliveError::Connect {
                authority: self.authority.clone(),
                source,
            })?;
        // Small requests answered one at a time: Nagle would hold each for the peer's ACK.
        stream
            .set_nodelay(true)
            .map_err(|source| KeepAliveError::Connect {
                authority: self.authority.clone(),
                source,
            })?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the server closes the connection or the sender is dropped; the next
            // request then opens another.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// POSTs `body` to `path` and reads the whole answer (so the connection can carry the
    /// next request).
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<Answer, KeepAliveError> {
        self.send(Method::POST, path, Some(content_type), body)
            .await
    }

    /// GETs `path` and reads the whole answer.
    pub async fn get(&mut self, path: &str) -> Result<Answer, KeepAliveError> {
        self.send(Method::GET, path, None, Bytes::new()).await
    }

    /// One request and its whole answer. A connection the server closed is opened again once.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<Answer, KeepAliveError> {
        for attempt in 0..2 {
            let mut sender = match self.sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.open().await?,
            };
            if sender.ready().await.is_err() && attempt == 0 {
                continue;
            }
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, &self.authority);
            if let Some(content_type) = content_type {
                request = request.header(header::CONTENT_TYPE, content_type);
            }
            let request = request.body(Full::new(body.clone()))?;
            let response = match sender.send_request(request).await {
                Ok(response) => response,
                // Closed between requests (an idle timeout): nothing was processed.
                Err(e) if attempt == 0 && e.is_closed() => continue,
                Err(e) => return Err(e.into()),
            };
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = response.into_body().collect().await?.to_bytes();
            self.sender = Some(sender);
            return Ok(Answer {
                status,
                retry_after,
                body,
            });
        }
        Err(KeepAliveError::Connect {
            authority: self.authority.clone(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_plain_http_addresses_with_a_port() {
        assert!(KeepAlive::new("http://127.0.0.1:8080").is_ok());
        for bad in [
            "127.0.0.1:8080",
            "https://127.0.0.1:8443",
            "http://localhost",
            "::",
        ] {
            assert!(
                matches!(KeepAlive::new(bad), Err(KeepAliveError::Address(_))),
                "{bad}"
            );
        }
    }
}
