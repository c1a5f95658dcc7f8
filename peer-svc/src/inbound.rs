//! What arrives from other peers: an envelope is opened on its session,
//! the message inside checked (its own, under its own id, within limits, a
//! sane clock, within the session's rate, signed by the identity its
//! author was admitted with), stored with its signature — committed before
//! it is acknowledged — and, if new, shown on the console and to
//! subscribers.
//!
//! A message delivered on its author's own session is authenticated by the
//! session (the AEAD) and its key is checked to be the author's admitted
//! identity, so its signature is verified only the first time a key is
//! seen (a key is never recorded for a name on a signature that does not
//! verify). Verifying each one would cost two to three times what the rest
//! of receiving does (docs/performance.md) and protect against nobody but
//! the author itself, who can make peers' histories differ anyway by
//! sending them different messages. History relayed by another peer is
//! verified item by item (`history_sync`); `chat history --verify` checks
//! everything stored.

use std::sync::Arc;

use chat_proto::v1::{ChatMessage, Envelope};
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::{
    authors::{AuthorError, Authors, Via},
    authorship::{self, SignatureError},
    checks::{self, CheckError},
    config::{Config, ENVELOPE_OVERHEAD_BYTES},
    console::{self, Console},
    envelope::{self, EnvelopeError},
    hlc::Hlc,
    names::Lookalikes,
    peers::Peers,
    rate::Limiter,
    session::Session,
    store::{Store, StoreError},
};

/// Live messages buffered for `Control/Subscribe` streams; a subscriber that
/// falls further behind misses live lines (history still has them).
const SUBSCRIBE_BUFFER: usize = 1024;

/// Envelopes sent again per second on one session that are re-opened to
/// answer "already stored" (a sender retries only after a lost answer);
/// past it, a resent envelope is refused as a replay, as it always was.
const RETRIES_PER_SEC: u32 = 100;

/// Why a delivered envelope was not taken.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The envelope did not open.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The message inside breaks a rule.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The signing key is not the author's admitted identity.
    #[error(transparent)]
    Author(#[from] AuthorError),
    /// The session sent faster than it may.
    #[error(
        "delivery rate limit ({rate}/s per session, --deliveries-per-sec) exceeded; retry in a moment"
    )]
    RateLimited {
        /// The limit.
        rate: u32,
    },
    /// This peer's store failed: nothing was acknowledged.
    #[error("cannot store the message: {0}")]
    Store(String),
}

impl From<StoreError> for InboundError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

/// A delivered envelope that passed every check.
enum Checked {
    /// A message to store.
    New(Box<ChatMessage>),
    /// The envelope of a message already stored, sent again (a retry).
    Stored,
}

/// The receiving side of this peer.
#[derive(Debug)]
pub struct Inbound {
    max_message_bytes: usize,
    peers: Arc<Peers>,
    store: Arc<Store>,
    hlc: Arc<Hlc>,
    authors: Arc<Authors>,
    /// The network key messages must be signed for (empty when open).
    network: Vec<u8>,
    /// Envelopes per session.
    limiter: Limiter<chat_noise::SessionId>,
    /// Envelopes re-opened as possible retries, per session id.
    replays: Limiter<Vec<u8>>,
    /// The live console on stdout, when printing messages.
    console: Option<Console>,
    /// The names known, to mark a sender on the console that looks like
    /// another; rebuilt at most once per [`NAMES_FRESH_FOR`].
    names: std::sync::Mutex<Option<(std::time::Instant, Arc<Lookalikes>)>>,
    incoming: broadcast::Sender<ChatMessage>,
}

/// How long the console's copy of the names known is used before it is
/// read again.
const NAMES_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl Inbound {
    /// Receives into `store`, opening envelopes on the sessions in `peers`,
    /// taking messages signed for `network` by the keys `authors` accepts.
    pub fn new(
        config: &Config,
        peers: Arc<Peers>,
        store: Arc<Store>,
        hlc: Arc<Hlc>,
        authors: Arc<Authors>,
        network: Vec<u8>,
    ) -> Self {
        Self {
            max_message_bytes: config.max_message_bytes,
            peers,
            store,
            hlc,
            authors,
            network,
            limiter: Limiter::per_second(config.deliveries_per_sec),
            replays: Limiter::per_second(RETRIES_PER_SEC),
            console: config.print_messages.then(Console::start),
            names: std::sync::Mutex::default(),
            incoming: broadcast::channel(SUBSCRIBE_BUFFER).0,
        }
    }

    /// The names known (see `names`), read again once they are older than
    /// [`NAMES_FRESH_FOR`].
    fn names(&self) -> Arc<Lookalikes> {
        let mut cached = self.names.lock().expect("names lock");
        match &*cached {
            Some((at, names)) if at.elapsed() < NAMES_FRESH_FOR => names.clone(),
            _ => {
                let names = Arc::new(Lookalikes::new(self.authors.names()));
                *cached = Some((std::time::Instant::now(), names.clone()));
                names
            }
        }
    }

    /// Live incoming messages.
    pub fn subscribe(&self) -> broadcast::Receiver<ChatMessage> {
        self.incoming.subscribe()
    }

    /// Opens an envelope on its session, rejecting replays: the session and
    /// the plaintext. Shared by delivery and history sync.
    pub fn open(&self, envelope: &Envelope) -> Result<(Arc<Session>, Vec<u8>), EnvelopeError> {
        envelope::open(
            &self.peers,
            envelope,
            self.max_message_bytes + ENVELOPE_OVERHEAD_BYTES,
        )
    }

    /// Refuses a clock stamp too far ahead of ours.
    pub fn check_clock(&self, hlc: u64) -> Result<(), CheckError> {
        checks::clock(hlc, checks::now_ms())
    }

    /// `Peer/Deliver`: opens, checks and stores one message, then shows it.
    /// Returns whether it was new (false: a duplicate, already stored).
    pub async fn accept(&self, envelope: Option<Envelope>) -> Result<bool, InboundError> {
        let envelope = envelope.ok_or(EnvelopeError::Missing)?;
        match self.check(&envelope)? {
            Checked::New(message) => {
                self.signed_by_its_peer(&message)?;
                Ok(self.store_received(*message).await?)
            }
            Checked::Stored => Ok(false),
        }
    }

    /// One batch of `Peer/DeliverStream`: checks every envelope as Deliver
    /// would, stores the good ones in one transaction and shows the new
    /// ones. For each envelope, in order: new (true), a duplicate (false),
    /// or why it was refused.
    pub async fn accept_batch(&self, envelopes: &[Envelope]) -> Vec<Result<bool, InboundError>> {
        let mut results: Vec<Result<bool, InboundError>> = Vec::with_capacity(envelopes.len());
        let mut accepted = Vec::with_capacity(envelopes.len());
        for (i, envelope) in envelopes.iter().enumerate() {
            match self.check(envelope) {
                Ok(Checked::New(message)) => {
                    accepted.push((i, *message));
                    results.push(Ok(true));
                }
                Ok(Checked::Stored) => results.push(Ok(false)),
                Err(e) => results.push(Err(e)),
            }
        }
        let accepted: Vec<(usize, ChatMessage)> = accepted
            .into_iter()
            .filter_map(|(i, message)| match self.signed_by_its_peer(&message) {
                Ok(()) => Some((i, message)),
                Err(e) => {
                    results[i] = Err(e);
                    None
                }
            })
            .collect();
        let (positions, messages): (Vec<usize>, Vec<ChatMessage>) = accepted.into_iter().unzip();
        match self.store.insert_batch_grouped(messages.clone()).await {
            Ok(new) => {
                for ((i, message), is_new) in positions.into_iter().zip(messages).zip(new) {
                    if is_new {
                        self.show(message);
                    } else {
                        results[i] = Ok(false);
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot store a delivered batch");
                for i in positions {
                    results[i] = Err(InboundError::Store(e.to_string()));
                }
            }
        }
        results
    }

    /// Opens and checks one delivered envelope: session, replay, content,
    /// sender, size, clock and rate. Returns the message to store, or that
    /// it is the envelope of a message already stored (a retry).
    fn check(&self, envelope: &Envelope) -> Result<Checked, InboundError> {
        let (session, plaintext) = match self.open(envelope) {
            Ok(opened) => opened,
            Err(EnvelopeError::Replayed(replayed @ chat_noise::ReplayError::Duplicate)) => {
                // A counter seen before, still in the window. If the
                // envelope is authentic and its message is stored, this is
                // the sender retrying after our answer was lost: answer as
                // the first time did (stored, nothing new). Anything else
                // stays a replay. Re-opening costs a decryption and a
                // lookup, so it has a budget of its own per session: a
                // replay flood spends that, never the sender's deliveries.
                if !self.replays.allow(&envelope.session_id) {
                    return Err(EnvelopeError::Replayed(replayed).into());
                }
                let Ok((session, plaintext)) = envelope::reopen(&self.peers, envelope) else {
                    return Err(EnvelopeError::Replayed(replayed).into());
                };
                let stored = match authorship::delivered(
                    &plaintext,
                    &session.peer,
                    self.max_message_bytes,
                    &self.network,
                ) {
                    Ok(message) => self.store.get(&message.sender, &message.id)?.is_some(),
                    Err(_) => false,
                };
                return if stored {
                    Ok(Checked::Stored)
                } else {
                    Err(EnvelopeError::Replayed(replayed).into())
                };
            }
            Err(e) => return Err(e.into()),
        };
        let mut message = authorship::delivered(
            &plaintext,
            &session.peer,
            self.max_message_bytes,
            &self.network,
        )?;
        self.check_clock(message.hlc)?;
        // Charged after authentication, per session: an outsider who copies
        // a session id off the wire cannot spend the peer's allowance.
        if !self.limiter.allow(&session.id()) {
            return Err(InboundError::RateLimited {
                rate: self.limiter.rate(),
            });
        }
        // The fingerprint shown is the one the handshake authenticated (the
        // signed bytes keep what the author wrote).
        message.sender_fingerprint = session.fingerprint.clone();
        Ok(Checked::New(Box::new(message)))
    }

    /// Whether the key that signed a message delivered on its author's
    /// session may sign as it. The signature is taken on the session's word
    /// only when the key is the one the session's peer speaks with now (its
    /// admitted identity, or in open mode the key kept for its name): then
    /// only the author itself could have made it bad. Any other key (one
    /// not seen yet, or an older key of the name) must show a signature
    /// that verifies, so no key is recorded for a name on the word of a bad
    /// one, and nobody speaks for an older key it does not hold. Moves our
    /// clock past the message's.
    fn signed_by_its_peer(&self, message: &ChatMessage) -> Result<(), InboundError> {
        if !self
            .authors
            .is_current(&message.sender, &message.author_key)
        {
            authorship::verify(message)?;
        }
        self.authors.check(
            &message.sender,
            &message.author_key,
            message.hlc,
            Via::Session,
        )?;
        self.hlc.observe(message.hlc);
        Ok(())
    }

    /// Stores a received message (committed before this returns, so before
    /// it is acknowledged); if it is new, pushes it to subscribers and prints
    /// it on the console. Returns whether it was new.
    pub async fn store_received(&self, message: ChatMessage) -> Result<bool, StoreError> {
        if !self.store.insert_grouped(message.clone()).await? {
            return Ok(false);
        }
        self.show(message);
        Ok(true)
    }

    /// A newly stored message: printed on the console (as the original did)
    /// and pushed to subscribers.
    fn show(&self, message: ChatMessage) {
        debug!(from = %message.sender, id = %message.id, "message received");
        if let Some(console) = &self.console {
            // The daemon's stdout is the user's console, as in the original.
            console.print(console::live_line(&message, Some(&self.names())));
        }
        let _ = self.incoming.send(message);
    }
}
