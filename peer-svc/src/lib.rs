//! The p2p-chat peer: serves `chat.v1.Peer` to other peers on its public
//! address and `chat.v1.Control` to its owner on a Unix socket in its data
//! dir. It registers with Discovery, follows membership, handshakes with
//! peers (Noise IK) and sends every message end-to-end encrypted.
//!
//! The binary `peer-svc` parses flags and calls [`run`]; the binary `chat`
//! is the owner's CLI over [`control_client`].
#![forbid(unsafe_code)]

pub mod ahead;
pub mod config;
pub mod console;
pub mod control_client;
pub mod directory;
pub mod error;
pub mod history;
pub mod hlc;
pub mod identity;
pub mod membership;
pub mod node;
pub mod outbox;
pub mod pipe;
pub mod rate;
pub mod replicas;
pub mod service;
pub mod session;
pub mod store;
pub mod sync;

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use chat_proto::v1::{control_server::ControlServer, peer_server::PeerServer};
use tokio::{
    net::{TcpListener, UnixListener},
    task::JoinHandle,
};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

pub use config::Config;
use node::Node;

/// The control socket's name inside the data dir.
pub const CONTROL_SOCKET: &str = "control.sock";

/// How long shutdown waits for in-flight calls before closing anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The largest `--max-message-bytes`: the text plus the envelope overhead
/// must fit one Noise transport message.
pub const MAX_MESSAGE_BYTES_LIMIT: usize =
    chat_noise::MAX_TRANSPORT_MESSAGE_LEN - node::ENVELOPE_OVERHEAD_BYTES;

/// Why the peer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The identity could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The data dir or control socket could not be set up.
    #[error("{0}")]
    Setup(String),
    /// Discovery refused the registration for good.
    #[error("Discovery refused to register {name}: {reason}")]
    Refused {
        /// This peer's name.
        name: String,
        /// Discovery's reason.
        reason: String,
    },
    /// Reflection could not load the descriptors.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A running peer.
#[derive(Debug)]
pub struct Running {
    /// The address other peers dial.
    pub address: String,
    /// The control socket.
    pub control_socket: PathBuf,
    /// This peer's fingerprint.
    pub fingerprint: String,
    /// The node (for in-process tests).
    pub node: Arc<Node>,
    task: JoinHandle<()>,
}

impl Running {
    /// Waits until the peer has shut down (after `shutdown` is cancelled or
    /// the owner ran `chat leave`).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Serves until shutdown; see [`start`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    start(listener, config, shutdown).await?.wait().await;
    Ok(())
}

/// Sets up the peer (identity, control socket, first registration) and
/// starts serving in the background. Returns once both servers accept
/// connections.
pub async fn start(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    start_announced(listener, config, shutdown, |_| {}).await
}

/// Like [`start`], calling `announce` with the address once the peer is set
/// up and before anything is served — so a line the caller prints for it
/// comes before any message the peer prints on its console.
pub async fn start_announced(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    announce: impl FnOnce(&str),
) -> Result<Running, StartError> {
    if config.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
        return Err(StartError::Setup(format!(
            "--max-message-bytes {} is over {MAX_MESSAGE_BYTES_LIMIT}: a sealed message \
             (text plus {} bytes of envelope) must fit one Noise transport message of {} bytes",
            config.max_message_bytes,
            node::ENVELOPE_OVERHEAD_BYTES,
            chat_noise::MAX_TRANSPORT_MESSAGE_LEN
        )));
    }
    identity::ensure_data_dir(&config.data_dir)?;
    let keypair = identity::load_or_create(&config.data_dir)?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::Setup(format!("listener address: {e}")))?;
    let address = config
        .advertise
        .clone()
        .unwrap_or_else(|| local.to_string());
    let directory = directory::Directory::open(&config.name, &config.data_dir).map_err(|e| {
        StartError::Setup(format!(
            "{}: {e}",
            config.data_dir.join(directory::KNOWN_PEERS_FILE).display()
        ))
    })?;
    let discovery = replicas::Replicas::new(&config.discovery, node::CONNECT_TIMEOUT)
        .map_err(StartError::Setup)?;
    let control_socket = config.data_dir.join(CONTROL_SOCKET);
    let uds = bind_control_socket(&control_socket).await?;
    let store = store::Store::open(&config.data_dir).map_err(|e| {
        StartError::Setup(format!(
            "{}: {e}",
            config.data_dir.join(store::DB_FILE).display()
        ))
    })?;

    let node = Arc::new(Node::new(
        config,
        keypair,
        address.clone(),
        directory,
        store,
        discovery,
        shutdown.clone(),
    ));

    // First registration now, so a started peer is listed; if Discovery is
    // down, keep trying in the background.
    let ttl = match membership::register(&node).await {
        Ok(ttl) => Some(ttl),
        Err(s)
            if s.code() == tonic::Code::AlreadyExists
                || s.code() == tonic::Code::InvalidArgument =>
        {
            let _ = std::fs::remove_file(&control_socket);
            return Err(StartError::Refused {
                name: node.name().to_owned(),
                reason: s.message().to_owned(),
            });
        }
        Err(s) => {
            warn!(discovery = %node.config.discovery, error = %s.message(), "Discovery unreachable; will keep trying");
            None
        }
    };

    announce(&address);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<PeerServer<service::peer::PeerService>>()
        .await;
    health
        .set_serving::<ControlServer<service::control::ControlService>>()
        .await;
    let (peer_reflection, peer_reflection_alpha) =
        chat_proto::reflection::services(&["chat.v1.Peer"])?;
    let (control_reflection, control_reflection_alpha) =
        chat_proto::reflection::services(&["chat.v1.Control"])?;
    let decode_limit = node.config.max_message_bytes + node::ENVELOPE_OVERHEAD_BYTES;
    let oversize_hint = oversize_hint(node.config.max_message_bytes);
    // The servers stop on a token of their own, cancelled only once this
    // peer has left Discovery: on the shared shutdown token they could end
    // in the same poll as the signal is seen, and the task below would
    // then skip the Leave (it did in about half of the SIGTERMs).
    let stop_serving = CancellationToken::new();

    let peer_server = tonic::transport::Server::builder()
        .max_concurrent_streams(chat_proto::limits::MAX_CONCURRENT_STREAMS)
        .layer(tower::util::MapResponseLayer::new(
            chat_proto::limits::oversize_with_hint(oversize_hint.clone()),
        ))
        .add_service(health_service.clone())
        .add_service(peer_reflection)
        .add_service(peer_reflection_alpha)
        .add_service(
            PeerServer::new(service::peer::PeerService::new(node.clone()))
                // A DeliverStream batch carries many envelopes; each one is
                // still held to the message limit when it is opened.
                .max_decoding_message_size(decode_limit.max(pipe::MAX_BATCH_BYTES_DECODED))
                .max_encoding_message_size(chat_proto::limits::MAX_RESPONSE_BYTES),
        )
        .serve_with_incoming_shutdown(
            // Nagle plus delayed ACKs would hold small responses ~40 ms.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop_serving.clone().cancelled_owned(),
        );
    let control_server = tonic::transport::Server::builder()
        .max_concurrent_streams(chat_proto::limits::MAX_CONCURRENT_STREAMS)
        .layer(tower::util::MapResponseLayer::new(
            chat_proto::limits::oversize_with_hint(oversize_hint.clone()),
        ))
        .add_service(health_service)
        .add_service(control_reflection)
        .add_service(control_reflection_alpha)
        .add_service(
            ControlServer::new(service::control::ControlService::new(node.clone()))
                .max_decoding_message_size(decode_limit)
                .max_encoding_message_size(chat_proto::limits::MAX_RESPONSE_BYTES),
        )
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(uds),
            stop_serving.clone().cancelled_owned(),
        );

    let discovery_down = ttl.is_none();
    let tasks = vec![
        tokio::spawn(membership::keep_registered(node.clone(), ttl)),
        tokio::spawn(membership::follow(node.clone())),
        tokio::spawn(outbox::deliver_queued(node.clone())),
        tokio::spawn(membership::flush_cache(node.clone())),
        // Catch up on what was said while this peer was away (or before it
        // joined); with Discovery down, also learn the network from that peer.
        tokio::spawn({
            let node = node.clone();
            async move {
                sync::pull_missed_history(node, discovery_down).await;
            }
        }),
    ];
    info!(name = %node.name(), address = %address, fingerprint = %node.fingerprint, socket = %control_socket.display(), "peer serving");

    let task_node = node.clone();
    let socket = control_socket.clone();
    let task = tokio::spawn(async move {
        let servers = async {
            let (p, c) = tokio::join!(peer_server, control_server);
            if let Err(e) = p {
                warn!(error = %e, "peer server stopped with an error");
            }
            if let Err(e) = c {
                warn!(error = %e, "control server stopped with an error");
            }
        };
        tokio::pin!(servers);
        tokio::select! {
            // Only if a server failed on its own: nothing has stopped them yet.
            _ = &mut servers => {}
            _ = task_node.shutdown.cancelled() => {
                // Leave first, while the network is still up (the Leave has
                // a deadline of its own); then stop serving and give
                // in-flight calls a bounded grace period.
                if !task_node.leaving.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    membership::leave(&task_node).await;
                }
                stop_serving.cancel();
                if tokio::time::timeout(SHUTDOWN_GRACE, &mut servers).await.is_err() {
                    warn!("in-flight calls did not finish within the grace period");
                }
            }
        }
        for t in tasks {
            t.abort();
        }
        task_node.directory.flush_cache();
        let _ = std::fs::remove_file(&socket);
        info!("peer stopped");
    });

    Ok(Running {
        address,
        fingerprint: node.fingerprint.clone(),
        control_socket,
        node,
        task,
    })
}

/// What a refusal of an oversized message adds to tonic's byte counts: the
/// text limit, and the flag that sets it.
pub fn oversize_hint(max_message_bytes: usize) -> String {
    format!(
        "a message text may be at most {max_message_bytes} bytes on this peer \
         (peer-svc --max-message-bytes, at most {MAX_MESSAGE_BYTES_LIMIT}); send it in parts"
    )
}

/// Binds the control socket with mode 0600, refusing to take over the
/// socket of a peer that is still running on the same data dir.
async fn bind_control_socket(path: &Path) -> Result<UnixListener, StartError> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(StartError::Setup(format!(
                "a peer-svc is already running for this data dir ({} answers); stop it first",
                path.display()
            )));
        }
        // A socket left by a peer that was killed: nobody answers on it.
        std::fs::remove_file(path)
            .map_err(|e| StartError::Setup(format!("{}: {e}", path.display())))?;
    }
    // Bound inside a fresh 0700 directory, narrowed to 0600, then renamed
    // into place: the socket is never reachable by others, not even in the
    // moment between bind and chmod (the data dir may be more open).
    let setup = |e: std::io::Error| StartError::Setup(format!("{}: {e}", path.display()));
    let staging = path.with_extension(format!("staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(setup)?;
    let staged = staging.join(CONTROL_SOCKET);
    let bound = UnixListener::bind(&staged)
        .and_then(|uds| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&staged, path)?;
            Ok(uds)
        })
        .map_err(|e| StartError::Setup(format!("cannot bind {}: {e}", path.display())));
    let _ = std::fs::remove_dir_all(&staging);
    bound
}
