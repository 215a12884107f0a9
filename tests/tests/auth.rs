//! Authentication and authorization of both HTTP APIs against the real stack: tokens that do
//! not hold answer 401 with a challenge; client ids outside a grant answer 403 and nothing of
//! the request is stored or readable; prefix grants end where they say; two keys verify at
//! once and a removed key's tokens stop working; RS256 (JWKS) and ES256 (PEM) keys made here
//! with openssl; API keys, from settings and from files; readers, operators and streams;
//! health and metrics without a credential. Keys and secrets are generated per run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly on what it did not expect

use std::{
    collections::BTreeSet, net::SocketAddr, path::PathBuf, process::Command, time::Duration,
};

use base64::Engine;
use chassis::auth::{ApiKeySettings, AuthSettings, KeyAlgorithm, KeySettings, Secret};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pipeline_tests::{eventually, SseReader, Stack};
use serde_json::{json, Value};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);
const PROBLEM: &str = "application/problem+json";

/// Keys made for one test: two HS256 secrets, an ES256 pair (public half in a PEM file), an
/// RSA pair (public half in a JWKS file), API keys (one in a key file, one in a keys file).
struct Keys {
    dir: PathBuf,
    hs_old: String,
    hs_new: String,
    es_private: EncodingKey,
    rsa_private: EncodingKey,
    writer_api_key: String,
    operator_api_key: String,
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (Debian's openssl package)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn random_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

impl Keys {
    fn generate() -> Keys {
        let dir = std::env::temp_dir().join(format!("auth-keys-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();

        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &path("es.sec1"),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &path("es.sec1"),
            "-out",
            &path("es.key"),
        ]);
        openssl(&[
            "ec",
            "-in",
            &path("es.sec1"),
            "-pubout",
            "-out",
            &path("es.pub"),
        ]);
        let es_private = EncodingKey::from_ec_pem(&std::fs::read(path("es.key")).unwrap()).unwrap();

        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &path("rsa.key"),
        ]);
        let rsa_private =
            EncodingKey::from_rsa_pem(&std::fs::read(path("rsa.key")).unwrap()).unwrap();
        let modulus = String::from_utf8(openssl(&[
            "rsa",
            "-in",
            &path("rsa.key"),
            "-noout",
            "-modulus",
        ]))
        .unwrap();
        let hex = modulus.trim().strip_prefix("Modulus=").unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "idp-rsa", "use": "sig", "alg": "RS256", "n": n, "e": "AQAB"},
            // An identity provider's set holds keys this service does not use: skipped.
            {"kty": "oct", "kid": "idp-hmac", "alg": "HS512", "k": "c2VjcmV0"},
        ]});
        std::fs::write(path("jwks.json"), jwks.to_string()).unwrap();

        let hs_new = random_secret();
        std::fs::write(path("hs-new"), format!("{hs_new}\n")).unwrap();
        let writer_api_key = format!("wk-{}", Uuid::new_v4().simple());
        std::fs::write(path("writer.key"), &writer_api_key).unwrap();
        let operator_api_key = format!("ok-{}", Uuid::new_v4().simple());
        std::fs::write(
            path("api-keys.toml"),
            format!(
                "[[api_keys]]\nname = \"ops-console\"\nkey = \"{operator_api_key}\"\noperator = true\n"
            ),
        )
        .unwrap();
        Keys {
            dir,
            hs_old: random_secret(),
            hs_new,
            es_private,
            rsa_private,
            writer_api_key,
            operator_api_key,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Every key: `old` and `new` HS256 (rotation), ES256 `es`, the JWKS, both API keys.
    fn settings(&self) -> AuthSettings {
        AuthSettings {
            enabled: true,
            keys: vec![
                hs256("old", Some(Secret::new(&self.hs_old)), None),
                hs256("new", None, Some(self.file("hs-new"))),
                KeySettings {
                    kid: Some("es".into()),
                    algorithm: KeyAlgorithm::ES256,
                    secret: None,
                    secret_file: None,
                    pem_file: Some(self.file("es.pub")),
                },
            ],
            jwks_file: Some(self.file("jwks.json")),
            api_keys: vec![ApiKeySettings {
                name: "fleet-loader".into(),
                key: None,
                key_file: Some(self.file("writer.key")),
                write: vec!["api-dev:*".into()],
                read: vec![],
                operator: false,
            }],
            api_keys_file: Some(self.file("api-keys.toml")),
            ..AuthSettings::default()
        }
    }

    fn hs(&self, kid: Option<&str>, secret: &str, claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            kid,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
            claims,
        )
    }

    fn signed_old(&self, claims: &Value) -> String {
        self.hs(Some("old"), &self.hs_old, claims)
    }

    fn signed_new(&self, claims: &Value) -> String {
        self.hs(Some("new"), &self.hs_new, claims)
    }

    fn es(&self, claims: &Value) -> String {
        sign(Algorithm::ES256, Some("es"), &self.es_private, claims)
    }

    fn rsa(&self, claims: &Value) -> String {
        sign(Algorithm::RS256, Some("idp-rsa"), &self.rsa_private, claims)
    }
}

fn hs256(kid: &str, secret: Option<Secret>, secret_file: Option<PathBuf>) -> KeySettings {
    KeySettings {
        kid: Some(kid.into()),
        algorithm: KeyAlgorithm::HS256,
        secret,
        secret_file,
        pem_file: None,
    }
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Claims of a token valid now for ten minutes, with this grant.
fn claims(grant: Value) -> Value {
    json!({"sub": "test", "aud": "eventpipe", "iat": now(), "exp": now() + 600, "eventpipe": grant})
}

fn with(mut claims: Value, patch: Value) -> Value {
    for (key, value) in patch.as_object().unwrap() {
        claims[key] = value.clone();
    }
    claims
}

/// An HTTP client that sends `credential` as `Authorization: Bearer` on every request.
fn client(credential: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {credential}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    content_type: String,
    challenge: Option<String>,
    body: Value,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let challenge = header(reqwest::header::WWW_AUTHENTICATE);
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        content_type,
        challenge,
        body,
    }
}

async fn post(http: &reqwest::Client, gateway: &str, content_type: &str, body: String) -> Answer {
    answer(
        http.post(format!("{gateway}/events"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn post_json(http: &reqwest::Client, gateway: &str, events: &[Value]) -> Answer {
    post(
        http,
        gateway,
        "application/json",
        serde_json::to_string(events).unwrap(),
    )
    .await
}

async fn get(http: &reqwest::Client, url: String) -> Answer {
    answer(http.get(url).send().await.unwrap()).await
}

fn event(client_id: &str) -> Value {
    json!({"client_id": client_id, "type": "auth-test", "payload": {"n": Uuid::new_v4()}})
}

/// A 401 as a client sees it: problem+json, a Bearer challenge, a detail that names the
/// problem and does not echo the credential.
fn assert_unauthenticated(answer: &Answer, detail_has: &str, credential: &str, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {}", answer.body);
    assert_eq!(answer.content_type, PROBLEM, "{what}");
    let challenge = answer.challenge.as_deref().unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: challenge {challenge:?}"
    );
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(detail.contains(detail_has), "{what}: detail {detail:?}");
    assert!(
        credential.is_empty() || !answer.body.to_string().contains(credential),
        "{what}: the answer echoes the credential"
    );
}

fn assert_forbidden(answer: &Answer, detail_has: &str, what: &str) {
    assert_eq!(answer.status, 403, "{what}: {}", answer.body);
    assert_eq!(answer.content_type, PROBLEM, "{what}");
    assert_eq!(answer.body["type"], "/problems/forbidden", "{what}");
    let detail = answer.body["detail"].as_str().unwrap();
    assert!(detail.contains(detail_has), "{what}: detail {detail:?}");
}

/// The value of a sample in a Prometheus text answer, if it is there.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_publishes_only_what_a_valid_credential_may_write() {
    let keys = Keys::generate();
    let stack = Stack::new().await;
    let _writer = stack.start_writer().await;
    let gateway = stack
        .start_gateway_with(producer_gateway::Settings {
            auth: keys.settings(),
            ..stack.gateway_settings()
        })
        .await;
    let (query, _) = stack
        .start_query_with(query_service::Settings {
            auth: keys.settings(),
            ..stack.query_settings()
        })
        .await;
    let anonymous = reqwest::Client::new();
    let one = vec![event("dev-1")];

    // No credential, and credentials that do not hold: 401, nothing published.
    let missing = post_json(&anonymous, &gateway, &one).await;
    assert_unauthenticated(&missing, "needs a credential", "", "no credential");
    assert_eq!(
        missing.challenge.as_deref(),
        Some(r#"Bearer realm="eventpipe""#)
    );
    assert_eq!(missing.body["type"], "/problems/credential-missing");
    let grant = || claims(json!({"write": ["dev-1"]}));
    let forged = keys.hs(Some("old"), &random_secret(), &grant());
    let bad = [
        (forged, "signature", "a wrong signature"),
        (
            keys.signed_old(&with(grant(), json!({"exp": now() - 3600}))),
            "expired",
            "an expired token",
        ),
        (
            keys.signed_old(&with(grant(), json!({"nbf": now() + 3600}))),
            "not valid yet",
            "a token not valid yet (nbf)",
        ),
        (
            keys.signed_old(&with(grant(), json!({"aud": "another-api"}))),
            "audience",
            "a wrong audience",
        ),
        (
            keys.hs(Some("retired-2025"), &keys.hs_old, &grant()),
            "kid",
            "an unknown kid",
        ),
        ("not.a.jwt".to_owned(), "JWT", "a mangled token"),
        (
            "not-a-configured-api-key".to_owned(),
            "API key",
            "an unknown API key",
        ),
    ];
    for (credential, detail_has, what) in &bad {
        let refused = post_json(&client(credential), &gateway, &one).await;
        assert_unauthenticated(&refused, detail_has, credential, what);
        assert!(
            refused
                .challenge
                .unwrap()
                .contains(r#"error="invalid_token""#),
            "{what}"
        );
    }

    // A valid token: its write grant decides, for the whole request.
    let writer = client(&keys.signed_new(&claims(
        json!({"write": ["dev-1", "fleet-7:*"], "read": ["dev-1"]}),
    )));
    let mixed = post_json(&writer, &gateway, &[event("dev-1"), event("dev-2")]).await;
    assert_forbidden(&mixed, "\"dev-2\"", "a JSON array with a foreign client id");
    assert!(mixed.body["detail"]
        .as_str()
        .unwrap()
        .contains("nothing was published"));
    let ndjson = format!("{}\n{}\n", event("fleet-7:a"), event("fleet-70:b"));
    let mixed = post(&writer, &gateway, "application/x-ndjson", ndjson).await;
    assert_forbidden(&mixed, "\"fleet-70:b\"", "NDJSON with a foreign client id");
    // The prefix `fleet-7:` covers `fleet-7:` and what follows it, nothing shorter or longer.
    let short = post_json(&writer, &gateway, &[event("fleet-7")]).await;
    assert_forbidden(&short, "\"fleet-7\"", "one character short of the prefix");
    for accepted in [
        vec![event("fleet-7:")],
        vec![event("dev-1"), event("fleet-7:a"), event("fleet-7:b.c")],
    ] {
        let answer = post_json(&writer, &gateway, &accepted).await;
        assert_eq!(answer.status, 202, "{}", answer.body);
    }
    // The ES256 key and an API key from a file write too, within their grants.
    let es = client(&keys.es(&claims(json!({"write": ["es-dev"]}))));
    assert_eq!(
        post_json(&es, &gateway, &[event("es-dev")]).await.status,
        202
    );
    let api = client(&keys.writer_api_key);
    assert_eq!(
        post_json(&api, &gateway, &[event("api-dev:1")])
            .await
            .status,
        202
    );
    assert_forbidden(
        &post_json(&api, &gateway, &[event("api-dev:2"), event("dev-1")]).await,
        "\"dev-1\"",
        "an API key outside its grant",
    );

    // After the writer drained: exactly the accepted events are stored, and the refused
    // client ids have nothing to read, even for an operator.
    stack.drained(DEADLINE).await;
    let stored: BTreeSet<String> = stack.shard_rows().await.into_iter().map(|r| r.2).collect();
    let expected: BTreeSet<String> = [
        "fleet-7:",
        "dev-1",
        "fleet-7:a",
        "fleet-7:b.c",
        "es-dev",
        "api-dev:1",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(stored, expected);
    assert_eq!(
        stack.published_count(),
        6,
        "nothing of a refused request was published"
    );
    let operator = client(&keys.operator_api_key);
    for refused in ["dev-2", "fleet-70:b", "fleet-7", "api-dev:2"] {
        let page = get(&operator, format!("{query}/events?clientId={refused}")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(page.body["events"], json!([]), "{refused} has no events");
    }
    let page = get(&operator, format!("{query}/events?clientId=dev-1")).await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 1);

    // Health and metrics need no credential; refusals are counted by reason, every reason
    // exported from the start.
    assert_eq!(
        get(&anonymous, format!("{gateway}/readyz")).await.status,
        200
    );
    assert_eq!(
        get(&anonymous, format!("{gateway}/livez")).await.status,
        200
    );
    let metrics = get(&anonymous, format!("{gateway}/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    let count = |reason: &str| {
        sample(
            text,
            &format!("gateway_auth_refused_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or_else(|| panic!("no series for reason {reason}"))
    };
    for reason in [
        "missing",
        "invalid",
        "expired",
        "not_yet_valid",
        "audience",
        "unknown_key",
        "malformed",
    ] {
        assert!(count(reason) >= 1.0, "{reason} counted");
    }
    assert!(count("forbidden") >= 4.0);
    assert!(count("issuer") >= 0.0, "created at zero");
    assert!(!text.contains("dev-2"), "no client id in metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_read_their_clients_and_operators_read_everything() {
    let keys = Keys::generate();
    let stack = Stack::new().await;
    let _writer = stack.start_writer().await;
    let gateway = stack.start_gateway().await; // auth off: the read side is under test
    let (query, _) = stack
        .start_query_with(query_service::Settings {
            auth: keys.settings(),
            ..stack.query_settings()
        })
        .await;
    let posted = stack
        .post_events(&gateway, &[event("r-1"), event("r-1"), event("r-2")])
        .await;
    assert_eq!(posted.event_ids.len(), 3);
    let anonymous = reqwest::Client::new();
    let reader = client(&keys.es(&claims(json!({"read": ["r-1"]}))));
    let operator = client(&keys.rsa(&claims(json!({"operator": true}))));

    // Without a credential nothing of the API answers but the page shell.
    for path in [
        "/events?clientId=r-1",
        "/events/stream?clientId=r-1",
        "/pipeline",
        "/pipeline/stream",
    ] {
        let refused = get(&anonymous, format!("{query}{path}")).await;
        assert_unauthenticated(&refused, "needs a credential", "", path);
    }

    // A reader: its own client, paged and streamed; nothing else.
    let own = eventually(DEADLINE, "r-1's events for its reader", || async {
        let page = get(&reader, format!("{query}/events?clientId=r-1")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        (page.body["events"].as_array()?.len() == 2).then_some(page.body)
    })
    .await;
    assert_eq!(own["clientId"], "r-1");
    assert_forbidden(
        &get(&reader, format!("{query}/events?clientId=r-2")).await,
        "\"r-2\"",
        "a reader's GET of another client",
    );
    assert_forbidden(
        &get(&reader, format!("{query}/events/stream?clientId=r-2")).await,
        "\"r-2\"",
        "a reader's stream of another client",
    );
    for path in ["/pipeline", "/pipeline/stream"] {
        assert_forbidden(
            &get(&reader, format!("{query}{path}")).await,
            "operator",
            path,
        );
    }
    let mut stream = SseReader::open(&reader, &query, &[("clientId", "r-1")], None)
        .await
        .expect("the reader's own stream opens");
    let streamed = stream.events(2, DEADLINE).await;
    assert!(streamed.iter().all(|s| s.event["client_id"] == "r-1"));

    // An operator reads every client, paged and streamed, and the pipeline view.
    // r-2's event may be released a moment after r-1's (another partition, a later stamp).
    eventually(DEADLINE, "r-2's event for an operator", || async {
        let other = get(&operator, format!("{query}/events?clientId=r-2")).await;
        assert_eq!(other.status, 200, "{}", other.body);
        (other.body["events"].as_array()?.len() == 1).then_some(())
    })
    .await;
    let mut stream = SseReader::open(&operator, &query, &[("clientId", "r-2")], None)
        .await
        .expect("an operator's stream opens");
    assert_eq!(
        stream.events(1, DEADLINE).await[0].event["client_id"],
        "r-2"
    );
    let view = eventually(DEADLINE, "the pipeline view", || async {
        let view = get(&operator, format!("{query}/pipeline")).await;
        (view.status == 200).then_some(view.body)
    })
    .await;
    assert!(view["partitions"].is_array(), "{view}");
    let live = operator
        .get(format!("{query}/pipeline/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    drop(live);

    // The dashboard's page is static and asks for a token; health, metrics and the API
    // document need none, and the document names the scheme and the refusals.
    let page = get(&anonymous, format!("{query}/dashboard")).await;
    assert_eq!(page.status, 200);
    assert!(page
        .body
        .as_str()
        .unwrap()
        .contains(r#"data-auth="required""#));
    // Ready once it consumed up to the end offsets seen at its start, which a loaded machine
    // may take longer for than the requests above: readiness is polled (without a
    // credential), the others asked once.
    stack.ready(&query, DEADLINE).await;
    for path in ["/livez", "/metrics"] {
        assert_eq!(
            get(&anonymous, format!("{query}{path}")).await.status,
            200,
            "{path}"
        );
    }
    let metrics = get(&anonymous, format!("{query}/metrics")).await;
    let text = metrics.body.as_str().unwrap();
    assert!(sample(text, r#"query_auth_refused_total{reason="forbidden"}"#).unwrap() >= 4.0);
    assert!(sample(text, r#"query_auth_refused_total{reason="missing"}"#).unwrap() >= 4.0);
    assert!(sample(text, r#"query_auth_refused_total{reason="expired"}"#).is_some());
    let document = get(&anonymous, format!("{query}/openapi.json")).await.body;
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(document["security"], json!([{"bearer": []}]));
    for path in ["/events", "/events/stream", "/pipeline", "/pipeline/stream"] {
        let responses = &document["paths"][path]["get"]["responses"];
        assert!(
            responses["401"].is_object() && responses["403"].is_object(),
            "{path} documents 401 and 403"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_accepts_both_keys_until_the_old_one_is_removed() {
    let keys = Keys::generate();
    let stack = Stack::new().await;
    let grant = || claims(json!({"write": ["rot-*"]}));
    let old = client(&keys.signed_old(&grant()));
    let new = client(&keys.signed_new(&grant()));
    // A token without a kid is tried against each key of its algorithm.
    let unnamed = client(&keys.hs(None, &keys.hs_old, &grant()));

    // Both keys configured: tokens of either are accepted.
    let (gateway, stop) = stack
        .start_gateway_clocked(
            producer_gateway::Settings {
                auth: keys.settings(),
                ..stack.gateway_settings()
            },
            producer_gateway::IngestClock::default(),
        )
        .await;
    for (http, what) in [(&old, "old key"), (&new, "new key"), (&unnamed, "no kid")] {
        let answer = post_json(http, &gateway, &[event("rot-1")]).await;
        assert_eq!(answer.status, 202, "{what}: {}", answer.body);
    }
    stop.cancel();

    // Reconfigured without the old key: its tokens are refused, the new key's accepted.
    // This gateway also serves health and metrics on an address of their own.
    let mut settings = keys.settings();
    settings.keys.retain(|k| k.kid.as_deref() != Some("old"));
    let ops = free_addr();
    let gateway = stack
        .start_gateway_with(producer_gateway::Settings {
            auth: settings,
            metrics_listen: Some(ops),
            ..stack.gateway_settings()
        })
        .await;
    let refused = post_json(&old, &gateway, &[event("rot-1")]).await;
    assert_unauthenticated(&refused, "kid", "", "a removed key's token");
    let refused = post_json(&unnamed, &gateway, &[event("rot-1")]).await;
    assert_unauthenticated(
        &refused,
        "signature",
        "",
        "a removed key's token without kid",
    );
    let answer = post_json(&new, &gateway, &[event("rot-2")]).await;
    assert_eq!(answer.status, 202, "{}", answer.body);

    let anonymous = reqwest::Client::new();
    let ops = format!("http://{ops}");
    // Ready once the gateway's first metadata refresh of both lanes passed, which may come
    // after its first acknowledgement on a loaded machine.
    stack.ready(&ops, Duration::from_secs(30)).await;
    for path in ["/metrics", "/readyz", "/livez"] {
        assert_eq!(
            get(&anonymous, format!("{ops}{path}")).await.status,
            200,
            "{path}"
        );
        assert_eq!(
            get(&anonymous, format!("{gateway}{path}")).await.status,
            404,
            "{path} is not on the API's listener"
        );
    }
}

/// Start-up refuses settings it cannot check credentials with, naming the problem and never
/// the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unusable_auth_settings_stop_the_start() {
    let keys = Keys::generate();
    let stack = Stack::new().await;
    let short = "too-short-a-secret";
    let cases: Vec<(AuthSettings, &str)> = vec![
        (
            AuthSettings {
                enabled: true,
                ..AuthSettings::default()
            },
            "needs at least one",
        ),
        (
            AuthSettings {
                keys: vec![hs256("k", Some(Secret::new(short)), None)],
                ..keys.settings()
            },
            "32 bytes",
        ),
        (
            AuthSettings {
                keys: vec![hs256("k", None, Some(keys.file("absent")))],
                ..keys.settings()
            },
            "cannot read",
        ),
        (
            AuthSettings {
                jwks_file: Some(keys.file("es.pub")),
                ..keys.settings()
            },
            "not a JWKS",
        ),
    ];
    for (auth, expected) in cases {
        let error = producer_gateway::Gateway::bind(&producer_gateway::Settings {
            auth: auth.clone(),
            ..stack.gateway_settings()
        })
        .await
        .err()
        .expect("the gateway refuses to start")
        .to_string();
        assert!(error.contains(expected), "{error}");
        assert!(!error.contains(short), "{error}");
        let error = query_service::QueryService::bind(&query_service::Settings {
            auth,
            ..stack.query_settings()
        })
        .await
        .err()
        .expect("query-service refuses to start")
        .to_string();
        assert!(error.contains(expected), "{error}");
    }
}

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// What the dashboard's header shows: its state, the token form and its message.
const HEADER: &str = r#"(() => ({
  state: document.querySelector('[data-testid=status]').dataset.state,
  form: getComputedStyle(document.querySelector('[data-testid=token-form]')).display !== 'none',
  message: document.querySelector('[data-testid=token-message]').textContent,
  stored: sessionStorage.getItem('eventpipe.operator-token') !== null,
  url: location.href,
}))()"#;

async fn header_until(
    browser: &mut pipeline_tests::Browser,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let header = browser.evaluate(HEADER).await.expect("the page answers");
        if check(&header) {
            return header;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for the dashboard to show {what}; it shows {header}"
        );
        // Polled with a deadline, as the harness polls: the page redraws every second.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn paste_token(browser: &mut pipeline_tests::Browser, token: &str) {
    let script = format!(
        "document.getElementById('token').value = {}; \
         document.getElementById('token-form').requestSubmit(); true",
        serde_json::to_string(token).unwrap()
    );
    browser
        .evaluate(&script)
        .await
        .expect("the page takes the token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_asks_for_an_operator_token_and_then_goes_live() {
    let keys = Keys::generate();
    let stack = Stack::new().await;
    let _writer = stack.start_writer().await;
    let (query, _) = stack
        .start_query_with(query_service::Settings {
            auth: keys.settings(),
            ..stack.query_settings()
        })
        .await;
    let mut browser = pipeline_tests::Browser::launch(1200, 800)
        .await
        .expect("chromium starts");
    browser
        .navigate(&format!("{query}/dashboard"))
        .await
        .expect("the page loads");
    header_until(&mut browser, "the token form", |h| {
        h["state"] == "locked" && h["form"] == true
    })
    .await;

    // A reader's token is not an operator's: refused, dropped, asked again.
    paste_token(&mut browser, &keys.es(&claims(json!({"read": ["r-1"]})))).await;
    let refused = header_until(&mut browser, "the refusal", |h| {
        h["state"] == "locked"
            && h["message"]
                .as_str()
                .unwrap_or("")
                .contains("Not an operator")
    })
    .await;
    assert_eq!(refused["stored"], false, "a refused token is not kept");

    // An operator's key: live, the key in this tab's storage and nowhere in the URL.
    paste_token(&mut browser, &keys.operator_api_key).await;
    let live = header_until(&mut browser, "live data", |h| h["state"] == "live").await;
    assert_eq!(live["form"], false);
    assert_eq!(live["stored"], true);
    assert!(!live["url"]
        .as_str()
        .unwrap()
        .contains(&keys.operator_api_key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_end_when_their_token_does() {
    let keys = Keys::generate();
    let stack = Stack::new().await;
    let leeway = Duration::from_secs(1);
    let (query, _) = stack
        .start_query_with(query_service::Settings {
            auth: AuthSettings {
                leeway,
                ..keys.settings()
            },
            ..stack.query_settings()
        })
        .await;
    // Valid for two more seconds (plus the leeway): long enough to open both streams.
    let short = |grant: Value| keys.signed_new(&with(claims(grant), json!({"exp": now() + 2})));
    let reader = client(&short(json!({"read": ["s-1"]})));
    let operator = client(&short(json!({"operator": true})));

    let mut events = SseReader::open(&reader, &query, &[("clientId", "s-1")], None)
        .await
        .expect("the stream opens while the token holds");
    let mut pipeline = operator
        .get(format!("{query}/pipeline/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(pipeline.status(), 200);

    match events.next(DEADLINE).await {
        pipeline_tests::Block::Error(message) => assert!(message.contains("expired"), "{message}"),
        other => panic!("the stream goes on past its token: {other:?}"),
    }
    let mut text = String::new();
    let until = tokio::time::Instant::now() + DEADLINE;
    while !text.contains("event: error") {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, pipeline.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the pipeline stream ended without an error event: {other:?}"),
        }
    }
    assert!(text.contains("expired"));
    // And the token opens nothing any more.
    let again = get(&reader, format!("{query}/events/stream?clientId=s-1")).await;
    assert_unauthenticated(&again, "expired", "", "an expired token");
}
