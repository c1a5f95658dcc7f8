//! Removal reconciliation (docs/protocol.md §5.5): every handshake carries
//! the digest of every removal its sender knows; a member whose own digest
//! differs asks that peer, inside their session, for the removals in the
//! buckets that differ (`Peer/Removals`, paged), verifies each and records
//! the new ones. So a removal reaches every member that meets anyone who
//! knows it, however many newer removals there are and in whatever order
//! members come and go, and nothing is sent when both hold the same set.

use std::{sync::Arc, time::Duration};

use chat_proto::v1::{
    Envelope, PeerRemovalsRequest, PeerRemovalsResponse, RemovalsPage, RemovalsQuery,
    peer_client::PeerClient,
};
use prost::Message;
use tonic::Status;
use tracing::{debug, info, warn};

use crate::{
    admission::Admission,
    directory::Directory,
    envelope::{self, EnvelopeError},
    handshaker::Handshaker,
    membership::{Membership, PeerEvent},
    net::Channels,
    peers::Peers,
    removals::BUCKETS,
    rerun::Rerun,
    session::Session,
};

/// Least time between two pulls from one peer: a peer whose set never
/// matches ours (a remover over its quota, say) costs one pull per this.
const MIN_PULL_INTERVAL: Duration = Duration::from_secs(2);

/// Removals refused from one peer before its pull is dropped: an honest
/// member only relays what verified for it.
const MAX_REFUSED_PER_PULL: usize = 3;

/// Pages one pull takes at most (48 KiB each).
const MAX_PAGES: usize = 4096;

/// Longest wait for one page.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `Peer/Removals` request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum RemovalsError {
    /// The request's envelope did not open.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The sealed request is not a RemovalsQuery.
    #[error("sealed content is not a RemovalsQuery")]
    NotAQuery,
    /// A bucket digest or the resume key is not 32 bytes.
    #[error("a bucket digest or the resume key is not 32 bytes")]
    BadKey,
}

/// Both sides of removal reconciliation.
#[derive(Debug)]
pub struct RemovalSync {
    admission: Arc<Admission>,
    directory: Arc<Directory>,
    peers: Arc<Peers>,
    handshaker: Arc<Handshaker>,
    channels: Arc<Channels>,
    membership: Arc<Membership>,
    /// The pull from each peer: one at a time.
    pulls: Rerun,
}

impl RemovalSync {
    /// Reconciliation through these parts.
    pub fn new(
        handshaker: Arc<Handshaker>,
        peers: Arc<Peers>,
        channels: Arc<Channels>,
        membership: Arc<Membership>,
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            admission: handshaker.admission().clone(),
            directory,
            peers,
            handshaker,
            channels,
            membership,
            pulls: Rerun::new(MIN_PULL_INTERVAL),
        }
    }

    /// Answers a `Peer/Removals` request: one page sealed to the asker.
    pub fn serve(&self, envelope: Option<Envelope>) -> Result<PeerRemovalsResponse, RemovalsError> {
        let envelope = envelope.ok_or(EnvelopeError::Missing)?;
        let (session, plaintext) = self.open(&envelope)?;
        let query =
            RemovalsQuery::decode(plaintext.as_slice()).map_err(|_| RemovalsError::NotAQuery)?;
        let theirs = query
            .buckets
            .iter()
            .map(|b| <[u8; 32]>::try_from(b.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| RemovalsError::BadKey)?;
        let after = match query.after.as_slice() {
            [] => None,
            key => Some(<[u8; 32]>::try_from(key).map_err(|_| RemovalsError::BadKey)?),
        };
        let (removals, next) = self.admission.removals_page(&theirs, after);
        let page = RemovalsPage {
            removals,
            next_after: next.map(|k| k.to_vec()).unwrap_or_default(),
        };
        Ok(PeerRemovalsResponse {
            envelope: Some(envelope::seal(&session, &page.encode_to_vec())?),
        })
    }

    /// Pulls from `peer` what this peer lacks, in the background: now, or,
    /// if a pull from it runs or ran a moment ago, once more after it.
    pub fn pull_later(self: &Arc<Self>, peer: String) {
        let Some(delay) = self.pulls.ask(&peer) else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            loop {
                match this.pull(&peer).await {
                    Ok(0) => debug!(from = %peer, "removals reconciled; nothing new"),
                    Ok(added) => info!(from = %peer, added, "removals reconciled"),
                    Err(e) => {
                        debug!(from = %peer, error = %e.message(), "removals not reconciled now; again at the next handshake")
                    }
                }
                if !this.pulls.ended(&peer) {
                    return;
                }
                tokio::time::sleep(this.pulls.interval()).await;
            }
        });
    }

    /// Pulls from `peer` every removal in the buckets whose digest differs
    /// from ours; returns how many were new.
    pub async fn pull(&self, peer: &str) -> Result<usize, Status> {
        let contact = self
            .directory
            .get(peer)
            .ok_or_else(|| Status::not_found(format!("{peer} is not known here")))?;
        let session = match self.peers.sending(peer) {
            Some(s) => s,
            None => self.handshaker.initiate(&contact).await?,
        };
        let buckets: Vec<Vec<u8>> = self
            .admission
            .removal_buckets()
            .iter()
            .map(|b| b.to_vec())
            .collect();
        debug_assert_eq!(buckets.len(), BUCKETS);
        let mut client = PeerClient::new(self.channels.get(&contact.address)?);
        let (mut after, mut added, mut refused) = (Vec::new(), 0, 0);
        for _ in 0..MAX_PAGES {
            let page = self.page(&mut client, &session, &buckets, &after).await?;
            let removals = page.removals;
            let admission = self.admission.clone();
            let left = MAX_REFUSED_PER_PULL - refused;
            let learned = tokio::task::spawn_blocking(move || {
                admission.learn_removals_within(&removals, left)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
            added += learned.added;
            refused += learned.refused;
            for name in learned.removed {
                self.membership.tell(PeerEvent::Removed(name));
            }
            if learned.self_removed {
                self.membership.tell(PeerEvent::SelfRemoved);
            }
            if refused >= MAX_REFUSED_PER_PULL {
                warn!(from = %peer, refused, reason = learned.first_refusal.as_deref().unwrap_or(""), "removals that do not verify; stopped asking this peer");
                return Err(Status::invalid_argument("removals that do not verify"));
            }
            // Each page must move on, or the pull ends.
            if page.next_after.is_empty() || page.next_after <= after {
                return Ok(added);
            }
            after = page.next_after;
        }
        Ok(added)
    }

    /// Opens an envelope of this exchange (a query or a page: each at most
    /// one Noise message, whatever this peer's message size limit).
    fn open(&self, envelope: &Envelope) -> Result<(Arc<Session>, Vec<u8>), EnvelopeError> {
        envelope::open(&self.peers, envelope, chat_noise::MAX_TRANSPORT_MESSAGE_LEN)
    }

    /// One page after `after`.
    async fn page(
        &self,
        client: &mut PeerClient<tonic::transport::Channel>,
        session: &Session,
        buckets: &[Vec<u8>],
        after: &[u8],
    ) -> Result<RemovalsPage, Status> {
        let query = RemovalsQuery {
            buckets: buckets.to_vec(),
            after: after.to_vec(),
        };
        let mut request = tonic::Request::new(PeerRemovalsRequest {
            envelope: Some(envelope::seal(session, &query.encode_to_vec())?),
        });
        request.set_timeout(PAGE_TIMEOUT);
        let response = client.removals(request).await?.into_inner();
        let envelope = response
            .envelope
            .ok_or_else(|| Status::invalid_argument("removals page without envelope"))?;
        if envelope.session_id != session.id() {
            return Err(Status::unauthenticated("removals page on another session"));
        }
        let (_, plaintext) = self.open(&envelope)?;
        RemovalsPage::decode(plaintext.as_slice())
            .map_err(|_| Status::invalid_argument("malformed removals page"))
    }
}
