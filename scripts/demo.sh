#!/usr/bin/env bash
# Replays the original README's scenario through the chat CLI on the network
# `make up` started, then prints each peer's console and user3's history.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
RUN_DIR=${RUN_DIR:-.run}
CHAT="target/$PROFILE/chat"

if ! "$CHAT" --data-dir "$RUN_DIR/user1" connections >/dev/null 2>&1; then
  echo "nothing answers on $RUN_DIR/user1: run \`make up\` first" >&2
  exit 1
fi

say() { echo "\$ chat --data-dir $RUN_DIR/$1 send \"$2\""; "$CHAT" --data-dir "$RUN_DIR/$1" send "$2"; }

say user1 "Hello user2"
say user2 "Hello user1"
say user1 "Hello user22"
say user2 "Hello user11"
echo
for u in user1 user2 user3; do
  echo "== $u's console ($RUN_DIR/$u.out)"
  tail -n 4 "$RUN_DIR/$u.out"
done
echo
echo "\$ chat --data-dir $RUN_DIR/user3 history"
"$CHAT" --data-dir "$RUN_DIR/user3" history
