//! Feed reconciliation (docs/protocol.md §9.6): whenever two members meet
//! — a handshake whose feed digest is not ours, a member coming back, and
//! every half minute or so while they are in touch — one asks the other
//! for its feed heads (only when the digests differ) and pulls, author by
//! author, the messages it lacks after the part of each feed it holds
//! whole. So a message reaches every member that is ever in touch with
//! anyone who has it, whatever the order members come and go, and a gap
//! in a feed is filled from whoever holds the missing messages.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_proto::v1::{
    Envelope, FeedFrontier, FeedHead as WireHead, FeedsQuery, PeerFeedsRequest, PeerFeedsResponse,
    peer_client::PeerClient,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::{
    delivery::Delivery,
    directory::Directory,
    envelope::{self, EnvelopeError},
    feeds::{self, FeedHead, Feeds},
    handshaker::Handshaker,
    history_sync::{HistorySync, Pulled},
    net::Channels,
    peers::Peers,
    rerun::Rerun,
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
    delivery: Arc<Delivery>,
    /// The exchange with each peer: one at a time.
    exchanges: Rerun,
    /// Forks warned of: (author key, seq).
    forks: Mutex<HashSet<(Vec<u8>, u64)>>,
}

/// The size of `message` sealed: its encoding and the AEAD tag.
fn sealed_len(message: &impl Message) -> usize {
    message.encoded_len() + 16
}

/// Forks remembered (and so warned of once each).
const MAX_FORKS_REMEMBERED: usize = 4096;

impl FeedSync {
    /// Reconciliation through these parts.
    pub fn new(
        history: Arc<HistorySync>,
        handshaker: Arc<Handshaker>,
        peers: Arc<Peers>,
        channels: Arc<Channels>,
        directory: Arc<Directory>,
        delivery: Arc<Delivery>,
    ) -> Self {
        Self {
            feeds: handshaker.feeds().clone(),
            history,
            handshaker,
            peers,
            channels,
            directory,
            delivery,
            exchanges: Rerun::new(MIN_EXCHANGE_INTERVAL),
            forks: Mutex::default(),
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
            // With the asker's bucket digests, only the buckets that differ.
            let differ: Option<Vec<bool>> = (query.buckets.len() == feeds::BUCKETS).then(|| {
                feeds::bucket_digests(&heads)
                    .iter()
                    .zip(&query.buckets)
                    .map(|(ours, theirs)| ours.as_slice() != theirs.as_slice())
                    .collect()
            });
            FeedFrontier {
                same: false,
                heads: heads
                    .iter()
                    .filter(|h| {
                        differ
                            .as_ref()
                            .is_none_or(|d| d[feeds::bucket_of(&h.author_key)])
                    })
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

    /// Compares feeds with `peer` in the background: now, or, if an
    /// exchange with it runs or ran a moment ago, once more after it (at
    /// most one exchange per peer at a time, and one per
    /// [`MIN_EXCHANGE_INTERVAL`]; a request meanwhile is not lost).
    pub fn exchange_later(self: &Arc<Self>, peer: String) {
        let Some(delay) = self.exchanges.ask(&peer) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            loop {
                match this.exchange(&peer).await {
                    Ok(Pulled {
                        added: 0,
                        items,
                        bytes,
                    }) => {
                        debug!(with = %peer, items, bytes, "feeds compared: nothing missing")
                    }
                    Ok(Pulled {
                        added,
                        items,
                        bytes,
                    }) => {
                        info!(from = %peer, added, items, bytes, "feeds reconciled: missed messages pulled")
                    }
                    Err(e) => {
                        debug!(peer = %peer, error = %e.message(), "feeds not compared now; again at the next contact")
                    }
                }
                if !this.exchanges.ended(&peer) {
                    return;
                }
                tokio::time::sleep(this.exchanges.interval()).await;
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
    /// peer lacks; returns how many messages were new, the items pulled,
    /// and the sealed bytes of the exchange (the query, the frontier, the
    /// pulls' requests and items: ciphertexts, without gRPC's framing).
    pub async fn exchange(&self, peer: &str) -> Result<Pulled, Status> {
        let contact = self
            .directory
            .get(peer)
            .ok_or_else(|| Status::not_found(format!("{peer} is not known here")))?;
        // Only members are asked. A name only Discovery lists is met first
        // (a handshake verifies its admission), at most once per half
        // minute: an outsider's thousands of names cost one attempt each
        // per period, and two members that never talked still compare.
        let admission = self.handshaker.admission();
        if contact.dropped || contact.key_changed || admission.is_removed(peer) {
            return Ok(Pulled::default());
        }
        if !self.delivery.introduce(&contact).await {
            return Ok(Pulled::default());
        }
        let (ours, digest) = self
            .feeds
            .heads()
            .map_err(|e| Status::internal(e.to_string()))?;
        // A handshake of the last seconds showed the same heads: nothing to ask.
        if self.handshaker.feeds_seen_same(peer, &digest) {
            return Ok(Pulled::default());
        }
        // Past a bucket's worth of authors, the bucket digests go with the
        // query, so that only the heads of buckets that differ come back.
        let query = FeedsQuery {
            digest: digest.to_vec(),
            buckets: if ours.len() > feeds::BUCKETS {
                feeds::bucket_digests(&ours)
                    .into_iter()
                    .map(|d| d.to_vec())
                    .collect()
            } else {
                Vec::new()
            },
        };
        let (session, frontier) = match self.peers.sending(peer) {
            Some(session) => match self.frontier(&contact.address, &session, &query).await {
                // The peer restarted (at the same address) since that
                // session: meet it again, once.
                Err(status) if status.code() == tonic::Code::Unauthenticated => {
                    self.peers.forget_sending_if(peer, &session);
                    self.fresh_frontier(&contact, &query).await?
                }
                answer => (session, answer?),
            },
            None => self.fresh_frontier(&contact, &query).await?,
        };
        let mut exchanged = Pulled {
            bytes: sealed_len(&query) + sealed_len(&frontier),
            ..Pulled::default()
        };
        if frontier.same {
            return Ok(exchanged);
        }
        let held: HashMap<&[u8], &FeedHead> =
            ours.iter().map(|h| (h.author_key.as_slice(), h)).collect();
        // A member admitted to history from some time on holds no author's
        // older messages, and no member may send it them: what it holds of
        // a feed is whole from the first it holds, and it pulls after that
        // (after 0, every exchange with a member holding all of it would
        // bring back everything since its admission).
        let partial = admission.own_history_from_millis() > 0;
        for head in frontier.heads {
            let ours = held.get(head.author_key.as_slice());
            let have = ours.map_or(0, |h| {
                if partial && h.contiguous == 0 {
                    h.run
                } else {
                    h.contiguous
                }
            });
            let fork = ours.is_some_and(|h| h.seq == head.seq && h.hash.as_slice() != head.hash);
            let after = if fork {
                // Two messages with one number: the author said two
                // different things. The other is pulled and kept as
                // evidence (`chat history --verify` shows the fork).
                self.fork_seen(peer, &head.author_key, head.seq);
                head.seq.saturating_sub(1).min(have)
            } else if head.seq > have {
                have
            } else {
                continue;
            };
            let pulled = self
                .history
                .pull_feed(&contact, &session, &head.author_key, after)
                .await?;
            exchanged.added += pulled.added;
            exchanged.items += pulled.items;
            exchanged.bytes += pulled.bytes;
        }
        Ok(exchanged)
    }

    /// Warns of a fork in `author_key`'s feed at `seq`, once.
    fn fork_seen(&self, peer: &str, author_key: &[u8], seq: u64) {
        let mut forks = self.forks.lock().expect("forks lock");
        if forks.len() < MAX_FORKS_REMEMBERED && forks.insert((author_key.to_vec(), seq)) {
            warn!(
                from = %peer,
                author = %chat_proto::keys::fingerprint(author_key),
                seq,
                "fork: an author signed two different messages with one number (it said two different things); both are kept as evidence, see `chat history --verify`"
            );
        }
    }

    /// A new session with `contact`, and its frontier for our `query`.
    async fn fresh_frontier(
        &self,
        contact: &crate::directory::Contact,
        query: &FeedsQuery,
    ) -> Result<(Arc<Session>, FeedFrontier), Status> {
        let session = self.handshaker.initiate(contact).await?;
        let frontier = self.frontier(&contact.address, &session, query).await?;
        Ok((session, frontier))
    }

    /// `address`'s frontier, for our `query`.
    async fn frontier(
        &self,
        address: &str,
        session: &Session,
        query: &FeedsQuery,
    ) -> Result<FeedFrontier, Status> {
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
