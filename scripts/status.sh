#!/usr/bin/env bash
# One line per process that `make up` started: running or not, and its health.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
RUN_DIR=${RUN_DIR:-.run}
DISCOVERY_ADDR=${DISCOVERY_ADDR:-127.0.0.1:50051}

# health ARGS...: the status grpc.health.v1 answers through grpcurl ARGS, or nothing.
health() {
  grpcurl -plaintext -max-time 1 "$@" grpc.health.v1.Health/Check 2>/dev/null \
    | sed -n 's/.*"status": "\([A-Z_]*\)".*/\1/p' || true
}

found=0
for f in "$RUN_DIR"/*.pid; do
  [ -f "$f" ] || continue
  found=1
  name=$(basename "$f" .pid); pid=$(head -c 32 "$f")
  state="not running"; answer=""
  if ours "$name" "$pid"; then
    state="running (pid $pid)"
    if [ "$name" = discovery ]; then
      answer=$(health "$DISCOVERY_ADDR")
    elif [ -S "$RUN_DIR/$name/control.sock" ]; then
      answer=$(health -unix -authority localhost "$RUN_DIR/$name/control.sock")
    fi
  fi
  printf '%-10s %-22s %s\n' "$name" "$state" "$answer"
done
[ $found = 1 ] || echo "nothing running; start with: make up"
