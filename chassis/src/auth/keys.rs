//! The keys tokens are verified with, loaded once at start from settings, PEM files and a
//! JWKS file, and how a token's header picks the ones to try.

use std::path::{Path, PathBuf};

use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm as JwkAlgorithm, PublicKeyUse},
    Algorithm, DecodingKey, Header,
};
use tracing::warn;

use super::{
    secret::Secret,
    settings::{AuthSettings, KeyAlgorithm, KeySettings},
    AuthConfigError,
};

/// HS256 secrets shorter than the hash (RFC 7518 §3.2) can be brute-forced offline from one
/// token; refused at start.
const MIN_HS256_BYTES: usize = 32;

pub(super) struct Key {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
}

/// Every verification key of the service.
pub(super) struct KeySet {
    keys: Vec<Key>,
}

/// Why no key could be picked for a token.
pub(super) enum NoKey {
    /// The header names an algorithm this service does not take.
    Algorithm(Algorithm),
    /// No key of the algorithm has the header's `kid`, and none is without a `kid`.
    Kid(String),
    /// No key of the algorithm at all.
    None(Algorithm),
}

impl KeySet {
    pub fn load(settings: &AuthSettings) -> Result<KeySet, AuthConfigError> {
        let mut keys = Vec::new();
        for (index, key) in settings.keys.iter().enumerate() {
            keys.push(configured(index, key)?);
        }
        if let Some(path) = &settings.jwks_file {
            keys.extend(jwks(path)?);
        }
        Ok(KeySet { keys })
    }

    pub fn empty() -> KeySet {
        KeySet { keys: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys to try for a token with this header: those with its `kid` if it names one
    /// some key has; for a `kid` no key has, the keys of its algorithm without a `kid`; for a
    /// token without `kid`, every key of its algorithm. A token naming a `kid` is never tried
    /// against keys named otherwise: removing a key's entry refuses the tokens that name it.
    pub fn candidates(&self, header: &Header) -> Result<Vec<&Key>, NoKey> {
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(NoKey::Algorithm(header.alg));
        }
        let of_alg = || self.keys.iter().filter(|k| k.algorithm == header.alg);
        if let Some(kid) = &header.kid {
            let named: Vec<&Key> = of_alg()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect();
            if !named.is_empty() {
                return Ok(named);
            }
            let unnamed: Vec<&Key> = of_alg().filter(|k| k.kid.is_none()).collect();
            if unnamed.is_empty() {
                return Err(NoKey::Kid(kid.clone()));
            }
            return Ok(unnamed);
        }
        let all: Vec<&Key> = of_alg().collect();
        if all.is_empty() {
            return Err(NoKey::None(header.alg));
        }
        Ok(all)
    }
}

fn configured(index: usize, key: &KeySettings) -> Result<Key, AuthConfigError> {
    let what = format!(
        "auth.keys[{index}]{}",
        key.kid
            .as_deref()
            .map(|k| format!(" (kid {k:?})"))
            .unwrap_or_default()
    );
    let bad = |reason: String| AuthConfigError::Key {
        key: what.clone(),
        reason,
    };
    let decoding = match key.algorithm {
        KeyAlgorithm::HS256 => {
            if key.pem_file.is_some() {
                return Err(bad("HS256 takes secret or secret_file, not pem_file".into()));
            }
            let secret = match (&key.secret, &key.secret_file) {
                (Some(secret), None) => secret.clone(),
                (None, Some(path)) => {
                    Secret::from_file(path).map_err(|e| bad(read_failed(path, &e)))?
                }
                _ => {
                    return Err(bad(
                        "HS256 takes exactly one of secret and secret_file".into()
                    ))
                }
            };
            if secret.expose().len() < MIN_HS256_BYTES {
                return Err(bad(format!(
                    "an HS256 secret must be at least {MIN_HS256_BYTES} bytes"
                )));
            }
            DecodingKey::from_secret(secret.expose().as_bytes())
                .map_err(|e| bad(format!("unusable secret: {e}")))?
        }
        KeyAlgorithm::RS256 | KeyAlgorithm::ES256 => {
            if key.secret.is_some() || key.secret_file.is_some() {
                return Err(bad(format!(
                    "{:?} takes pem_file (a public key), not a secret",
                    key.algorithm
                )));
            }
            let path = key
                .pem_file
                .as_ref()
                .ok_or_else(|| bad(format!("{:?} needs pem_file", key.algorithm)))?;
            let pem = std::fs::read(path).map_err(|e| bad(read_failed(path, &e)))?;
            let parsed = if key.algorithm == KeyAlgorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            parsed.map_err(|e| {
                bad(format!(
                    "{} is not a {:?} public key in PEM: {e}",
                    path.display(),
                    key.algorithm
                ))
            })?
        }
    };
    Ok(Key {
        kid: key.kid.clone(),
        algorithm: match key.algorithm {
            KeyAlgorithm::HS256 => Algorithm::HS256,
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::ES256 => Algorithm::ES256,
        },
        decoding,
    })
}

fn read_failed(path: &Path, error: &std::io::Error) -> String {
    format!("cannot read {}: {error}", path.display())
}

/// The usable keys of a JWKS file. Keys for encryption, of other algorithms or curves are
/// skipped with a warning (an identity provider's set often holds more than this service
/// needs); a file that yields none is an error.
fn jwks(path: &PathBuf) -> Result<Vec<Key>, AuthConfigError> {
    let bad = |reason: String| AuthConfigError::Jwks {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| bad(format!("not a JWKS: {e}")))?;
    let mut keys = Vec::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let name = kid.clone().unwrap_or_else(|| format!("#{index}"));
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            warn!(path = %path.display(), key = %name, "JWKS key for encryption skipped");
            continue;
        }
        let inferred = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                Some(Algorithm::ES256)
            }
            _ => None,
        };
        let algorithm = match (jwk.common.key_algorithm, inferred) {
            (None, Some(alg)) => alg,
            (Some(JwkAlgorithm::RS256), Some(Algorithm::RS256)) => Algorithm::RS256,
            (Some(JwkAlgorithm::ES256), Some(Algorithm::ES256)) => Algorithm::ES256,
            _ => {
                warn!(path = %path.display(), key = %name, "JWKS key of an algorithm other than RS256/ES256 skipped");
                continue;
            }
        };
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {name}: {e}")))?;
        keys.push(Key {
            kid,
            algorithm,
            decoding,
        });
    }
    if keys.is_empty() {
        return Err(bad("no RS256 or ES256 key in it".into()));
    }
    Ok(keys)
}
