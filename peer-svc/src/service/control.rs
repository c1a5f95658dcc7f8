//! `chat.v1.Control`, the owner's handle on their own peer, served on the
//! Unix socket `DATA_DIR/control.sock` (mode 0600).

use std::{pin::Pin, sync::Arc, time::Instant};

use chat_proto::v1::{
    Admission as AdmissionLink, Connection, ConnectionsRequest, ConnectionsResponse,
    ControlLeaveRequest, ControlLeaveResponse, HandshakeRequest, HandshakeResponse, HistoryRequest,
    HistoryResponse, InviteRequest, InviteResponse, RefreshConnectionsRequest,
    RefreshConnectionsResponse, RemoveRequest, RemoveResponse, SendRequest, SendResponse,
    SendStreamResponse, SubscribeRequest, SubscribeResponse, TrustRequest, TrustResponse,
    VerifyHistoryRequest, VerifyHistoryResponse, VerifyRequest, VerifyResponse,
    connection::SessionState, control_server::Control,
};
use futures::{Stream, StreamExt};
use prost::Message as _;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use tokio_util::sync::CancellationToken;

use crate::{
    directory::{Contact, Directory},
    handshaker::Handshaker,
    inbound::Inbound,
    membership::{Membership, PeerEvent},
    outbound::Outbound,
    peers::Peers,
    service::{
        send_stream,
        status::{ServiceError, refused},
    },
    store::{
        Store,
        history::{Query, QueryError},
    },
};

/// How long a leaver keeps telling the members online before it exits.
const LEAVE_TELLS_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Most peers in one Connections answer: 1000 of the longest name and
/// address encode to well under the 4 MiB message limit.
pub const MAX_CONNECTIONS_PAGE: usize = 1000;

/// The Control service: the parts the owner drives, given to it by the
/// composition root.
#[derive(Debug, Clone)]
pub struct ControlService {
    /// This peer's fingerprint.
    pub fingerprint: String,
    /// The largest text this peer takes (for the oversize hint).
    pub max_message_bytes: usize,
    /// Sending.
    pub outbound: Arc<Outbound>,
    /// Receiving (for live subscriptions).
    pub inbound: Arc<Inbound>,
    /// Handshakes on demand.
    pub handshaker: Arc<Handshaker>,
    /// Discovery: refresh and leave.
    pub membership: Arc<Membership>,
    /// Known peers.
    pub directory: Arc<Directory>,
    /// Sessions per peer.
    pub peers: Arc<Peers>,
    /// History and outbox.
    pub store: Arc<Store>,
    /// Cancelled when this peer stops (also by `chat leave`).
    pub shutdown: CancellationToken,
}

impl ControlService {
    /// In a network, the key `chat trust PEER` would pin must first show a
    /// valid admission under that name, in a handshake: a key that anyone
    /// registered at Discovery under a member's name is never trusted.
    async fn admitted_before_trust(&self, peer: &str) -> Result<(), Status> {
        if self.handshaker.admission().is_open() {
            return Ok(());
        }
        let Some(listed) = self.directory.listed_key(peer) else {
            return Ok(());
        };
        if self.directory.pinned(peer) == Some(listed.public_key) {
            return Ok(());
        }
        self.handshaker.initiate(&listed).await.map(|_| ()).map_err(|e| {
            refused(
                "Control/Trust",
                ServiceError::FailedPrecondition(format!(
                    "{peer}'s listed key {} did not show an admission to this network in a handshake ({}); not trusted",
                    listed.fingerprint,
                    e.message()
                )),
            )
        })
    }

    /// Up to `page_size` known peers (the most when 0) by name, after the
    /// name `after`; and the token for the next page, empty on the last.
    /// Only members are listed unless `all`: a name only Discovery lists,
    /// or a removed one, is no contact (issue 26, items 4 and 6).
    fn connections(&self, page_size: u32, after: &str, all: bool) -> (Vec<Connection>, String) {
        let limit = match page_size as usize {
            0 => MAX_CONNECTIONS_PAGE,
            n => n.min(MAX_CONNECTIONS_PAGE),
        };
        let admission = self.handshaker.admission();
        let standing = |c: &Contact| {
            let name = c.name.as_str();
            if admission.is_open() {
                None
            } else if admission.is_removed(name) && !c.key_changed {
                Some(SessionState::Removed)
            } else if !admission.is_known_member(name) {
                Some(SessionState::NotAMember)
            } else {
                None
            }
        };
        let mut contacts: Vec<(Contact, Option<SessionState>)> = self
            .directory
            .all()
            .into_iter()
            .filter(|c| after.is_empty() || c.name.as_str() > after)
            .map(|c| {
                let standing = standing(&c);
                (c, standing)
            })
            .filter(|(_, standing)| all || standing.is_none())
            .collect();
        contacts.sort_unstable_by(|a, b| a.0.name.cmp(&b.0.name));
        let more = contacts.len() > limit;
        contacts.truncate(limit);
        let next = match (more, contacts.last()) {
            (true, Some((last, _))) => last.name.clone(),
            _ => String::new(),
        };
        // One read of the verified marks for the page, not one per row.
        let verified_here = self.store.verified_identities().unwrap_or_default();
        let page = contacts
            .into_iter()
            .map(|(c, standing)| {
                let queued = self.store.pending_count(&c.name).unwrap_or(0) as u32;
                let session = if let Some(standing) = standing {
                    standing
                } else if c.dropped {
                    SessionState::Dropped
                } else if c.key_changed {
                    SessionState::KeyChanged
                } else if !c.online {
                    SessionState::Offline
                } else if self.peers.has_session(&c.name) {
                    SessionState::Established
                } else {
                    SessionState::None
                };
                let verified = standing.is_none()
                    && verified_here.get(&c.name).is_some_and(|v| {
                        admission
                            .member_identity(&c.name)
                            .is_some_and(|id| *v == id)
                    });
                Connection {
                    fingerprint: self.safety_number(&c.name, &c.fingerprint),
                    static_fingerprint: c.fingerprint,
                    verified,
                    name: c.name,
                    address: c.address,
                    session: session.into(),
                    public_key: c.public_key.to_vec(),
                    queued,
                    listed_other_fingerprint: c
                        .listed_other
                        .map(|k| chat_proto::keys::fingerprint(&k))
                        .unwrap_or_default(),
                }
            })
            .collect();
        (page, next)
    }

    /// `name`'s safety number: the fingerprint of its identity key (which
    /// certifies its static key) once its admission is known here, else of
    /// its static key (`static_fingerprint`: open mode, a name not met).
    fn safety_number(&self, name: &str, static_fingerprint: &str) -> String {
        match self.handshaker.admission().member_identity(name) {
            Some(identity) if identity != [0; 32] => chat_proto::keys::fingerprint(&identity),
            _ => static_fingerprint.to_owned(),
        }
    }

    /// This peer's own safety number (of its static key in open mode).
    fn own_safety_number(&self) -> String {
        self.handshaker
            .admission()
            .own_chain()
            .map(|(_, identity)| chat_proto::keys::fingerprint(&identity))
            .unwrap_or_else(|| self.fingerprint.clone())
    }

    /// True if `name` was marked verified with its current identity key.
    fn is_verified(&self, name: &str) -> bool {
        let Some(identity) = self.handshaker.admission().member_identity(name) else {
            return false;
        };
        matches!(self.store.verified_identity(name), Ok(Some(v)) if v == identity)
    }

    /// The admission chain `chat remove NAME [--key NUMBER]` removes: the
    /// one last seen under the name, or, given a safety number, the
    /// identity with that number among the admissions known under the
    /// name (the last seen, and every author key kept for it): two
    /// identities may have claimed one name, and the owner says which goes.
    fn chain_to_remove(&self, name: &str, fingerprint: &str) -> Result<Vec<AdmissionLink>, Status> {
        let admission = self.handshaker.admission();
        let unknown = || {
            refused(
                "Control/Remove",
                ServiceError::NotFound(format!(
                    "no admission of {name} is known here: it must have handshaken with this peer once, or been invited by it"
                )),
            )
        };
        let last = admission.member_chain(name).map(|(chain, _)| chain);
        if fingerprint.is_empty() {
            return last.ok_or_else(unknown);
        }
        let number_of = |chain: &[AdmissionLink]| {
            chain
                .last()
                .filter(|a| !a.identity_key.is_empty())
                .map(|a| chat_proto::keys::fingerprint(&a.identity_key))
        };
        let wanted = fingerprint.replace(' ', "").to_lowercase();
        let same = |n: &str| n.replace(' ', "") == wanted;
        let kept = self
            .store
            .authors()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, author, chain)| {
                (author == name)
                    .then(|| chat_proto::v1::Credential::decode(chain.as_slice()).ok())
                    .flatten()
                    .map(|c| c.chain)
            });
        let mut seen = Vec::new();
        for chain in last.into_iter().chain(kept) {
            match number_of(&chain) {
                Some(n) if same(&n) => return Ok(chain),
                Some(n) if !seen.contains(&n) => seen.push(n),
                _ => {}
            }
        }
        if seen.is_empty() {
            return Err(unknown());
        }
        Err(refused(
            "Control/Remove",
            ServiceError::NotFound(format!(
                "no identity of {name} with safety number {fingerprint} is known here; known: {}",
                seen.join("; ")
            )),
        ))
    }

    /// Tells every member online but `except` of a removal (or a leave)
    /// just made: a fresh handshake carries the newest removals. Returns
    /// who was told; the others hear at their next handshake with anyone
    /// who knows.
    async fn tell_online(&self, except: &str) -> Vec<String> {
        self.tell_round(except, &[]).await.0
    }

    /// Like [`ControlService::tell_online`], again and again for up to
    /// `within` until every member online was told: what a leaver does
    /// before it exits, since after that nobody else holds its leave.
    async fn tell_online_within(&self, within: std::time::Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut told = Vec::new();
        loop {
            let (round, left) = self.tell_round("", &told).await;
            told.extend(round);
            if left == 0 || Instant::now() >= deadline {
                return told;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }

    /// One round: a fresh handshake with every member online but `except`
    /// and those in `done`. Returns who heard, and how many did not. (Once
    /// this peer is no member itself, a member refusing it knows already.)
    async fn tell_round(&self, except: &str, done: &[String]) -> (Vec<String>, usize) {
        let admission = self.handshaker.admission();
        let others: Vec<Contact> = self
            .directory
            .all()
            .into_iter()
            .filter(|c| {
                c.name != except
                    && !done.contains(&c.name)
                    && c.online
                    && !c.key_changed
                    && (admission.is_open() || admission.is_known_member(&c.name))
                    && !admission.is_removed(&c.name)
            })
            .collect();
        let tried = others.len();
        let told: Vec<String> = futures::future::join_all(others.into_iter().map(|contact| async move {
            self.peers.forget_sending(&contact.name);
            match self.handshaker.initiate(&contact).await {
                Ok(_) => Some(contact.name),
                Err(e)
                    if e.code() == tonic::Code::PermissionDenied
                        && admission.own_removal().is_some() =>
                {
                    Some(contact.name)
                }
                Err(e) => {
                    warn!(peer = %contact.name, error = %e.message(), "could not tell of a removal now; it hears at its next handshake");
                    None
                }
            }
        }))
        .await
        .into_iter()
        .flatten()
        .collect();
        let left = tried - told.len();
        (told, left)
    }

    /// Naming a dropped peer in a handshake or refresh takes it back: the
    /// owner asked to talk to it again.
    fn take_back(&self, peer: &str) {
        if self.directory.undrop(peer) {
            info!(peer = %peer, "dropped peer taken back: messages are sent to it again");
        }
    }

    fn contact(&self, rpc: &'static str, peer: &str) -> Result<Contact, Status> {
        if peer.is_empty() {
            return Err(refused(
                rpc,
                ServiceError::InvalidArgument("peer must not be empty".into()),
            ));
        }
        self.directory.get(peer).ok_or_else(|| {
            refused(
                rpc,
                ServiceError::NotFound(format!(
                    "no peer named {peer:?}; `chat connections` lists the known peers"
                )),
            )
        })
    }
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;
type SendStreamStream = Pin<Box<dyn Stream<Item = Result<SendStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let req = request.into_inner();
        // A task of its own: a client that goes away mid-Send must not cut
        // the delivery short (the message is stored; every peer must get
        // it or have it queued).
        let outbound = self.outbound.clone();
        tokio::spawn(async move { outbound.send(req.text, req.id).await })
            .await
            .map_err(|e| Status::internal(format!("send task failed: {e}")))?
            .map(Response::new)
            .map_err(|e| refused("Control/Send", e))
    }

    type SendStreamStream = SendStreamStream;

    async fn send_stream(
        &self,
        request: Request<Streaming<SendRequest>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let mut requests = request.into_inner();
        let (incoming_tx, incoming) = tokio::sync::mpsc::channel(64);
        // Reading requests in a task of its own keeps the loop that answers
        // them on cancel-safe channel receives only.
        tokio::spawn(async move {
            loop {
                let next = requests.message().await.transpose();
                let end = !matches!(next, Some(Ok(_)));
                if incoming_tx.send(next).await.is_err() || end {
                    return;
                }
            }
        });
        let (tx, rx) = tokio::sync::mpsc::channel(send_stream::SEND_STREAM_WINDOW);
        tokio::spawn(send_stream::answer(
            self.outbound.clone(),
            incoming,
            tx,
            self.shutdown.clone(),
            crate::config::oversize_hint(self.max_message_bytes),
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let req = request.into_inner();
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        let query = Query {
            since_hlc: None,
            limit: req.limit as usize,
            since_ms: req
                .since
                .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
            from: non_empty(req.from),
            grep: non_empty(req.grep),
            cursor: non_empty(req.cursor),
        };
        let page = self
            .store
            .query(&query)
            .map_err(|e| refused("Control/History", e))?;
        let mut messages = page.messages;
        for message in &mut messages {
            // The fields are what the owner reads; the signed bytes repeat them.
            message.authored.clear();
        }
        Ok(Response::new(HistoryResponse {
            messages,
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn verify_history(
        &self,
        _request: Request<VerifyHistoryRequest>,
    ) -> Result<Response<VerifyHistoryResponse>, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || crate::history_sync::verify_stored(&store))
            .await
            .map_err(|e| Status::internal(format!("verification task failed: {e}")))?
            .map(Response::new)
            .map_err(|e| refused("Control/VerifyHistory", QueryError::Store(e)))
    }

    async fn connections(
        &self,
        request: Request<ConnectionsRequest>,
    ) -> Result<Response<ConnectionsResponse>, Status> {
        let request = request.into_inner();
        let (connections, next_page_token) =
            self.connections(request.page_size, &request.page_token, request.all);
        let names_known = if request.page_token.is_empty() {
            self.handshaker.admission().names()
        } else {
            Vec::new()
        };
        Ok(Response::new(ConnectionsResponse {
            connections,
            next_page_token,
            names_known,
        }))
    }

    async fn refresh_connections(
        &self,
        request: Request<RefreshConnectionsRequest>,
    ) -> Result<Response<RefreshConnectionsResponse>, Status> {
        self.membership.refresh().await.map_err(|s| {
            refused(
                "Control/RefreshConnections",
                ServiceError::Unavailable(format!("Discovery unreachable: {}", s.message())),
            )
        })?;
        for peer in request.into_inner().peers {
            let contact = self.contact("Control/RefreshConnections", &peer)?;
            self.take_back(&peer);
            self.peers.forget_sending(&peer);
            if let Err(s) = self.handshaker.initiate(&contact).await {
                warn!(peer = %peer, error = %s.message(), "handshake on refresh failed");
            }
        }
        let (connections, next_page_token) = self.connections(0, "", false);
        Ok(Response::new(RefreshConnectionsResponse {
            connections,
            next_page_token,
        }))
    }

    async fn invite(
        &self,
        request: Request<InviteRequest>,
    ) -> Result<Response<InviteResponse>, Status> {
        let req = request.into_inner();
        chat_proto::validate::name(&req.name).map_err(|reason| {
            refused(
                "Control/Invite",
                ServiceError::InvalidArgument(format!("name {reason}")),
            )
        })?;
        let newcomer = if req.identity_key.is_empty() {
            None
        } else {
            let key = hex::decode(req.identity_key.trim())
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
                .ok_or_else(|| {
                    refused(
                        "Control/Invite",
                        ServiceError::InvalidArgument(
                            "identity_key must be 64 hex digits: the newcomer's identity key as `chat key` prints it (its safety number, a hash of it, is not enough to bind to)".into(),
                        ),
                    )
                })?;
            Some(key)
        };
        let (token, network) = self
            .handshaker
            .admission()
            .invite_for(&req.name, req.all_history, newcomer)
            .map_err(|e| refused("Control/Invite", ServiceError::from(e)))?;
        info!(name = %req.name, all_history = req.all_history, bound = newcomer.is_some(), "invitation made");
        Ok(Response::new(InviteResponse { token, network }))
    }

    async fn remove(
        &self,
        request: Request<RemoveRequest>,
    ) -> Result<Response<RemoveResponse>, Status> {
        let RemoveRequest { name, fingerprint } = request.into_inner();
        let admission = self.handshaker.admission();
        let chain = self.chain_to_remove(&name, &fingerprint)?;
        let identity = chain
            .last()
            .map(|a| a.identity_key.clone())
            .unwrap_or_default();
        let removed = admission
            .remove_chain(chain)
            .map_err(|e| refused("Control/Remove", ServiceError::from(e)))?;
        for name in removed {
            self.membership.tell(PeerEvent::Removed(name));
        }
        // Removed here (its sessions and queue went with the event); now
        // every other member online hears of it in a fresh handshake.
        let told = self.tell_online(&name).await;
        let fingerprint = if identity.is_empty() {
            String::new()
        } else {
            chat_proto::keys::fingerprint(&identity)
        };
        info!(removed = %name, safety_number = %fingerprint, told = told.len(), "member removed");
        Ok(Response::new(RemoveResponse { told, fingerprint }))
    }

    async fn handshake(
        &self,
        request: Request<HandshakeRequest>,
    ) -> Result<Response<HandshakeResponse>, Status> {
        let peer = request.into_inner().peer;
        if let Some(removal) = self.handshaker.admission().own_removal() {
            return Err(refused(
                "Control/Handshake",
                ServiceError::FailedPrecondition(format!(
                    "{removal}: this peer is no longer a member, and no member accepts its handshakes; ask a member for a new invitation and start with a new data dir"
                )),
            ));
        }
        let contact = self.contact("Control/Handshake", &peer)?;
        if contact.key_changed {
            return Err(refused(
                "Control/Handshake",
                ServiceError::PermissionDenied(format!(
                    "{peer}'s key changed (now {}); compare fingerprints, then `chat trust {peer}`",
                    contact.fingerprint
                )),
            ));
        }
        self.take_back(&peer);
        let started = Instant::now();
        self.peers.forget_sending(&peer);
        self.handshaker.initiate(&contact).await.map_err(|s| {
            refused(
                "Control/Handshake",
                ServiceError::Unavailable(format!("handshake with {peer} failed: {}", s.message())),
            )
        })?;
        Ok(Response::new(HandshakeResponse {
            fingerprint: self.safety_number(&peer, &contact.fingerprint),
            local_fingerprint: self.own_safety_number(),
            peer,
            elapsed_micros: started.elapsed().as_micros() as u64,
        }))
    }

    async fn leave(
        &self,
        request: Request<ControlLeaveRequest>,
    ) -> Result<Response<ControlLeaveResponse>, Status> {
        let ControlLeaveRequest { peer, network } = request.into_inner();
        if network {
            if !peer.is_empty() {
                return Err(refused(
                    "Control/Leave",
                    ServiceError::InvalidArgument(
                        "leaving the network names no peer (`network` with an empty `peer`)".into(),
                    ),
                ));
            }
            self.handshaker
                .admission()
                .leave()
                .map_err(|e| refused("Control/Leave", ServiceError::from(e)))?;
            let told = self.tell_online_within(LEAVE_TELLS_WITHIN).await;
            info!(
                told = told.len(),
                "left the network for good at the owner's request"
            );
            self.membership.tell(PeerEvent::SelfRemoved);
            self.membership.leave().await;
            self.shutdown.cancel();
            return Ok(Response::new(ControlLeaveResponse { told }));
        }
        if peer.is_empty() {
            info!("stopping at the owner's request (still a member)");
            self.membership.leave().await;
            self.shutdown.cancel();
        } else {
            self.contact("Control/Leave", &peer)?;
            self.directory.drop_peer(&peer);
            self.peers.forget_peer(&peer);
            let dropped = self.store.clear_pending(&peer).unwrap_or(0);
            if dropped > 0 {
                info!(peer = %peer, dropped, "discarded messages queued for the dropped peer");
            }
            info!(peer = %peer, "peer dropped: nothing more is sent to it");
        }
        Ok(Response::new(ControlLeaveResponse::default()))
    }

    async fn trust(
        &self,
        request: Request<TrustRequest>,
    ) -> Result<Response<TrustResponse>, Status> {
        let peer = request.into_inner().peer;
        self.contact("Control/Trust", &peer)?;
        self.admitted_before_trust(&peer).await?;
        let contact = self.directory.trust(&peer).ok_or_else(|| {
            refused(
                "Control/Trust",
                ServiceError::NotFound(format!("no peer named {peer:?}")),
            )
        })?;
        self.peers.forget_peer(&peer);
        info!(peer = %peer, fingerprint = %contact.fingerprint, "key trusted and pinned");
        Ok(Response::new(TrustResponse {
            peer,
            fingerprint: contact.fingerprint,
        }))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let VerifyRequest { peer, confirm } = request.into_inner();
        let admission = self.handshaker.admission();
        if admission.is_open() {
            return Err(refused(
                "Control/Verify",
                ServiceError::FailedPrecondition(
                    "this peer runs in open mode (--open): nobody has an identity key to verify; compare static key fingerprints (`chat handshake PEER`)".into(),
                ),
            ));
        }
        let identity = admission
            .member_identity(&peer)
            .filter(|id| *id != [0; 32] && !admission.is_removed(&peer))
            .ok_or_else(|| {
                refused(
                    "Control/Verify",
                    ServiceError::NotFound(format!(
                        "no admission of {peer:?} is known here: a member shows it in its first handshake (`chat handshake {peer}`)"
                    )),
                )
            })?;
        if confirm {
            self.store
                .save_verified(&peer, &identity)
                .map_err(|e| refused("Control/Verify", Status::internal(e.to_string())))?;
            info!(peer = %peer, safety_number = %chat_proto::keys::fingerprint(&identity), "member marked verified");
        }
        Ok(Response::new(VerifyResponse {
            fingerprint: chat_proto::keys::fingerprint(&identity),
            local_fingerprint: self.own_safety_number(),
            verified: self.is_verified(&peer),
            peer,
        }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let rx = self.inbound.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(message) => {
                        return Some((
                            Ok(SubscribeResponse {
                                message: Some(message),
                            }),
                            rx,
                        ));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(
                            missed,
                            "a subscriber fell behind; it skips live messages (history keeps them)"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}
