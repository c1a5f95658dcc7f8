//! Delivery: getting a stored message to every peer, or into the outbox for
//! the ones that cannot take it now. One message fans out to all peers at
//! once; to each it travels sealed on that peer's current session, over the
//! peer's delivery stream (or unary `Deliver` for a peer without one), with
//! one fresh handshake and retry if the peer no longer knows the session.
//! What cannot be delivered is queued and redelivered by the outbox worker.
//!
//! A peer's answer is a `tonic::Status`: a definitive refusal ends delivery
//! of that message (INVALID_ARGUMENT, OUT_OF_RANGE, a RESOURCE_EXHAUSTED
//! without `retry-after-ms`, and PERMISSION_DENIED from a peer that is not a
//! known member or is removed); anything else — "not now" (a
//! RESOURCE_EXHAUSTED with `retry-after-ms`), UNAVAILABLE, DEADLINE_EXCEEDED,
//! a failed handshake — queues it (see `Delivery::retryable`). In a network,
//! only for members: a name that has shown this peer no admission is sent to
//! only if a handshake with it succeeds now, and never queued for
//! (`unverified.rs`).

pub mod outbox_worker;
pub mod stream;
mod unverified;

use std::{collections::HashSet, sync::Arc, sync::Mutex};

use chat_proto::v1::{
    ChatMessage, DeliverRequest, Delivery as DeliveryReport, SendResponse,
    delivery::Status as DeliveryStatus, peer_client::PeerClient,
};
use tonic::{Code, Status};
use tracing::{debug, info, warn};

use crate::{
    config::DELIVER_TIMEOUT,
    directory::{Contact, Directory},
    envelope::{Outgoing, seal_outgoing},
    handshaker::Handshaker,
    net::Channels,
    peers::Peers,
    session::Session,
    store::{
        Store,
        outbox::{Dropped, OutboxLimits},
    },
};

/// Messages read from the outbox at a time when flushing it.
const FLUSH_BATCH: usize = 256;

/// Describes a status from another peer for a delivery report.
fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// A delivery report line.
fn report(contact: &Contact, status: DeliveryStatus, error: String) -> DeliveryReport {
    DeliveryReport {
        peer: contact.name.clone(),
        status: status.into(),
        error,
    }
}

/// At most this many members that are not in the connection list are named
/// in a send report (one that invited thousands of names cannot make every
/// report thousands of lines long).
const MAX_NAMED_AWAY: usize = 256;

/// Delivery to every other peer, and the outbox's redelivery.
#[derive(Debug)]
pub struct Delivery {
    outbox_limits: OutboxLimits,
    directory: Arc<Directory>,
    peers: Arc<Peers>,
    store: Arc<Store>,
    handshaker: Arc<Handshaker>,
    channels: Arc<Channels>,
    streams: stream::Streams,
    /// Peers whose queued messages should be retried now (they came back).
    retry_now: Mutex<HashSet<String>>,
    /// Wakes the outbox worker.
    wake: tokio::sync::Notify,
    /// Listed names that showed no admission, and when they last failed.
    unverified: unverified::Unverified,
}

impl Delivery {
    /// Delivery to the other peers, queueing within `outbox_limits`.
    pub fn new(
        outbox_limits: OutboxLimits,
        directory: Arc<Directory>,
        peers: Arc<Peers>,
        store: Arc<Store>,
        handshaker: Arc<Handshaker>,
        channels: Arc<Channels>,
    ) -> Self {
        Self {
            outbox_limits,
            directory,
            peers,
            store,
            handshaker,
            channels,
            streams: stream::Streams::default(),
            retry_now: Mutex::new(HashSet::new()),
            wake: tokio::sync::Notify::new(),
            unverified: unverified::Unverified::default(),
        }
    }

    /// Delivers a stored message to every peer at once. Members known here
    /// but not in the connection list (never listed since this peer
    /// started, or forgotten after a long absence) are named too: they get
    /// it from whichever member holds it when they are back (feed sync).
    pub async fn to_everyone(&self, message: ChatMessage) -> SendResponse {
        // A removed member is owed nothing and is not named (issue 26,
        // item 4): nobody retries it, no report lists it. A new key under
        // its name is named (the owner is told to compare and trust it: it
        // may be the member admitted again, a lost device).
        let admission = self.handshaker.admission();
        let targets: Vec<Contact> = self
            .directory
            .all()
            .into_iter()
            .filter(|c| !c.dropped && (c.key_changed || !admission.is_removed(&c.name)))
            .collect();
        // Encoded once; each recipient's copy is sealed from it.
        let outgoing = Outgoing::of(&message);
        let mut deliveries: Vec<DeliveryReport> =
            futures::future::join_all(targets.iter().map(|c| self.to_one(c, &message, &outgoing)))
                .await
                .into_iter()
                .flatten()
                .collect();
        deliveries.extend(self.members_away().into_iter().map(|peer| DeliveryReport {
            peer,
            status: DeliveryStatus::Queued.into(),
            error: "not online; it gets this from any member that holds it when it is back".into(),
        }));
        SendResponse {
            id: message.id,
            deliveries,
        }
    }

    /// Members (in a network: known by a valid admission and not removed)
    /// that are not in the connection list, at most [`MAX_NAMED_AWAY`].
    fn members_away(&self) -> Vec<String> {
        let mut away: Vec<String> = self
            .handshaker
            .admission()
            .members()
            .into_iter()
            .filter(|n| !self.directory.is_own(n) && self.directory.get(n).is_none())
            .collect();
        if away.len() > MAX_NAMED_AWAY {
            debug!(
                away = away.len(),
                named = MAX_NAMED_AWAY,
                "more members away than a report names"
            );
            away.truncate(MAX_NAMED_AWAY);
        }
        away
    }

    /// The removal of this peer's own admission, if it is no longer a
    /// member (removed, or it left).
    pub fn own_removal(&self) -> Option<crate::admission::OwnRemoval> {
        self.handshaker.admission().own_removal()
    }

    /// The inviter's name while this peer waits for it to confirm the
    /// invitation it joined with.
    pub fn own_pending(&self) -> Option<String> {
        self.handshaker.admission().own_pending()
    }

    /// Why the inviter last refused to confirm this peer, if it did.
    pub fn pending_refusal(&self) -> Option<String> {
        self.handshaker.admission().pending_refusal()
    }

    /// True if `name` stays in the connection list when Discovery says it
    /// left: a member is a member while it is offline (issue 25). In a
    /// network, that is a name with a valid admission known here and not
    /// removed; in open mode, a peer this one has talked to (pinned).
    pub fn keeps_while_away(&self, name: &str) -> bool {
        let admission = self.handshaker.admission();
        if admission.is_open() {
            self.directory.pinned(name).is_some()
        } else {
            admission.is_known_member(name) && !admission.is_removed(name)
        }
    }

    /// Delivers `message` to one peer and reports how it went: delivered,
    /// queued in the outbox (the peer is offline, unreachable, or still has
    /// older messages queued, which go first), refused, or failed. A name
    /// that has shown no admission and is not reached now is no contact
    /// and gets no report line (None).
    async fn to_one(
        &self,
        contact: &Contact,
        message: &ChatMessage,
        outgoing: &Outgoing,
    ) -> Option<DeliveryReport> {
        if self.unverified(&contact.name) {
            return self.to_unverified(contact, outgoing).await;
        }
        Some(self.to_member(contact, message, outgoing).await)
    }

    /// [`Delivery::to_one`] for a member (or any peer, in open mode).
    async fn to_member(
        &self,
        contact: &Contact,
        message: &ChatMessage,
        outgoing: &Outgoing,
    ) -> DeliveryReport {
        // A key change is told first: a removal known for this name is of
        // the key pinned here, and a new key under it may be the member
        // admitted again (a lost device), which `chat trust` checks.
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
            Ok(Err(status)) if !self.retryable(contact, &status) => {
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

    /// Failures that a later attempt may overcome — the peer is down, slow,
    /// over a rate limit ("not now": RESOURCE_EXHAUSTED with a retry-after),
    /// or does not know us yet — as opposed to a refusal for good: the
    /// message itself refused (malformed, or over a size limit), or, in a
    /// network, a name never admitted or removed. PERMISSION_DENIED from a
    /// name known as a member is not for good: someone else answered at its
    /// address, or its admission is not known yet; what it is owed stays
    /// queued.
    fn retryable(&self, contact: &Contact, status: &Status) -> bool {
        if self.handshaker.admission().own_removal().is_some() {
            return false;
        }
        match status.code() {
            Code::ResourceExhausted => chat_proto::limits::retry_after(status).is_some(),
            Code::InvalidArgument | Code::OutOfRange => false,
            Code::PermissionDenied => {
                let admission = self.handshaker.admission();
                admission.is_open()
                    || (admission.is_known_member(&contact.name)
                        && !admission.is_removed(&contact.name))
            }
            _ => true,
        }
    }

    /// Puts `message` in `contact`'s outbox and reports it as queued.
    fn queue(&self, contact: &Contact, message: &ChatMessage, reason: String) -> DeliveryReport {
        let limits = self.outbox_limits;
        match self.store.enqueue(&contact.name, message, limits) {
            Ok(Dropped {
                here: 0,
                elsewhere: None,
            }) => report(
                contact,
                DeliveryStatus::Queued,
                format!("{reason}; queued, retrying until delivered"),
            ),
            Ok(Dropped {
                here: 0,
                elsewhere: Some((other, dropped)),
            }) => {
                let total = limits.total;
                warn!(peer = %other, dropped, total, "outbox full in total; dropped the oldest queued for the peer with the longest queue");
                report(
                    contact,
                    DeliveryStatus::Queued,
                    format!(
                        "{reason}; queued, but the outbox is full in total ({total}, --outbox-total-limit): dropped the {dropped} oldest queued for {other}"
                    ),
                )
            }
            Ok(Dropped { here: dropped, .. }) => {
                let limit = limits.per_peer;
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
    pub fn retry(&self, peer: &str) {
        self.retry_now
            .lock()
            .expect("outbox lock")
            .insert(peer.to_owned());
        self.wake.notify_one();
    }

    /// The peers to retry now, taken once.
    fn take_retries(&self) -> HashSet<String> {
        std::mem::take(&mut *self.retry_now.lock().expect("outbox lock"))
    }

    /// Delivers what is queued for `peer`, oldest first, until the queue is
    /// empty (true) or a delivery fails (false: retry later).
    pub async fn flush_outbox(&self, peer: &str) -> bool {
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
            let batch = match self.store.pending(peer, FLUSH_BATCH) {
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
            match self.flush_page(&contact, &batch).await {
                Some(n) => delivered += n,
                None => return false,
            }
        }
    }

    /// Delivers one page of the outbox at once: the deliveries share the
    /// peer's stream, so they travel in a few batches instead of one round
    /// trip each. A message that fails stays queued for the next try; those
    /// delivered (or refused for good) are taken off the outbox either way.
    /// Returns how many were delivered, or None if any failed.
    async fn flush_page(&self, contact: &Contact, page: &[ChatMessage]) -> Option<usize> {
        let peer = contact.name.as_str();
        let outcomes = futures::future::join_all(page.iter().map(|message| {
            let outgoing = Outgoing::of(message);
            async move {
                tokio::time::timeout(DELIVER_TIMEOUT, self.try_deliver(contact, &outgoing)).await
            }
        }))
        .await;
        let (mut delivered, mut failed) = (0usize, false);
        for (message, outcome) in page.iter().zip(outcomes) {
            match outcome {
                Ok(Ok(())) => delivered += 1,
                Ok(Err(status)) if !self.retryable(contact, &status) => {
                    warn!(peer, id = %message.id, error = %describe(&status), "queued message refused by the peer; dropping it");
                }
                _ => {
                    failed = true;
                    continue;
                }
            }
            if let Err(e) = self.store.delivered(peer, message) {
                warn!(peer, error = %e, "cannot update the outbox");
                return None;
            }
        }
        if failed {
            if delivered > 0 {
                info!(peer, delivered, "some queued messages delivered");
            }
            return None;
        }
        Some(delivered)
    }

    /// Seals and delivers on the current session; if the peer no longer
    /// knows it (e.g. it restarted), handshakes again and retries once.
    async fn try_deliver(&self, contact: &Contact, message: &Outgoing) -> Result<(), Status> {
        let session = match self.peers.sending(&contact.name) {
            Some(s) => s,
            None => self.handshaker.initiate(contact).await?,
        };
        match self.deliver_on(&session, contact, message).await {
            Err(status) if status.code() == Code::Unauthenticated => {
                debug!(peer = %contact.name, reason = status.message(), "session refused; handshaking again");
                // Concurrent failures on the same old session share one
                // new handshake: a session another caller just made is kept.
                self.peers.forget_sending_if(&contact.name, &session);
                let session = match self.peers.sending(&contact.name) {
                    Some(fresh) if fresh.id() != session.id() => fresh,
                    _ => self.handshaker.initiate(contact).await?,
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
        message: &Outgoing,
    ) -> Result<(), Status> {
        if self.streams.streams_to(&contact.address) {
            match self
                .streams
                .deliver(
                    &contact.address,
                    || Ok(self.channels.get(&contact.address)?),
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
            envelope: Some(seal_outgoing(session, message)?),
        });
        request.set_timeout(DELIVER_TIMEOUT);
        PeerClient::new(self.channels.get(&contact.address)?)
            .deliver(request)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chat_noise::StaticKeypair;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::testkit::{Kit, NOBODY};

    fn message(id: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            sender: "alice".into(),
            text: "hello".into(),
            hlc: 1 << 16,
            ..Default::default()
        }
    }

    /// Alice's parts, knowing bob at `address`, with `id` stored as sent.
    fn alice_with_bob(address: &str) -> Kit {
        let alice = Kit::new("alice", |_| {});
        let bob = StaticKeypair::generate();
        alice.directory.upsert("bob", address, &bob.public_key());
        alice
    }

    fn status_of(report: &SendResponse) -> (DeliveryStatus, &str) {
        let d = &report.deliveries[0];
        (d.status(), d.error.as_str())
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_peer_gets_the_message_queued_and_later_ones_queue_behind_it() {
        let alice = alice_with_bob(NOBODY);
        alice.store.insert(&message("m1")).unwrap();
        let report = alice.delivery.to_everyone(message("m1")).await;
        let (status, why) = status_of(&report);
        assert_eq!(status, DeliveryStatus::Queued, "{why}");
        assert!(why.contains("retrying until delivered"), "{why}");
        assert_eq!(alice.store.pending_count("bob").unwrap(), 1);
        // The next one does not overtake it: queued at once, without a try.
        alice.store.insert(&message("m2")).unwrap();
        let report = alice.delivery.to_everyone(message("m2")).await;
        let (status, why) = status_of(&report);
        assert_eq!(status, DeliveryStatus::Queued);
        assert!(why.contains("earlier messages are still queued"), "{why}");
        assert!(
            !alice.delivery.flush_outbox("bob").await,
            "still unreachable"
        );
        assert_eq!(alice.store.pending_count("bob").unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn offline_peers_are_queued_and_changed_keys_refused_without_a_try() {
        let alice = alice_with_bob(NOBODY);
        let bob_key = alice.directory.get("bob").unwrap().public_key;
        alice.directory.mark_offline("bob", &bob_key);
        alice.store.insert(&message("m1")).unwrap();
        let report = alice.delivery.to_everyone(message("m1")).await;
        let (status, why) = status_of(&report);
        assert_eq!(status, DeliveryStatus::Queued);
        assert!(why.starts_with("offline"), "{why}");

        let carol = Kit::new("carol", |_| {});
        carol.directory.upsert("bob", NOBODY, &[7; 32]);
        carol.directory.pin("bob", &[7; 32]);
        carol.directory.upsert("bob", NOBODY, &[8; 32]);
        let report = carol.delivery.to_everyone(message("m1")).await;
        let (status, why) = status_of(&report);
        assert_eq!(status, DeliveryStatus::Refused);
        assert!(why.contains("chat trust bob"), "{why}");
        assert_eq!(carol.store.pending_count("bob").unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_outbox_is_bounded_and_says_how_many_it_dropped() {
        let alice = Kit::new("alice", |c| c.outbox_limit = 2);
        alice.directory.upsert("bob", NOBODY, &[7; 32]);
        let bob_key = alice.directory.get("bob").unwrap().public_key;
        alice.directory.mark_offline("bob", &bob_key);
        let mut last = String::new();
        for i in 0..3 {
            let m = message(&format!("m{i}"));
            alice.store.insert(&m).unwrap();
            let report = alice.delivery.to_everyone(m).await;
            last = report.deliveries[0].error.clone();
        }
        assert!(last.contains("dropped the 1 oldest"), "{last}");
        assert_eq!(alice.store.pending_count("bob").unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_retries_a_peer_at_once_when_told_it_is_back() {
        let alice = alice_with_bob(NOBODY);
        let bob_key = alice.directory.get("bob").unwrap().public_key;
        alice.directory.mark_offline("bob", &bob_key);
        alice.store.insert(&message("m1")).unwrap();
        alice.delivery.to_everyone(message("m1")).await;
        let shutdown = CancellationToken::new();
        let worker = tokio::spawn(outbox_worker::run(
            alice.delivery.clone(),
            alice.store.clone(),
            shutdown.clone(),
        ));
        // Its first round fails (bob is offline) and it backs off.
        tokio::task::yield_now().await;
        assert_eq!(alice.store.pending_count("bob").unwrap(), 1);
        // Dropped by the owner, and said to be back: the worker wakes now,
        // not after its backoff, and discards what was queued for bob.
        alice.directory.drop_peer("bob");
        alice.delivery.retry("bob");
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(alice.store.pending_count("bob").unwrap(), 0);
        shutdown.cancel();
        worker.await.unwrap();
    }
}
