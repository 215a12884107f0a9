//! A refused request: 401 (no credential, or one that does not hold) or 403 (a credential
//! that holds, for something outside its grant), as problem+json. The detail says what was
//! wrong with the credential, never the credential or a secret.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::problem::Problem;

/// Why a request was refused; the `reason` label of `*_auth_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No `Authorization: Bearer` header.
    Missing,
    /// Not a JWT (or one whose claims do not parse), and not an API key's shape.
    Malformed,
    /// A signature that no key verifies, or an API key that is not configured.
    Invalid,
    /// `exp` passed (beyond the leeway).
    Expired,
    /// `nbf` still ahead (beyond the leeway).
    NotYetValid,
    /// `aud` missing or not the configured audience.
    Audience,
    /// `iss` not the configured issuer.
    Issuer,
    /// No key for the token's `kid` or algorithm.
    UnknownKey,
    /// A valid credential, for a client id or route outside its grant (403).
    Forbidden,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Missing,
        Reason::Malformed,
        Reason::Invalid,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::Audience,
        Reason::Issuer,
        Reason::UnknownKey,
        Reason::Forbidden,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Invalid => "invalid",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Audience => "audience",
            Reason::Issuer => "issuer",
            Reason::UnknownKey => "unknown_key",
            Reason::Forbidden => "forbidden",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Refused {
    pub reason: Reason,
    pub detail: String,
}

impl Refused {
    pub(crate) fn new(reason: Reason, detail: impl Into<String>) -> Refused {
        Refused {
            reason,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.reason {
            Reason::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    pub fn problem(&self) -> Problem {
        let kind = match self.reason {
            Reason::Forbidden => "forbidden",
            Reason::Missing => "credential-missing",
            _ => "credential-refused",
        };
        Problem::new(self.status(), kind, self.detail.clone())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = self.problem().into_response();
        if self.reason != Reason::Forbidden {
            // RFC 6750 §3: no error code when no credential came; invalid_token otherwise.
            let challenge = match self.reason {
                Reason::Missing => r#"Bearer realm="eventpipe""#,
                _ => r#"Bearer realm="eventpipe", error="invalid_token""#,
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
