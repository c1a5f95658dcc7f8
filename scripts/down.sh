#!/usr/bin/env bash
# Stops what `make up` started: SIGTERM (graceful: peers leave, stores flush),
# then waits for each process to exit.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-10}
shopt -s nullglob
pids=("$RUN_DIR"/*.pid)
# Peers first, discovery last, so peers can leave cleanly.
for f in $(ls -1 "${pids[@]}" 2>/dev/null | grep -v discovery.pid) "$RUN_DIR/discovery.pid"; do
  [ -f "$f" ] || continue
  name=$(basename "$f" .pid); pid=$(cat "$f")
  if kill -TERM "$pid" 2>/dev/null; then
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then kill -KILL "$pid" 2>/dev/null; echo "$name killed"; break; fi
      sleep 0.05
    done
    echo "$name stopped"
  fi
  rm -f "$f"
done
