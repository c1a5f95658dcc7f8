//! The Discovery service of p2p-chat: tells peers who is online.
//!
//! Peers register a name, an address and a static X25519 public key and hold
//! a lease that they renew; watchers follow joins, leaves and expiries. The
//! binary `discovery-svc` parses its flags and calls [`run`].
#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod registry;
pub mod service;
pub mod store;

use chat_proto::v1::discovery_server::DiscoveryServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tracing::info;

pub use config::Config;
pub use service::DiscoveryService;

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
    Store(#[from] store::OpenError),
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
    let store = store::open(&config, shutdown.clone()).await?;
    let service = DiscoveryService::new(store, &config, shutdown.clone());

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<DiscoveryServer<DiscoveryService>>()
        .await;
    let (reflection_v1, reflection_v1alpha) =
        chat_proto::reflection::services(&["chat.v1.Discovery"])?;

    info!(addr = ?addr, ttl = ?config.ttl, store = %config.store, "discovery serving");
    let result = tonic::transport::Server::builder()
        .max_concurrent_streams(chat_proto::limits::MAX_CONCURRENT_STREAMS)
        .layer(tower::util::MapResponseLayer::new(
            chat_proto::limits::oversize_is_resource_exhausted,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            DiscoveryServer::new(service)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(chat_proto::limits::MAX_RESPONSE_BYTES),
        )
        // Nagle plus delayed ACKs would hold small responses ~40 ms.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled(),
        )
        .await;
    shutdown.cancel();
    info!("discovery stopped");
    Ok(result?)
}
