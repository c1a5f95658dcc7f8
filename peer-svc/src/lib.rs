//! The p2p-chat peer: serves `chat.v1.Peer` to other peers on its public
//! address and `chat.v1.Control` to its owner on a Unix socket in its data
//! dir. It registers with Discovery, follows membership, handshakes with
//! peers (Noise IK) and sends every message end-to-end encrypted.
//!
//! This file is the composition root: it opens the data dir, makes each
//! part and hands every part only the parts below it that it uses, routes
//! membership's peer events, and runs the servers and background tasks
//! until shutdown. The binary `peer-svc` parses flags and calls [`run`];
//! the binary `chat` is the owner's CLI over [`control_client`]. The
//! module map, top to bottom, is in the README (Architecture).
#![forbid(unsafe_code)]

pub mod admission;
pub mod authors;
pub mod authorship;
pub mod backoff;
pub mod checks;
pub mod config;
pub mod console;
pub mod control_client;
pub mod control_socket;
pub mod credential;
pub mod delivery;
pub mod directory;
pub mod discovery_client;
pub mod envelope;
pub mod feed_order;
pub mod feed_sync;
pub mod feeds;
pub mod handshake_ahead;
pub mod handshake_mac;
pub mod handshaker;
pub mod history_sync;
pub mod hlc;
pub mod identity;
pub mod inbound;
pub mod membership;
pub mod names;
pub mod net;
pub mod outbound;
pub mod peers;
pub mod rate;
pub mod removal_sync;
pub mod removals;
pub mod rerun;
mod servers;
pub mod service;
pub mod session;
pub mod store;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use chat_noise::StaticKeypair;
use chat_proto::v1::SendResponse;
use tokio::{
    net::{TcpListener, UnixListener},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, error, info, warn};

use admission::Admission;
use authors::Authors;
use authorship::Author;
use chat_proto::v1::Credential;
use config::Joining;
use config::{CONNECT_TIMEOUT, ENVELOPE_OVERHEAD_BYTES};
pub use config::{Config, MAX_MESSAGE_BYTES_LIMIT, oversize_hint};
pub use control_socket::CONTROL_SOCKET;
use control_socket::bind_control_socket;
use delivery::Delivery;
use directory::{Contact, Directory};
use feed_sync::FeedSync;
use handshaker::Handshaker;
use history_sync::HistorySync;
use hlc::Hlc;
use inbound::Inbound;
use membership::{Membership, PeerEvent};
use net::Channels;
use outbound::{Outbound, SendError};
use peers::Peers;
use prost::Message as _;
use removal_sync::RemovalSync;
use store::Store;

/// How long shutdown waits for in-flight calls before closing anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    /// Not a member of a network, and no way to become one was given.
    #[error("{0}")]
    Admission(String),
}

/// A small handle on a running peer, for in-process tests and benchmarks:
/// what they may look at or do without reaching into the parts.
#[derive(Debug, Clone)]
pub struct Handle {
    /// This peer's history and outbox.
    pub store: Arc<Store>,
    /// The peers it knows.
    pub directory: Arc<Directory>,
    /// Its fingerprint.
    pub fingerprint: String,
    handshaker: Arc<Handshaker>,
    outbound: Arc<Outbound>,
    history: Arc<HistorySync>,
}

impl Handle {
    /// This peer's static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.handshaker.public_key()
    }

    /// Handshake work prepared ahead: (initiations, answers) waiting.
    pub fn prepared_handshakes(&self) -> (usize, usize) {
        self.handshaker.prepared()
    }

    /// Sends `text` as `Control/Send` would.
    pub async fn send(&self, text: String, id: String) -> Result<SendResponse, SendError> {
        self.outbound.send(text, id).await
    }

    /// Pulls history from `contact` now, as a returning peer does.
    pub async fn pull_history_from(&self, contact: &Contact) -> Result<usize, Status> {
        self.history.pull_from(contact, false).await
    }

    /// Pulls `author_key`'s feed above `after_seq` from `contact` now, as
    /// feed reconciliation does (§9.6).
    pub async fn pull_feed_from(
        &self,
        contact: &Contact,
        author_key: &[u8],
        after_seq: u64,
    ) -> Result<history_sync::Pulled, Status> {
        let session = self.handshaker.initiate(contact).await?;
        self.history
            .pull_feed(contact, &session, author_key, after_seq)
            .await
    }
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
    /// A handle for in-process tests.
    pub node: Handle,
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

/// The parts of a peer, each made once and shared by the parts above it.
struct Parts {
    config: Config,
    address: String,
    fingerprint: String,
    directory: Arc<Directory>,
    peers: Arc<Peers>,
    store: Arc<Store>,
    membership: Arc<Membership>,
    handshaker: Arc<Handshaker>,
    delivery: Arc<Delivery>,
    inbound: Arc<Inbound>,
    outbound: Arc<Outbound>,
    history: Arc<HistorySync>,
    removals: Arc<RemovalSync>,
    feeds: Arc<FeedSync>,
    shutdown: CancellationToken,
}

/// What was opened in the data dir before the parts are made.
struct Opened {
    keypair: StaticKeypair,
    address: String,
    directory: Directory,
    discovery: discovery_client::Discovery,
    control_socket: PathBuf,
    store: Arc<Store>,
    admission: Admission,
    /// The Ed25519 identity key: signs admissions and every message sent.
    identity: ed25519_dalek::SigningKey,
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
    let (opened, uds) = open(&listener, &config).await?;
    let control_socket = opened.control_socket.clone();
    let parts = compose(config, opened, shutdown);
    let ttl = first_registration(&parts, &control_socket).await?;
    announce(&parts.address);
    let servers = servers::serve(&parts, listener, uds).await?;
    let tasks = spawn_background(&parts, ttl);
    info!(name = %parts.config.name, address = %parts.address, fingerprint = %parts.fingerprint, socket = %control_socket.display(), "peer serving");
    let handle = Handle {
        store: parts.store.clone(),
        directory: parts.directory.clone(),
        fingerprint: parts.fingerprint.clone(),
        handshaker: parts.handshaker.clone(),
        outbound: parts.outbound.clone(),
        history: parts.history.clone(),
    };
    let running = Running {
        address: parts.address.clone(),
        fingerprint: parts.fingerprint.clone(),
        control_socket: control_socket.clone(),
        node: handle,
        task: tokio::spawn(run_until_shutdown(parts, servers, tasks, control_socket)),
    };
    Ok(running)
}

/// Opens what the data dir holds and binds the control socket: checked
/// before anything is made, so a bad data dir fails at once.
async fn open(
    listener: &TcpListener,
    config: &Config,
) -> Result<(Opened, UnixListener), StartError> {
    if config.max_message_bytes > MAX_MESSAGE_BYTES_LIMIT {
        return Err(StartError::Setup(format!(
            "--max-message-bytes {} is over {MAX_MESSAGE_BYTES_LIMIT}: a sealed message \
             (text plus {ENVELOPE_OVERHEAD_BYTES} bytes of envelope) must fit one Noise \
             transport message of {} bytes",
            config.max_message_bytes,
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
    let directory = Directory::open(&config.name, &config.data_dir).map_err(|e| {
        StartError::Setup(format!(
            "{}: {e}",
            config.data_dir.join(directory::KNOWN_PEERS_FILE).display()
        ))
    })?;
    let discovery = discovery_client::Discovery::new(&config.discovery, CONNECT_TIMEOUT)
        .map_err(StartError::Setup)?;
    let control_socket = config.data_dir.join(CONTROL_SOCKET);
    let uds = bind_control_socket(&control_socket)
        .await
        .map_err(StartError::Setup)?;
    let store = Store::open(&config.data_dir).map_err(|e| {
        StartError::Setup(format!(
            "{}: {e}",
            config.data_dir.join(store::DB_FILE).display()
        ))
    })?;
    let store = Arc::new(store);
    let identity = identity::load_or_create_signing_key(&config.data_dir)?;
    let admission = admit(config, &keypair, identity.clone(), store.clone())?;
    let opened = Opened {
        keypair,
        address,
        directory,
        discovery,
        control_socket,
        store,
        admission,
        identity,
    };
    Ok((opened, uds))
}

/// This peer's admission: the credential its store keeps, or one made now
/// by founding a network or accepting an invitation, or open mode.
fn admit(
    config: &Config,
    keypair: &StaticKeypair,
    identity: ed25519_dalek::SigningKey,
    store: Arc<Store>,
) -> Result<Admission, StartError> {
    let refused = |e: &dyn std::fmt::Display| StartError::Admission(e.to_string());
    let kept = store.own_credential().map_err(|e| refused(&e))?;
    let static_key = keypair.public_key();
    let open = config.admission == Joining::Open;
    let kept = match (kept, open) {
        (None, true) => {
            warn!("open mode: no network; anyone who can reach this peer can chat with it");
            return Ok(Admission::open(store));
        }
        (Some(_), true) => {
            return Err(StartError::Admission(format!(
                "{} is a member of a network; --open would show no credential (use another data dir for an open peer)",
                config.data_dir.display()
            )));
        }
        (kept, false) => kept,
    };
    // A data dir whose admission its inviter never confirmed (its token was
    // used first by someone else, say) may join again with a new token.
    // (Only for the same network: a token for another is refused below.)
    let kept = kept.filter(|bytes| {
        let Joining::Join(token) = &config.admission else {
            return true;
        };
        let Some(last) = Credential::decode(bytes.as_slice())
            .ok()
            .and_then(|c| c.chain.last().cloned())
        else {
            return true;
        };
        let same_network = credential::decode_token(token)
            .ok()
            .and_then(|i| i.admission)
            .is_some_and(|a| a.network == last.network);
        let replace = same_network
            && credential::needs_confirmation(&last)
            && last.confirmation.is_empty();
        if replace {
            info!("this data dir's admission was never confirmed by its inviter; joining with the new invitation instead");
        }
        !replace
    });
    let mut credential = match (kept, &config.admission) {
        (Some(kept), joining) => {
            let credential = Credential::decode(kept.as_slice()).map_err(|e| refused(&e))?;
            if let Joining::Join(token) = joining {
                // A token for another network is not ignored in silence:
                // the peer would run as a member of the old one.
                let ours = credential::network_of(&credential).map_err(|e| refused(&e))?;
                let theirs = credential::decode_token(token)
                    .ok()
                    .and_then(|i| i.admission)
                    .and_then(|a| <[u8; 32]>::try_from(a.network.as_slice()).ok());
                if let Some(theirs) = theirs
                    && theirs != ours
                {
                    return Err(StartError::Admission(format!(
                        "{} is a member of network {}; the invitation is for network {}: start with another --data-dir to join that one (or remove {} to leave the old network)",
                        config.data_dir.display(),
                        credential::network_id(&ours),
                        credential::network_id(&theirs),
                        config.data_dir.display(),
                    )));
                }
            }
            if *joining != Joining::Member {
                info!("already a member of a network; --join / --create-network ignored");
            }
            credential
        }
        (None, Joining::Member | Joining::Open) => {
            return Err(StartError::Admission(format!(
                "{} is not a member of any network: start it with --join TOKEN (a member makes one with `chat invite {}`), or --create-network to found one (--open: no network, for experiments)",
                config.name, config.name
            )));
        }
        (None, Joining::CreateNetwork) => {
            credential::found(&identity, &config.name, &static_key, checks::now_ms())
        }
        (None, Joining::Join(token)) => {
            let invitation = credential::decode_token(token).map_err(|e| refused(&e))?;
            credential::join(&invitation, &identity, &config.name, &static_key)
                .map_err(|e| refused(&format!("cannot join with this invitation: {e}")))?
        }
    };
    // The identity key certifies the static key now in use (it may have
    // been replaced since the admission).
    credential::certify_static_key(&identity, &mut credential, &static_key);
    let network = credential::network_of(&credential).map_err(|e| refused(&e))?;
    // Our own credential must admit us, with this name and key (its last
    // link may wait for the inviter's confirmation: a bearer token's use).
    credential::verify_credential_unconfirmed(&network, &credential, &config.name, &static_key)
        .map_err(|e| {
            refused(&format!(
                "the credential in {} does not admit this peer: {e}",
                config.data_dir.display()
            ))
        })?;
    store
        .save_own_credential(&credential.encode_to_vec())
        .map_err(|e| refused(&e))?;
    let admission = Admission::member(identity, credential, store).map_err(|e| refused(&e))?;
    // A member removed (or that left) stays out: its data dir can no longer
    // take part, and saying so beats retrying against every refusal.
    if let Some(removal) = admission.own_removal() {
        return Err(StartError::Admission(format!(
            "{} is no longer a member of network {}: {removal}. Its history stays in {}; to take part again, ask a member for a new invitation (`chat invite {}`) and start with a new --data-dir and --join",
            config.name,
            credential::network_id(&network),
            config.data_dir.display(),
            config.name,
        )));
    }
    info!(network = %credential::network_id(&network), "member of network");
    Ok(admission)
}

/// Makes every part, bottom up, and routes membership's events.
fn compose(config: Config, opened: Opened, shutdown: CancellationToken) -> Parts {
    let keypair = Arc::new(opened.keypair);
    let fingerprint = chat_proto::keys::fingerprint(&keypair.public_key());
    let address = opened.address;
    let directory = Arc::new(opened.directory);
    let store = opened.store;
    let admission = Arc::new(opened.admission);
    let peers = Arc::new(Peers::new());
    match store.handshake_stamps() {
        Ok(stamps) => peers.restore_stamps(stamps),
        Err(e) => {
            warn!(error = %e, "cannot read the handshake stamps; replays are refused from now on only")
        }
    }
    let channels = Arc::new(Channels::new());
    let hlc = Arc::new(Hlc::new());
    // Continue after everything already stored, even if the wall clock
    // went back while the peer was down.
    hlc.observe(store.max_hlc().unwrap_or(0));
    let started_hlc = hlc.tick(checks::now_ms());
    let membership = Arc::new(Membership::new(
        &config.name,
        &address,
        keypair.clone(),
        opened.discovery,
        directory.clone(),
        shutdown.clone(),
    ));
    let handshaker = Arc::new(Handshaker::new(
        &config,
        &address,
        keypair,
        directory.clone(),
        peers.clone(),
        store.clone(),
        channels.clone(),
        membership.clone(),
        admission.clone(),
    ));
    let delivery = Arc::new(Delivery::new(
        crate::store::outbox::OutboxLimits {
            per_peer: config.outbox_limit,
            total: config.outbox_total_limit,
        },
        directory.clone(),
        peers.clone(),
        store.clone(),
        handshaker.clone(),
        channels.clone(),
    ));
    let removals = Arc::new(RemovalSync::new(
        handshaker.clone(),
        peers.clone(),
        channels.clone(),
        membership.clone(),
        directory.clone(),
    ));
    // Feed reconciliation needs history sync, made below; events may
    // arrive before it is, and then wait for the next contact.
    let feed_sync: Arc<OnceLock<Arc<FeedSync>>> = Arc::default();
    let own_key = opened.identity.verifying_key().to_bytes();
    let authors = Arc::new(Authors::new(
        admission.clone(),
        store.clone(),
        &config.name,
        own_key,
    ));
    route_events(
        &membership,
        (&delivery, &peers, &store, &directory),
        (&removals, &feed_sync),
        (&authors, &config.name, own_key),
    );
    let head = match store.feed_head(&own_key) {
        Ok(head) => head.map(|(seq, authored)| (seq, authorship::hash(&authored))),
        Err(e) => {
            warn!(error = %e, "cannot read this peer's last message; its numbering starts again");
            None
        }
    };
    let author = Arc::new(Author::new(
        opened.identity,
        admission.network_key(),
        &config.name,
        &fingerprint,
        head,
    ));
    let inbound = Arc::new(Inbound::new(
        &config,
        peers.clone(),
        store.clone(),
        hlc.clone(),
        authors.clone(),
        admission.network_key(),
    ));
    let outbound = Arc::new(Outbound::new(
        &config,
        author.clone(),
        hlc.clone(),
        store.clone(),
        delivery.clone(),
    ));
    let history = Arc::new(HistorySync::new(
        &config,
        directory.clone(),
        handshaker.clone(),
        channels.clone(),
        inbound.clone(),
        store.clone(),
        hlc,
        started_hlc,
        authors,
        author,
    ));
    let feeds = Arc::new(FeedSync::new(
        history.clone(),
        handshaker.clone(),
        peers.clone(),
        channels.clone(),
        directory.clone(),
        delivery.clone(),
    ));
    let _ = feed_sync.set(feeds.clone());
    Parts {
        config,
        address,
        fingerprint,
        directory,
        peers,
        store,
        membership,
        handshaker,
        delivery,
        inbound,
        outbound,
        history,
        removals,
        feeds,
        shutdown,
    }
}

/// Where membership's peer events go: sessions are forgotten where the
/// peer's sessions died, and the outbox is retried where it can take them.
fn route_events(
    membership: &Arc<Membership>,
    (delivery, peers, store, directory): (
        &Arc<Delivery>,
        &Arc<Peers>,
        &Arc<Store>,
        &Arc<Directory>,
    ),
    (removals, feed_sync): (&Arc<RemovalSync>, &Arc<OnceLock<Arc<FeedSync>>>),
    (authors, name, own_key): (&Arc<Authors>, &str, [u8; 32]),
) {
    let (authors, name) = (authors.clone(), name.to_owned());
    let (delivery, peers, store, directory, removals, feed_sync) = (
        delivery.clone(),
        peers.clone(),
        store.clone(),
        directory.clone(),
        removals.clone(),
        feed_sync.clone(),
    );
    let membership_ref = Arc::downgrade(membership);
    let said_removed = std::sync::atomic::AtomicBool::new(false);
    let compare_feeds = move |name: String| {
        if let Some(feeds) = feed_sync.get() {
            feeds.exchange_later(name);
        }
    };
    membership.route_events(move |event| match event {
        PeerEvent::Confirmed => {
            // A member now: its own messages can be introduced to others;
            // it meets every listed name (they may have tried it while it
            // was not one yet) and catches up with everyone.
            authors.learn_own(&name, own_key);
            let contacts = directory.all();
            info!(contacts = contacts.len(), "a member now: meeting every listed name");
            let delivery = delivery.clone();
            let compare_feeds = compare_feeds.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    futures::future::join_all(contacts.into_iter().map(|contact| {
                        let delivery = delivery.clone();
                        let compare_feeds = compare_feeds.clone();
                        async move {
                            if contact.online && !contact.dropped {
                                delivery.meet(&contact).await;
                            }
                            delivery.retry(&contact.name);
                            compare_feeds(contact.name);
                        }
                    }))
                    .await;
                });
            }
        }
        PeerEvent::Back(name) => {
            delivery.retry(&name);
            // Back: whatever it missed, or we did, is pulled now.
            compare_feeds(name);
        }
        PeerEvent::FeedsDiffer(name) => compare_feeds(name),
        PeerEvent::Moved(name) => {
            // Most often a member that restarted (a member that left stays
            // listed): back, at a new address.
            peers.forget_peer(&name);
            delivery.retry(&name);
            compare_feeds(name);
        }
        PeerEvent::KeyChanged(name) => {
            peers.forget_peer(&name);
            delivery.retry(&name);
        }
        PeerEvent::Left(name) => {
            // Discovery says it left. Discovery is not the peer (a
            // malicious or confused one can say so of anyone), and a member
            // is a member while it is offline: a known member stays in the
            // list, offline, and what is sent meanwhile is queued for it;
            // what is queued stays queued until it comes back. Only a name
            // that is neither, with nothing queued, is forgotten.
            peers.forget_peer(&name);
            if delivery.keeps_while_away(&name) {
                return;
            }
            match store.pending_count(&name) {
                Ok(0) => {
                    directory.remove(&name);
                }
                Ok(queued) => {
                    info!(peer = %name, queued, "peer left; its queued messages wait until it is back")
                }
                Err(e) => warn!(peer = %name, error = %e, "cannot count queued messages"),
            }
        }
        PeerEvent::Expired(name) => peers.forget_peer(&name),
        PeerEvent::RemovalsDiffer(name) => removals.pull_later(name),
        PeerEvent::SelfRemoved => {
            // Said once; nothing queued can ever be delivered, and this
            // peer stops registering (members stop listing it).
            if said_removed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            match delivery.own_removal() {
                Some(left) if left.left => {
                    info!(reason = %left, "this peer left the network for good: it stops sending and leaves Discovery")
                }
                removal => {
                    let why = removal.map(|r| r.to_string()).unwrap_or_default();
                    error!(reason = %why, "this peer is no longer a member of the network: it stops sending and leaves Discovery; to take part again, ask a member for a new invitation and start with a new data dir")
                }
            }
            let mut dropped = 0;
            for peer in store.peers_with_pending() {
                dropped += store.clear_pending(&peer).unwrap_or(0);
                peers.forget_peer(&peer);
            }
            if dropped > 0 {
                warn!(dropped, "discarded the messages queued for other members: this peer is no longer a member");
            }
            if let (Some(membership), Ok(runtime)) =
                (membership_ref.upgrade(), tokio::runtime::Handle::try_current())
            {
                runtime.spawn(async move { membership.leave().await });
            }
        }
        PeerEvent::Removed(name) => {
            // A verified removal: nothing more is owed to it.
            peers.forget_peer(&name);
            match store.clear_pending(&name) {
                Ok(0) => {}
                Ok(dropped) => {
                    warn!(peer = %name, dropped, "discarded messages queued for a member removed from the network")
                }
                Err(e) => warn!(peer = %name, error = %e, "cannot discard queued messages"),
            }
        }
    });
}

/// First registration now, so a started peer is listed; if Discovery is
/// down, keep trying in the background (None). A refusal for good (the
/// name is taken, or invalid) stops the start.
async fn first_registration(
    parts: &Parts,
    control_socket: &Path,
) -> Result<Option<Duration>, StartError> {
    match parts.membership.register().await {
        Ok(ttl) => Ok(Some(ttl)),
        // A member's name is its own by admission: someone else holding it
        // at Discovery must not keep it from running. It runs as when
        // Discovery is down (cached members, pinned keys, reaching and
        // reached by handshake) and keeps trying to register.
        Err(s)
            if s.code() == tonic::Code::AlreadyExists
                && !parts.handshaker.admission().is_open() =>
        {
            error!(name = %parts.config.name, reason = s.message(), "another key holds this name at Discovery; running unlisted: members who know this peer reach it and it reaches them, and it registers as soon as the name is free");
            parts.membership.name_taken_said();
            Ok(None)
        }
        Err(s)
            if s.code() == tonic::Code::AlreadyExists
                || s.code() == tonic::Code::InvalidArgument =>
        {
            let _ = std::fs::remove_file(control_socket);
            Err(StartError::Refused {
                name: parts.config.name.clone(),
                reason: s.message().to_owned(),
            })
        }
        // Full (outsiders may have filled it): not now. Discovery still
        // says who is online, and members take this peer by its credential.
        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
            warn!(discovery = %parts.config.discovery, reason = %s.message(), "Discovery refused to register this peer now; running unlisted (members take it by its credential) and retrying");
            if let Err(e) = parts.membership.refresh().await {
                debug!(error = %e.message(), "could not list the members either");
            }
            Ok(None)
        }
        Err(s) => {
            warn!(discovery = %parts.config.discovery, error = %s.message(), "Discovery unreachable; will keep trying");
            Ok(None)
        }
    }
}

/// The background tasks: keeping the lease, following membership, the
/// outbox worker, the member cache, and catching up on missed history.
fn spawn_background(parts: &Parts, ttl: Option<Duration>) -> Vec<JoinHandle<()>> {
    let discovery_down = ttl.is_none();
    let history = parts.history.clone();
    vec![
        tokio::spawn(parts.membership.clone().keep_registered(ttl)),
        tokio::spawn(parts.membership.clone().follow()),
        tokio::spawn(delivery::outbox_worker::run(
            parts.delivery.clone(),
            parts.store.clone(),
            parts.shutdown.clone(),
        )),
        tokio::spawn(parts.membership.clone().flush_cache()),
        tokio::spawn(forget_ghosts(
            parts.directory.clone(),
            parts.store.clone(),
            parts.peers.clone(),
            parts.config.forget_offline_after,
            parts.shutdown.clone(),
        )),
        // Catch up on what was said while this peer was away (or before it
        // joined); with Discovery down, also learn the network from that peer.
        tokio::spawn(catch_up(history, discovery_down, parts.shutdown.clone())),
        // And compare feeds with every member in touch, every half minute.
        tokio::spawn(parts.feeds.clone().run_periodically(parts.shutdown.clone())),
        // A newcomer that joined with a bearer token: its inviter confirms it.
        tokio::spawn(await_confirmation(
            parts.handshaker.clone(),
            parts.directory.clone(),
            parts.shutdown.clone(),
        )),
    ]
}

/// Longest wait between two requests for the inviter's confirmation.
const CONFIRMATION_MAX_WAIT: Duration = Duration::from_secs(30);

/// While this peer's admission waits for its inviter's confirmation (it
/// joined with a bearer token), handshakes with the inviter, which confirms
/// the first identity that used its invitation; tries again, waiting twice
/// as long each time up to half a minute, and says what it waits for.
async fn await_confirmation(
    handshaker: Arc<Handshaker>,
    directory: Arc<Directory>,
    shutdown: CancellationToken,
) {
    let mut wait = Duration::from_millis(200);
    let mut said = false;
    while let Some(inviter) = handshaker.admission().own_pending() {
        match directory.get(&inviter) {
            Some(contact) => match handshaker.initiate(&contact).await {
                Ok(_) if handshaker.admission().own_pending().is_none() => return,
                Ok(_) => {
                    warn!(inviter = %inviter, "the inviter answered without confirming the invitation (an older version?); asking again")
                }
                Err(status) => {
                    warn!(inviter = %inviter, reason = %status.message(), "the inviter did not confirm the invitation; asking again");
                    if status.code() == tonic::Code::PermissionDenied {
                        handshaker.admission().set_pending_refusal(format!(
                            "{inviter} refused: {}",
                            status.message()
                        ));
                    }
                }
            },
            None if !said => {
                info!(inviter = %inviter, "not a member yet: waiting for the inviter to be online to confirm the invitation");
                said = true;
            }
            None => {}
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
        wait = (wait * 2).min(CONFIRMATION_MAX_WAIT);
    }
}

/// Longest wait between two attempts to catch up on history.
const CATCH_UP_MAX_WAIT: Duration = Duration::from_secs(60);

/// Pulls missed history from one peer; while no peer answers (none is up
/// yet, or they do not accept this peer yet: a new key not yet trusted),
/// tries again, waiting twice as long each time up to a minute.
async fn catch_up(history: Arc<HistorySync>, want_members: bool, shutdown: CancellationToken) {
    let mut wait = Duration::from_secs(1);
    while history.pull_missed_history(want_members).await.is_none() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = (wait * 2).min(CATCH_UP_MAX_WAIT);
    }
}

/// Forgets peers offline for longer than `grace` (registrations that
/// expired and never came back): their contacts, cached entries and
/// queued messages go, so ghosts do not pile up in the list, the cache and
/// every send. Checks every `grace / 4` (at most a minute).
async fn forget_ghosts(
    directory: Arc<Directory>,
    store: Arc<Store>,
    peers: Arc<Peers>,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let every = (grace / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let ghosts = directory.forget_offline(grace);
        for name in &ghosts {
            peers.forget_peer(name);
            let dropped = store.clear_pending(name).unwrap_or(0);
            info!(peer = %name, offline_for_at_least = ?grace, dropped_queued = dropped, "forgot a peer that stayed offline");
        }
        if !ghosts.is_empty() {
            directory.cache_changed();
        }
    }
}

/// Serves until shutdown (or a server fails), then stops in order: leave
/// Discovery while the network is still up, stop serving with a bounded
/// grace period for in-flight calls, stop the background tasks, flush.
async fn run_until_shutdown(
    parts: Parts,
    servers: servers::Servers,
    tasks: Vec<JoinHandle<()>>,
    socket: PathBuf,
) {
    let servers::Servers {
        mut done,
        stop_serving,
    } = servers;
    tokio::select! {
        // Only if a server failed on its own: nothing has stopped them yet.
        _ = &mut done => {}
        _ = parts.shutdown.cancelled() => {
            // The Leave has a deadline of its own.
            parts.membership.leave().await;
            stop_serving.cancel();
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut done).await.is_err() {
                warn!("in-flight calls did not finish within the grace period; closing them");
                // Dropping a task's handle does not stop it: without this the
                // listener would stay bound until the last call ended.
                done.abort();
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    parts.directory.flush_cache();
    let _ = std::fs::remove_file(&socket);
    info!("peer stopped");
}

#[cfg(test)]
mod testkit;
