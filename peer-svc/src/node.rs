//! The peer itself: its identity, its view of the network, its sessions and
//! its history, and the operations on them — sending to everyone, accepting a
//! handshake, opening a delivered envelope. The gRPC services are thin glue
//! over these methods.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chat_noise::{INITIATION_MIN_LEN, NoiseError, Responder, StaticKeypair};
use chat_proto::v1::{
    ChatMessage, DeliverRequest, DeliverResponse, DeliverResult, Delivery, Envelope,
    HandshakePayload, PeerHandshakeRequest, SealedMessage, SendResponse,
    delivery::Status as DeliveryStatus, peer_client::PeerClient,
};
use prost::Message;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, transport::Channel};
use tracing::{debug, info, warn};

use crate::{
    config::Config,
    console,
    directory::{Contact, Directory, Refusal},
    error::PeerError,
    hlc::Hlc,
    session::{Role, Session, Sessions, envelope_aad},
    store::Store,
};

/// The Noise prologue: names this protocol and its version, so a peer of
/// another version fails the handshake instead of misreading messages.
pub const PROLOGUE: &[u8] = b"p2p-chat/1 Noise_IK_25519_ChaChaPoly_SHA256";

/// Deadline of one Deliver call: generous for loopback or a LAN, short enough
/// that a dead peer does not hold a `chat send` for long.
pub const DELIVER_TIMEOUT: Duration = Duration::from_secs(3);

/// Deadline of one handshake round trip.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long to wait for a TCP connection to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How far ahead of our clock a received message's clock may be: generous
/// for badly set clocks, small enough that nobody can push ours far ahead.
pub const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(60);

/// Least time between two member-list refreshes caused by handshakes from
/// names we do not know.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Longest client-supplied message id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Room for the envelope's protobuf framing and AEAD tag around the text.
pub const ENVELOPE_OVERHEAD_BYTES: usize = 4 * 1024;

/// Live messages buffered for `Control/Subscribe` streams; a subscriber that
/// falls further behind misses live lines (history still has them).
const SUBSCRIBE_BUFFER: usize = 1024;

/// One peer of the chat.
#[derive(Debug)]
pub struct Node {
    /// Configuration.
    pub config: Config,
    keypair: Arc<StaticKeypair>,
    /// Handshake work prepared ahead of time.
    ahead: Arc<crate::ahead::HandshakeAhead>,
    /// This peer's fingerprint.
    pub fingerprint: String,
    /// The address other peers dial to reach this one.
    pub address: String,
    /// Known peers and pins.
    pub directory: Directory,
    /// Established sessions.
    pub sessions: Sessions,
    /// Messages sent and received, and the outbox.
    pub store: Store,
    /// The clock that orders history.
    pub hlc: Hlc,
    /// The clock when this peer started: history synced from others that
    /// is newer than this was sent while we were up, and is shown live.
    pub started_hlc: u64,
    /// Peers whose queued messages should be retried now (they came back).
    outbox_retry: Mutex<std::collections::HashSet<String>>,
    /// Wakes the outbox worker.
    pub outbox_wake: tokio::sync::Notify,
    /// Handshakes per remote address.
    handshake_limit: crate::rate::Limiter<std::net::IpAddr>,
    /// The last handshake timestamp this peer issued (they only increase).
    last_stamp_issued: std::sync::atomic::AtomicU64,
    /// The newest handshake timestamp accepted from each peer: an older or
    /// equal one is a replayed first message.
    last_stamp_seen: Mutex<HashMap<String, u64>>,
    /// When an unknown initiator last made us ask Discovery for the list.
    last_refresh: Mutex<Option<tokio::time::Instant>>,
    /// Envelopes per session.
    delivery_limit: crate::rate::Limiter<chat_noise::SessionId>,
    incoming: broadcast::Sender<ChatMessage>,
    /// The live console on stdout, when printing messages.
    console: Option<console::Console>,
    channels: Mutex<HashMap<String, Channel>>,
    /// Delivery streams, by peer address.
    pipes: crate::pipe::Pipes,
    /// One handshake at a time per peer, so concurrent sends share its result.
    handshaking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The Discovery client (lazy connection).
    pub discovery: crate::replicas::Replicas,
    /// The lease held at Discovery.
    pub lease: Mutex<Option<(String, String)>>,
    /// Set once `chat leave` ran: do not register again.
    pub leaving: AtomicBool,
    /// Cancelled to stop the peer.
    pub shutdown: CancellationToken,
}

/// A message ready to send: stamped, not yet delivered.
#[derive(Debug, Clone)]
pub struct Prepared {
    message: ChatMessage,
    /// Already in the store (a retried Send with the same id).
    stored: bool,
}

/// Describes a status from another peer for a delivery report.
fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A delivery report line.
fn report(contact: &Contact, status: DeliveryStatus, error: String) -> Delivery {
    Delivery {
        peer: contact.name.clone(),
        status: status.into(),
        error,
    }
}

/// Failures that a later attempt may overcome (the peer is down, slow, or
/// does not know us yet), as opposed to the peer refusing the message itself.
fn retryable(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::InvalidArgument | Code::ResourceExhausted | Code::OutOfRange
    )
}

impl Node {
    /// A peer with identity `keypair`, reachable at `address`.
    pub fn new(
        config: Config,
        keypair: StaticKeypair,
        address: String,
        directory: Directory,
        store: Store,
        discovery: crate::replicas::Replicas,
        shutdown: CancellationToken,
    ) -> Self {
        let fingerprint = chat_proto::keys::fingerprint(&keypair.public_key());
        let handshake_limit = crate::rate::Limiter::per_second(config.handshakes_per_sec);
        let delivery_limit = crate::rate::Limiter::per_second(config.deliveries_per_sec);
        let hlc = Hlc::new();
        // Continue after everything already stored, even if the wall clock
        // went back while the peer was down.
        hlc.observe(store.max_hlc().unwrap_or(0));
        let started_hlc = hlc.tick(chrono::Utc::now().timestamp_millis().max(0) as u64);
        let console = config.print_messages.then(console::Console::start);
        let keypair = Arc::new(keypair);
        Self {
            config,
            ahead: crate::ahead::HandshakeAhead::new(keypair.clone(), PROLOGUE),
            keypair,
            fingerprint,
            address,
            directory,
            sessions: Sessions::new(),
            store,
            hlc,
            started_hlc,
            outbox_retry: Mutex::new(Default::default()),
            outbox_wake: tokio::sync::Notify::new(),
            handshake_limit,
            delivery_limit,
            last_stamp_issued: std::sync::atomic::AtomicU64::new(0),
            last_stamp_seen: Mutex::new(HashMap::new()),
            last_refresh: Mutex::new(None),
            incoming: broadcast::channel(SUBSCRIBE_BUFFER).0,
            console,
            channels: Mutex::new(HashMap::new()),
            pipes: crate::pipe::Pipes::default(),
            handshaking: Mutex::new(HashMap::new()),
            discovery,
            lease: Mutex::new(None),
            leaving: AtomicBool::new(false),
            shutdown,
        }
    }

    /// Handshake work prepared ahead: (initiations, answers) waiting.
    pub fn prepared_handshakes(&self) -> (usize, usize) {
        self.ahead.prepared()
    }

    /// This peer's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// This peer's static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.keypair.public_key()
    }

    /// Live incoming messages.
    pub fn subscribe(&self) -> broadcast::Receiver<ChatMessage> {
        self.incoming.subscribe()
    }

    /// A (lazily connecting) channel to `address`, shared by all calls to it.
    pub fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::invalid_argument(format!("bad peer address {address}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    // ----- sending -------------------------------------------------------

    /// `Control/Send`: stores the message, then encrypts it separately for
    /// every connected peer and delivers to all of them at once.
    pub async fn send(&self, text: String, id: String) -> Result<SendResponse, PeerError> {
        let prepared = self.prepare(text, id)?;
        self.send_prepared(prepared).await
    }

    /// The first half of a Send, done in the caller's order: checks the
    /// text, and stamps a new message with the next clock value (or finds
    /// the one already sent under this id). `SendStream` prepares in
    /// request order, so the history keeps that order.
    pub fn prepare(&self, text: String, id: String) -> Result<Prepared, PeerError> {
        if text.is_empty() {
            return Err(PeerError::InvalidArgument("text must not be empty".into()));
        }
        if text.len() > self.config.max_message_bytes {
            return Err(PeerError::ResourceExhausted(format!(
                "text is {} bytes; the limit is {} bytes (--max-message-bytes)",
                text.len(),
                self.config.max_message_bytes
            )));
        }
        Ok(match self.existing_own_message(&id)? {
            Some(stored) => Prepared {
                message: stored,
                stored: true,
            },
            None => {
                let now = chrono::Utc::now();
                let hlc = self.hlc.tick(now.timestamp_millis().max(0) as u64);
                let id = if id.is_empty() {
                    format!(
                        "{}-{hlc:016x}",
                        self.fingerprint.replace(' ', "")[..8].to_owned()
                    )
                } else {
                    id
                };
                let message = ChatMessage {
                    id,
                    sender: self.name().to_owned(),
                    sender_fingerprint: self.fingerprint.clone(),
                    sent_at: Some(prost_types::Timestamp {
                        seconds: now.timestamp(),
                        nanos: (now.timestamp_subsec_millis() * 1_000_000) as i32,
                    }),
                    text,
                    hlc,
                };
                Prepared {
                    message,
                    stored: false,
                }
            }
        })
    }

    /// The second half of a Send: stores the message (committed before
    /// anything is sent) and delivers it to every peer at once.
    pub async fn send_prepared(&self, prepared: Prepared) -> Result<SendResponse, PeerError> {
        self.send_prepared_batch(vec![prepared])
            .await
            .pop()
            .expect("one answer per message")
    }

    /// Sends several prepared messages: stores them in one transaction,
    /// then delivers each to every peer, all at once. One answer per
    /// message, in order.
    pub async fn send_prepared_batch(
        &self,
        prepared: Vec<Prepared>,
    ) -> Vec<Result<SendResponse, PeerError>> {
        let fresh: Vec<ChatMessage> = prepared
            .iter()
            .filter(|p| !p.stored)
            .map(|p| p.message.clone())
            .collect();
        let new = match self.store.insert_batch_grouped(fresh).await {
            Ok(new) => new,
            Err(e) => {
                let why = format!("cannot store the message: {e}");
                return prepared
                    .iter()
                    .map(|_| Err(PeerError::Internal(why.clone())))
                    .collect();
            }
        };
        let mut new = new.into_iter();
        let mut messages = Vec::with_capacity(prepared.len());
        for Prepared { message, stored } in prepared {
            if !stored && new.next() == Some(false) {
                // The same id was sent concurrently: deliver what was stored.
                match self.existing_own_message(&message.id) {
                    Ok(Some(first)) => messages.push(Ok(first)),
                    Ok(None) => messages.push(Ok(message)),
                    Err(e) => messages.push(Err(e)),
                }
            } else {
                messages.push(Ok(message));
            }
        }
        futures::future::join_all(messages.into_iter().map(|m| async move {
            let message = m?;
            Ok(self.deliver_everywhere(message).await)
        }))
        .await
    }

    /// Delivers a stored message to every peer at once.
    async fn deliver_everywhere(&self, message: ChatMessage) -> SendResponse {
        let targets: Vec<Contact> = self
            .directory
            .all()
            .into_iter()
            .filter(|c| !c.dropped)
            .collect();
        // Encoded once; each recipient's copy is sealed from it.
        let outgoing = crate::pipe::Outgoing::of(&message);
        let deliveries = futures::future::join_all(
            targets
                .iter()
                .map(|c| self.deliver_to(c, &message, &outgoing)),
        )
        .await;
        SendResponse {
            id: message.id,
            deliveries,
        }
    }

    /// For a retried Send with the same id: the message already stored.
    fn existing_own_message(&self, id: &str) -> Result<Option<ChatMessage>, PeerError> {
        if id.is_empty() {
            return Ok(None);
        }
        if id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
            return Err(PeerError::InvalidArgument(format!(
                "id must be at most {MAX_ID_BYTES} bytes without control characters"
            )));
        }
        self.store
            .get(self.name(), id)
            .map_err(|e| PeerError::Internal(format!("cannot read the store: {e}")))
    }

    /// Delivers `message` to one peer and reports how it went: delivered,
    /// queued in the outbox (the peer is offline, unreachable, or still has
    /// older messages queued, which go first), refused, or failed.
    async fn deliver_to(
        &self,
        contact: &Contact,
        message: &ChatMessage,
        outgoing: &crate::pipe::Outgoing,
    ) -> Delivery {
        if contact.key_changed {
            return report(
                contact,
                DeliveryStatus::Refused,
                format!(
                    "{}'s key changed (now {}); compare fingerprints, then `chat trust {}`",
                    contact.name, contact.fingerprint, contact.name
                ),
            );
        }
        if !contact.online {
            return self.queue(
                contact,
                message,
                "offline (Discovery does not list it now)".into(),
            );
        }
        if self.store.has_pending(&contact.name) {
            return self.queue(contact, message, "earlier messages are still queued".into());
        }
        match tokio::time::timeout(DELIVER_TIMEOUT, self.try_deliver(contact, outgoing)).await {
            Ok(Ok(())) => report(contact, DeliveryStatus::Delivered, String::new()),
            Ok(Err(status)) if !retryable(&status) => {
                warn!(peer = %contact.name, error = %describe(&status), "delivery refused");
                report(contact, DeliveryStatus::Failed, describe(&status))
            }
            Ok(Err(status)) => {
                debug!(peer = %contact.name, error = %describe(&status), "delivery failed; queueing");
                self.queue(contact, message, describe(&status))
            }
            Err(_) => self.queue(
                contact,
                message,
                format!("no answer within {DELIVER_TIMEOUT:?}"),
            ),
        }
    }

    /// Puts `message` in `contact`'s outbox and reports it as queued.
    fn queue(&self, contact: &Contact, message: &ChatMessage, reason: String) -> Delivery {
        let limit = self.config.outbox_limit;
        match self.store.enqueue(&contact.name, message, limit) {
            Ok(0) => report(
                contact,
                DeliveryStatus::Queued,
                format!("{reason}; queued, retrying until delivered"),
            ),
            Ok(dropped) => {
                warn!(peer = %contact.name, dropped, limit, "outbox full; dropped the oldest queued messages");
                report(
                    contact,
                    DeliveryStatus::Queued,
                    format!(
                        "{reason}; queued, but the outbox for {} is full ({limit}): dropped the {dropped} oldest",
                        contact.name
                    ),
                )
            }
            Err(e) => report(
                contact,
                DeliveryStatus::Failed,
                format!("{reason}; cannot queue: {e}"),
            ),
        }
    }

    /// Asks the outbox worker to retry `peer` now (it is back).
    pub fn retry_outbox(&self, peer: &str) {
        self.outbox_retry
            .lock()
            .expect("outbox lock")
            .insert(peer.to_owned());
        self.outbox_wake.notify_one();
    }

    /// The peers to retry now, taken once.
    pub fn take_outbox_retries(&self) -> std::collections::HashSet<String> {
        std::mem::take(&mut *self.outbox_retry.lock().expect("outbox lock"))
    }

    /// Delivers what is queued for `peer`, oldest first, until the queue is
    /// empty (true) or a delivery fails (false: retry later).
    pub async fn flush_outbox(&self, peer: &str) -> bool {
        /// Messages read from the outbox at a time.
        const BATCH: usize = 256;
        let Some(contact) = self.directory.get(peer) else {
            return false; // unknown until it registers again
        };
        if contact.dropped {
            let n = self.store.clear_pending(peer).unwrap_or(0);
            info!(
                peer,
                dropped = n,
                "peer was dropped; its queued messages are discarded"
            );
            return true;
        }
        if !contact.online || contact.key_changed {
            return false;
        }
        let mut delivered = 0usize;
        loop {
            let batch = match self.store.pending(peer, BATCH) {
                Ok(b) => b,
                Err(e) => {
                    warn!(peer, error = %e, "cannot read the outbox");
                    return false;
                }
            };
            if batch.is_empty() {
                if delivered > 0 {
                    info!(peer, delivered, "queued messages delivered");
                }
                return true;
            }
            // The whole page at once: the deliveries share the peer's
            // stream, so they travel in a few batches instead of one round
            // trip each. A message that fails stays queued for the next try;
            // those delivered are taken off the outbox either way.
            let outcomes = futures::future::join_all(batch.iter().map(|message| {
                let outgoing = crate::pipe::Outgoing::of(message);
                let contact = &contact;
                async move {
                    tokio::time::timeout(DELIVER_TIMEOUT, self.try_deliver(contact, &outgoing))
                        .await
                }
            }))
            .await;
            let mut failed = false;
            for (message, outcome) in batch.iter().zip(outcomes) {
                match outcome {
                    Ok(Ok(())) => delivered += 1,
                    Ok(Err(status)) if !retryable(&status) => {
                        warn!(peer, id = %message.id, error = %describe(&status), "queued message refused by the peer; dropping it");
                    }
                    _ => {
                        failed = true;
                        continue;
                    }
                }
                if let Err(e) = self.store.delivered(peer, message) {
                    warn!(peer, error = %e, "cannot update the outbox");
                    return false;
                }
            }
            if failed {
                if delivered > 0 {
                    info!(peer, delivered, "some queued messages delivered");
                }
                return false;
            }
        }
    }

    /// Seals and delivers on the current session; if the peer no longer
    /// knows it (e.g. it restarted), handshakes again and retries once.
    async fn try_deliver(
        &self,
        contact: &Contact,
        message: &crate::pipe::Outgoing,
    ) -> Result<(), Status> {
        let session = match self.sessions.sending(&contact.name) {
            Some(s) => s,
            None => self.handshake(contact).await?,
        };
        match self.deliver_on(&session, contact, message).await {
            Err(status) if status.code() == Code::Unauthenticated => {
                debug!(peer = %contact.name, reason = status.message(), "session refused; handshaking again");
                // Concurrent failures on the same old session share one
                // new handshake: a session another caller just made is kept.
                self.sessions.forget_sending_if(&contact.name, &session);
                let session = match self.sessions.sending(&contact.name) {
                    Some(fresh) if fresh.id() != session.id() => fresh,
                    _ => self.handshake(contact).await?,
                };
                self.deliver_on(&session, contact, message).await
            }
            other => other,
        }
    }

    /// Delivers on `session`: through the peer's delivery stream, or with
    /// unary Deliver to a peer that has none.
    async fn deliver_on(
        &self,
        session: &Arc<Session>,
        contact: &Contact,
        message: &crate::pipe::Outgoing,
    ) -> Result<(), Status> {
        if self.pipes.streams_to(&contact.address) {
            match self
                .pipes
                .deliver(
                    self.name(),
                    &contact.address,
                    || self.channel(&contact.address),
                    session.clone(),
                    message.clone(),
                )
                .await
            {
                Err(status) if status.code() == Code::Unimplemented => {}
                other => return other,
            }
        }
        let mut request = tonic::Request::new(DeliverRequest {
            envelope: Some(crate::pipe::seal(self.name(), session, message)?),
        });
        request.set_timeout(DELIVER_TIMEOUT);
        PeerClient::new(self.channel(&contact.address)?)
            .deliver(request)
            .await?;
        Ok(())
    }

    /// Runs a Noise IK handshake with `contact` now and makes it the session
    /// to send on. Concurrent callers for the same peer share one handshake.
    pub async fn handshake(&self, contact: &Contact) -> Result<Arc<Session>, Status> {
        self.handshake_with(contact, false).await
    }

    /// Like [`Node::handshake`]; with `want_members` the responder also sends
    /// the peers it knows, which join this peer's list (used when Discovery
    /// is unreachable at start).
    pub async fn handshake_with(
        &self,
        contact: &Contact,
        want_members: bool,
    ) -> Result<Arc<Session>, Status> {
        let lock = self
            .handshaking
            .lock()
            .expect("handshaking lock")
            .entry(contact.name.clone())
            .or_default()
            .clone();
        let asked_at = tokio::time::Instant::now();
        let _guard = lock.lock().await;
        if let Some(s) = self.sessions.sending(&contact.name)
            && s.established >= asked_at
            && !want_members
        {
            return Ok(s);
        }
        let payload = HandshakePayload {
            name: self.name().to_owned(),
            address: self.address.clone(),
            want_members,
            members: Vec::new(),
            timestamp_micros: self.next_handshake_stamp(),
        }
        .encode_to_vec();
        let (message, waiting) = self
            .ahead
            .initiation(contact.public_key)
            .write_message(&payload)
            .map_err(|e| Status::failed_precondition(format!("cannot start a handshake: {e}")))?;
        // The next handshake with this peer (its rekey) starts from work
        // done while this one waits for the answer.
        self.ahead.prepare_initiation(contact.public_key);
        let mut request = tonic::Request::new(PeerHandshakeRequest { message });
        request.set_timeout(HANDSHAKE_TIMEOUT);
        let response = PeerClient::new(self.channel(&contact.address)?)
            .handshake(request)
            .await?
            .into_inner();
        let (payload, transport) = waiting.read_message(&response.message).map_err(|e| {
            Status::unauthenticated(format!("{}'s handshake response: {e}", contact.name))
        })?;
        let answer = HandshakePayload::decode(payload.as_slice()).map_err(|_| {
            Status::invalid_argument(format!("{}'s handshake payload is malformed", contact.name))
        })?;
        if answer.name != contact.name {
            return Err(Status::permission_denied(format!(
                "the key listed for {} answered as {:?}",
                contact.name, answer.name
            )));
        }
        self.directory.pin(&contact.name, &contact.public_key);
        // Members only when asked for (Discovery is down), and only names we
        // do not know: a peer's word never replaces a key we have.
        if want_members {
            for m in &answer.members {
                self.directory
                    .add_vouched(&m.name, &m.address, &m.public_key);
            }
        }
        if want_members && !answer.members.is_empty() {
            info!(from = %contact.name, members = answer.members.len(), "learned members from a peer");
            self.directory.cache_changed();
        }
        info!(peer = %contact.name, fingerprint = %contact.fingerprint, "session established (initiator)");
        Ok(self.sessions.insert(Session::new(
            transport,
            contact.name.clone(),
            Role::Initiator,
        )))
    }

    // ----- receiving -----------------------------------------------------

    /// `Peer/Handshake`: reads the initiator's IK message, checks its name
    /// and static key against Discovery (and the pin), and answers.
    pub async fn accept_handshake(
        &self,
        message: &[u8],
        remote: Option<std::net::IpAddr>,
    ) -> Result<Vec<u8>, PeerError> {
        // Before any Diffie-Hellman: the limit is what keeps a flood of
        // forged initiations from eating the CPU.
        if let Some(ip) = remote
            && !self.handshake_limit.allow(&ip)
        {
            return Err(PeerError::ResourceExhausted(format!(
                "handshake rate limit ({}/s per address, --handshakes-per-sec) exceeded; retry in a moment",
                self.handshake_limit.rate()
            )));
        }
        if message.len() < INITIATION_MIN_LEN {
            return Err(PeerError::InvalidArgument(format!(
                "handshake message is truncated: {} bytes, at least {INITIATION_MIN_LEN}",
                message.len()
            )));
        }
        let pending = Responder::read_message_with_static(&self.keypair, PROLOGUE, message, |rs| {
            self.ahead.known_static(rs)
        })
        .map_err(|e| match e {
            NoiseError::Truncated { .. } | NoiseError::MessageTooLarge { .. } => {
                PeerError::InvalidArgument(format!("handshake message is malformed: {e}"))
            }
            _ => PeerError::Unauthenticated(format!(
                "handshake failed ({e}); check that you dialed this peer with its current key"
            )),
        })?;
        let hello = HandshakePayload::decode(pending.payload()).map_err(|_| {
            PeerError::InvalidArgument("handshake payload is not a HandshakePayload".into())
        })?;
        let key = pending.remote_static();
        let contact = match self.directory.verify(&hello.name, &key, &hello.address) {
            Ok(c) => c,
            Err(Refusal::Unknown(_) | Refusal::WrongKey(_)) => {
                // Discovery may know of a peer that joined a moment ago (at
                // most one refresh a second: unknown names are cheap to send).
                if self.refresh_due()
                    && let Err(e) = crate::membership::refresh(self).await
                {
                    debug!(error = %e, "could not refresh members from Discovery");
                }
                self.directory
                    .verify(&hello.name, &key, &hello.address)
                    .map_err(|r| PeerError::PermissionDenied(r.to_string()))?
            }
            Err(r) => return Err(PeerError::PermissionDenied(r.to_string())),
        };
        // A replayed first message carries an old timestamp; only a newer
        // one than the last accepted from this (authenticated) peer counts.
        {
            let mut seen = self.last_stamp_seen.lock().expect("stamps lock");
            let last = seen.entry(contact.name.clone()).or_insert(0);
            if hello.timestamp_micros <= *last {
                return Err(PeerError::Unauthenticated(
                    "handshake is not newer than the last one from this peer (a replay?); start a new one".into(),
                ));
            }
            *last = hello.timestamp_micros;
        }
        if chat_proto::validate::address(&hello.address).is_ok()
            && (hello.address != contact.address || !contact.online)
        {
            // Authenticated by the handshake: the peer's own word on where it
            // is. It is back: whatever is queued for it can go now.
            self.directory.learn_address(&contact.name, &hello.address);
            self.sessions.forget_sending(&contact.name);
            self.retry_outbox(&contact.name);
        }
        let members = if hello.want_members {
            self.directory
                .all()
                .into_iter()
                .filter(|c| c.name != contact.name)
                .map(|c| chat_proto::v1::Member {
                    name: c.name,
                    address: c.address,
                    public_key: c.public_key.to_vec(),
                    fingerprint: c.fingerprint,
                    joined_at: None,
                })
                .collect()
        } else {
            Vec::new()
        };
        let answer = HandshakePayload {
            name: self.name().to_owned(),
            address: self.address.clone(),
            want_members: false,
            members,
            timestamp_micros: 0,
        }
        .encode_to_vec();
        // Accepted (authenticated, known, not a replay): only now may the
        // answer prepared for this peer be used up.
        let prepared = self.ahead.response(&key);
        let (response, transport) = pending
            .write_message_precomputed(&answer, prepared)
            .map_err(|e| PeerError::Unauthenticated(format!("handshake failed: {e}")))?;
        self.directory.pin(&contact.name, &contact.public_key);
        self.ahead.prepare_response(contact.public_key);
        info!(peer = %contact.name, fingerprint = %contact.fingerprint, "session established (responder)");
        self.sessions
            .insert(Session::new(transport, contact.name, Role::Responder));
        Ok(response)
    }

    /// Opens an envelope on its session, rejecting replays, and returns the
    /// plaintext. Shared by Deliver and the history pull.
    pub fn open_envelope(&self, envelope: &Envelope) -> Result<(Arc<Session>, Vec<u8>), PeerError> {
        if envelope.session_id.len() != chat_noise::SESSION_ID_LEN {
            return Err(PeerError::InvalidArgument(format!(
                "session_id must be {} bytes",
                chat_noise::SESSION_ID_LEN
            )));
        }
        let limit = self.config.max_message_bytes + ENVELOPE_OVERHEAD_BYTES;
        if envelope.ciphertext.len() > limit {
            return Err(PeerError::ResourceExhausted(format!(
                "ciphertext is {} bytes; the limit is {limit} bytes",
                envelope.ciphertext.len()
            )));
        }
        let session = self.sessions.by_id(&envelope.session_id).ok_or_else(|| {
            PeerError::Unauthenticated("unknown or expired session; handshake again".into())
        })?;
        if envelope.sender != session.peer {
            return Err(PeerError::Unauthenticated(
                "sender does not match the session's peer".into(),
            ));
        }
        session
            .check_counter(envelope.counter)
            .map_err(|e| PeerError::Unauthenticated(format!("envelope refused: {e}")))?;
        let aad = envelope_aad(&envelope.session_id, &envelope.sender, &envelope.message_id);
        let plaintext = session
            .transport
            .open(envelope.counter, &aad, &envelope.ciphertext)
            .map_err(|_| {
                PeerError::Unauthenticated(
                    "decryption failed: the envelope was altered or sealed under another key"
                        .into(),
                )
            })?;
        session
            .accept_counter(envelope.counter)
            .map_err(|e| PeerError::Unauthenticated(format!("envelope refused: {e}")))?;
        Ok((session, plaintext))
    }

    /// Refuses a clock stamp too far ahead of ours: accepting it would drag
    /// this peer's clock (and its next message ids) into the future.
    pub fn check_clock(&self, hlc: u64) -> Result<(), PeerError> {
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let ahead_ms = Hlc::millis(hlc).saturating_sub(now_ms);
        if ahead_ms > MAX_CLOCK_AHEAD.as_millis() as u64 {
            return Err(PeerError::InvalidArgument(format!(
                "message clock is {} s ahead of this peer's (limit {} s); check the sender's clock",
                ahead_ms / 1000,
                MAX_CLOCK_AHEAD.as_secs()
            )));
        }
        Ok(())
    }

    /// `Peer/Deliver`: opens, checks and stores one message, then shows it.
    pub async fn accept_envelope(
        &self,
        envelope: Option<Envelope>,
    ) -> Result<DeliverResponse, PeerError> {
        let envelope =
            envelope.ok_or_else(|| PeerError::InvalidArgument("envelope is required".into()))?;
        let message = self.check_envelope(&envelope)?;
        let id = message.id.clone();
        let new = self
            .store_received(message)
            .await
            .map_err(|e| PeerError::Internal(format!("cannot store the message: {e}")))?;
        Ok(DeliverResponse {
            message_id: id,
            duplicate: !new,
        })
    }

    /// One batch of `Peer/DeliverStream`: checks every envelope as Deliver
    /// would, stores the good ones in one transaction, shows the new ones,
    /// and reports on each envelope in order.
    pub async fn accept_batch(&self, envelopes: Vec<Envelope>) -> Vec<DeliverResult> {
        let mut results: Vec<DeliverResult> = Vec::with_capacity(envelopes.len());
        let mut accepted = Vec::with_capacity(envelopes.len());
        for (i, envelope) in envelopes.iter().enumerate() {
            match self.check_envelope(envelope) {
                Ok(message) => {
                    accepted.push((i, message));
                    results.push(DeliverResult {
                        message_id: envelope.message_id.clone(),
                        ..Default::default()
                    });
                }
                Err(e) => {
                    let status = crate::error::refused("Peer/DeliverStream", e);
                    results.push(DeliverResult {
                        message_id: envelope.message_id.clone(),
                        code: status.code() as i32,
                        error: status.message().to_owned(),
                        duplicate: false,
                    });
                }
            }
        }
        let (positions, messages): (Vec<usize>, Vec<ChatMessage>) = accepted.into_iter().unzip();
        match self.store.insert_batch_grouped(messages.clone()).await {
            Ok(new) => {
                for ((i, message), is_new) in positions.into_iter().zip(messages).zip(new) {
                    if is_new {
                        self.show_received(message);
                    } else {
                        results[i].duplicate = true;
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot store a delivered batch");
                for i in positions {
                    results[i].code = Code::Internal as i32;
                    results[i].error = format!("cannot store the message: {e}");
                }
            }
        }
        results
    }

    /// Opens and checks one delivered envelope: session, replay, content,
    /// sender, size, clock and rate. Returns the message to store.
    fn check_envelope(&self, envelope: &Envelope) -> Result<ChatMessage, PeerError> {
        let (session, plaintext) = self.open_envelope(envelope)?;
        let message = SealedMessage::decode(plaintext.as_slice())
            .ok()
            .and_then(|s| s.message)
            .ok_or_else(|| PeerError::InvalidArgument("sealed content is not a message".into()))?;
        if message.sender != session.peer || message.id != envelope.message_id {
            return Err(PeerError::PermissionDenied(
                "a peer may deliver only its own messages, under their own id".into(),
            ));
        }
        if message.id.is_empty() || message.id.len() > MAX_ID_BYTES {
            return Err(PeerError::InvalidArgument(format!(
                "message id must be 1 to {MAX_ID_BYTES} bytes"
            )));
        }
        if message.text.len() > self.config.max_message_bytes {
            return Err(PeerError::ResourceExhausted(format!(
                "text is {} bytes; the limit is {} bytes",
                message.text.len(),
                self.config.max_message_bytes
            )));
        }
        self.check_clock(message.hlc)?;
        // Charged after authentication, per session: an outsider who copies
        // a session id off the wire cannot spend the peer's allowance.
        if !self.delivery_limit.allow(&session.id()) {
            return Err(PeerError::ResourceExhausted(format!(
                "delivery rate limit ({}/s per session, --deliveries-per-sec) exceeded; retry in a moment",
                self.delivery_limit.rate()
            )));
        }
        // The fingerprint shown is the one the handshake authenticated, not
        // what the sender wrote.
        let mut message = message;
        message.sender_fingerprint = session.fingerprint.clone();
        self.hlc.observe(message.hlc);
        Ok(message)
    }

    /// Stores a received message (committed before this returns, so before
    /// it is acknowledged); if it is new, pushes it to subscribers and prints
    /// it on the console. Returns whether it was new.
    pub async fn store_received(
        &self,
        message: ChatMessage,
    ) -> Result<bool, crate::store::StoreError> {
        if !self.store.insert_grouped(message.clone()).await? {
            return Ok(false);
        }
        self.show_received(message);
        Ok(true)
    }

    /// A newly stored message: printed on the console (as the original did)
    /// and pushed to subscribers.
    fn show_received(&self, message: ChatMessage) {
        debug!(from = %message.sender, id = %message.id, "message received");
        if let Some(console) = &self.console {
            // The daemon's stdout is the user's console, as in the original.
            console.print(console::live_line(&message));
        }
        let _ = self.incoming.send(message);
    }

    /// True at most once per [`MIN_REFRESH_INTERVAL`].
    fn refresh_due(&self) -> bool {
        let mut last = self.last_refresh.lock().expect("refresh lock");
        let now = tokio::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < MIN_REFRESH_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// A handshake timestamp: wall-clock microseconds, strictly increasing.
    fn next_handshake_stamp(&self) -> u64 {
        let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let previous = self
            .last_stamp_issued
            .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        if previous >= now {
            self.last_stamp_issued
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1
        } else {
            now
        }
    }

    /// Marks that this peer is leaving for good (no more re-registering).
    pub fn set_leaving(&self) {
        self.leaving.store(true, Ordering::SeqCst);
    }
}
