//! Request bodies sent compressed (`Content-Encoding: gzip` or `deflate`), as mobile and device
//! SDKs send batches to save their users' bandwidth. The decoded body is held to the same
//! `limits.max_body_bytes` as a plain one, so a small body that inflates without end (a
//! compression bomb) is refused with 413 after at most that many bytes, never buffered whole.

use std::io::Read;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use chassis::problem::Problem;
use flate2::read::{MultiGzDecoder, ZlibDecoder};

/// What a refused coding's answer lists as accepted (RFC 9110, section 12.5.3).
const ACCEPTED: &str = "gzip, deflate, identity";

/// The content codings `POST /events` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    /// RFC 1952; `x-gzip` too. Several members one after another are one body.
    Gzip,
    /// HTTP's `deflate`: the zlib format (RFC 1950).
    Deflate,
}

impl Coding {
    pub fn of(headers: &HeaderMap) -> Result<Coding, Problem> {
        let mut codings = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(','))
            .map(|coding| coding.trim().to_ascii_lowercase())
            .filter(|coding| !coding.is_empty() && coding != "identity");
        let coding = match (codings.next(), codings.next()) {
            (None, _) => return Ok(Coding::Identity),
            (Some(one), None) => one,
            (Some(_), Some(_)) => return Err(refused("more than one content coding")),
        };
        match coding.as_str() {
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            other => Err(refused(&format!(
                "Content-Encoding {other:?} is not accepted"
            ))),
        }
    }

    /// The body as sent before its coding, at most `limit` bytes. CPU-bound: a caller on an
    /// async runtime runs it off its workers.
    pub fn decode(self, body: Bytes, limit: usize) -> Result<Bytes, Problem> {
        let reader: Box<dyn Read> = match self {
            Coding::Identity => return Ok(body),
            Coding::Gzip => Box::new(MultiGzDecoder::new(&body[..])),
            Coding::Deflate => Box::new(ZlibDecoder::new(&body[..])),
        };
        let mut decoded = Vec::new();
        // One byte past the limit tells a body at the limit from one over it.
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        reader.take(cap).read_to_end(&mut decoded).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "undecodable-body",
                format!("the body is not valid {}: {e}", self.name()),
            )
        })?;
        if decoded.len() > limit {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!("the request body decoded exceeds {limit} bytes"),
            ));
        }
        Ok(Bytes::from(decoded))
    }

    fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate (zlib)",
        }
    }
}

fn refused(what: &str) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-content-encoding",
        format!("{what}; send the body as it is, or with gzip or deflate"),
    )
    .with_header(header::ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::{
        write::{GzEncoder, ZlibEncoder},
        Compression,
    };

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::CONTENT_ENCODING, value.parse().unwrap());
        }
        headers
    }

    fn gzip(data: &[u8]) -> Bytes {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        Bytes::from(encoder.finish().unwrap())
    }

    #[test]
    fn reads_the_codings_it_takes_and_refuses_the_others_with_what_it_takes() {
        assert_eq!(Coding::of(&headers(&[])).unwrap(), Coding::Identity);
        assert_eq!(
            Coding::of(&headers(&["identity"])).unwrap(),
            Coding::Identity
        );
        assert_eq!(Coding::of(&headers(&["GZIP"])).unwrap(), Coding::Gzip);
        assert_eq!(Coding::of(&headers(&["x-gzip"])).unwrap(), Coding::Gzip);
        assert_eq!(Coding::of(&headers(&["deflate"])).unwrap(), Coding::Deflate);
        for refused in [
            &["br"][..],
            &["gzip, gzip"],
            &["gzip", "deflate"],
            &["zstd"],
        ] {
            let problem = Coding::of(&headers(refused)).unwrap_err();
            assert_eq!(problem.status, 415, "{refused:?}");
            assert_eq!(problem.header.unwrap().0, header::ACCEPT_ENCODING);
        }
    }

    #[test]
    fn decodes_gzip_with_several_members_and_zlib() {
        let mut two = gzip(b"{\"a\":").to_vec();
        two.extend_from_slice(&gzip(b"1}"));
        assert_eq!(
            Coding::Gzip.decode(Bytes::from(two), 100).unwrap(),
            "{\"a\":1}"
        );
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(b"[1,2]").unwrap();
        let zlib = Bytes::from(zlib.finish().unwrap());
        assert_eq!(Coding::Deflate.decode(zlib, 100).unwrap(), "[1,2]");
    }

    #[test]
    fn a_body_that_inflates_past_the_limit_is_refused_at_the_limit() {
        let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20 * 1024, "{} bytes compressed", bomb.len());
        let problem = Coding::Gzip.decode(bomb, 1024 * 1024).unwrap_err();
        assert_eq!(problem.status, 413);
        let at_limit = gzip(&vec![b' '; 1024]);
        assert_eq!(Coding::Gzip.decode(at_limit, 1024).unwrap().len(), 1024);
    }

    #[test]
    fn a_corrupt_body_is_a_400_that_names_the_coding() {
        let problem = Coding::Gzip
            .decode(Bytes::from_static(b"{\"not\":\"gzip\"}"), 100)
            .unwrap_err();
        assert_eq!(problem.status, 400);
        assert!(problem.detail.contains("gzip"), "{}", problem.detail);
    }
}
