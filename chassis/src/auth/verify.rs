//! From a request's `Authorization` header to a caller with a grant, and the checks of that
//! grant. Every refusal is counted by reason.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::http::{header, HeaderMap};
use jsonwebtoken::{errors::ErrorKind, Algorithm, Validation};
use prometheus::IntCounterVec;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::debug;

use super::{
    grant::{Grant, GrantSpec},
    keys::{KeySet, NoKey},
    refusal::{Reason, Refused},
    secret::Secret,
    settings::{ApiKeySettings, ApiKeysFile, AuthSettings},
    AuthConfigError,
};

/// Who made a request, as far as authorization cares.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is off: every request may do everything, as before auth existed.
    Anyone,
    /// A verified credential: its name (token `sub` or API key name), its grant, and until
    /// when it holds (a token's `exp` plus the leeway; API keys have no end).
    Authenticated {
        name: String,
        grant: Grant,
        valid_until: Option<SystemTime>,
    },
}

impl Caller {
    fn may(&self, check: impl Fn(&Grant) -> bool) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Authenticated { grant, .. } => check(grant),
        }
    }

    /// When the credential stops holding: a stream opened with it ends then, as a new
    /// request with it would be refused.
    pub fn valid_until(&self) -> Option<SystemTime> {
        match self {
            Caller::Anyone => None,
            Caller::Authenticated { valid_until, .. } => *valid_until,
        }
    }

    /// How logs name the caller.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anyone => "anyone",
            Caller::Authenticated { name, .. } => name,
        }
    }
}

struct ApiKey {
    name: String,
    /// SHA-256 of the key: comparing digests in constant time hides both the key's bytes
    /// and its length from a caller timing the answers.
    digest: [u8; 32],
    grant: Grant,
}

/// The claims read from a token besides those `jsonwebtoken` validates.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    /// Validated by `jsonwebtoken`; kept to end streams when the token ends.
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    eventpipe: Option<serde_json::Value>,
}

/// Checks credentials and grants for one service.
pub struct Authenticator {
    enabled: bool,
    keys: KeySet,
    validations: HashMap<Algorithm, Validation>,
    api_keys: Vec<ApiKey>,
    leeway: Duration,
    refused: IntCounterVec,
}

impl Authenticator {
    /// Loads keys and API keys (files included) and creates every `reason` series of
    /// `refused` at zero. With `enabled` and nothing to verify with, refuses to start: a
    /// service that cannot admit anyone is a configuration mistake, not a state to run in.
    pub fn new(
        settings: &AuthSettings,
        refused: IntCounterVec,
    ) -> Result<Authenticator, AuthConfigError> {
        for reason in Reason::ALL {
            refused.with_label_values(&[reason.label()]);
        }
        if !settings.enabled {
            let configured = !settings.keys.is_empty()
                || settings.jwks_file.is_some()
                || !settings.api_keys.is_empty()
                || settings.api_keys_file.is_some();
            if configured {
                // Keys without `enabled` look protected and are not: say so where it shows.
                tracing::warn!(
                    "auth keys are configured but auth.enabled is false: the API accepts \
                     every request without a credential"
                );
            }
            return Ok(Authenticator {
                enabled: false,
                keys: KeySet::empty(),
                validations: HashMap::new(),
                api_keys: Vec::new(),
                leeway: settings.leeway,
                refused,
            });
        }
        if settings.audience.is_empty() {
            return Err(AuthConfigError::Invalid(
                "auth.audience must not be empty".into(),
            ));
        }
        let keys = KeySet::load(settings)?;
        let mut api_key_settings = settings.api_keys.clone();
        if let Some(path) = &settings.api_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| AuthConfigError::ApiKeys {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let file: ApiKeysFile =
                toml::from_str(&text).map_err(|e| AuthConfigError::ApiKeys {
                    path: path.clone(),
                    reason: e.message().to_owned(),
                })?;
            api_key_settings.extend(file.api_keys);
        }
        let api_keys = api_key_settings
            .iter()
            .map(api_key)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() && api_keys.is_empty() {
            return Err(AuthConfigError::Invalid(
                "auth.enabled needs at least one of auth.keys, auth.jwks_file, auth.api_keys, \
                 auth.api_keys_file"
                    .into(),
            ));
        }
        let validations = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256]
            .into_iter()
            .map(|alg| {
                let mut validation = Validation::new(alg);
                validation.leeway = settings.leeway.as_secs();
                validation.validate_nbf = true;
                validation.set_audience(&[&settings.audience]);
                let mut required = vec!["exp", "aud"];
                if let Some(issuer) = &settings.issuer {
                    validation.set_issuer(&[issuer]);
                    required.push("iss");
                }
                validation.set_required_spec_claims(&required);
                (alg, validation)
            })
            .collect();
        Ok(Authenticator {
            enabled: true,
            keys,
            validations,
            api_keys,
            leeway: settings.leeway,
            refused,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller of a request: `Anyone` with authentication off; otherwise the verified
    /// holder of its `Authorization: Bearer` credential, or a 401.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        if !self.enabled {
            return Ok(Caller::Anyone);
        }
        self.verify(headers).map_err(|refused| self.count(refused))
    }

    /// 403 unless the caller may post events of every one of `client_ids`; the detail
    /// names the first that it may not.
    pub fn check_write<'a>(
        &self,
        caller: &Caller,
        client_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), Refused> {
        match client_ids
            .into_iter()
            .find(|id| !caller.may(|g| g.may_write(id)))
        {
            None => Ok(()),
            Some(id) => Err(self.forbid(
                caller,
                format!(
                    "this credential may not write events of client {id:?}; nothing was published"
                ),
            )),
        }
    }

    /// 403 unless the caller may read `client_id`.
    pub fn check_read(&self, caller: &Caller, client_id: &str) -> Result<(), Refused> {
        if caller.may(|g| g.may_read(client_id)) {
            return Ok(());
        }
        Err(self.forbid(
            caller,
            format!("this credential may not read client {client_id:?}"),
        ))
    }

    /// 403 unless the caller is an operator.
    pub fn check_operator(&self, caller: &Caller) -> Result<(), Refused> {
        if caller.may(Grant::is_operator) {
            return Ok(());
        }
        Err(self.forbid(caller, "this needs an operator credential"))
    }

    fn forbid(&self, caller: &Caller, detail: impl Into<String>) -> Refused {
        debug!(
            caller = caller.name(),
            "request outside the caller's grant refused"
        );
        self.count(Refused::new(Reason::Forbidden, detail))
    }

    fn count(&self, refused: Refused) -> Refused {
        self.refused
            .with_label_values(&[refused.reason.label()])
            .inc();
        refused
    }

    fn verify(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Refused::new(
                Reason::Missing,
                "this API needs a credential: Authorization: Bearer <token or API key>",
            )
        })?;
        let malformed = || {
            Refused::new(
                Reason::Malformed,
                "the Authorization header is not `Bearer <token or API key>`",
            )
        };
        let value = value.to_str().map_err(|_| malformed())?;
        let (scheme, credential) = value.trim().split_once(' ').ok_or_else(malformed)?;
        let credential = credential.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
            return Err(malformed());
        }
        // A JWT is three dot-separated parts; API keys may hold no dot (checked at start).
        if credential.bytes().filter(|b| *b == b'.').count() == 2 {
            self.token(credential)
        } else {
            self.api_key(credential)
        }
    }

    fn api_key(&self, presented: &str) -> Result<Caller, Refused> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every key is compared, whichever matches, so the time taken says nothing about
        // which key (or how much of one) was right.
        let mut found = None;
        for key in &self.api_keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        let key = found.ok_or_else(|| {
            Refused::new(
                Reason::Invalid,
                "the credential is neither a JWT nor a configured API key",
            )
        })?;
        Ok(Caller::Authenticated {
            name: format!("api-key:{}", key.name),
            grant: key.grant.clone(),
            valid_until: None,
        })
    }

    fn token(&self, token: &str) -> Result<Caller, Refused> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            Refused::new(Reason::Malformed, "the bearer token is not a readable JWT")
        })?;
        let candidates = self
            .keys
            .candidates(&header)
            .map_err(|no_key| match no_key {
                NoKey::Algorithm(alg) => Refused::new(
                    Reason::UnknownKey,
                    format!(
                        "tokens signed with {alg:?} are not accepted (HS256, RS256, ES256 are)"
                    ),
                ),
                NoKey::Kid(kid) => Refused::new(
                    Reason::UnknownKey,
                    format!("no verification key has the token's kid {kid:?}"),
                ),
                NoKey::None(alg) => Refused::new(
                    Reason::UnknownKey,
                    format!("no verification key for {alg:?} is configured"),
                ),
            })?;
        let validation = self
            .validations
            .get(&header.alg)
            .ok_or_else(|| Refused::new(Reason::UnknownKey, "unsupported algorithm"))?;
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, validation) {
                Ok(data) => return claims_to_caller(data.claims, self.leeway),
                // The next key may be the one (rotation without kids).
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => last = Some(e),
                // Claims are checked only after the signature verified: this key is the
                // token's, and what is wrong is the token.
                Err(e) => return Err(refusal(e.kind())),
            }
        }
        Err(last.map_or_else(
            || Refused::new(Reason::Invalid, "the token's signature does not verify"),
            |e| refusal(e.kind()),
        ))
    }
}

fn claims_to_caller(claims: Claims, leeway: Duration) -> Result<Caller, Refused> {
    let spec: GrantSpec = match claims.eventpipe {
        None => GrantSpec::default(),
        Some(value) => serde_json::from_value(value).map_err(|e| {
            Refused::new(
                Reason::Malformed,
                format!("the token's eventpipe claim is not a grant: {e}"),
            )
        })?,
    };
    let grant = Grant::parse(&spec).map_err(|e| {
        Refused::new(
            Reason::Malformed,
            format!("the token's eventpipe claim: {e}"),
        )
    })?;
    Ok(Caller::Authenticated {
        name: claims.sub.unwrap_or_else(|| "token without sub".into()),
        grant,
        // Verification compares whole seconds (a token is refused once now > exp + leeway):
        // it holds until the end of that second.
        valid_until: claims
            .exp
            .map(|exp| UNIX_EPOCH + Duration::from_secs(exp.saturating_add(1)) + leeway),
    })
}

fn refusal(kind: &ErrorKind) -> Refused {
    match kind {
        ErrorKind::InvalidSignature => {
            Refused::new(Reason::Invalid, "the token's signature does not verify")
        }
        ErrorKind::ExpiredSignature => Refused::new(Reason::Expired, "the token has expired (exp)"),
        ErrorKind::ImmatureSignature => {
            Refused::new(Reason::NotYetValid, "the token is not valid yet (nbf)")
        }
        ErrorKind::InvalidAudience => Refused::new(
            Reason::Audience,
            "the token's audience (aud) is not this API's",
        ),
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
            Refused::new(Reason::Audience, "the token names no audience (aud)")
        }
        ErrorKind::InvalidIssuer => Refused::new(
            Reason::Issuer,
            "the token's issuer (iss) is not the one configured",
        ),
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
            Refused::new(Reason::Issuer, "the token names no issuer (iss)")
        }
        ErrorKind::MissingRequiredClaim(claim) => {
            Refused::new(Reason::Malformed, format!("the token has no {claim} claim"))
        }
        ErrorKind::InvalidAlgorithm => Refused::new(
            Reason::UnknownKey,
            "the token's algorithm does not match its key",
        ),
        _ => Refused::new(Reason::Malformed, "the bearer token is not a valid JWT"),
    }
}

fn api_key(settings: &ApiKeySettings) -> Result<ApiKey, AuthConfigError> {
    let bad = |reason: String| AuthConfigError::Key {
        key: format!("API key {:?}", settings.name),
        reason,
    };
    if settings.name.is_empty() {
        return Err(AuthConfigError::Invalid(
            "every API key needs a name".into(),
        ));
    }
    let key = match (&settings.key, &settings.key_file) {
        (Some(key), None) => key.clone(),
        (None, Some(path)) => Secret::from_file(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?,
        _ => return Err(bad("takes exactly one of key and key_file".into())),
    };
    let text = key.expose();
    if text.len() < 16 || text.contains('.') || text.chars().any(char::is_whitespace) {
        return Err(bad(
            "a key must be at least 16 characters, without `.` or whitespace".into(),
        ));
    }
    let grant = Grant::parse(&settings.grant()).map_err(|e| bad(e.to_string()))?;
    Ok(ApiKey {
        name: settings.name.clone(),
        digest: Sha256::digest(text.as_bytes()).into(),
        grant,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::{json, Value};

    use super::*;
    use crate::auth::settings::{KeyAlgorithm, KeySettings};

    const SECRET_A: &str = "a-secret-of-at-least-32-bytes-aaaa";
    const SECRET_B: &str = "a-secret-of-at-least-32-bytes-bbbb";

    fn counter() -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new("t_refused", "t"), &["reason"]).unwrap()
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            enabled: true,
            keys: vec![
                KeySettings {
                    kid: Some("a".into()),
                    algorithm: KeyAlgorithm::HS256,
                    secret: Some(Secret::new(SECRET_A)),
                    secret_file: None,
                    pem_file: None,
                },
                KeySettings {
                    kid: None,
                    algorithm: KeyAlgorithm::HS256,
                    secret: Some(Secret::new(SECRET_B)),
                    secret_file: None,
                    pem_file: None,
                },
            ],
            api_keys: vec![ApiKeySettings {
                name: "loader".into(),
                key: Some(Secret::new("k-0123456789abcdef")),
                key_file: None,
                write: vec!["fleet:*".into()],
                read: vec![],
                operator: false,
            }],
            ..AuthSettings::default()
        }
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn token(kid: Option<&str>, secret: &str, claims: Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    fn claims(grant: Value) -> Value {
        json!({"sub": "t", "aud": "eventpipe", "exp": now() + 600, "eventpipe": grant})
    }

    fn bearer(credential: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {credential}")).unwrap(),
        );
        headers
    }

    fn reason(auth: &Authenticator, credential: &str) -> Reason {
        auth.authenticate(&bearer(credential)).unwrap_err().reason
    }

    #[test]
    fn a_valid_token_carries_its_grant() {
        let auth = Authenticator::new(&settings(), counter()).unwrap();
        let caller = auth
            .authenticate(&bearer(&token(
                Some("a"),
                SECRET_A,
                claims(json!({"write": ["d-1"], "read": ["d-*"]})),
            )))
            .unwrap();
        assert_eq!(caller.name(), "t");
        assert!(auth.check_write(&caller, ["d-1", "d-1"]).is_ok());
        let refused = auth.check_write(&caller, ["d-1", "d-2"]).unwrap_err();
        assert_eq!(refused.reason, Reason::Forbidden);
        assert!(refused.detail.contains("\"d-2\""), "{}", refused.detail);
        assert!(auth.check_read(&caller, "d-9").is_ok());
        assert!(auth.check_operator(&caller).is_err());
    }

    #[test]
    fn kid_selects_the_key_and_keys_without_kid_are_tried() {
        let auth = Authenticator::new(&settings(), counter()).unwrap();
        let grant = || claims(json!({}));
        // No kid: each HS256 key is tried.
        assert!(auth
            .authenticate(&bearer(&token(None, SECRET_A, grant())))
            .is_ok());
        assert!(auth
            .authenticate(&bearer(&token(None, SECRET_B, grant())))
            .is_ok());
        // kid "a" is verified with key "a" only.
        assert_eq!(
            reason(&auth, &token(Some("a"), SECRET_B, grant())),
            Reason::Invalid
        );
        // An unknown kid falls to the keys without a kid.
        assert!(auth
            .authenticate(&bearer(&token(Some("zz"), SECRET_B, grant())))
            .is_ok());
        let mut only_named = settings();
        only_named.keys.remove(1);
        let auth = Authenticator::new(&only_named, counter()).unwrap();
        assert_eq!(
            reason(&auth, &token(Some("zz"), SECRET_A, grant())),
            Reason::UnknownKey
        );
    }

    #[test]
    fn time_audience_and_shape_are_checked() {
        let auth = Authenticator::new(&settings(), counter()).unwrap();
        let with = |patch: Value| {
            let mut c = claims(json!({}));
            for (k, v) in patch.as_object().unwrap() {
                c[k] = v.clone();
            }
            token(Some("a"), SECRET_A, c)
        };
        assert_eq!(
            reason(&auth, &with(json!({"exp": now() - 120}))),
            Reason::Expired
        );
        // Within the 30 s leeway both ways.
        assert!(auth
            .authenticate(&bearer(&with(json!({"exp": now() - 5, "nbf": now() + 5}))))
            .is_ok());
        assert_eq!(
            reason(&auth, &with(json!({"nbf": now() + 120}))),
            Reason::NotYetValid
        );
        assert_eq!(
            reason(&auth, &with(json!({"aud": "other"}))),
            Reason::Audience
        );
        let mut no_aud = claims(json!({}));
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            reason(&auth, &token(Some("a"), SECRET_A, no_aud)),
            Reason::Audience
        );
        assert_eq!(
            reason(&auth, &with(json!({"eventpipe": {"write": ["a*b"]}}))),
            Reason::Malformed
        );
        assert_eq!(
            reason(&auth, &with(json!({"eventpipe": {"write": "all"}}))),
            Reason::Malformed
        );
        assert_eq!(reason(&auth, "not.a.jwt"), Reason::Malformed);
        let missing = auth.authenticate(&HeaderMap::new()).unwrap_err();
        assert_eq!(missing.reason, Reason::Missing);
        assert_eq!(missing.status(), 401);
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic eDp5"),
        );
        assert_eq!(
            auth.authenticate(&basic).unwrap_err().reason,
            Reason::Malformed
        );
    }

    #[test]
    fn issuer_is_checked_when_configured() {
        let mut s = settings();
        s.issuer = Some("https://idp.example".into());
        let auth = Authenticator::new(&s, counter()).unwrap();
        let mut c = claims(json!({}));
        assert_eq!(
            reason(&auth, &token(Some("a"), SECRET_A, c.clone())),
            Reason::Issuer
        );
        c["iss"] = json!("https://other.example");
        assert_eq!(
            reason(&auth, &token(Some("a"), SECRET_A, c.clone())),
            Reason::Issuer
        );
        c["iss"] = json!("https://idp.example");
        assert!(auth
            .authenticate(&bearer(&token(Some("a"), SECRET_A, c)))
            .is_ok());
    }

    #[test]
    fn api_keys_match_whole_and_refusals_are_counted() {
        let refused = counter();
        let auth = Authenticator::new(&settings(), refused.clone()).unwrap();
        let caller = auth.authenticate(&bearer("k-0123456789abcdef")).unwrap();
        assert_eq!(caller.name(), "api-key:loader");
        assert!(auth.check_write(&caller, ["fleet:1"]).is_ok());
        assert!(auth.check_read(&caller, "fleet:1").is_err());
        assert_eq!(reason(&auth, "k-0123456789abcde"), Reason::Invalid);
        assert_eq!(reason(&auth, "k-0123456789abcdefX"), Reason::Invalid);
        let count = |r: Reason| refused.with_label_values(&[r.label()]).get();
        assert_eq!(count(Reason::Invalid), 2);
        assert_eq!(count(Reason::Forbidden), 1);
        assert_eq!(
            count(Reason::Expired),
            0,
            "every reason exists from the start"
        );
    }

    #[test]
    fn unusable_settings_refuse_to_start() {
        let mut s = settings();
        s.keys[0].secret = Some(Secret::new("short"));
        let err = Authenticator::new(&s, counter()).err().unwrap().to_string();
        assert!(err.contains("32 bytes") && !err.contains("short"), "{err}");
        let mut s = settings();
        s.api_keys[0].key = Some(Secret::new("with.a.dot-0123456789"));
        assert!(Authenticator::new(&s, counter()).is_err());
        let s = AuthSettings {
            enabled: true,
            ..AuthSettings::default()
        };
        assert!(Authenticator::new(&s, counter()).is_err());
        // Off needs nothing, and lets everyone through.
        let off = Authenticator::new(&AuthSettings::default(), counter()).unwrap();
        let anyone = off.authenticate(&HeaderMap::new()).unwrap();
        assert!(off.check_write(&anyone, ["x"]).is_ok() && off.check_operator(&anyone).is_ok());
    }

    #[test]
    fn a_refusal_answers_problem_json_with_a_challenge() {
        use axum::response::IntoResponse;
        let auth = Authenticator::new(&settings(), counter()).unwrap();
        let response = auth
            .authenticate(&HeaderMap::new())
            .unwrap_err()
            .into_response();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="eventpipe""#
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            crate::problem::CONTENT_TYPE
        );
        let caller = auth.authenticate(&bearer("k-0123456789abcdef")).unwrap();
        let forbidden = auth.check_operator(&caller).unwrap_err().into_response();
        assert_eq!(forbidden.status(), 403);
        assert!(forbidden.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
