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
KAFKA_DIR="$PIPELINE_STATE_DIR/kafka"
KAFKA_LIB="$KAFKA_DIR/lib-$KAFKA_VERSION"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

# PostgreSQL: one server per port, shard i is the i-th port.
PIPELINE_PG_PORTS="${PIPELINE_PG_PORTS:-5433 5434}"
PIPELINE_PG_DB="${PIPELINE_PG_DB:-events}"
PIPELINE_PG_USER="${PIPELINE_PG_USER:-postgres}"
PG_DIR="$PIPELINE_STATE_DIR/pg"

# Topics.
PIPELINE_PARTITIONS="${PIPELINE_PARTITIONS:-6}"
PIPELINE_TOPICS="${PIPELINE_TOPICS:-events events-critical events-dlq events-persisted}"
# How far a gateway's clock may run ahead of the brokers' before its records are refused.
PIPELINE_MAX_CLOCK_AHEAD_MS="${PIPELINE_MAX_CLOCK_AHEAD_MS:-2000}"

export REPO PIPELINE_STATE_DIR KAFKA_VERSION KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_HEAP KAFKA_BOOTSTRAP \
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

# kafka_running: the pid in $KAFKA_PID is alive and is our broker (not a recycled pid).
kafka_running() {
  local pid
  [[ -f "$KAFKA_PID" ]] || return 1
  pid=$(cat "$KAFKA_PID")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
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
