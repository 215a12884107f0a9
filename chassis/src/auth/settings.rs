//! The `auth` section of a service's settings (producer-gateway and query-service read the
//! same one). Off by default; `auth.enabled = true` turns both authentication and
//! authorization on, and the service then refuses to start without a key or API key to
//! check credentials with.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{grant::GrantSpec, secret::Secret};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Require a credential (`Authorization: Bearer <JWT or API key>`) on the API and check
    /// the caller's grant. `/metrics`, `/livez`, `/readyz` stay open. Default false.
    pub enabled: bool,
    /// The `aud` a token must name. Default `eventpipe`.
    pub audience: String,
    /// The `iss` a token must name; unset, any issuer is accepted (the keys decide).
    /// Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Clock difference tolerated on `exp` and `nbf`. Default 30s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Keys that verify tokens' signatures; several at once for rotation. Default none.
    pub keys: Vec<KeySettings>,
    /// A JWKS file (`{"keys": [...]}`) of further verification keys (RSA and P-256 EC keys;
    /// others are skipped with a warning). Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Static API keys, each with its grant. Default none.
    pub api_keys: Vec<ApiKeySettings>,
    /// A TOML file with further API keys as `[[api_keys]]` tables (a mounted Secret).
    /// Default unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys_file: Option<PathBuf>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            enabled: false,
            audience: "eventpipe".into(),
            issuer: None,
            leeway: Duration::from_secs(30),
            keys: Vec::new(),
            jwks_file: None,
            api_keys: Vec::new(),
            api_keys_file: None,
        }
    }
}

/// The signature algorithms accepted. Others (`none` included) are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// One verification key. HS256 takes `secret` or `secret_file`; RS256 and ES256 take
/// `pem_file`, a PEM public key (`-----BEGIN PUBLIC KEY-----`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// Key id: a token whose header names this `kid` is verified with this key only.
    /// A key without one is tried for every token of its algorithm. Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `HS256`, `RS256` or `ES256` (required).
    pub algorithm: KeyAlgorithm,
    /// HS256: the shared secret (at least 32 bytes). Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// HS256: a file holding the shared secret (trailing newline ignored). Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// RS256/ES256: a PEM file with the public key. Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem_file: Option<PathBuf>,
}

/// One static API key, sent as `Authorization: Bearer <key>`, and what it may do. The grant's
/// fields are [`GrantSpec`]'s, spelled out rather than flattened: serde cannot refuse unknown
/// fields beside a flattened struct, and a misspelled `operater = true` must stop the start,
/// not vanish.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// Names the key in logs (the key itself is never logged); required.
    pub name: String,
    /// The key: at least 16 characters, no whitespace, no `.` (a value with dots is read as a
    /// JWT). Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// A file holding the key (trailing newline ignored). Default unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Client ids (or `prefix*`) it may post. Default none.
    #[serde(default)]
    pub write: Vec<String>,
    /// Client ids (or `prefix*`) it may read. Default none.
    #[serde(default)]
    pub read: Vec<String>,
    /// Reads every client and sees the pipeline view. Default false.
    #[serde(default)]
    pub operator: bool,
}

impl ApiKeySettings {
    /// What this key may do, as a grant is written.
    pub fn grant(&self) -> GrantSpec {
        GrantSpec {
            write: self.write.clone(),
            read: self.read.clone(),
            operator: self.operator,
        }
    }
}

/// The content of `api_keys_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiKeysFile {
    #[serde(default)]
    pub api_keys: Vec<ApiKeySettings>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_api_key_with_a_misspelled_grant_field_is_refused() {
        let key = "name = \"ops\"\nkey = \"0123456789abcdef\"\nread = [\"a*\"]\n";
        let parsed: ApiKeySettings = toml::from_str(key).unwrap();
        assert_eq!(
            parsed.grant(),
            GrantSpec {
                write: Vec::new(),
                read: vec!["a*".into()],
                operator: false,
            }
        );
        let misspelled = format!("{key}operater = true\n");
        let refused = toml::from_str::<ApiKeySettings>(&misspelled).unwrap_err();
        assert!(refused.to_string().contains("operater"), "{refused}");
    }
}
