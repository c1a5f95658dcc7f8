//! The composition root's servers: the Peer service on the public address
//! and the Control service on the Unix socket, each with health, reflection
//! (v1 and v1alpha) and the size limits, stopping on a token of their own.

use chat_proto::health::CappedHealth;
use chat_proto::v1::{control_server::ControlServer, peer_server::PeerServer};
use tokio::{
    net::{TcpListener, UnixListener},
    task::JoinHandle,
};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{codegen::http::Response, transport::server::Router};
use tonic_health::pb::health_server::HealthServer;
use tracing::warn;

use crate::{
    Parts, StartError,
    config::{ENVELOPE_OVERHEAD_BYTES, oversize_hint},
    delivery,
    service::{control::ControlService, peer::PeerService},
};

/// Both servers, running until `stop_serving` is cancelled.
pub(crate) struct Servers {
    /// Done when both servers have stopped.
    pub(crate) done: JoinHandle<()>,
    /// Cancelled only once this peer has left Discovery: on the shared
    /// shutdown token the servers could end in the same poll as the signal
    /// is seen, and the Leave would be skipped (it was, in about half of
    /// the SIGTERMs).
    pub(crate) stop_serving: CancellationToken,
}

/// Starts the Peer server on `listener` and the Control server on `uds`.
pub(crate) async fn serve(
    parts: &Parts,
    listener: TcpListener,
    uds: UnixListener,
) -> Result<Servers, StartError> {
    let (health, _) = tonic_health::server::health_reporter();
    health.set_serving::<PeerServer<PeerService>>().await;
    health.set_serving::<ControlServer<ControlService>>().await;
    let stop_serving = CancellationToken::new();
    // One health service per listener: watchers on the public port cannot
    // take the owner's.
    let health_service = || {
        chat_proto::health::service(
            health.clone(),
            chat_proto::health::MAX_HEALTH_WATCHES,
            stop_serving.clone(),
        )
    };
    let peer = peer_server(parts, listener, health_service(), &stop_serving)?;
    let control = control_server(parts, uds, health_service(), &stop_serving)?;
    let done = tokio::spawn(async move {
        let (p, c) = tokio::join!(peer, control);
        if let Err(e) = p {
            warn!(error = %e, "peer server stopped with an error");
        }
        if let Err(e) = c {
            warn!(error = %e, "control server stopped with an error");
        }
    });
    Ok(Servers { done, stop_serving })
}

/// A server's future: it runs until its stop token is cancelled.
type Serving = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
>;

/// A server's response type.
type HttpResponse = Response<tonic::body::Body>;

/// The layers both servers share: `F` maps every response.
type Limits<F> =
    tower::layer::util::Stack<tower::util::MapResponseLayer<F>, tower::layer::util::Identity>;

/// What both servers share: the stream limit, oversize refusals as
/// RESOURCE_EXHAUSTED naming the text limit, health, and reflection (v1 and
/// v1alpha) for `service`.
fn router(
    service: &'static str,
    max_message_bytes: usize,
    health: HealthServer<CappedHealth>,
) -> Result<Router<Limits<impl Fn(HttpResponse) -> HttpResponse + Clone>>, StartError> {
    let (reflection, reflection_alpha) = chat_proto::reflection::services(&[service])?;
    Ok(tonic::transport::Server::builder()
        .max_concurrent_streams(chat_proto::limits::MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(chat_proto::conn::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(chat_proto::conn::KEEPALIVE_TIMEOUT))
        .layer(tower::util::MapResponseLayer::new(
            chat_proto::limits::oversize_with_hint(oversize_hint(max_message_bytes)),
        ))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha))
}

/// The Peer service, for other peers.
fn peer_server(
    parts: &Parts,
    listener: TcpListener,
    health: HealthServer<CappedHealth>,
    stop: &CancellationToken,
) -> Result<Serving, StartError> {
    let max_message_bytes = parts.config.max_message_bytes;
    let decode_limit = max_message_bytes + ENVELOPE_OVERHEAD_BYTES;
    let peer = PeerService::new(
        parts.handshaker.clone(),
        parts.inbound.clone(),
        (
            parts.history.clone(),
            parts.removals.clone(),
            parts.feeds.clone(),
        ),
        parts.shutdown.clone(),
    );
    let server = router("chat.v1.Peer", max_message_bytes, health)?
        .add_service(
            PeerServer::new(peer)
                // A DeliverStream batch carries many envelopes; each one is
                // still held to the message limit when it is opened.
                .max_decoding_message_size(
                    decode_limit.max(delivery::stream::MAX_BATCH_BYTES_DECODED),
                )
                .max_encoding_message_size(chat_proto::limits::MAX_RESPONSE_BYTES),
        )
        .serve_with_incoming_shutdown(
            // Within the connection caps and deadlines; the Control socket
            // keeps the file descriptors they leave.
            chat_proto::conn::incoming(listener, chat_proto::conn::ConnLimits::default()),
            stop.clone().cancelled_owned(),
        );
    Ok(Box::pin(server))
}

/// The Control service, for the owner.
fn control_server(
    parts: &Parts,
    uds: UnixListener,
    health: HealthServer<CappedHealth>,
    stop: &CancellationToken,
) -> Result<Serving, StartError> {
    let max_message_bytes = parts.config.max_message_bytes;
    let control = ControlService {
        fingerprint: parts.fingerprint.clone(),
        max_message_bytes,
        outbound: parts.outbound.clone(),
        inbound: parts.inbound.clone(),
        handshaker: parts.handshaker.clone(),
        membership: parts.membership.clone(),
        directory: parts.directory.clone(),
        peers: parts.peers.clone(),
        store: parts.store.clone(),
        shutdown: parts.shutdown.clone(),
    };
    let server = router("chat.v1.Control", max_message_bytes, health)?
        .add_service(
            ControlServer::new(control)
                .max_decoding_message_size(max_message_bytes + ENVELOPE_OVERHEAD_BYTES)
                .max_encoding_message_size(chat_proto::limits::MAX_RESPONSE_BYTES),
        )
        .serve_with_incoming_shutdown(UnixListenerStream::new(uds), stop.clone().cancelled_owned());
    Ok(Box::pin(server))
}
