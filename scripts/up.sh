#!/usr/bin/env bash
# Starts discovery and peers user1..user3 in the background, with logs, pids
# and data dirs under $RUN_DIR, and returns when every peer answers health
# checks and lists the others. user1 founds the network and admits the others.
set -euo pipefail
# Consoles and logs hold the messages each peer received: readable by the
# owner only (issue 24, item 11), whatever the caller's umask.
umask 077
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
PROFILE=${PROFILE:-release}
RUN_DIR=${RUN_DIR:-.run}
DISCOVERY_ADDR=${DISCOVERY_ADDR:-127.0.0.1:50051}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-30}
PEERS=${PEERS:-3}
PEER_BASE_PORT=${PEER_BASE_PORT:-50060}

# BIN_DIR set: use the binaries there as they are (the tests, which built them).
if [ -n "${BIN_DIR:-}" ]; then
  BIN=$BIN_DIR
else
  flag=(); [ "$PROFILE" = release ] && flag=(--release)
  cargo build --workspace --bins "${flag[@]}"
  BIN=target/$PROFILE
fi
mkdir -p "$RUN_DIR"
chmod 700 "$RUN_DIR"

# died NAME: NAME's process (the one started here) is not running; says
# why from its log, and stops.
died() {
  echo "$1 exited: $(grep -m1 -E '^(peer-svc|discovery-svc): |ERROR' "$RUN_DIR/$1.log" || tail -n 1 "$RUN_DIR/$1.log") (log $RUN_DIR/$1.log)" >&2
  exit 1
}

# wait_healthy ADDR NAME: polls grpc.health.v1 until SERVING or the timeout;
# the process started for NAME must still be the one answering.
wait_healthy() {
  local deadline=$((SECONDS + READY_TIMEOUT_S)) pid
  pid=$(head -c 32 "$RUN_DIR/$2.pid")
  until grpcurl -plaintext -max-time 1 "$1" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; do
    kill -0 "$pid" 2>/dev/null || died "$2"
    if [ $SECONDS -ge $deadline ]; then
      echo "$2 did not answer health checks on $1 within ${READY_TIMEOUT_S}s; see $RUN_DIR/$2.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null || died "$2"
}

# listening HOST:PORT: something accepts TCP connections there.
listening() {
  (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# start NAME ADDR CMD...: runs CMD (which listens on ADDR) in the background
# unless NAME already runs; refuses if another process holds ADDR (its
# health check would answer for ours).
start() {
  local name=$1 addr=$2; shift 2
  if [ -f "$RUN_DIR/$name.pid" ] && ours "$name" "$(head -c 32 "$RUN_DIR/$name.pid")"; then
    echo "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"
    return
  fi
  if listening "$addr"; then
    echo "cannot start $name: $addr is in use by another process (not one make up started from here); stop it, or pick other ports with DISCOVERY_ADDR=HOST:PORT and PEER_BASE_PORT=N" >&2
    exit 1
  fi
  # Made (empty) and private before the process writes to them: files
  # kept from an earlier run keep their mode when reopened.
  : >"$RUN_DIR/$name.out"
  : >"$RUN_DIR/$name.log"
  chmod 600 "$RUN_DIR/$name.out" "$RUN_DIR/$name.log"
  "$@" >>"$RUN_DIR/$name.out" 2>>"$RUN_DIR/$name.log" &
  echo $! >"$RUN_DIR/$name.pid"
}

start discovery "$DISCOVERY_ADDR" "$BIN/discovery-svc" --listen "$DISCOVERY_ADDR"
wait_healthy "$DISCOVERY_ADDR" discovery
echo "discovery  $DISCOVERY_ADDR  (log $RUN_DIR/discovery.log)"

# user1 founds the network (once: a member already keeps its network) and
# invites the others, sharing all history: only those not members yet (a
# run after the first invites nobody, so no token is made for a name that
# has joined). The token goes in CHAT_JOIN, not on the command line (a
# bearer token there could be read by other local users in ps; these are
# bound to a key, but the habit is the one to teach).
start user1 "127.0.0.1:$((PEER_BASE_PORT + 1))" "$BIN/peer-svc" --name user1 --listen "127.0.0.1:$((PEER_BASE_PORT + 1))" \
  --discovery "http://$DISCOVERY_ADDR" --data-dir "$RUN_DIR/user1" --create-network
wait_healthy "127.0.0.1:$((PEER_BASE_PORT + 1))" user1
for i in $(seq 2 "$PEERS"); do
  name=user$i; addr=127.0.0.1:$((PEER_BASE_PORT + i))
  peer=("$BIN/peer-svc" --name "$name" --listen "$addr" \
    --discovery "http://$DISCOVERY_ADDR" --data-dir "$RUN_DIR/$name")
  # Bound to the newcomer's identity key (made in its data dir now): the
  # token holds no secret, and only that data dir can join with it.
  key=$("$BIN/chat" --data-dir "$RUN_DIR/$name" key 2>/dev/null)
  if token=$("$BIN/chat" --data-dir "$RUN_DIR/user1" invite "$name" --all-history --key "$key" 2>"$RUN_DIR/invite.err"); then
    CHAT_JOIN=$token start "$name" "$addr" "${peer[@]}"
  elif grep -q "is a member already" "$RUN_DIR/invite.err"; then
    start "$name" "$addr" "${peer[@]}"
  else
    echo "user1 could not invite $name: $(cat "$RUN_DIR/invite.err"); see $RUN_DIR/user1.log" >&2
    exit 1
  fi
done
rm -f "$RUN_DIR/invite.err"
for i in $(seq 1 "$PEERS"); do
  name=user$i; addr=127.0.0.1:$((PEER_BASE_PORT + i))
  wait_healthy "$addr" "$name"
  # Ready when it lists every other peer online (members that stopped stay
  # listed, as offline).
  deadline=$((SECONDS + READY_TIMEOUT_S))
  until [ "$("$BIN/chat" --data-dir "$RUN_DIR/$name" connections --json 2>/dev/null | grep -o '"session":"[a-zA-Z ]*"' | grep -vc '"session":"offline"')" -ge $((PEERS - 1)) ]; do
    if [ $SECONDS -ge $deadline ]; then echo "$name did not see the other peers; see $RUN_DIR/$name.log" >&2; exit 1; fi
    sleep 0.1
  done
  echo "$name      $addr  (data $RUN_DIR/$name, console $RUN_DIR/$name.out, log $RUN_DIR/$name.log)"
done

# The PATH line to print: these binaries, and grpcurl's folder (pip may have
# put it where the user's shell does not look).
bin_abs=$(cd "$BIN" && pwd)
path_line="$bin_abs"
grpcurl_dir=$(dirname "$(command -v grpcurl)")
case ":${USER_PATH:-$PATH}:" in *":$grpcurl_dir:"*) ;; *) path_line="$path_line:$grpcurl_dir" ;; esac

cat <<TXT

All connected. Put the binaries on PATH, then drive a peer with the chat CLI:
  export PATH="$path_line:\$PATH"
  chat --data-dir $RUN_DIR/user1 send "Hello user2"
  chat --data-dir $RUN_DIR/user2 history
  chat --data-dir $RUN_DIR/user3 attach          # live console: type to send
  chat --data-dir $RUN_DIR/user1 connections
Or with grpcurl:
  grpcurl -plaintext $DISCOVERY_ADDR chat.v1.Discovery/List
  grpcurl -plaintext -unix -authority localhost $RUN_DIR/user1/control.sock chat.v1.Control/History
Replay the original scenario: make demo.   Stop: make down
TXT
