# syntax=docker/dockerfile:1
# p2p-chat image: discovery-svc (with the etcd store), peer-svc and chat.
#   docker compose -f deploy/compose.yaml up --build     (see deploy/README.md)
# Not exercised in CI (no container engine there); `make up` is the tested path.

FROM rust:1.89-bookworm AS builder
# protoc is needed only by the `etcd` feature; chat.v1 itself compiles with protox.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target dir live in BuildKit cache mounts, so the binaries
# are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      -p discovery-svc --features discovery-svc/etcd --bin discovery-svc \
      -p peer-svc --bin peer-svc --bin chat \
 && mkdir /out \
 && cp target/release/discovery-svc target/release/peer-svc target/release/chat /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 chat \
 && useradd --uid 10001 --gid chat --home-dir /data --no-create-home --shell /usr/sbin/nologin chat \
 && install -d -o chat -g chat -m 0700 /data
COPY --from=builder /out/ /usr/local/bin/
# `chat` and `peer-svc` find the data dir (key, history, control socket) here.
ENV CHAT_DATA_DIR=/data
USER chat
WORKDIR /data
VOLUME /data
# 50051 discovery-svc, 50060 peer-svc (as deploy/compose.yaml runs them).
EXPOSE 50051 50060
# No ENTRYPOINT or CMD of our own: each service names its binary, e.g.
#   docker build -t p2p-chat . && docker run --rm p2p-chat discovery-svc --listen 0.0.0.0:50051
