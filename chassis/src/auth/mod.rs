//! Authentication and authorization of the HTTP APIs, shared by producer-gateway and
//! query-service (docs/security.md).
//!
//! `settings` (the `auth` section) → `keys` (verification keys: HS256 secrets, RS256/ES256
//! PEM files, a JWKS file) → `verify` (the `Authorization: Bearer` credential — a JWT or a
//! static API key — to a [`Caller`], and the checks of its grant) → `grant` (client ids a
//! caller may write and read, operator) → `refusal` (401/403 as problem+json).
//! `secret` holds secrets out of logs and `--print-config`.

mod grant;
mod keys;
pub mod openapi;
mod refusal;
mod secret;
mod settings;
mod verify;

use std::path::PathBuf;

pub use grant::{Grant, GrantError, GrantSpec};
pub use refusal::{Reason, Refused};
pub use secret::{Secret, REDACTED};
pub use settings::{ApiKeySettings, AuthSettings, KeyAlgorithm, KeySettings};
pub use verify::{Authenticator, Caller};

/// A setting of the `auth` section that cannot be used; the service refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("{key}: {reason}")]
    Key { key: String, reason: String },
    #[error("auth.jwks_file {path}: {reason}")]
    Jwks { path: PathBuf, reason: String },
    #[error("auth.api_keys_file {path}: {reason}")]
    ApiKeys { path: PathBuf, reason: String },
}
