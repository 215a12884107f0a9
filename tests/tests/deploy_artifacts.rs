//! The deployment artifacts (deploy/container, deploy/compose, deploy/k8s) say what the
//! services really read: no container engine or cluster runs here, so everything that can be
//! checked without one is — they parse; every setting they give a service is one it accepts
//! (its `--print-config` with those env vars, unknown keys being errors) and shows; ports and
//! probes match the listen addresses; probe paths answer on running services; KEDA scales the
//! group and topics the writer uses; the image builds every binary and runs as non-root;
//! compose creates every topic the services name; Prometheus' compose config checks.

#![allow(clippy::unwrap_used)] // a test fails loudly on what it did not expect

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use pipeline_tests::{sibling_binary, Stack};
use serde_norway::Value as Yaml;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn documents(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let mut value = <Yaml as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

fn k8s_documents() -> Vec<Yaml> {
    let base = repo().join("deploy/k8s/base");
    let kustomization = &documents(&base.join("kustomization.yaml"))[0];
    let listed: Vec<&str> = kustomization["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut present: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    present.sort();
    let mut expected: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(expected, present, "kustomization lists every manifest");
    listed
        .iter()
        .flat_map(|file| documents(&base.join(file)))
        .collect()
}

/// What a service binary is called, its env prefix and its listen setting.
const SERVICES: [(&str, &str, &str); 3] = [
    ("producer-gateway", "GATEWAY_", "listen"),
    ("db-writer", "DB_WRITER_", "metrics_listen"),
    ("query-service", "QUERY_", "listen"),
];

fn prefix_of(service: &str) -> &'static str {
    SERVICES.iter().find(|s| s.0 == service).unwrap().1
}

/// `--print-config` of `service` with exactly these env vars: panics if the service refuses
/// them, returns the effective settings otherwise.
fn effective(service: &str, env: &BTreeMap<String, String>) -> toml::Value {
    let output = Command::new(sibling_binary(service))
        .arg("--print-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{service} refuses {env:?}: {}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .take(4)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    for secret in env.values().filter(|v| v.contains("stand-in-secret")) {
        assert!(
            !printed.contains("stand-in-secret"),
            "{service} prints a password from {secret}"
        );
    }
    toml::from_str(&printed).unwrap()
}

/// Every `<PREFIX>A__B` of `env` shows up as `a.b` with the same value in `settings`.
fn assert_applied(service: &str, env: &BTreeMap<String, String>, settings: &toml::Value) {
    let prefix = prefix_of(service);
    for (name, value) in env {
        let Some(path) = name.strip_prefix(prefix) else {
            continue;
        };
        let mut at = settings;
        for key in path.to_lowercase().split("__") {
            at = at
                .get(key)
                .unwrap_or_else(|| panic!("{service}: {name} names no setting"));
        }
        if let toml::Value::Array(items) = at {
            if items.iter().any(toml::Value::is_table) {
                let given: toml::Table = toml::from_str(&format!("v = {value}"))
                    .unwrap_or_else(|e| panic!("{service}: {name} is not a TOML list: {e}"));
                assert!(
                    same_entries(at, &given["v"]),
                    "{service}: {name} is read as {at}"
                );
                continue;
            }
        }
        let shown = match at {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| format!("\"{}\"", i.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => other.to_string(),
        };
        // --print-config shows URLs without their passwords.
        let normalize = |s: &str| {
            chassis::config::redact_credentials(s)
                .replace(' ', "")
                .replace('\'', "\"")
        };
        assert_eq!(
            normalize(&shown),
            normalize(value),
            "{service}: {name} is read as {shown}"
        );
    }
}

fn port_of(listen: &str) -> u16 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

/// `${VAR:?…}` / `${VAR}` → a stand-in value, as compose interpolates.
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str("stand-in-secret");
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

struct ComposeService {
    env: BTreeMap<String, String>,
    health_port: Option<u16>,
    published: Vec<String>,
}

fn compose_services() -> (Yaml, BTreeMap<String, ComposeService>) {
    let compose = documents(&repo().join("deploy/compose/compose.yaml")).remove(0);
    let mut found = BTreeMap::new();
    for (service, _, _) in SERVICES {
        let spec = &compose["services"][service];
        assert!(!spec.is_null(), "compose runs {service}");
        assert_eq!(
            spec["command"][0].as_str(),
            Some(service),
            "{service}'s command"
        );
        let env = spec["environment"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_owned(),
                    interpolate(v.as_str().unwrap()),
                )
            })
            .collect();
        let health = spec["healthcheck"]["test"]
            .as_sequence()
            .map(|t| {
                t.iter()
                    .filter_map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let health_port = health
            .split("/dev/tcp/127.0.0.1/")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        assert!(
            health.contains("/readyz"),
            "{service}: health check on /readyz"
        );
        let published = spec["ports"]
            .as_sequence()
            .map(|p| p.iter().map(|p| p.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        found.insert(
            service.to_owned(),
            ComposeService {
                env,
                health_port,
                published,
            },
        );
    }
    (compose, found)
}

#[test]
fn compose_gives_each_service_settings_it_reads_on_the_ports_it_listens() {
    let (compose, services) = compose_services();
    let mut topics_named = BTreeSet::new();
    for (name, service) in &services {
        let settings = effective(name, &service.env);
        assert_applied(name, &service.env, &settings);
        let listen_key = SERVICES.iter().find(|s| s.0 == name).unwrap().2;
        let listen = settings[listen_key].as_str().unwrap();
        assert!(
            listen.starts_with("0.0.0.0:"),
            "{name} listens on all interfaces in a container"
        );
        let port = port_of(listen);
        assert_eq!(service.health_port, Some(port), "{name}: health check port");
        assert!(
            service
                .published
                .iter()
                .any(|p| p.ends_with(&format!(":{port}"))),
            "{name}: publishes {port}"
        );
        let kafka = &settings["kafka"];
        for key in [
            "topic",
            "critical_topic",
            "dead_letter_topic",
            "persisted_topic",
        ] {
            if let Some(topic) = kafka.get(key).and_then(|t| t.as_str()) {
                topics_named.insert(topic.to_owned());
            }
        }
        for topic in kafka
            .get("topics")
            .and_then(|t| t.as_array())
            .into_iter()
            .flatten()
        {
            topics_named.insert(topic.as_str().unwrap().to_owned());
        }
        let brokers = kafka["brokers"].as_str().unwrap();
        for broker in brokers.split(',') {
            let host = broker.split(':').next().unwrap();
            assert!(
                !compose["services"][host].is_null(),
                "{name}: broker {host} is a compose service"
            );
        }
    }
    // db-writer's final flush fits in its stop grace period.
    let writer = effective("db-writer", &services["db-writer"].env);
    let grace = compose["services"]["db-writer"]["stop_grace_period"]
        .as_str()
        .unwrap();
    let shutdown = writer["shutdown_timeout"].as_str().unwrap();
    assert!(
        seconds(grace) > seconds(shutdown),
        "stop_grace_period {grace} > shutdown_timeout {shutdown}"
    );
    // Every topic a service names is created, with the cluster's replication.
    let script = compose["services"]["topics"]["command"][0]
        .as_str()
        .unwrap();
    for topic in &topics_named {
        assert!(
            script.contains(&format!("create {topic}")),
            "compose creates {topic}"
        );
    }
    assert!(script.contains("--replication-factor 3") && script.contains("min.insync.replicas=2"));
    assert_eq!(
        compose["x-kafka-env"]["KAFKA_MIN_INSYNC_REPLICAS"].as_str(),
        Some("2")
    );
}

fn seconds(duration: &str) -> u64 {
    humantime::parse_duration(duration).unwrap().as_secs()
}

/// One container of a k8s Deployment, with the env it gets (ConfigMap entries of its prefix,
/// its own env, secrets as stand-ins).
struct Container {
    service: String,
    env: BTreeMap<String, String>,
    ports: BTreeMap<String, u16>,
    probes: Vec<(String, u16)>,
    grace: Option<u64>,
}

fn k8s_containers(documents: &[Yaml]) -> Vec<Container> {
    let config: BTreeMap<String, String> =
        documents.iter().find(|d| d["kind"] == "ConfigMap").unwrap()["data"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_owned(),
                    v.as_str().unwrap().to_owned(),
                )
            })
            .collect();
    let mut found = Vec::new();
    for deployment in documents.iter().filter(|d| d["kind"] == "Deployment") {
        let pod = &deployment["spec"]["template"]["spec"];
        for container in pod["containers"].as_sequence().unwrap() {
            let service = container["command"][0].as_str().unwrap().to_owned();
            let prefix = prefix_of(&service);
            let mut env: BTreeMap<String, String> = config
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for var in container["env"].as_sequence().into_iter().flatten() {
                let name = var["name"].as_str().unwrap().to_owned();
                let value = match var["value"].as_str() {
                    Some(v) => v.to_owned(),
                    None => {
                        assert!(
                            !var["valueFrom"]["secretKeyRef"].is_null(),
                            "{name}: value or secret"
                        );
                        secret_stand_in(&name)
                    }
                };
                env.insert(name, value);
            }
            let ports: BTreeMap<String, u16> = container["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_owned(),
                        p["containerPort"].as_u64().unwrap() as u16,
                    )
                })
                .collect();
            let probes = ["readinessProbe", "livenessProbe"]
                .iter()
                .map(|probe| {
                    let get = &container[*probe]["httpGet"];
                    let port = match &get["port"] {
                        Yaml::String(name) => ports[name.as_str()],
                        other => other.as_u64().unwrap() as u16,
                    };
                    (get["path"].as_str().unwrap().to_owned(), port)
                })
                .collect();
            found.push(Container {
                service,
                env,
                ports,
                probes,
                grace: pod["terminationGracePeriodSeconds"].as_u64(),
            });
        }
    }
    found
}

/// What the operator's Secret holds for `name`, with `stand-in-secret` where the secret is.
fn secret_stand_in(name: &str) -> String {
    if name.ends_with("__SHARDS") {
        r#"["postgres://u:stand-in-secret@shard-0:5432/events", "postgres://u:stand-in-secret@shard-1:5432/events"]"#
            .to_owned()
    } else if name.ends_with("__API_KEYS") {
        r#"[{name = "k8s", key = "stand-in-secret", read = ["fleet-7:*"]}]"#.to_owned()
    } else if name.ends_with("__KEYS") {
        r#"[{kid = "k8s", algorithm = "HS256", secret = "stand-in-secret"}]"#.to_owned()
    } else {
        panic!("{name}: no stand-in for this secret")
    }
}

/// A setting given as a list of tables (keys, API keys) shows with the same entries, its
/// secrets as `***`.
fn same_entries(shown: &toml::Value, given: &toml::Value) -> bool {
    match (shown, given) {
        (toml::Value::String(shown), toml::Value::String(given))
            if shown == chassis::auth::REDACTED =>
        {
            given.contains("stand-in-secret")
        }
        (toml::Value::Array(shown), toml::Value::Array(given)) => {
            shown.len() == given.len() && shown.iter().zip(given).all(|(s, g)| same_entries(s, g))
        }
        (toml::Value::Table(shown), toml::Value::Table(given)) => given
            .iter()
            .all(|(key, g)| shown.get(key).is_some_and(|s| same_entries(s, g))),
        (shown, given) => shown == given,
    }
}

#[test]
fn k8s_manifests_give_each_service_settings_it_reads_and_probe_its_ports() {
    let documents = k8s_documents();
    let containers = k8s_containers(&documents);
    let names: BTreeSet<&str> = containers.iter().map(|c| c.service.as_str()).collect();
    assert_eq!(names, SERVICES.iter().map(|s| s.0).collect());
    for container in &containers {
        let settings = effective(&container.service, &container.env);
        assert_applied(&container.service, &container.env, &settings);
        let listen_key = SERVICES
            .iter()
            .find(|s| s.0 == container.service)
            .unwrap()
            .2;
        let port = port_of(settings[listen_key].as_str().unwrap());
        assert!(
            container.ports.values().any(|p| *p == port),
            "{}: containerPort {port}",
            container.service
        );
        let paths: Vec<&str> = container
            .probes
            .iter()
            .map(|(path, _)| path.as_str())
            .collect();
        assert_eq!(paths, ["/readyz", "/livez"], "{}", container.service);
        assert!(
            container.probes.iter().all(|(_, p)| *p == port),
            "{}: probes on {port}",
            container.service
        );
        let shutdown = seconds(settings["shutdown_timeout"].as_str().unwrap());
        assert!(
            container.grace.unwrap_or(30) > shutdown,
            "{}: terminationGracePeriodSeconds beyond shutdown_timeout ({shutdown}s)",
            container.service
        );
    }
    // Services route to named container ports that exist.
    for service in documents.iter().filter(|d| d["kind"] == "Service") {
        let app = service["spec"]["selector"]["app.kubernetes.io/name"]
            .as_str()
            .unwrap();
        let container = containers.iter().find(|c| c.service == app).unwrap();
        for port in service["spec"]["ports"].as_sequence().unwrap() {
            let target = port["targetPort"].as_str().unwrap();
            assert!(
                container.ports.contains_key(target),
                "Service {app}: targetPort {target}"
            );
        }
    }
    // Every Deployment has a disruption budget.
    let budgets: BTreeSet<&str> = documents
        .iter()
        .filter(|d| d["kind"] == "PodDisruptionBudget")
        .map(|d| {
            d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(budgets, names);

    // KEDA scales the writer on its own group and both of its topics, no further than the
    // partitions allow.
    let writer = containers
        .iter()
        .find(|c| c.service == "db-writer")
        .unwrap();
    let writer_settings = effective("db-writer", &writer.env);
    let scaled = documents
        .iter()
        .find(|d| d["kind"] == "ScaledObject")
        .unwrap();
    assert_eq!(scaled["spec"]["scaleTargetRef"]["name"], "db-writer");
    let mut topics = BTreeSet::new();
    for trigger in scaled["spec"]["triggers"].as_sequence().unwrap() {
        let meta = &trigger["metadata"];
        assert_eq!(trigger["type"], "kafka");
        assert_eq!(
            meta["consumerGroup"].as_str(),
            writer_settings["kafka"]["group_id"].as_str()
        );
        assert_eq!(
            meta["bootstrapServers"].as_str(),
            writer_settings["kafka"]["brokers"].as_str()
        );
        topics.insert(meta["topic"].as_str().unwrap().to_owned());
    }
    let writer_topics: BTreeSet<String> = ["topic", "critical_topic"]
        .iter()
        .map(|k| writer_settings["kafka"][*k].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(topics, writer_topics);
    assert!(
        scaled["spec"]["maxReplicaCount"].as_u64().unwrap() <= 6,
        "capped at the partitions"
    );
    // query-service reads the writer's commits: same group.
    let query = containers
        .iter()
        .find(|c| c.service == "query-service")
        .unwrap();
    assert_eq!(
        effective("query-service", &query.env)["kafka"]["writer_group"].as_str(),
        writer_settings["kafka"]["group_id"].as_str()
    );
}

#[test]
fn the_image_builds_every_binary_and_runs_as_a_user() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/container/Dockerfile")).unwrap();
    for binary in [
        "producer-gateway",
        "db-writer",
        "query-service",
        "eventpipe-admin",
    ] {
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "the image carries {binary}"
        );
        assert!(
            sibling_binary(binary).exists(),
            "{binary} is a binary of this workspace"
        );
    }
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "runs as {user}"
    );
    assert!(dockerfile.contains("ca-certificates"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    for excluded in ["target/", ".local/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == excluded),
            ".dockerignore leaves out {excluded}"
        );
    }
}

#[test]
fn compose_prometheus_loads_the_alert_rules_and_scrapes_every_service() {
    let dir = std::env::temp_dir().join(format!("compose-prometheus-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo().join("deploy/compose/prometheus.yml"),
        dir.join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(
        repo().join("deploy/prometheus/alerts.yml"),
        dir.join("alerts.yml"),
    )
    .unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.join("prometheus.yml"))
        .output()
        .expect("promtool (tests/run installs Debian's prometheus)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let config = documents(&repo().join("deploy/compose/prometheus.yml")).remove(0);
    let (_, services) = compose_services();
    let targets: Vec<String> = config["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| {
            job["static_configs"][0]["targets"]
                .as_sequence()
                .unwrap()
                .clone()
        })
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    for (name, service) in &services {
        let port = service.health_port.unwrap();
        assert!(
            targets.contains(&format!("{name}:{port}")),
            "Prometheus scrapes {name}:{port}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probe_paths_are_real_routes_of_running_services() {
    let documents = k8s_documents();
    let containers = k8s_containers(&documents);
    let stack = Stack::new().await;
    let gateway = stack.spawn_gateway_process().await;
    let query = stack.spawn_query_process().await;
    let writer = stack.spawn_writer_process();
    for container in &containers {
        let base = match container.service.as_str() {
            "producer-gateway" => gateway.url().to_owned(),
            "query-service" => query.url().to_owned(),
            _ => writer.metrics_url().to_owned(),
        };
        for (path, _) in &container.probes {
            let status = pipeline_tests::eventually(
                std::time::Duration::from_secs(30),
                "the service answers",
                || async {
                    let answer = stack.http.get(format!("{base}{path}")).send().await.ok()?;
                    Some(answer.status().as_u16())
                },
            )
            .await;
            assert!(
                status == 200 || status == 503,
                "{} {path}: {status}",
                container.service
            );
        }
    }
}
