#!/usr/bin/env bash
# Helpers shared by up.sh, down.sh and status.sh (sourced, not run).

# ours NAME PID: PID is the process `make up` started for NAME from this
# checkout (its command line names the binary, and a peer's its name, and it
# runs in this folder); a pid reused by anything else is not ours.
ours() {
  local args cwd
  args=$(ps -o args= -p "$2" 2>/dev/null) || return 1
  case $1 in
    discovery) [[ $args == *discovery-svc\ * ]] || return 1 ;;
    *) [[ $args == *peer-svc\ * && $args == *" --name $1 "* ]] || return 1 ;;
  esac
  cwd=$(readlink "/proc/$2/cwd" 2>/dev/null) || return 0
  [ "$cwd" = "$(pwd -P)" ]
}
