//! Both roles of the Noise IK handshake with other peers: starting one (to
//! send) and answering one (`Peer/Handshake`). It owns this peer's static
//! key, the work prepared ahead, the handshake timestamps and the rate limit
//! on initiations; a finished handshake becomes a session in the peer's
//! record.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chat_noise::{INITIATION_MIN_LEN, NoiseError, Responder, StaticKeypair};
use chat_proto::v1::{HandshakePayload, Member, PeerHandshakeRequest, peer_client::PeerClient};
use prost::Message;
use tonic::Status;
use tracing::{debug, info};

use crate::{
    admission::{Admission, AdmissionError, REMOVALS_IN_HANDSHAKE},
    config::{Config, HANDSHAKE_TIMEOUT},
    credential::CredentialError,
    directory::{Contact, Directory, Refusal},
    feeds::Feeds,
    handshake_ahead::HandshakeAhead,
    handshake_mac,
    membership::{Membership, PeerEvent},
    net::Channels,
    peers::Peers,
    rate::Limiter,
    session::{Role, Session},
    store::Store,
};

/// The Noise prologue: names this protocol and its version, so a peer of
/// another version fails the handshake instead of misreading messages.
pub const PROLOGUE: &[u8] = b"p2p-chat/3 Noise_IK_25519_ChaChaPoly_SHA256";

/// Most bytes of members a handshake answer carries (the answer is one
/// Noise message; the credential and up to 16 KiB of removals share it).
const MEMBERS_IN_ANSWER_BYTES: usize = 32 * 1024;

/// Least time between two member-list refreshes caused by handshakes from
/// names we do not know.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Binary metadata on a PERMISSION_DENIED handshake refusal of a removed
/// member: the encoded `Removal` that revoked its admission (protocol.md
/// §6.4), so it can verify that it was removed and stop.
pub const REMOVAL_METADATA: &str = "chat-removal-bin";

/// Why an initiator's first message was not answered.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Too many initiations from this address.
    #[error(
        "handshake rate limit ({rate}/s per address, --handshakes-per-sec) exceeded; retry in a moment"
    )]
    RateLimited {
        /// The limit.
        rate: u32,
    },
    /// Too many handshakes from this static key.
    #[error(
        "handshake rate limit ({rate}/s per peer key, --handshakes-per-sec) exceeded; retry in a moment"
    )]
    KeyRateLimited {
        /// The limit.
        rate: u32,
    },
    /// The mac1 is missing or wrong: junk, or not made for this peer's key
    /// in this network.
    #[error(
        "handshake mac1 is missing or wrong: not a member of this network (a stranger, or a member of another network), or not dialing this peer's current key"
    )]
    BadMac,
    /// Shorter than any IK first message.
    #[error("handshake message is truncated: {len} bytes, at least {INITIATION_MIN_LEN}")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// Not a Noise message of the right shape.
    #[error("handshake message is malformed: {0}")]
    Malformed(NoiseError),
    /// It did not authenticate (wrong key, tampered, another protocol).
    #[error("handshake failed ({0}); check that you dialed this peer with its current key")]
    Failed(NoiseError),
    /// The payload is not a `HandshakePayload`.
    #[error("handshake payload is not a HandshakePayload")]
    BadPayload,
    /// The name and key do not match what Discovery lists or was pinned.
    #[error("{0}")]
    Refused(Refusal),
    /// Not a member of this network, or removed from it.
    #[error("{0}")]
    NotMember(AdmissionError),
    /// Stamped further ahead of this peer's clock than clocks may differ.
    #[error("handshake timestamp is too far ahead of this peer's clock; check the clock")]
    StampAhead,
    /// Not newer than the last handshake accepted from this peer.
    #[error("handshake is not newer than the last one from this peer (a replay?); start a new one")]
    Replayed,
    /// The answer could not be written.
    #[error("handshake failed: {0}")]
    Answer(NoiseError),
    /// The timestamp could not be recorded: nothing was accepted.
    #[error("cannot record the handshake: {0}")]
    Store(String),
}

/// This peer's side of every handshake.
#[derive(Debug)]
pub struct Handshaker {
    name: String,
    address: String,
    keypair: Arc<StaticKeypair>,
    ahead: Arc<HandshakeAhead>,
    directory: Arc<Directory>,
    peers: Arc<Peers>,
    store: Arc<Store>,
    channels: Arc<Channels>,
    membership: Arc<Membership>,
    admission: Arc<Admission>,
    /// This peer's feed heads, whose digest handshakes carry.
    feeds: Arc<Feeds>,
    /// Handshakes per remote address (those with a good mac1).
    limiter: Limiter<IpAddr>,
    /// Handshakes per initiator static key, once decrypted.
    key_limiter: Limiter<[u8; 32]>,
    /// This peer's mac1 key (see [`handshake_mac`](crate::handshake_mac)).
    mac_key: [u8; 32],
    /// The network key mac1s to others are made with.
    network: Vec<u8>,
    /// The last handshake timestamp this peer issued (they only increase).
    last_stamp_issued: AtomicU64,
    /// When an unknown initiator last made us ask Discovery for the list.
    last_refresh: Mutex<Option<tokio::time::Instant>>,
    /// The feed digest each member's last handshake carried, and when.
    feeds_seen: Mutex<HashMap<String, FeedsSeen>>,
}

/// A member's feed digest as its last handshake carried it, and when.
type FeedsSeen = (Vec<u8>, tokio::time::Instant);

/// How long a digest a handshake carried is taken as the peer's: a
/// comparison asked for within it, with the same digest here, is skipped.
const FEEDS_SEEN_FOR: Duration = Duration::from_secs(10);

/// Members whose last digest is kept; past it the map starts again.
const MAX_FEEDS_SEEN: usize = 65_536;

impl Handshaker {
    /// Handshakes as `config.name` at `address` with `keypair`, given each
    /// part it uses by the composition root.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        address: &str,
        keypair: Arc<StaticKeypair>,
        directory: Arc<Directory>,
        peers: Arc<Peers>,
        store: Arc<Store>,
        channels: Arc<Channels>,
        membership: Arc<Membership>,
        admission: Arc<Admission>,
    ) -> Self {
        let feeds = Arc::new(Feeds::new(store.clone()));
        Self {
            feeds,
            name: config.name.clone(),
            address: address.to_owned(),
            ahead: HandshakeAhead::new(keypair.clone(), PROLOGUE),
            mac_key: handshake_mac::key(&admission.network_key(), &keypair.public_key()),
            network: admission.network_key(),
            keypair,
            directory,
            peers,
            store,
            channels,
            membership,
            admission,
            limiter: Limiter::per_second(config.handshakes_per_sec),
            key_limiter: Limiter::per_second(config.handshakes_per_sec),
            last_stamp_issued: AtomicU64::new(0),
            last_refresh: Mutex::new(None),
            feeds_seen: Mutex::default(),
        }
    }

    /// Who is a member: handshakes check it; delivery, history and the
    /// owner's invite and remove ask it.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// This peer's feed heads (their digest goes in every handshake).
    pub fn feeds(&self) -> &Arc<Feeds> {
        &self.feeds
    }

    /// This peer's static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.keypair.public_key()
    }

    /// Handshake work prepared ahead: (initiations, answers) waiting.
    pub fn prepared(&self) -> (usize, usize) {
        self.ahead.prepared()
    }

    /// Runs a handshake with `contact` now and makes it the session to send
    /// on. Concurrent callers for the same peer share one handshake.
    pub async fn initiate(&self, contact: &Contact) -> Result<Arc<Session>, Status> {
        self.initiate_with(contact, false).await
    }

    /// Like [`Handshaker::initiate`]; with `want_members` the responder also
    /// sends the peers it knows, which join this peer's list (used when
    /// Discovery is unreachable at start).
    pub async fn initiate_with(
        &self,
        contact: &Contact,
        want_members: bool,
    ) -> Result<Arc<Session>, Status> {
        // Waiting for its inviter's confirmation, this peer is no member to
        // anyone else yet: it handshakes with its inviter only.
        if let Some(inviter) = self.admission.own_pending()
            && inviter != contact.name
        {
            return Err(Status::failed_precondition(format!(
                "not a member yet: waiting for {inviter}, who made the invitation, to confirm it (it must be online once)"
            )));
        }
        let record = self.peers.record(&contact.name);
        let asked_at = tokio::time::Instant::now();
        let _one_at_a_time = record.handshake_lock().await;
        if let Some(s) = self.peers.sending(&contact.name)
            && s.established >= asked_at
            && !want_members
        {
            return Ok(s);
        }
        let payload = HandshakePayload {
            name: self.name.clone(),
            address: self.address.clone(),
            want_members,
            members: Vec::new(),
            timestamp_micros: self.next_stamp(),
            credential: self.admission.own_credential(),
            removals: self.admission.removals(),
            removals_digest: self.admission.removals_digest(),
            feeds_digest: self.feeds.digest(),
            confirmation: Vec::new(),
        }
        .encode_to_vec();
        // -> e, es, s, ss (prepared ahead where it could be)
        let (message, waiting) = self
            .ahead
            .initiation(contact.public_key)
            .write_message(&payload)
            .map_err(|e| Status::failed_precondition(format!("cannot start a handshake: {e}")))?;
        // The next handshake with this peer (its rekey) starts from work
        // done while this one waits for the answer.
        self.ahead.prepare_initiation(contact.public_key);
        let key = handshake_mac::key(&self.network, &contact.public_key);
        let mac1 = handshake_mac::mac1(&key, &message).to_vec();
        let mut request = tonic::Request::new(PeerHandshakeRequest { message, mac1 });
        request.set_timeout(HANDSHAKE_TIMEOUT);
        let response = match PeerClient::new(self.channels.get(&contact.address)?)
            .handshake(request)
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(self.refused_by(&contact.name, status)),
        };
        // <- e, ee, se
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
        // The responder proved its static key; its credential must admit
        // that key under this name, or nothing is sent to it. Removals are
        // taken from members only (each costs signature checks).
        // (A newcomer of ours answering here has its use recorded; it gets
        // the confirmation when it makes the handshake itself.)
        self.admission
            .check(&contact.name, &contact.public_key, &answer.credential)
            .map_err(|e| match e {
                // A newcomer a moment from being a member: not now, rather
                // than not a member (FAILED_PRECONDITION, not PERMISSION_DENIED).
                AdmissionError::NotMember {
                    reason: CredentialError::Unconfirmed(_),
                    ..
                } => Status::failed_precondition(e.to_string()),
                e => Status::permission_denied(e.to_string()),
            })?;
        if !answer.confirmation.is_empty() && self.admission.take_confirmation(&answer.confirmation)
        {
            info!(inviter = %contact.name, "the inviter confirmed this peer's use of its invitation: a member now");
            self.membership.tell(PeerEvent::Confirmed);
        }
        self.take_removals(&contact.name, &answer.removals, &answer.removals_digest);
        self.compare_feeds(&contact.name, &answer.feeds_digest);
        self.directory.pin(&contact.name, &contact.public_key);
        self.proven(&contact.name, &contact.public_key, &contact.address);
        if want_members {
            self.learn_members(&contact.name, &answer.members);
        }
        info!(peer = %contact.name, fingerprint = %contact.fingerprint, "session established (initiator)");
        Ok(self.peers.insert(Session::new(
            transport,
            contact.name.clone(),
            Role::Initiator,
        )))
    }

    /// Members a peer sent because we asked (Discovery is down): only names
    /// we do not know; a peer's word never replaces a key we have.
    fn learn_members(&self, from: &str, members: &[Member]) {
        for m in members {
            self.directory
                .add_vouched(&m.name, &m.address, &m.public_key);
        }
        if !members.is_empty() {
            info!(from = %from, members = members.len(), "learned members from a peer");
            self.directory.cache_changed();
        }
    }

    /// `Peer/Handshake`: reads the initiator's IK message, checks its name
    /// and static key against Discovery (and the pin), and answers.
    pub async fn accept(
        &self,
        message: &[u8],
        mac1: &[u8],
        remote: Option<IpAddr>,
    ) -> Result<Vec<u8>, HandshakeError> {
        if message.len() < INITIATION_MIN_LEN {
            return Err(HandshakeError::Truncated { len: message.len() });
        }
        // One HMAC: junk (anything not made for this key in this network)
        // is refused before it can spend the per-address budget below.
        if !handshake_mac::verify(&self.mac_key, message, mac1) {
            return Err(HandshakeError::BadMac);
        }
        // Before any Diffie-Hellman: the limit is what keeps a flood of
        // forged initiations from eating the CPU.
        if let Some(ip) = remote
            && !self.limiter.allow(&ip)
        {
            return Err(HandshakeError::RateLimited {
                rate: self.limiter.rate(),
            });
        }
        // <- e, es, s, ss (ss from the kept static DH when we know the key)
        let pending = Responder::read_message_with_static(&self.keypair, PROLOGUE, message, |rs| {
            self.ahead.known_static(rs)
        })
        .map_err(|e| match e {
            NoiseError::Truncated { .. } | NoiseError::MessageTooLarge { .. } => {
                HandshakeError::Malformed(e)
            }
            _ => HandshakeError::Failed(e),
        })?;
        let key = pending.remote_static();
        let hello =
            HandshakePayload::decode(pending.payload()).map_err(|_| HandshakeError::BadPayload)?;
        let contact = self.verify(&hello, &key).await?;
        // A stamp far ahead of our clock would make every honest handshake
        // of this peer "not newer" until our clock caught up.
        let latest = chat_proto::registration::now_micros()
            .saturating_add(crate::config::MAX_CLOCK_AHEAD.as_micros() as u64);
        if hello.timestamp_micros > latest {
            return Err(HandshakeError::StampAhead);
        }
        // A replayed first message carries an old timestamp; only a newer
        // one than the last accepted from this (authenticated) peer counts,
        // and nothing in a replay is acted on.
        if !self
            .peers
            .record(&contact.name)
            .accept_stamp(hello.timestamp_micros)
        {
            return Err(HandshakeError::Replayed);
        }
        // Authenticated and new: one key cannot take every handshake an
        // address is allowed (replays, refused above, are not counted, so
        // replaying a member's message cannot use up its budget).
        if !self.key_limiter.allow(&key) {
            return Err(HandshakeError::KeyRateLimited {
                rate: self.key_limiter.rate(),
            });
        }
        let confirmation = self
            .admission
            .check(&contact.name, &key, &hello.credential)
            .map_err(HandshakeError::NotMember)?;
        if contact.unlisted {
            info!(peer = %contact.name, "a member Discovery does not list (for this key) showed its admission; taken as a contact");
            self.directory
                .add_admitted(&contact.name, &hello.address, &key);
        }
        self.take_removals(&contact.name, &hello.removals, &hello.removals_digest);
        self.compare_feeds(&contact.name, &hello.feeds_digest);
        // Durable before the answer: after a restart the same message is
        // still a replay.
        self.store
            .save_handshake_stamp(&contact.name, hello.timestamp_micros)
            .map_err(|e| HandshakeError::Store(e.to_string()))?;
        if chat_proto::validate::address(&hello.address).is_ok()
            && (hello.address != contact.address || !contact.online)
        {
            // Authenticated by the handshake: the peer's own word on where it
            // is. It is back: whatever is queued for it can go now.
            self.directory.learn_address(&contact.name, &hello.address);
            self.peers.forget_sending(&contact.name);
            self.membership.tell(PeerEvent::Back(contact.name.clone()));
        }
        let answer = HandshakePayload {
            name: self.name.clone(),
            address: self.address.clone(),
            want_members: false,
            members: self.members_for(&hello, &contact),
            timestamp_micros: 0,
            credential: self.admission.own_credential(),
            removals: self.admission.removals(),
            removals_digest: self.admission.removals_digest(),
            feeds_digest: self.feeds.digest(),
            confirmation: confirmation.unwrap_or_default(),
        }
        .encode_to_vec();
        // Accepted (authenticated, known, not a replay): only now may the
        // answer prepared for this peer be used up.
        // -> e, ee, se
        let prepared = self.ahead.response(&key);
        let (response, transport) = pending
            .write_message_precomputed(&answer, prepared)
            .map_err(HandshakeError::Answer)?;
        self.directory.pin(&contact.name, &contact.public_key);
        self.proven(&contact.name, &key, &hello.address);
        self.ahead.prepare_response(contact.public_key);
        info!(peer = %contact.name, fingerprint = %contact.fingerprint, "session established (responder)");
        self.peers
            .insert(Session::new(transport, contact.name, Role::Responder));
        Ok(response)
    }

    /// The contact an initiator claims to be, if its key is the one
    /// Discovery lists (or was pinned) for that name; in a network, also one
    /// Discovery does not list with that key, to be checked by its
    /// credential (`Contact::unlisted`).
    async fn verify(
        &self,
        hello: &HandshakePayload,
        key: &[u8; 32],
    ) -> Result<Contact, HandshakeError> {
        match self.directory.verify(&hello.name, key, &hello.address) {
            Ok(c) => Ok(c),
            Err(Refusal::Unknown(_) | Refusal::WrongKey(_)) => {
                // Discovery may know of a peer that joined a moment ago (at
                // most one refresh a second: unknown names are cheap to send).
                if self.refresh_due()
                    && let Err(e) = self.membership.refresh().await
                {
                    debug!(error = %e, "could not refresh members from Discovery");
                }
                match self.directory.verify(&hello.name, key, &hello.address) {
                    Ok(c) => Ok(c),
                    // In a network, a member's credential says who it is
                    // better than Discovery does: one Discovery does not
                    // list (its registry full, or its name taken there) is
                    // checked by its credential alone (step 9), and added.
                    Err(Refusal::Unknown(_) | Refusal::WrongKey(_))
                        if !self.admission.is_open()
                            && chat_proto::validate::address(&hello.address).is_ok() =>
                    {
                        Ok(self.directory.unlisted(&hello.name, &hello.address, key))
                    }
                    Err(r) => Err(HandshakeError::Refused(r)),
                }
            }
            Err(r) => Err(HandshakeError::Refused(r)),
        }
    }

    /// The members to send an initiator that asked for them.
    fn members_for(&self, hello: &HandshakePayload, contact: &Contact) -> Vec<Member> {
        if !hello.want_members {
            return Vec::new();
        }
        // Whatever fits the answer, which is one Noise message (65,535
        // bytes) along with the credential and removals: the asker learns
        // the rest from Discovery once it is back.
        let mut budget = MEMBERS_IN_ANSWER_BYTES;
        self.directory
            .all()
            .into_iter()
            .filter(|c| c.name != contact.name)
            .map(|c| Member {
                name: c.name,
                address: c.address,
                public_key: c.public_key.to_vec(),
                fingerprint: c.fingerprint,
                joined_at: None,
            })
            .take_while(|m| {
                let size = m.encoded_len() + 4;
                budget = budget.saturating_sub(size);
                budget > 0
            })
            .collect()
    }

    /// A refusal of this peer's handshake. One that shows a removal of
    /// this peer's own admission (a member that knows it was removed) is
    /// verified and taken in: the owner is told once, and nothing more is
    /// tried. A bare refusal is only the answerer's word.
    fn refused_by(&self, peer: &str, status: Status) -> Status {
        if status.code() != tonic::Code::PermissionDenied {
            return status;
        }
        let Some(removal) = status
            .metadata()
            .get_bin(REMOVAL_METADATA)
            .and_then(|v| v.to_bytes().ok())
        else {
            return status;
        };
        let learned = self.admission.learn_removals_within(&[removal.to_vec()], 1);
        for name in learned.removed {
            self.membership.tell(PeerEvent::Removed(name));
        }
        if learned.self_removed {
            self.membership.tell(PeerEvent::SelfRemoved);
        }
        match self.admission.own_removal() {
            Some(removal) => Status::permission_denied(format!(
                "{peer} refused this peer: {removal}; nothing more is sent"
            )),
            None => status,
        }
    }

    /// Takes in the removals a peer sent (the newest few, and none after
    /// one that does not verify); each name newly removed is told to the
    /// composition root. If the peer's digest of every removal it knows
    /// still differs from ours, it is told too: the two reconcile.
    fn take_removals(&self, peer: &str, removals: &[Vec<u8>], digest: &[u8]) {
        let taken = &removals[..removals.len().min(REMOVALS_IN_HANDSHAKE)];
        let learned = self.admission.learn_removals_within(taken, 1);
        for name in learned.removed {
            self.membership.tell(PeerEvent::Removed(name));
        }
        if learned.self_removed {
            self.membership.tell(PeerEvent::SelfRemoved);
        }
        if !digest.is_empty() && digest != self.admission.removals_digest() {
            self.membership
                .tell(PeerEvent::RemovalsDiffer(peer.to_owned()));
        }
    }

    /// If `peer`'s feed heads (their digest) differ from ours, it is told:
    /// the two compare frontiers and pull what each lacks.
    fn compare_feeds(&self, peer: &str, digest: &[u8]) {
        if digest.is_empty() {
            return;
        }
        {
            let mut seen = self.feeds_seen.lock().expect("feeds seen lock");
            if seen.len() >= MAX_FEEDS_SEEN {
                seen.clear();
            }
            seen.insert(
                peer.to_owned(),
                (digest.to_vec(), tokio::time::Instant::now()),
            );
        }
        if digest != self.feeds.digest() {
            self.membership
                .tell(PeerEvent::FeedsDiffer(peer.to_owned()));
        }
    }

    /// True if `peer`'s handshake of the last few seconds carried the feed
    /// digest `ours`: comparing now would find them the same.
    pub fn feeds_seen_same(&self, peer: &str, ours: &[u8; 32]) -> bool {
        self.feeds_seen
            .lock()
            .expect("feeds seen lock")
            .get(peer)
            .is_some_and(|(digest, at)| digest == ours && at.elapsed() < FEEDS_SEEN_FOR)
    }

    /// `name` proved `key` (and, in a network, its admission) in a
    /// handshake: a pinned key is its contact's again, whatever Discovery
    /// lists for the name; if that changed the contact, it is back.
    fn proven(&self, name: &str, key: &[u8; 32], address: &str) {
        if self.directory.learn_proven(name, key, address) {
            self.peers.forget_sending(name);
            self.membership.tell(PeerEvent::Back(name.to_owned()));
        }
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
    fn next_stamp(&self) -> u64 {
        let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let previous = self.last_stamp_issued.fetch_max(now, Ordering::SeqCst);
        if previous >= now {
            self.last_stamp_issued.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            now
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_noise::Initiator;

    use super::*;
    use crate::testkit::Kit;

    /// Alice's first message to the peer of `bob`, stamped `stamp`.
    fn initiation(alice: &StaticKeypair, bob: &Kit, stamp: u64) -> Vec<u8> {
        let payload = HandshakePayload {
            name: "alice".into(),
            address: "127.0.0.1:7000".into(),
            timestamp_micros: stamp,
            ..Default::default()
        }
        .encode_to_vec();
        Initiator::new(alice, bob.keypair.public_key(), PROLOGUE)
            .write_message(&payload)
            .expect("write")
            .0
    }

    fn bob_knowing(alice: &StaticKeypair, rate: u32) -> Kit {
        let bob = Kit::new("bob", |c| c.handshakes_per_sec = rate);
        bob.directory
            .upsert("alice", "127.0.0.1:7000", &alice.public_key());
        bob
    }

    const FROM: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    impl Handshaker {
        /// `message` with its right mac1, from [`FROM`].
        async fn offer(&self, message: &[u8]) -> Result<Vec<u8>, HandshakeError> {
            let mac = handshake_mac::mac1(&self.mac_key, message);
            self.accept(message, &mac, FROM).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn junk_without_the_mac_is_refused_for_free_and_spends_no_budget() {
        let alice = StaticKeypair::generate();
        let bob = bob_knowing(&alice, 1);
        for _ in 0..100 {
            let junk = initiation(&StaticKeypair::generate(), &bob, 1);
            let err = bob
                .handshaker
                .accept(&junk, &[0; 16], FROM)
                .await
                .unwrap_err();
            assert!(matches!(err, HandshakeError::BadMac), "{err}");
            let err = bob.handshaker.accept(&junk, &[], FROM).await.unwrap_err();
            assert!(matches!(err, HandshakeError::BadMac), "{err}");
        }
        // A mac1 made for another network is junk too.
        let first = initiation(&alice, &bob, 1);
        let other = handshake_mac::key(&[7; 32], &bob.keypair.public_key());
        let err = bob
            .handshaker
            .accept(&first, &handshake_mac::mac1(&other, &first), FROM)
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::BadMac), "{err}");
        // Alice's budget (a burst of 2 at 1/s) is untouched.
        bob.handshaker
            .offer(&first)
            .await
            .expect("alice's handshake");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stamp_far_ahead_of_our_clock_is_refused_and_locks_nobody_out() {
        let alice = StaticKeypair::generate();
        let bob = bob_knowing(&alice, 100);
        let hour_ahead = chat_proto::registration::now_micros() + 3_600_000_000;
        let err = bob
            .handshaker
            .offer(&initiation(&alice, &bob, hour_ahead))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::StampAhead), "{err}");
        // Nothing was recorded: an honest stamp is still newer.
        let now = chat_proto::registration::now_micros();
        bob.handshaker
            .offer(&initiation(&alice, &bob, now))
            .await
            .expect("a handshake stamped now");
    }

    #[tokio::test(start_paused = true)]
    async fn one_key_cannot_take_an_address_whole_budget() {
        let alice = StaticKeypair::generate();
        let bob = bob_knowing(&alice, 2);
        // From several addresses, one key gets its own burst (4) and no more.
        let mut accepted = 0;
        for stamp in 1..=6u8 {
            let from = Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, stamp)));
            let message = initiation(&alice, &bob, u64::from(stamp));
            let mac = handshake_mac::mac1(&bob.handshaker.mac_key, &message);
            match bob.handshaker.accept(&message, &mac, from).await {
                Ok(_) => accepted += 1,
                Err(HandshakeError::KeyRateLimited { rate: 2 }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(accepted, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_known_initiator_is_answered_once_and_its_replay_refused() {
        let alice = StaticKeypair::generate();
        let bob = bob_knowing(&alice, 100);
        let first = initiation(&alice, &bob, 10);
        bob.handshaker.offer(&first).await.expect("accepted");
        assert!(bob.peers.has_session("alice"), "a responder session");
        assert!(matches!(
            bob.handshaker.offer(&first).await,
            Err(HandshakeError::Replayed)
        ));
        // An older stamp, in a fresh message, is a replay too.
        let older = initiation(&alice, &bob, 9);
        assert!(matches!(
            bob.handshaker.offer(&older).await,
            Err(HandshakeError::Replayed)
        ));
        bob.handshaker
            .offer(&initiation(&alice, &bob, 11))
            .await
            .expect("a newer one is accepted");
    }

    #[tokio::test(start_paused = true)]
    async fn initiations_are_limited_per_address_and_the_limit_refills_with_time() {
        let alice = StaticKeypair::generate();
        let bob = bob_knowing(&alice, 1);
        // A burst of twice the rate, then refused before any DH is done.
        for stamp in 1..=2 {
            bob.handshaker
                .offer(&initiation(&alice, &bob, stamp))
                .await
                .expect("within the burst");
        }
        let err = bob
            .handshaker
            .offer(&initiation(&alice, &bob, 3))
            .await
            .unwrap_err();
        assert!(
            matches!(err, HandshakeError::RateLimited { rate: 1 }),
            "{err}"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        bob.handshaker
            .offer(&initiation(&alice, &bob, 4))
            .await
            .expect("a second later there is room again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stranger_or_a_wrong_key_is_refused_and_garbage_is_malformed() {
        let alice = StaticKeypair::generate();
        let bob = bob_knowing(&alice, 100);
        let mallory = StaticKeypair::generate();
        // Mallory claims to be alice: her key is not the one listed.
        let err = bob
            .handshaker
            .offer(&initiation(&mallory, &bob, 1))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Refused(_)), "{err}");
        let err = bob.handshaker.offer(&[0; 8]).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Truncated { len: 8 }), "{err}");
        let mut tampered = initiation(&alice, &bob, 2);
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let err = bob.handshaker.offer(&tampered).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Failed(_)), "{err}");
        assert!(!bob.peers.has_session("alice"));
    }
}
