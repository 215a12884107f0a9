#!/usr/bin/env bash
# Shared settings and helpers for the local-stack scripts in deploy/local/.
# Sourced by them, never run: every setting below can be overridden from the
# environment (see docs/operations/local-stack.md).
set -euo pipefail

# Repository root, from this file's own location (works from any cwd).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"

# Everything the stack writes (data, logs, pid files, downloaded jars).
PIPELINE_STATE_DIR="${PIPELINE_STATE_DIR:-$REPO/.local}"
case "$PIPELINE_STATE_DIR" in
  /*) ;;
  *) PIPELINE_STATE_DIR="$PWD/$PIPELINE_STATE_DIR" ;;
esac

# Kafka: 4.1.1 resolves from Maven Central with kafka-tools and the log4j2 binding.
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP="${KAFKA_HEAP:--Xms512m -Xmx1g}"
# The collector flags of Kafka's own start script (kafka-run-class.sh). G1's default 200 ms
# pause goal gave young pauses of 40-65 ms here, each one stalling every acknowledgement; with
# a 20 ms goal they were ~10 ms, more often (docs/benchmarks.md). Pauses go to gc.log.
# Every collector worker is started with the JVM (-UseDynamicNumberOfGCThreads), so that
# KAFKA_GC_PRIORITY below finds them all at start.
KAFKA_GC="${KAFKA_GC:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:-UseDynamicNumberOfGCThreads}"
# Real-time (SCHED_FIFO) priority of each broker's stop-the-world collector threads: the GC
# workers and the VM thread, which run only while the broker is paused. On cores shared with
# the shards and services, a young pause waited for a worker that had no core: 10-70 ms pauses
# instead of ~8, every acknowledgement stalled meanwhile, critical stored p99 (as polled) at
# 2,000 events/s 20.2-29.3 ms against 13.5-14.7 with the priority (docs/benchmarks.md, "The
# broker's collector on real-time priority"). Empty leaves them at normal priority; without the
# right to raise priority (CAP_SYS_NICE) the start says so and goes on. A broker on cores of its
# own (the production examples) does not need it.
KAFKA_GC_PRIORITY="${KAFKA_GC_PRIORITY-10}"
# JDK 17's code-cache sweeper discards compiled methods that went cold for a while, and C2
# compiles them again when they run: 20 minutes after a start the C2 thread still took 12 %
# (at times all) of a core here, the broker ~55 % at 5,000 events/s against ~43 % without
# flushing (docs/benchmarks.md, "Kafka's JIT"). Of the 240 MB code cache it used ~26 MB.
KAFKA_JIT="${KAFKA_JIT:--XX:-UseCodeCacheFlushing}"
# The broker's request handler and network threads, sized to the machine (Kafka's defaults, 8
# and 3, are for a server of its own). On 2 cores shared with everything else, 2 and 2 took
# the broker from 20.7-24.6 to 18.7-19.3 µs of CPU per single POST in one series; a second
# showed no difference in throughput (docs/benchmarks.md).
cores=$(nproc 2>/dev/null || echo 2)
KAFKA_IO_THREADS="${KAFKA_IO_THREADS:-$((cores < 2 ? 2 : cores > 8 ? 8 : cores))}"
KAFKA_NETWORK_THREADS="${KAFKA_NETWORK_THREADS:-$((cores < 2 ? 2 : cores > 3 ? 3 : cores))}"
unset cores
KAFKA_DIR="$PIPELINE_STATE_DIR/kafka"
KAFKA_LIB="${KAFKA_LIB:-$KAFKA_DIR/lib-$KAFKA_VERSION}"
# Cluster mode: KAFKA_BROKERS=3 runs three combined broker+controller nodes; node i listens
# on KAFKA_PORT + 100*(i-1) (controller: KAFKA_CONTROLLER_PORT + 100*(i-1)), topics get
# replication factor 3 and min.insync.replicas=2. One node (the default) keeps RF 1.
KAFKA_BROKERS="${KAFKA_BROKERS:-1}"
[[ "$KAFKA_BROKERS" =~ ^[1-9]$ ]] || { printf '[local] error: KAFKA_BROKERS must be 1..9\n' >&2; exit 2; }
if ((KAFKA_BROKERS == 1)); then
  KAFKA_REPLICATION=1
  KAFKA_MIN_ISR=1
else
  KAFKA_REPLICATION=$((KAFKA_BROKERS < 3 ? KAFKA_BROKERS : 3))
  KAFKA_MIN_ISR=$((KAFKA_REPLICATION - 1))
fi
# kafka_node_dir <i>: node 1 of a single-node stack keeps the historical layout.
kafka_node_dir() {
  if ((KAFKA_BROKERS == 1)); then echo "$KAFKA_DIR"; else echo "$KAFKA_DIR/cluster$KAFKA_BROKERS/node$1"; fi
}
kafka_port() { echo $((KAFKA_PORT + 100 * ($1 - 1))); }
kafka_controller_port() { echo $((KAFKA_CONTROLLER_PORT + 100 * ($1 - 1))); }
KAFKA_PID="$(kafka_node_dir 1)/kafka.pid"
KAFKA_BOOTSTRAP=""
for ((i = 1; i <= KAFKA_BROKERS; i++)); do
  KAFKA_BOOTSTRAP+="${KAFKA_BOOTSTRAP:+,}127.0.0.1:$(kafka_port "$i")"
done

# PostgreSQL: one server per port, shard i is the i-th port.
PIPELINE_PG_PORTS="${PIPELINE_PG_PORTS:-5433 5434}"
# `none`: a Kafka-only stack (deploy/local/cluster).
[[ "$PIPELINE_PG_PORTS" != none ]] || PIPELINE_PG_PORTS=""
PIPELINE_PG_DB="${PIPELINE_PG_DB:-events}"
PIPELINE_PG_USER="${PIPELINE_PG_USER:-postgres}"
PG_DIR="$PIPELINE_STATE_DIR/pg"

# TLS mode (deploy/local/secure sets it): Kafka's client listener is SASL_SSL (SCRAM-SHA-512)
# and the shards take TLS connections only (hostssl, scram-sha-256), with certificates signed by
# a CA generated into $TLS_DIR. Certificates, keys and passwords stay in the state directory.
PIPELINE_TLS="${PIPELINE_TLS:-0}"
[[ "$PIPELINE_TLS" =~ ^[01]$ ]] || { printf '[local] error: PIPELINE_TLS must be 0 or 1\n' >&2; exit 2; }
TLS_DIR="$PIPELINE_STATE_DIR/tls"
# The SASL users created when Kafka's storage is formatted: the brokers' own and the services'.
KAFKA_ADMIN_USER=admin
KAFKA_PIPELINE_USER=pipeline

# Topics. Two partitions per topic: one machine runs one consumer per group, and every
# partition costs requests, since librdkafka puts one partition in a produce request
# (confluentinc/librdkafka#1700) and each wakes every group's fetch. Against six at 5,000
# events/s here: query-service 6.6-7.8 against 9.4-12.2 us of CPU per event, critical
# visible-in-GET p99 at 2,000/s 18.5/20.9 against 26.2/32.9 ms, the same NDJSON rate
# (docs/benchmarks.md, 2026-12-05). More consumers than partitions idle: grow the topics
# first (topics --partitions N).
PIPELINE_PARTITIONS="${PIPELINE_PARTITIONS:-2}"
PIPELINE_TOPICS="${PIPELINE_TOPICS:-events events-critical events-dlq events-persisted}"
# How far a gateway's clock may run ahead of the brokers' before its records are refused.
PIPELINE_MAX_CLOCK_AHEAD_MS="${PIPELINE_MAX_CLOCK_AHEAD_MS:-2000}"

export PIPELINE_TLS
export REPO PIPELINE_STATE_DIR KAFKA_VERSION KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_HEAP KAFKA_GC_PRIORITY KAFKA_BOOTSTRAP \
  KAFKA_BROKERS KAFKA_REPLICATION KAFKA_MIN_ISR \
  PIPELINE_PG_PORTS PIPELINE_PG_DB PIPELINE_PG_USER PIPELINE_PARTITIONS PIPELINE_TOPICS PIPELINE_MAX_CLOCK_AHEAD_MS

log() { printf '[local] %s\n' "$*" >&2; }
die() { printf '[local] error: %s\n' "$*" >&2; exit 1; }

# wait_until <seconds> <description> <command...>: polls the command (backing off from
# 0.1 s to 1 s between tries) until it succeeds; returns 1 once the deadline has passed.
wait_until() {
  local secs=$1 what=$2 delay=0.1
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "gave up after ${secs}s waiting for $what"
      return 1
    fi
    sleep "$delay"
    case $delay in 0.1) delay=0.25 ;; 0.25) delay=0.5 ;; *) delay=1 ;; esac
  done
}

# kafka_node_running <i>: node i's saved pid is alive and is our broker (not a recycled pid).
kafka_node_running() {
  local pidfile pid
  pidfile="$(kafka_node_dir "$1")/kafka.pid"
  [[ -f "$pidfile" ]] || return 1
  pid=$(cat "$pidfile")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
}

# kafka_running: every node runs.
kafka_running() {
  local i
  for ((i = 1; i <= KAFKA_BROKERS; i++)); do
    kafka_node_running "$i" || return 1
  done
}

# kafka_tool <main-class> args...: runs a class from the Kafka classpath (admin tools,
# StorageTool) with a small heap; tools log errors only, to stderr.
kafka_tool() {
  [[ -f "$KAFKA_LIB/.complete" ]] || die "Kafka $KAFKA_VERSION jars missing; run deploy/local/install"
  local log_config="$KAFKA_DIR/log4j2-tools.yaml"
  if [[ ! -f "$log_config" ]]; then
    mkdir -p "$KAFKA_DIR"
    cat >"$log_config" <<'LOG'
Configuration:
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        Pattern: "%p %m%n"
  Loggers:
    Root:
      level: ERROR
      AppenderRef:
        - ref: STDERR
LOG
  fi
  java -Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$log_config" -cp "$KAFKA_LIB/*" "$@"
}

# kafka_client_tool <main-class> args...: an admin tool that talks to the brokers' client
# listener (adds --bootstrap-server, and the SASL_SSL client settings in TLS mode).
kafka_client_tool() {
  local class=$1
  shift
  if [[ "$PIPELINE_TLS" == 1 ]]; then
    kafka_tool "$class" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$TLS_DIR/kafka-admin.properties" "$@"
  else
    kafka_tool "$class" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@"
  fi
}

# tls_secret <name>: prints the password in $TLS_DIR/<name>.password, generating it once.
tls_secret() {
  local file="$TLS_DIR/$1.password"
  [[ -s "$file" ]] || (umask 077 && openssl rand -hex 24 >"$file")
  cat "$file"
}

# tls_setup: the CA, one server certificate for 127.0.0.1 and localhost (Kafka and every
# shard), the passwords, Kafka's PKCS#12 keystore and the admin tools' client settings. Made
# once; `reset` deletes them with the rest of the state.
tls_setup() {
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  (
    cd "$TLS_DIR"
    umask 077
    if [[ ! -f ca.pem ]]; then
      openssl req -x509 -newkey rsa:2048 -nodes -days 825 -sha256 -subj "/CN=eventpipe local CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.pem 2>/dev/null
      rm -f server.pem
      log "generated a CA in $TLS_DIR"
    fi
    if [[ ! -f server.pem ]]; then
      openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
      printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -sha256 \
        -extfile server.ext -out server.pem 2>/dev/null
      rm -f server.csr server.ext kafka.p12
    fi
    if [[ ! -f kafka.p12 ]]; then
      openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name kafka \
        -passout "pass:$(tls_secret kafka-keystore)" -out kafka.p12
    fi
    cat >kafka-admin.properties <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN_USER" password="$(tls_secret kafka-admin)";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
PROPS
  )
  # The services' passwords exist before anything reads them.
  tls_secret kafka-pipeline >/dev/null
  tls_secret pg >/dev/null
}

# pg_bindir: prints the newest /usr/lib/postgresql/<version>/bin that has initdb;
# fails when there is none.
pg_bindir() {
  local dir found=()
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x "$dir/initdb" ]] && found+=("$dir")
  done
  ((${#found[@]})) || return 1
  printf '%s\n' "${found[@]}" | sort -V | tail -n 1
}

# pg_running <index>: pg_ctl reports shard <index> running.
pg_running() {
  local dir="$PG_DIR/shard$1" bindir
  [[ -f "$dir/PG_VERSION" ]] || return 1
  bindir=$(pg_bindir) || return 1
  runuser -u postgres -- "$bindir/pg_ctl" -D "$dir" status >/dev/null 2>&1
}

# kafka_properties <i> <voters>: node i's server.properties (a combined broker+controller).
kafka_properties() {
  local i=$1 voters=$2 dir
  dir=$(kafka_node_dir "$i")
  cat <<PROPS
process.roles=broker,controller
node.id=$i
controller.quorum.voters=$voters
$(kafka_listener_properties "$i")
controller.listener.names=CONTROLLER
log.dirs=$dir/data
num.io.threads=$KAFKA_IO_THREADS
num.network.threads=$KAFKA_NETWORK_THREADS
num.partitions=$PIPELINE_PARTITIONS
# Internal topics and new topics get every node's replica up to 3; an acknowledged write is
# on min.insync.replicas nodes (1 on a single node, 2 in a cluster).
default.replication.factor=$KAFKA_REPLICATION
offsets.topic.replication.factor=$KAFKA_REPLICATION
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=$KAFKA_REPLICATION
transaction.state.log.min.isr=$KAFKA_MIN_ISR
share.coordinator.state.topic.replication.factor=$KAFKA_REPLICATION
share.coordinator.state.topic.min.isr=$KAFKA_MIN_ISR
min.insync.replicas=$KAFKA_MIN_ISR
# A replica that lost data must not become leader: acknowledged writes survive.
unclean.leader.election.enable=false
# Topics are created on purpose (deploy/local/topics, tests), never by a typo.
auto.create.topics.enable=false
# Consumers in tests and demos join at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# Groups on the consumer protocol (KIP-848, db-writer's kafka.group_protocol = consumer): a
# dead member's partitions move after 10 s, and members hear of a new assignment within a
# second (Kafka's defaults: 45 s and 5 s, with those as the lowest a group may ask for).
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
PROPS
}

# kafka_listener_properties <i>: node i's listeners: PLAINTEXT, or in TLS mode SASL_SSL with
# SCRAM-SHA-512 for clients and between brokers. The controller listener stays PLAINTEXT on
# 127.0.0.1 (nothing but the nodes themselves connects to it).
kafka_listener_properties() {
  local i=$1 listener=PLAINTEXT
  [[ "$PIPELINE_TLS" == 1 ]] && listener=SASL_SSL
  cat <<PROPS
listeners=$listener://127.0.0.1:$(kafka_port "$i"),CONTROLLER://127.0.0.1:$(kafka_controller_port "$i")
advertised.listeners=$listener://127.0.0.1:$(kafka_port "$i")
inter.broker.listener.name=$listener
listener.security.protocol.map=$listener:$listener,CONTROLLER:PLAINTEXT
PROPS
  [[ "$PIPELINE_TLS" == 1 ]] || return 0
  cat <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN_USER" password="$(tls_secret kafka-admin)";
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/kafka.p12
ssl.keystore.password=$(tls_secret kafka-keystore)
ssl.key.password=$(tls_secret kafka-keystore)
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
ssl.client.auth=none
PROPS
}

kafka_log_config() { # dir
  cat <<LOG
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=RollingFile
appender.file.name=file
appender.file.fileName=$1/server.log
appender.file.filePattern=$1/server.log.%i
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
appender.file.policies.type=Policies
appender.file.policies.size.type=SizeBasedTriggeringPolicy
appender.file.policies.size.size=20MB
appender.file.strategy.type=DefaultRolloverStrategy
appender.file.strategy.max=3
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.state.name=state.change.logger
logger.state.level=WARN
LOG
}

# kafka_cluster_id: the id the nodes on disk were formatted with, or a new one.
kafka_cluster_id() {
  local i dir
  for ((i = 1; i <= KAFKA_BROKERS; i++)); do
    dir=$(kafka_node_dir "$i")
    if [[ -f "$dir/data/meta.properties" ]]; then
      sed -n 's/^cluster.id=//p' "$dir/data/meta.properties"
      return
    fi
  done
  kafka_tool kafka.tools.StorageTool random-uuid
}

# kafka_start_node <i>: writes node i's configuration, formats its storage on first start (all
# nodes with the same cluster id) and starts it in the background; does not wait.
kafka_start_node() {
  local i=$1 voters="" n dir
  for ((n = 1; n <= KAFKA_BROKERS; n++)); do
    voters+="${voters:+,}$n@127.0.0.1:$(kafka_controller_port "$n")"
  done
  dir=$(kafka_node_dir "$i")
  mkdir -p "$dir"
  (umask 077 && kafka_properties "$i" "$voters" >"$dir/server.properties")
  kafka_log_config "$dir" >"$dir/log4j2.properties"
  if [[ ! -f "$dir/data/meta.properties" ]]; then
    local cluster_id
    cluster_id=$(kafka_cluster_id)
    local scram=()
    if [[ "$PIPELINE_TLS" == 1 ]]; then
      # The SCRAM users exist from the first metadata record on: the brokers authenticate to
      # each other with the first, the services with the second.
      scram=(--add-scram "SCRAM-SHA-512=[name=$KAFKA_ADMIN_USER,password=$(tls_secret kafka-admin)]"
        --add-scram "SCRAM-SHA-512=[name=$KAFKA_PIPELINE_USER,password=$(tls_secret kafka-pipeline)]")
    fi
    kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" "${scram[@]}" >/dev/null
    log "formatted Kafka node $i storage (cluster $cluster_id)"
  fi
  # shellcheck disable=SC2086 # KAFKA_HEAP, KAFKA_GC and KAFKA_JIT hold several JVM flags
  setsid nohup java $KAFKA_HEAP $KAFKA_GC $KAFKA_JIT -Xlog:gc:file="$dir/gc.log":uptime:filecount=3,filesize=10M \
    -cp "$KAFKA_LIB/*" \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/kafka.pid"
  kafka_gc_priority "$i"
}

# kafka_gc_priority <i>: puts node i's stop-the-world collector threads (GC workers, the VM
# thread) on SCHED_FIFO priority KAFKA_GC_PRIORITY, once the JVM has made them.
kafka_gc_priority() {
  [[ -n "$KAFKA_GC_PRIORITY" ]] || return 0
  local i=$1 pid task name raised=0
  pid=$(cat "$(kafka_node_dir "$i")/kafka.pid")
  collector_threads_made() { grep -qx 'VM Thread' /proc/"$1"/task/*/comm; }
  wait_until 30 "node $i's JVM threads" collector_threads_made "$pid" || return 0
  for task in /proc/"$pid"/task/*; do
    name=$(cat "$task/comm" 2>/dev/null) || continue
    case $name in
      "VM Thread" | "GC Thread#"*)
        if ! chrt -f -p "$KAFKA_GC_PRIORITY" "${task##*/}" >/dev/null 2>&1; then
          log "node $i: cannot put the collector threads on real-time priority (needs CAP_SYS_NICE); its pauses may wait for a core"
          return 0
        fi
        raised=$((raised + 1))
        ;;
    esac
  done
  log "node $i: $raised collector threads on SCHED_FIFO priority $KAFKA_GC_PRIORITY"
}

# kafka_all_brokers_up: every node is registered with the cluster and answers.
kafka_all_brokers_up() {
  local count
  count=$(kafka_client_tool org.apache.kafka.tools.BrokerApiVersionsCommand 2>/dev/null |
    grep -c '^127.0.0.1:[0-9]* (id: ' || true)
  ((count == KAFKA_BROKERS))
}
