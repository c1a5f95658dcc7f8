//! History sync: a peer that joins, or returns after downtime, pulls what it
//! missed from a live peer over `Peer/History` — sealed to it inside its own
//! session, streamed in pages, resumable from the last item received — and
//! serves its own history to the peers that ask.
//!
//! Every item is a message exactly as its author signed it, preceded (once
//! per author key in a stream) by the author's admission chain. The puller
//! verifies each signature (a batch verification per batch stored) and
//! that the key was admitted under the name it signs as, refuses what does
//! not verify (a relay's forgery or alteration) with a warning naming the
//! relay, and reports gaps in an author's numbering (a message the relay
//! dropped, or one that has not reached it yet). A peer that lost its data
//! dir gets its own signed messages back this way.

use std::{collections::HashSet, sync::Arc};

use chat_proto::v1::{
    AuthorFeed, ChatMessage, HistoryCursor, PeerHistoryRequest, PeerHistoryResponse, SealedMessage,
    SeqRange, VerifyHistoryResponse, peer_client::PeerClient,
};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use crate::{
    authors::{Authors, Via},
    authorship::{self, Author},
    config::Config,
    directory::{Contact, Directory},
    envelope::{self, EnvelopeError},
    handshaker::Handshaker,
    hlc::Hlc,
    inbound::Inbound,
    net::Channels,
    session::Session,
    store::{
        Store, StoreError,
        history::{Query, QueryError, cursor_of},
    },
};

/// How far back before the newest stored message a returning peer asks
/// for, in HLC units (ms << 16): five minutes, to cover messages whose
/// senders' clocks ran a little behind ours.
const SYNC_OVERLAP_HLC: u64 = (5 * 60 * 1000) << 16;

/// Messages stored per transaction while syncing.
const SYNC_BATCH: usize = 500;

/// Longest wait for the next history item before the pull is resumed.
const ITEM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Attempts per source peer when the stream breaks (each resumes).
const ATTEMPTS_PER_PEER: usize = 3;

/// Why this peer's history could not be served to a peer that asked.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The request's envelope did not open.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// This peer runs with `--share-history=false`.
    #[error("{0} does not share history (--share-history=false); ask another peer")]
    NotShared(String),
    /// The sealed request is not a cursor.
    #[error("sealed content is not a HistoryCursor")]
    NotACursor,
    /// The store could not answer the query.
    #[error(transparent)]
    Query(#[from] QueryError),
}

/// How far a pull got: it resumes after `after`.
#[derive(Debug, Default)]
struct Progress {
    /// The cursor of the last item received.
    after: String,
    /// Items received.
    seen: usize,
    /// New messages stored.
    added: usize,
    /// Items refused (see [`HistorySync::acceptable`]).
    refused: usize,
    /// Why, for the first few refused.
    reasons: Vec<String>,
    /// The author keys of the messages stored.
    authors: HashSet<Vec<u8>>,
    /// Author items (admission chains) received.
    chains: usize,
    /// Sealed bytes received (the items' ciphertexts).
    bytes: usize,
}

/// What one feed pull (or a whole exchange) brought.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pulled {
    /// New messages stored.
    pub added: usize,
    /// Items received (duplicates and authors' chains included).
    pub items: usize,
    /// Sealed bytes sent and received.
    pub bytes: usize,
}

/// Author items one pull takes: one per author key, and no network has
/// more members than Discovery's default cap (10,000) by much.
const MAX_AUTHOR_ITEMS: usize = 20_000;

/// Items refused from one relay before its pull is ended: an honest relay
/// serves only what verified when it stored it, so a few refusals (a
/// member removed meanwhile, a clock far ahead) are possible, and hundreds
/// are an attack on this peer's CPU.
const MAX_REFUSED_PER_PULL: usize = 64;

/// The pull's end if the relay sent more refused items than
/// [`MAX_REFUSED_PER_PULL`].
fn over_budget(progress: &Progress) -> Option<Status> {
    (progress.refused > MAX_REFUSED_PER_PULL).then(|| {
        Status::invalid_argument(format!(
            "the relay sent more than {MAX_REFUSED_PER_PULL} history items that do not verify; stopped asking it"
        ))
    })
}

/// Refusal reasons kept per pull for the warning at its end.
const REASONS_KEPT: usize = 5;

impl Progress {
    /// Warns, naming the relay, of what was refused (if anything), and of
    /// the pull's end when `ended` says why it ended early.
    fn warn_refused(&self, from: &str, ended: Option<&Status>) {
        if self.refused == 0 {
            return;
        }
        match ended {
            Some(e) => {
                warn!(from = %from, refused = self.refused, stored = self.added, error = %e.message(), "history pull ended: the relay sent items that do not verify")
            }
            None => {
                warn!(
                    from = %from,
                    refused = self.refused,
                    "history items refused: the relay sent messages that do not verify (forged or altered), from keys not admitted under their names, from the future or oversize"
                )
            }
        }
        for reason in &self.reasons {
            warn!(from = %from, "history item refused: {reason}");
        }
    }

    fn refuse(&mut self, why: String) {
        self.refused += 1;
        if self.reasons.len() < REASONS_KEPT {
            self.reasons.push(why);
        }
    }
}

/// Both sides of history sync.
#[derive(Debug)]
pub struct HistorySync {
    name: String,
    max_message_bytes: usize,
    share_history: bool,
    directory: Arc<Directory>,
    handshaker: Arc<Handshaker>,
    channels: Arc<Channels>,
    inbound: Arc<Inbound>,
    store: Arc<Store>,
    hlc: Arc<Hlc>,
    authors: Arc<Authors>,
    /// This peer as an author: its own messages recovered move its feed on.
    author: Arc<Author>,
    /// The network key relayed messages must be signed for.
    network: Vec<u8>,
    /// The clock when this peer started: history synced from others that
    /// is newer than this was sent while we were up, and is shown live.
    started_hlc: u64,
}

impl HistorySync {
    /// History sync for the peer `config` describes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &Config,
        directory: Arc<Directory>,
        handshaker: Arc<Handshaker>,
        channels: Arc<Channels>,
        inbound: Arc<Inbound>,
        store: Arc<Store>,
        hlc: Arc<Hlc>,
        started_hlc: u64,
        authors: Arc<Authors>,
        author: Arc<Author>,
    ) -> Self {
        let network = handshaker.admission().network_key();
        Self {
            name: config.name.clone(),
            max_message_bytes: config.max_message_bytes,
            share_history: config.share_history,
            directory,
            handshaker,
            channels,
            inbound,
            store,
            hlc,
            authors,
            author,
            network,
            started_hlc,
        }
    }

    /// Pulls missed history from one live peer (trying each known peer in turn,
    /// those Discovery lists first). With `want_members`, also learns the
    /// network from that peer. Returns how many new messages were stored.
    pub async fn pull_missed_history(&self, want_members: bool) -> Option<usize> {
        let node = self;
        let mut candidates: Vec<Contact> = node
            .directory
            .all()
            .into_iter()
            .filter(|c| !c.dropped && !c.key_changed)
            .collect();
        // Online first, otherwise a random start so peers spread the load.
        let offset = rand::random::<u64>() as usize % candidates.len().max(1);
        candidates.rotate_left(offset);
        candidates.sort_by_key(|c| !c.online);
        for contact in candidates {
            match self.pull_from(&contact, want_members).await {
                Ok(added) => {
                    if want_members {
                        self.announce(&contact.name).await;
                    }
                    return Some(added);
                }
                Err(e) => {
                    debug!(peer = %contact.name, error = %e.message(), "history sync failed; trying another peer")
                }
            }
        }
        if !node.directory.all().is_empty() {
            warn!("no peer answered a history sync; history may be incomplete until one does");
        }
        None
    }

    /// Without Discovery, the peers only learn this peer's (possibly new)
    /// address from a handshake with it: handshake with every known peer but
    /// `synced_from`, so each can deliver to it (and flush what it queued).
    async fn announce(&self, synced_from: &str) {
        let node = self;
        let others: Vec<Contact> = node
            .directory
            .all()
            .into_iter()
            .filter(|c| c.name != synced_from && !c.dropped && !c.key_changed)
            .collect();
        let results =
            futures::future::join_all(others.iter().map(|c| node.handshaker.initiate(c))).await;
        for (contact, result) in others.iter().zip(results) {
            match result {
                Ok(_) => node
                    .directory
                    .learn_address(&contact.name, &contact.address),
                Err(e) => {
                    debug!(peer = %contact.name, error = %e.message(), "could not announce our address")
                }
            }
        }
    }

    /// Pulls everything since our newest message (minus an overlap) from `contact`.
    pub async fn pull_from(&self, contact: &Contact, want_members: bool) -> Result<usize, Status> {
        let newest = self.store.max_hlc().unwrap_or(0);
        let since_hlc = if newest == 0 {
            0
        } else {
            newest.saturating_sub(SYNC_OVERLAP_HLC)
        };
        let mut progress = Progress::default();
        let mut last_error = None;
        for attempt in 0..ATTEMPTS_PER_PEER {
            // Each stream introduces its authors again.
            progress.chains = 0;
            // A fresh session per attempt: a long pull may outlive the last one.
            let session = self
                .handshaker
                .initiate_with(contact, want_members && attempt == 0)
                .await?;
            self.directory
                .learn_address(&contact.name, &contact.address);
            let mut stream = match self
                .request(contact, &session, since_hlc, &progress.after)
                .await?
            {
                Ok(stream) => stream,
                Err(s) => {
                    last_error = Some(s);
                    continue;
                }
            };
            let received = self.receive(&mut stream, &session, &mut progress).await;
            let received =
                received.inspect_err(|e| progress.warn_refused(&contact.name, Some(e)))?;
            match received {
                None => {
                    progress.warn_refused(&contact.name, None);
                    info!(from = %contact.name, received = progress.seen, new = progress.added, "history synced");
                    self.report_gaps(&contact.name, &progress.authors);
                    return Ok(progress.added);
                }
                Some(s) => {
                    debug!(from = %contact.name, error = %s.message(), "history stream broke; resuming");
                    last_error = Some(s);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Status::unavailable("history sync failed")))
    }

    /// Asks `contact` for history since `since_hlc`, after `after`, on
    /// `session`. The outer error ends the pull; the inner one (the call
    /// failed) is worth another attempt.
    async fn request(
        &self,
        contact: &Contact,
        session: &Session,
        since_hlc: u64,
        after: &str,
    ) -> Result<Result<Streaming<PeerHistoryResponse>, Status>, Status> {
        let cursor = HistoryCursor {
            after: after.to_owned(),
            limit: 0,
            since_hlc,
            ..Default::default()
        };
        let request = PeerHistoryRequest {
            envelope: Some(envelope::seal(session, &cursor.encode_to_vec())?),
        };
        let mut client = PeerClient::new(self.channels.get(&contact.address)?);
        Ok(client.history(request).await.map(|r| r.into_inner()))
    }

    /// Stores what the stream brings, in batches. None when it ended
    /// cleanly; the status that broke it (worth resuming) otherwise; an
    /// error for what ends the pull.
    async fn receive(
        &self,
        stream: &mut Streaming<PeerHistoryResponse>,
        session: &Session,
        progress: &mut Progress,
    ) -> Result<Option<Status>, Status> {
        let mut batch = Vec::with_capacity(SYNC_BATCH);
        let broke = loop {
            // A stalled source must not hold the sync forever.
            let next = tokio::time::timeout(ITEM_TIMEOUT, stream.message())
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("history stream stalled")));
            match next {
                Ok(Some(item)) => {
                    progress.bytes += item.envelope.as_ref().map_or(0, |e| e.ciphertext.len());
                    match self.take(item, session, progress, &mut batch).await {
                        Ok(None) => {}
                        Ok(Some(broke)) => break Some(broke),
                        Err(e) => {
                            // What verified so far is kept; the relay is not
                            // asked further.
                            progress.added += self.store_batch(&mut batch, progress)?;
                            return Err(e);
                        }
                    }
                }
                Ok(None) => break None,
                Err(s) => break Some(s),
            }
            if let Some(e) = over_budget(progress) {
                progress.added += self.store_batch(&mut batch, progress)?;
                return Err(e);
            }
        };
        progress.added += self.store_batch(&mut batch, progress)?;
        over_budget(progress).map_or(Ok(broke), Err)
    }

    /// One history item: opened, checked, and stored (live-shown if it was
    /// sent while this peer was up) or batched; or an author's admission
    /// chain, taken in for the items that follow.
    async fn take(
        &self,
        item: PeerHistoryResponse,
        session: &Session,
        progress: &mut Progress,
        batch: &mut Vec<ChatMessage>,
    ) -> Result<Option<Status>, Status> {
        let Some(envelope) = item.envelope else {
            return Ok(Some(Status::invalid_argument(
                "history item without envelope",
            )));
        };
        if envelope.session_id != session.id() {
            return Ok(Some(Status::unauthenticated(
                "history item on another session",
            )));
        }
        let (_, plaintext) = self
            .inbound
            .open(&envelope)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let sealed = SealedMessage::decode(plaintext.as_slice())
            .map_err(|_| Status::invalid_argument("malformed history item"))?;
        if sealed.authored.is_empty() {
            if sealed.author_chain.is_empty() {
                return Err(Status::invalid_argument(
                    "history item with neither a message nor an author",
                ));
            }
            // At most one per author key per stream; a relay sending more
            // than any network has members spends our CPU on purpose.
            progress.chains += 1;
            if progress.chains > MAX_AUTHOR_ITEMS {
                return Err(Status::resource_exhausted(format!(
                    "more than {MAX_AUTHOR_ITEMS} author items in one history pull"
                )));
            }
            if let Err(e) = self.authors.learn(sealed.author_chain) {
                progress.refuse(e.to_string());
            }
            return Ok(None);
        }
        let message = match authorship::decode(sealed.authored, sealed.signature, &self.network) {
            Ok(message) => message,
            Err(e) => {
                progress.seen += 1;
                progress.refuse(e.to_string());
                return Ok(None);
            }
        };
        // Resume after what was really received, not what the
        // unauthenticated cursor field says.
        progress.after = cursor_of(&message);
        progress.seen += 1;
        if let Err(why) = self.acceptable(&message) {
            progress.refuse(why);
            return Ok(None);
        }
        if message.hlc >= self.started_hlc {
            // Sent while we were up, and it won the race with its direct
            // delivery: show it live like that would have.
            if let Err(why) = self.authentic(&message) {
                progress.refuse(why);
                return Ok(None);
            }
            self.hlc.observe(message.hlc);
            progress.authors.insert(message.author_key.clone());
            let new = self
                .inbound
                .store_received(message)
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            progress.added += usize::from(new);
            return Ok(None);
        }
        batch.push(message);
        if batch.len() == SYNC_BATCH {
            progress.added += self.store_batch(batch, progress)?;
        }
        Ok(None)
    }

    /// Whether a relayed message's size and clock may be stored (its
    /// signature and author are checked by [`HistorySync::authentic`]).
    fn acceptable(&self, message: &ChatMessage) -> Result<(), String> {
        if message.text.len() > self.max_message_bytes {
            return Err(format!(
                "{}'s message {} has a {}-byte text, over this peer's limit",
                message.sender,
                message.id,
                message.text.len()
            ));
        }
        if message.id.is_empty() || message.id.len() > crate::config::MAX_ID_BYTES {
            return Err(format!("{}'s message has a malformed id", message.sender));
        }
        self.inbound
            .check_clock(message.hlc)
            .map_err(|e| format!("{}'s message {}: {e}", message.sender, message.id))
    }

    /// Whether a relayed message's author key may sign as its sender; for
    /// one of this peer's own (recovered), its feed moves on past it.
    fn admitted(&self, message: &ChatMessage) -> Result<(), String> {
        self.authors
            .check(
                &message.sender,
                &message.author_key,
                message.hlc,
                Via::Relay,
            )
            .map_err(|e| format!("message {}: {e}", message.id))?;
        self.author.observe(message);
        Ok(())
    }

    /// One relayed message's signature and author.
    fn authentic(&self, message: &ChatMessage) -> Result<(), String> {
        authorship::verify(message).map_err(|e| e.to_string())?;
        self.admitted(message)
    }

    /// Stores a batch of relayed messages: their signatures checked in one
    /// batch verification, their authors checked; what fails is refused.
    fn store_batch(
        &self,
        batch: &mut Vec<ChatMessage>,
        progress: &mut Progress,
    ) -> Result<usize, Status> {
        if batch.is_empty() {
            return Ok(0);
        }
        let verified = authorship::verify_all(batch);
        let mut good = Vec::with_capacity(batch.len());
        for (message, verified) in batch.drain(..).zip(verified) {
            match verified
                .map_err(|e| e.to_string())
                .and_then(|()| self.admitted(&message))
            {
                Ok(()) => {
                    self.hlc.observe(message.hlc);
                    progress.authors.insert(message.author_key.clone());
                    good.push(message);
                }
                Err(why) => progress.refuse(why),
            }
        }
        self.store
            .insert_many(&good)
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// Warns about gaps in the numbering of the authors whose messages a
    /// pull from `relay` brought.
    fn report_gaps(&self, relay: &str, authors: &HashSet<Vec<u8>>) {
        for key in authors {
            let seqs = match self.store.feed_seqs(key) {
                Ok(seqs) => seqs,
                Err(e) => {
                    warn!(error = %e, "cannot read an author's messages to check for gaps");
                    return;
                }
            };
            let missing = authorship::missing(&seqs);
            if missing.is_empty() {
                continue;
            }
            let name = self.authors.name_of(key).unwrap_or_default();
            let ranges: Vec<String> = missing
                .iter()
                .map(|(from, to)| {
                    if from == to {
                        from.to_string()
                    } else {
                        format!("{from}-{to}")
                    }
                })
                .collect();
            warn!(author = %name, missing = %ranges.join(","), from = %relay, "an author's messages are missing after history sync (the relay dropped them, or they have not reached it yet); `chat history --verify` lists every gap");
        }
    }

    /// Opens a `Peer/History` request: the session it came on and the cursor
    /// it asks from. Refused when this peer does not share its history.
    pub fn open_request(
        &self,
        envelope: Option<chat_proto::v1::Envelope>,
    ) -> Result<(Arc<Session>, HistoryCursor), ServeError> {
        let envelope = envelope.ok_or(EnvelopeError::Missing)?;
        let (session, plaintext) = self.inbound.open(&envelope)?;
        if !self.share_history {
            return Err(ServeError::NotShared(self.name.clone()));
        }
        let cursor =
            HistoryCursor::decode(plaintext.as_slice()).map_err(|_| ServeError::NotACursor)?;
        Ok((session, cursor))
    }

    /// Serves one author's feed after `after_seq`, by seq, to the peer of
    /// `session` (feed reconciliation, §9.6): the author's chain first, then
    /// each message it may have (nothing older than its admission allows).
    async fn serve_feed(
        &self,
        session: &Session,
        (author_key, after_seq, author_known): (&[u8], u64, bool),
        admitted_from: u64,
        items: &mpsc::Sender<Result<PeerHistoryResponse, ServeError>>,
    ) {
        let seal = |plaintext: Vec<u8>| {
            envelope::seal(session, &plaintext)
                .map(|envelope| PeerHistoryResponse {
                    envelope: Some(envelope),
                    cursor: String::new(),
                })
                .map_err(ServeError::from)
        };
        if !author_known && let Some(chain) = self.authors.chain(author_key) {
            let introduction = SealedMessage {
                author_chain: chain,
                ..Default::default()
            };
            if items
                .send(seal(introduction.encode_to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
        // Above `after_seq`: from (after_seq + 1, ""), as every id is longer
        // than "" (from (after_seq, "") the message at after_seq came again).
        let mut after = (after_seq.saturating_add(1), String::new());
        // A fork (two messages with one seq) is served as evidence, and the
        // feed no further: which branch goes on is the author's lie to tell,
        // not a relay's to spread.
        let fork = match self.store.first_fork(author_key) {
            Ok(fork) => fork,
            Err(e) => {
                let _ = items.send(Err(QueryError::from(e).into())).await;
                return;
            }
        };
        loop {
            let page = match self.store.feed(author_key, (after.0, &after.1), SYNC_BATCH) {
                Ok(page) if page.is_empty() => return,
                Ok(page) => page,
                Err(e) => {
                    let _ = items.send(Err(QueryError::from(e).into())).await;
                    return;
                }
            };
            for message in page {
                if fork.is_some_and(|fork| message.seq > fork) {
                    debug!(seq = message.seq, "feed served up to a fork, not past it");
                    return;
                }
                after = (message.seq, message.id.clone());
                if message.hlc < admitted_from || message.authored.is_empty() {
                    continue;
                }
                match seal(authorship::sealed(&message)) {
                    Err(ServeError::Envelope(e @ EnvelopeError::TooLargeToSeal { .. })) => {
                        warn!(error = %e, "history item too large to send; skipped");
                    }
                    item => {
                        if items.send(item).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Pulls `author_key`'s feed after `after_seq` from `contact` on
    /// `session` (feed reconciliation, §9.6): verified and stored as any
    /// history is. Returns how many messages were new, how many items came
    /// (duplicates and the author's chain included), and the sealed bytes
    /// sent and received.
    pub async fn pull_feed(
        &self,
        contact: &Contact,
        session: &Session,
        author_key: &[u8],
        after_seq: u64,
    ) -> Result<Pulled, Status> {
        let cursor = HistoryCursor {
            author_key: author_key.to_vec(),
            after_seq,
            author_known: self.authors.chain(author_key).is_some(),
            ..Default::default()
        };
        let request = PeerHistoryRequest {
            envelope: Some(envelope::seal(session, &cursor.encode_to_vec())?),
        };
        let sent = request.envelope.as_ref().map_or(0, |e| e.ciphertext.len());
        let mut client = PeerClient::new(self.channels.get(&contact.address)?);
        let mut stream = client.history(request).await?.into_inner();
        let mut progress = Progress {
            bytes: sent,
            ..Progress::default()
        };
        let broke = self
            .receive(&mut stream, session, &mut progress)
            .await
            .inspect_err(|e| progress.warn_refused(&contact.name, Some(e)))?;
        progress.warn_refused(&contact.name, None);
        if let Some(status) = broke {
            debug!(from = %contact.name, error = %status.message(), "feed pull broke; again at the next exchange");
        }
        Ok(Pulled {
            added: progress.added,
            items: progress.seen,
            bytes: progress.bytes,
        })
    }

    /// Serves history after `cursor` to the peer of `session`, each item sealed
    /// to it, into `items` until done or the requester goes away.
    pub async fn serve(
        &self,
        session: Arc<Session>,
        cursor: HistoryCursor,
        items: mpsc::Sender<Result<PeerHistoryResponse, ServeError>>,
    ) {
        // A member admitted to history from some time on gets nothing older
        // (the clock is milliseconds << 16 | a counter).
        let admitted_from = self
            .handshaker
            .admission()
            .history_from_millis(&session.peer)
            .saturating_mul(1 << 16);
        if !cursor.author_key.is_empty() {
            return self
                .serve_feed(
                    &session,
                    (&cursor.author_key, cursor.after_seq, cursor.author_known),
                    admitted_from,
                    &items,
                )
                .await;
        }
        let since_hlc = cursor.since_hlc.max(admitted_from);
        let mut query = Query {
            cursor: (!cursor.after.is_empty()).then_some(cursor.after),
            since_hlc: (since_hlc > 0).then_some(since_hlc),
            ..Default::default()
        };
        let mut introduced = HashSet::new();
        let mut remaining = if cursor.limit == 0 {
            usize::MAX
        } else {
            cursor.limit as usize
        };
        loop {
            let page = match self.store.query(&query) {
                Ok(page) => page,
                Err(e) => {
                    let _ = items.send(Err(e.into())).await;
                    return;
                }
            };
            for message in page.messages {
                if remaining == 0 {
                    return;
                }
                if message.authored.is_empty() {
                    // Stored before protocol 3: nobody could verify it.
                    debug!(id = %message.id, "unsigned history item not served");
                    continue;
                }
                remaining -= 1;
                if introduced.insert(message.author_key.clone())
                    && let Some(chain) = self.authors.chain(&message.author_key)
                {
                    let plaintext = SealedMessage {
                        author_chain: chain,
                        ..Default::default()
                    }
                    .encode_to_vec();
                    let item = envelope::seal(&session, &plaintext)
                        .map(|envelope| PeerHistoryResponse {
                            envelope: Some(envelope),
                            cursor: String::new(),
                        })
                        .map_err(ServeError::from);
                    if items.send(item).await.is_err() {
                        return;
                    }
                }
                let cursor = cursor_of(&message);
                let plaintext = authorship::sealed(&message);
                let item = match envelope::seal(&session, &plaintext) {
                    Ok(envelope) => Ok(PeerHistoryResponse {
                        envelope: Some(envelope),
                        cursor,
                    }),
                    Err(e @ EnvelopeError::TooLargeToSeal { .. }) => {
                        // Stored under an older, larger limit: skipped, so
                        // it does not end every sync at the same place.
                        warn!(error = %e, "history item too large to send; skipped");
                        continue;
                    }
                    Err(e) => Err(ServeError::from(e)),
                };
                if items.send(item).await.is_err() {
                    return; // the requester went away
                }
            }
            match page.next_cursor {
                Some(next) => query.cursor = Some(next),
                None => return,
            }
        }
    }
}

/// Messages read and verified at a time by [`verify_stored`].
const VERIFY_PAGE: usize = 1000;

/// `chat history --verify`: checks every signed message stored, author by
/// author in sequence order: its signature (a batch verification per
/// page), and the author's numbering and hash links (gaps, broken links,
/// forks). Reads the store a page at a time.
pub fn verify_stored(store: &Store) -> Result<VerifyHistoryResponse, StoreError> {
    let mut response = VerifyHistoryResponse {
        unsigned: store.unsigned_count()?,
        ..Default::default()
    };
    response.messages = response.unsigned;
    for (key, name) in store.feed_keys()? {
        let mut feed = AuthorFeed {
            key_fingerprint: chat_proto::keys::fingerprint(&key),
            ..Default::default()
        };
        let mut report = authorship::FeedReport::default();
        let mut last: Option<ChatMessage> = None;
        let mut after = (0, String::new());
        loop {
            let page = store.feed(&key, (after.0, &after.1), VERIFY_PAGE)?;
            let Some(end) = page.last() else { break };
            after = (end.seq, end.id.clone());
            for (message, verified) in page.iter().zip(authorship::verify_all(&page)) {
                if let Err(e) = verified {
                    feed.problems.push(e.to_string());
                }
                if message.sender != name {
                    feed.problems.push(format!(
                        "message {} is signed by this key as {}, not {name}",
                        message.id, message.sender
                    ));
                }
            }
            // The feed check runs across page boundaries: carry the last.
            let items = last.iter().chain(page.iter());
            let part = authorship::check_feed(
                items.map(|m| (m.seq, m.id.as_str(), m.authored.as_slice())),
            );
            report.messages += part.messages - u64::from(last.is_some());
            if report.first_seq == 0 {
                report.first_seq = part.first_seq;
            }
            report.last_seq = part.last_seq;
            report.missing.extend(part.missing);
            report.problems.extend(part.problems);
            last = page.into_iter().last();
        }
        response.messages += report.messages;
        feed.name = name;
        feed.messages = report.messages;
        feed.first_seq = report.first_seq;
        feed.last_seq = report.last_seq;
        feed.missing = report
            .missing
            .into_iter()
            .map(|(from, to)| SeqRange { from, to })
            .collect();
        feed.problems.extend(report.problems);
        response.authors.push(feed);
    }
    Ok(response)
}
