#!/usr/bin/env bash
# One line per process that `make up` started: running or not, and its health.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
DISCOVERY_ADDR=${DISCOVERY_ADDR:-127.0.0.1:50051}
shopt -s nullglob
found=0
for f in "$RUN_DIR"/*.pid; do
  found=1
  name=$(basename "$f" .pid); pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then state="running (pid $pid)"; else state="not running"; fi
  health=""
  if [ "$name" = discovery ]; then
    health=$(grpcurl -plaintext -max-time 1 "$DISCOVERY_ADDR" grpc.health.v1.Health/Check 2>/dev/null | grep -o '"[A-Z_]*"$' | tr -d '"')
  elif [ -S "$RUN_DIR/$name/control.sock" ]; then
    health=$(grpcurl -plaintext -unix -authority localhost -max-time 1 "$RUN_DIR/$name/control.sock" grpc.health.v1.Health/Check 2>/dev/null | grep -o '"[A-Z_]*"$' | tr -d '"')
  fi
  printf '%-10s %-22s %s\n' "$name" "$state" "${health:-}"
done
[ $found = 1 ] || echo "nothing running; start with: make up"
