//! Feed reconciliation (docs/protocol.md §9.6): whenever two members meet
//! — a handshake whose feed digest is not ours, a member coming back, and
//! every half minute or so while they are in touch — one asks the other
//! for its feed heads (only when the digests differ) and pulls, author by
//! author, the messages it lacks after the part of each feed it holds
//! whole. So a message reaches every member that is ever in touch with
//! anyone who has it, whatever the order members come and go, and a gap
//! in a feed is filled from whoever holds the missing messages.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chat_proto::v1::{
    Envelope, FeedFrontier, FeedHead as WireHead, FeedsQuery, PeerFeedsRequest, PeerFeedsResponse,
    peer_client::PeerClient,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info};

use crate::{
    directory::Directory,
    envelope::{self, EnvelopeError},
    feeds::Feeds,
    handshaker::Handshaker,
    history_sync::HistorySync,
    net::Channels,
    peers::Peers,
    session::Session,
};

/// Least time between two exchanges with one peer.
const MIN_EXCHANGE_INTERVAL: Duration = Duration::from_secs(2);

/// Every this long (plus up to as much again, at random), each member in
/// touch is asked whether their feeds differ.
const PERIOD: Duration = Duration::from_secs(30);

/// Heads sent in one frontier (the rest are pulled at a later exchange).
pub const MAX_HEADS: usize = 512;

/// Longest wait for a frontier.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `Peer/Feeds` request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum FeedsError {
    /// The request's envelope did not open.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The sealed request is not a FeedsQuery.
    #[error("sealed content is not a FeedsQuery")]
    NotAQuery,
    /// This peer's store could not be read.
    #[error("cannot read this peer's feeds: {0}")]
    Store(String),
}

/// Both sides of feed reconciliation.
#[derive(Debug)]
pub struct FeedSync {
    feeds: Arc<Feeds>,
    history: Arc<HistorySync>,
    handshaker: Arc<Handshaker>,
    peers: Arc<Peers>,
    channels: Arc<Channels>,
    directory: Arc<Directory>,
    /// When the exchange with each peer started, and whether it runs.
    exchanges: Mutex<HashMap<String, (Instant, bool)>>,
}

impl FeedSync {
    /// Reconciliation through these parts.
    pub fn new(
        history: Arc<HistorySync>,
        handshaker: Arc<Handshaker>,
        peers: Arc<Peers>,
        channels: Arc<Channels>,
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            feeds: handshaker.feeds().clone(),
            history,
            handshaker,
            peers,
            channels,
            directory,
            exchanges: Mutex::default(),
        }
    }

    /// Answers a `Peer/Feeds` request: "the same", or this peer's heads.
    pub fn serve(&self, envelope: Option<Envelope>) -> Result<PeerFeedsResponse, FeedsError> {
        let envelope = envelope.ok_or(EnvelopeError::Missing)?;
        let (session, plaintext) = self.open(&envelope)?;
        let query = FeedsQuery::decode(plaintext.as_slice()).map_err(|_| FeedsError::NotAQuery)?;
        let (heads, digest) = self
            .feeds
            .heads()
            .map_err(|e| FeedsError::Store(e.to_string()))?;
        let frontier = if query.digest == digest {
            FeedFrontier {
                same: true,
                heads: Vec::new(),
            }
        } else {
            FeedFrontier {
                same: false,
                heads: heads
                    .iter()
                    .take(MAX_HEADS)
                    .map(|h| WireHead {
                        author_key: h.author_key.clone(),
                        seq: h.seq,
                        hash: h.hash.to_vec(),
                    })
                    .collect(),
            }
        };
        Ok(PeerFeedsResponse {
            envelope: Some(envelope::seal(&session, &frontier.encode_to_vec())?),
        })
    }

    /// Compares feeds with `peer` in the background, unless an exchange
    /// with it runs already or started a moment ago.
    pub fn exchange_later(self: &Arc<Self>, peer: String) {
        {
            let mut exchanges = self.exchanges.lock().expect("exchanges lock");
            let now = Instant::now();
            if let Some((started, running)) = exchanges.get(&peer)
                && (*running || now.duration_since(*started) < MIN_EXCHANGE_INTERVAL)
            {
                return;
            }
            exchanges.insert(peer.clone(), (now, true));
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.exchange(&peer).await {
                Ok(0) => {}
                Ok(added) => info!(from = %peer, added, "feeds reconciled: missed messages pulled"),
                Err(e) => {
                    debug!(peer = %peer, error = %e.message(), "feeds not compared now; again at the next contact")
                }
            }
            if let Some(entry) = this
                .exchanges
                .lock()
                .expect("exchanges lock")
                .get_mut(&peer)
            {
                entry.1 = false;
            }
        });
    }

    /// Every [`PERIOD`] (plus jitter), compares feeds with each member this
    /// peer has a session with, until `shutdown`.
    pub async fn run_periodically(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let jitter = PERIOD.mul_f64(rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(PERIOD + jitter) => {}
                _ = shutdown.cancelled() => return,
            }
            for contact in self.directory.all() {
                if contact.online && !contact.dropped && self.peers.has_session(&contact.name) {
                    self.exchange_later(contact.name);
                }
            }
        }
    }

    /// Asks `peer` for its frontier and pulls, author by author, what this
    /// peer lacks; returns how many messages were new.
    pub async fn exchange(&self, peer: &str) -> Result<usize, Status> {
        let contact = self
            .directory
            .get(peer)
            .ok_or_else(|| Status::not_found(format!("{peer} is not known here")))?;
        // Only members are asked: a name only Discovery lists (an outsider
        // may register thousands) costs nothing here.
        let admission = self.handshaker.admission();
        if contact.dropped
            || contact.key_changed
            || (!admission.is_open() && !admission.is_known_member(peer))
            || admission.is_removed(peer)
        {
            return Ok(0);
        }
        let session = match self.peers.sending(peer) {
            Some(s) => s,
            None => self.handshaker.initiate(&contact).await?,
        };
        let (ours, digest) = self
            .feeds
            .heads()
            .map_err(|e| Status::internal(e.to_string()))?;
        let frontier = self.frontier(&contact.address, &session, &digest).await?;
        if frontier.same {
            return Ok(0);
        }
        let held: HashMap<&[u8], u64> = ours
            .iter()
            .map(|h| (h.author_key.as_slice(), h.contiguous))
            .collect();
        let mut added = 0;
        for head in frontier.heads {
            let have = held.get(head.author_key.as_slice()).copied().unwrap_or(0);
            if head.seq > have {
                added += self
                    .history
                    .pull_feed(&contact, &session, &head.author_key, have)
                    .await?;
            }
        }
        if added > 0 {
            self.feeds.changed();
        }
        Ok(added)
    }

    /// `address`'s frontier, for our `digest`.
    async fn frontier(
        &self,
        address: &str,
        session: &Session,
        digest: &[u8; 32],
    ) -> Result<FeedFrontier, Status> {
        let query = FeedsQuery {
            digest: digest.to_vec(),
        };
        let mut request = tonic::Request::new(PeerFeedsRequest {
            envelope: Some(envelope::seal(session, &query.encode_to_vec())?),
        });
        request.set_timeout(CALL_TIMEOUT);
        let response = PeerClient::new(self.channels.get(address)?)
            .feeds(request)
            .await?
            .into_inner();
        let envelope = response
            .envelope
            .ok_or_else(|| Status::invalid_argument("frontier without envelope"))?;
        if envelope.session_id != session.id() {
            return Err(Status::unauthenticated("frontier on another session"));
        }
        let (_, plaintext) = self.open(&envelope)?;
        FeedFrontier::decode(plaintext.as_slice())
            .map_err(|_| Status::invalid_argument("malformed frontier"))
    }

    /// Opens an envelope of this exchange.
    fn open(&self, envelope: &Envelope) -> Result<(Arc<Session>, Vec<u8>), EnvelopeError> {
        envelope::open(&self.peers, envelope, chat_noise::MAX_TRANSPORT_MESSAGE_LEN)
    }
}
