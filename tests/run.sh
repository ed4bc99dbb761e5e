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

install_tansu() {
  if command -v tansu >/dev/null 2>&1 && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    log "tansu $TANSU_VERSION already installed"
    return
  fi
  log "installing tansu $TANSU_VERSION (one-time, 12-20 min on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

BROKER_PID=""
BROKER_DIR=""
stop_broker() {
  if [ -n "$BROKER_PID" ] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  if [ -n "$BROKER_DIR" ]; then rm -rf "$BROKER_DIR"; fi
}
trap stop_broker EXIT

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
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export GRAPHCDC_TEST_BOOTSTRAP="127.0.0.1:$port"
      log "broker ready"
      return
    fi
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      cat "$BROKER_DIR/broker.log" >&2
      log "broker exited during start-up"
      exit 1
    fi
    sleep 0.1
  done
  cat "$BROKER_DIR/broker.log" >&2
  log "broker did not open its port within 30 s"
  exit 1
}

# Build first (tests spawn the graphcdc binary) while nothing else competes for the cores.
cargo build --workspace --all-targets

if [ -z "${GRAPHCDC_TEST_BOOTSTRAP:-}" ]; then
  install_tansu
  start_broker
fi

cargo test --workspace --no-fail-fast -- --test-threads="${GRAPHCDC_TEST_THREADS:-2}"
