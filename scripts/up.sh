#!/usr/bin/env bash
# Starts discovery (and the peers, once they exist) in the background with
# logs and pids under $RUN_DIR, and returns when each answers health checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
RUN_DIR=${RUN_DIR:-.run}
DISCOVERY_ADDR=${DISCOVERY_ADDR:-127.0.0.1:50051}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-30}

flag=""; [ "$PROFILE" = release ] && flag="--release"
cargo build --workspace --bins $flag
BIN=target/$PROFILE
mkdir -p "$RUN_DIR"

# wait_healthy ADDR NAME: polls grpc.health.v1 until SERVING or the timeout.
wait_healthy() {
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until grpcurl -plaintext -max-time 1 "$1" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; do
    if [ $SECONDS -ge $deadline ]; then
      echo "$2 did not answer health checks on $1 within ${READY_TIMEOUT_S}s; see $RUN_DIR/$2.log" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# start NAME CMD...: runs CMD in the background unless NAME already runs.
start() {
  local name=$1; shift
  if [ -f "$RUN_DIR/$name.pid" ] && kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"
    return
  fi
  "$@" >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.log" &
  echo $! >"$RUN_DIR/$name.pid"
}

start discovery "$BIN/discovery-svc" --listen "$DISCOVERY_ADDR"
wait_healthy "$DISCOVERY_ADDR" discovery
echo "discovery  $DISCOVERY_ADDR  (log $RUN_DIR/discovery.log)"
echo
echo "Try:  grpcurl -plaintext $DISCOVERY_ADDR chat.v1.Discovery/List"
echo "Stop: make down"
