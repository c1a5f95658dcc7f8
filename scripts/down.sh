#!/usr/bin/env bash
# Stops what `make up` started: SIGTERM (graceful: peers leave Discovery, stores
# flush), then waits for each process to exit; peers first, discovery last.
#
# It only ever signals a process that is what its pid file says: a pid file
# that names no running process, or one running something else (the pid was
# reused), is reported and removed, and nothing is killed for it. It touches
# no file but `$RUN_DIR/*.pid`, and running it with nothing up (or twice)
# only says so.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-.run}
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-10}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh


# stop NAME PIDFILE
stop() {
  local name=$1 file=$2 pid deadline
  pid=$(head -c 32 "$file")
  if ! [[ $pid =~ ^[0-9]+$ ]]; then
    echo "$name: $file holds no pid; removed it"
  elif ! kill -0 "$pid" 2>/dev/null; then
    echo "$name: not running (stale pid $pid); removed $file"
  elif ! ours "$name" "$pid"; then
    echo "$name: pid $pid is not $name any more ($(ps -o comm= -p "$pid" 2>/dev/null || echo gone)); left it alone, removed $file"
  else
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null; do
      if [ $SECONDS -ge $deadline ]; then
        kill -KILL "$pid" 2>/dev/null || true
        echo "$name: did not stop within ${STOP_TIMEOUT_S}s of SIGTERM; killed (pid $pid)"
        break
      fi
      sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null || echo "$name: stopped (pid $pid)"
  fi
  rm -f -- "$file"
}

stopped=0
if [ -d "$RUN_DIR" ]; then
  for file in "$RUN_DIR"/*.pid; do
    [ -f "$file" ] || continue
    name=$(basename "$file" .pid)
    [ "$name" = discovery ] && continue
    stop "$name" "$file"
    stopped=$((stopped + 1))
  done
  if [ -f "$RUN_DIR/discovery.pid" ]; then
    stop discovery "$RUN_DIR/discovery.pid"
    stopped=$((stopped + 1))
  fi
fi
[ $stopped -gt 0 ] || echo "nothing to stop: no pid files in $RUN_DIR (start with: make up)"
