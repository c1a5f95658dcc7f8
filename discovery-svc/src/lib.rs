//! The Discovery service of p2p-chat: tells peers who is online.
//!
//! Peers register a name, an address and a static X25519 public key and hold
//! a lease that they renew; watchers follow joins, leaves and expiries. The
//! binary `discovery-svc` parses its flags and calls [`run`].
//!
//! Modules use only the layers below them, never the crate root:
//!
//! ```text
//! main → lib (composition: run, open_store)
//!        → service → status → watchers → store → registry → config
//! ```
//!
//! - [`config`]: flags, environment and every default;
//! - [`registry`]: the membership rules, pure (no I/O, no clock of its own);
//! - [`store`]: where the registry lives (memory, or etcd with `--features etcd`);
//! - `watchers`: the watcher cap and lag limit;
//! - `status`: the one mapping from domain errors to gRPC statuses;
//! - [`service`]: `chat.v1.Discovery` in protobuf terms.
//!
//! The test `layering::modules_only_use_lower_layers` checks the order; by
//! hand, `grep -rn "crate::" src` shows every edge.
#![forbid(unsafe_code)]

pub mod config;
mod proofs;
pub mod registry;
pub mod service;
mod status;
pub mod store;
mod watchers;

use std::sync::Arc;

use chat_proto::v1::discovery_server::DiscoveryServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use crate::config::Config;
pub use crate::service::DiscoveryService;

use crate::config::StoreConfig;
use crate::store::memory::MemoryStore;
use crate::store::{OpenError, Store};

/// Largest request Discovery decodes: a registration is well under 1 KiB.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not load the descriptor set.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The registry store could not be opened.
    #[error("store: {0}")]
    Store(#[from] OpenError),
    /// The gRPC transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `chat.v1.Discovery`, health and reflection on `listener` until
/// `shutdown` is cancelled, then drains in-flight calls and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().ok();
    let store = open_store(&config, shutdown.clone()).await?;
    let service = DiscoveryService::new(store, &config, shutdown.clone());

    let health = tonic_health::server::HealthReporter::new();
    health
        .set_serving::<DiscoveryServer<DiscoveryService>>()
        .await;
    let (reflection_v1, reflection_v1alpha) =
        chat_proto::reflection::services(&["chat.v1.Discovery"])?;

    info!(addr = ?addr, ttl = ?config.ttl, store = %config.store, "discovery serving");
    let result = tonic::transport::Server::builder()
        .max_concurrent_streams(chat_proto::limits::MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(chat_proto::conn::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(chat_proto::conn::KEEPALIVE_TIMEOUT))
        .layer(tower::util::MapResponseLayer::new(
            chat_proto::limits::oversize_is_resource_exhausted,
        ))
        .add_service(chat_proto::health::service(
            health,
            chat_proto::health::MAX_HEALTH_WATCHES,
            shutdown.clone(),
        ))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            DiscoveryServer::new(service)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(chat_proto::limits::MAX_RESPONSE_BYTES),
        )
        // Within the connection caps and deadlines (see chat_proto::conn).
        .serve_with_incoming_shutdown(
            chat_proto::conn::incoming(listener, chat_proto::conn::ConnLimits::default()),
            shutdown.cancelled(),
        )
        .await;
    shutdown.cancel();
    info!("discovery stopped");
    Ok(result?)
}

/// Opens the store `config` names; background work stops at `shutdown`.
async fn open_store(
    config: &Config,
    shutdown: CancellationToken,
) -> Result<Arc<dyn Store>, OpenError> {
    match &config.store {
        StoreConfig::Memory => Ok(MemoryStore::start(config, shutdown)),
        #[cfg(feature = "etcd")]
        StoreConfig::Etcd { endpoints, prefix } => {
            let store = crate::store::etcd::EtcdStore::connect(endpoints, prefix, config, shutdown)
                .await
                .map_err(|e| OpenError::Backend(e.to_string()))?;
            Ok(store)
        }
        #[cfg(not(feature = "etcd"))]
        StoreConfig::Etcd { .. } => Err(OpenError::NotBuilt),
    }
}

#[cfg(test)]
mod layering {
    /// The modules below the crate root, lowest layer first: each may use
    /// only the ones before it (and itself), never the root's re-exports.
    const LAYERS: [&str; 7] = [
        "config", "proofs", "registry", "store", "watchers", "status", "service",
    ];

    /// Every source file but the root and the binary, by its module.
    const SOURCES: &[(&str, &str, &str)] = &[
        ("config", "config.rs", include_str!("config.rs")),
        ("proofs", "proofs.rs", include_str!("proofs.rs")),
        ("registry", "registry.rs", include_str!("registry.rs")),
        ("store", "store/mod.rs", include_str!("store/mod.rs")),
        ("store", "store/memory.rs", include_str!("store/memory.rs")),
        (
            "store",
            "store/etcd/mod.rs",
            include_str!("store/etcd/mod.rs"),
        ),
        (
            "store",
            "store/etcd/calls.rs",
            include_str!("store/etcd/calls.rs"),
        ),
        (
            "store",
            "store/etcd/follower.rs",
            include_str!("store/etcd/follower.rs"),
        ),
        (
            "store",
            "store/etcd/mirror.rs",
            include_str!("store/etcd/mirror.rs"),
        ),
        (
            "store",
            "store/etcd/record.rs",
            include_str!("store/etcd/record.rs"),
        ),
        ("watchers", "watchers.rs", include_str!("watchers.rs")),
        ("status", "status.rs", include_str!("status.rs")),
        ("service", "service.rs", include_str!("service.rs")),
    ];

    #[test]
    fn modules_only_use_lower_layers() {
        let rank = |module: &str| LAYERS.iter().position(|&m| m == module);
        for &(module, file, source) in SOURCES {
            let own = rank(module).expect("listed layer");
            // Test modules come last in each file and may use anything.
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            let lines = code.lines().filter(|l| !l.trim_start().starts_with("//"));
            for line in lines {
                for (at, _) in line.match_indices("crate::") {
                    let used: String = line[at + "crate::".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    let allowed = rank(&used).is_some_and(|r| r <= own);
                    assert!(allowed, "{file} uses crate::{used} (line {line:?})");
                }
            }
        }
    }
}
