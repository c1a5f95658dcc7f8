//! This peer's membership in Discovery: register (and register again when
//! Discovery forgets the lease, e.g. after a restart), keep the lease alive,
//! and follow `Watch` to keep the connection list current — the original's
//! pushed `refresh_connections`.
//!
//! What changes for a peer is told as a [`PeerEvent`]; the composition root
//! routes each to the parts that act on it (sessions, the outbox), so this
//! module knows none of them.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chat_noise::StaticKeypair;
use chat_proto::{
    registration,
    v1::{
        InfoRequest, KeepAliveRequest, LeaveRequest, ListRequest, Member, WatchRequest,
        membership_event::Kind,
    },
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::{debug, error, info, warn};

use crate::{
    backoff::Backoff,
    config::DISCOVERY_TIMEOUT,
    directory::{Change, Directory},
    discovery_client::{Discovery, replica_failed},
};

/// Keepalives per TTL: renewing at a third of it survives two lost renewals.
const KEEPALIVES_PER_TTL: u32 = 3;

/// How often a changed member list is written to the cache file.
const CACHE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Something that happened to a remote peer, as membership (or a handshake)
/// learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// Listed for the first time or again, or reachable again: what is
    /// queued for it can go now.
    Back(String),
    /// Listed at a new address: it restarted, its sessions died with it, and
    /// what is queued for it can go now.
    Moved(String),
    /// Listed with another key: its sessions are void (nothing is sent until
    /// the owner trusts the new key).
    KeyChanged(String),
    /// Discovery says it ended its lease: its sessions are gone; what is
    /// queued for it waits (Discovery's word is not the peer's).
    Left(String),
    /// A verified removal revoked its admission: nothing more is owed to it.
    Removed(String),
    /// This peer's inviter confirmed its use of the invitation: it is a
    /// member now, and catches up with everyone.
    Confirmed,
    /// A verified removal revoked this peer's own admission: it is no
    /// longer a member, and stops sending and registering.
    SelfRemoved,
    /// Its lease ran out (crashed, cut off): its sessions are gone, and
    /// messages for it are queued until it returns.
    Expired(String),
    /// Its handshake said it knows other removals than this peer: ask it
    /// for what this peer lacks (it asks us for the rest).
    RemovalsDiffer(String),
    /// Its handshake said its feed heads differ from this peer's: compare
    /// frontiers and pull what this peer lacks.
    FeedsDiffer(String),
}

/// Where events go; set once by the composition root.
type Route = Box<dyn Fn(PeerEvent) + Send + Sync>;

/// What this peer registers, and the parts membership keeps current.
pub struct Membership {
    name: String,
    address: String,
    keypair: Arc<StaticKeypair>,
    discovery: Discovery,
    directory: Arc<Directory>,
    /// The lease held at Discovery: (id, token).
    lease: Mutex<Option<(String, String)>>,
    /// Set once this peer leaves for good: it does not register again.
    leaving: AtomicBool,
    /// Registering was last refused because another key holds the name.
    name_taken: AtomicBool,
    /// That refusal was logged (once per time the name is taken).
    name_taken_said: AtomicBool,
    route: OnceLock<Route>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("name", &self.name)
            .field("discovery", &self.discovery.current_url())
            .finish_non_exhaustive()
    }
}

fn with_timeout<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(DISCOVERY_TIMEOUT);
    request
}

impl Membership {
    /// Membership of `name` at `address` with the key of `keypair` (which
    /// proves it to Discovery), through `discovery`.
    pub fn new(
        name: &str,
        address: &str,
        keypair: Arc<StaticKeypair>,
        discovery: Discovery,
        directory: Arc<Directory>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            name: name.to_owned(),
            address: address.to_owned(),
            keypair,
            discovery,
            directory,
            lease: Mutex::new(None),
            leaving: AtomicBool::new(false),
            name_taken: AtomicBool::new(false),
            name_taken_said: AtomicBool::new(false),
            route: OnceLock::new(),
            shutdown,
        }
    }

    /// Sends every [`PeerEvent`] to `route` from now on (set before the
    /// first registration; a second call is ignored).
    pub fn route_events(&self, route: impl Fn(PeerEvent) + Send + Sync + 'static) {
        let _ = self.route.set(Box::new(route));
    }

    /// Tells the composition root about `event` (membership, and a handshake
    /// that learned where a peer is now).
    pub fn tell(&self, event: PeerEvent) {
        if let Some(route) = self.route.get() {
            route(event);
        }
    }

    /// The Discovery URL in use.
    pub fn discovery_url(&self) -> &str {
        self.discovery.current_url()
    }

    /// Registers this peer and takes in the member list. Returns the lease TTL.
    pub async fn register(&self) -> Result<Duration, Status> {
        let (_, response) = self
            .discovery
            .call(|mut client| {
                let (keypair, name, address) = (
                    self.keypair.clone(),
                    self.name.clone(),
                    self.address.clone(),
                );
                async move {
                    // The proof is made to the key of the replica that
                    // answers, just before it is sent (it is fresh for a minute).
                    let info = client.info(with_timeout(InfoRequest {})).await?;
                    let request = registration::request(&keypair, info.get_ref(), &name, &address)
                        .map_err(Status::failed_precondition)?;
                    client.register(with_timeout(request)).await
                }
            })
            .await;
        let response = response
            .inspect_err(|s| {
                if s.code() == Code::AlreadyExists {
                    self.name_taken.store(true, Ordering::SeqCst);
                }
            })?
            .into_inner();
        if self.name_taken.swap(false, Ordering::SeqCst) {
            self.name_taken_said.store(false, Ordering::SeqCst);
            info!("the name is free at Discovery again; registered");
        }
        *self.lease.lock().expect("lease lock") = Some((response.lease_id, response.lease_token));
        // Register no longer lists the members: List them, so a started
        // peer knows who is online before its watch is up.
        let members = match self.refresh().await {
            Ok(n) => n,
            Err(e) => {
                debug!(error = %e.message(), "registered, but could not list the members; the watch will");
                0
            }
        };
        info!(discovery = %self.discovery.current_url(), members, "registered");
        Ok(Duration::from_secs(u64::from(response.ttl_seconds.max(1))))
    }

    /// Notes that the refusal of a taken name was told already (at start).
    pub fn name_taken_said(&self) {
        self.name_taken_said.store(true, Ordering::SeqCst);
    }

    /// Replaces the connection list with Discovery's current members, read
    /// page by page; returns how many there are.
    pub async fn refresh(&self) -> Result<usize, Status> {
        let mut members = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = ListRequest {
                page_size: 0,
                page_token: page_token.clone(),
            };
            let (_, response) = self
                .discovery
                .call(|mut client| {
                    let request = with_timeout(request.clone());
                    async move { client.list(request).await }
                })
                .await;
            let page = response?.into_inner();
            members.extend(page.members);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        self.apply_members(&members);
        Ok(members.len())
    }

    fn apply_members(&self, members: &[Member]) {
        for m in members {
            self.apply_joined(m);
        }
        self.directory
            .mark_unlisted(members.iter().map(|m| m.name.as_str()));
        self.directory.cache_changed();
    }

    fn apply_joined(&self, m: &Member) {
        let was_online = self.directory.get(&m.name).is_some_and(|c| c.online);
        let change = self.directory.upsert(&m.name, &m.address, &m.public_key);
        let name = m.name.clone();
        match change {
            Some(Change::KeyChanged) => self.tell(PeerEvent::KeyChanged(name)),
            Some(Change::AddressChanged) => {
                // A new address almost always means a restarted peer, whose
                // sessions died with it.
                info!(peer = %m.name, address = %m.address, "peer moved");
                self.tell(PeerEvent::Moved(name));
            }
            Some(Change::Added) => {
                info!(peer = %m.name, address = %m.address, "peer joined");
                self.tell(PeerEvent::Back(name));
            }
            Some(Change::Unchanged) if !was_online => self.tell(PeerEvent::Back(name)),
            // None: this peer's own name (or a key that is not one): no event.
            Some(Change::Unchanged) | None => {}
        }
    }

    /// Leaves for good: ends the lease at Discovery (best effort, bounded by
    /// the call deadline) and stops re-registering. Only the first call
    /// does anything.
    pub async fn leave(&self) {
        if self.leaving.swap(true, Ordering::SeqCst) {
            return;
        }
        let lease = self.lease.lock().expect("lease lock").take();
        let Some((lease_id, lease_token)) = lease else {
            return;
        };
        let request = LeaveRequest {
            lease_id,
            lease_token,
        };
        let (_, response) = self
            .discovery
            .call(|mut client| {
                let request = with_timeout(request.clone());
                async move { client.leave(request).await }
            })
            .await;
        match response {
            Ok(_) => info!("left Discovery"),
            Err(e) => {
                warn!(error = %e.message(), "could not leave Discovery; the lease will expire")
            }
        }
    }

    /// Keeps this peer registered until shutdown: keepalives at a third of
    /// the TTL, registering again when Discovery answers NOT_FOUND or was down.
    pub async fn keep_registered(self: Arc<Self>, mut ttl: Option<Duration>) {
        let mut backoff = Backoff::default();
        loop {
            let delay = match ttl {
                Some(ttl) => ttl / KEEPALIVES_PER_TTL,
                None => backoff.next_delay(),
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.cancelled() => return,
            }
            if self.leaving.load(Ordering::SeqCst) {
                return;
            }
            ttl = match self.renew().await {
                Some(t) => {
                    backoff.reset();
                    Some(t)
                }
                None => None,
            };
        }
    }

    /// One keepalive, or a new registration if Discovery forgot the lease.
    async fn renew(&self) -> Option<Duration> {
        let lease = self.lease.lock().expect("lease lock").clone();
        let renewed = match lease {
            Some((lease_id, lease_token)) => {
                let request = KeepAliveRequest {
                    lease_id,
                    lease_token,
                };
                self.discovery
                    .call(|mut client| {
                        let request = with_timeout(request.clone());
                        async move { client.keep_alive(request).await }
                    })
                    .await
                    .1
                    .map(|r| Duration::from_secs(u64::from(r.into_inner().ttl_seconds.max(1))))
            }
            None => Err(Status::not_found("not registered yet")),
        };
        match renewed {
            Ok(t) => Some(t),
            Err(status)
                if status.code() == Code::NotFound || status.code() == Code::PermissionDenied =>
            {
                debug!("lease unknown to Discovery; registering again");
                match self.register().await {
                    Ok(t) => Some(t),
                    Err(e) => {
                        if e.code() == Code::AlreadyExists {
                            // Said once per change, not at every retry.
                            if !self.name_taken_said.swap(true, Ordering::SeqCst) {
                                error!(
                                    reason = e.message(),
                                    "cannot register: another key holds this name at Discovery; running unlisted and retrying"
                                );
                            }
                        } else {
                            debug!(error = %e.message(), "register failed; retrying");
                        }
                        None
                    }
                }
            }
            Err(e) => {
                debug!(error = %e.message(), "keepalive failed; retrying");
                None
            }
        }
    }

    /// Writes the member cache when it changed, until shutdown (and once more then).
    pub async fn flush_cache(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CACHE_FLUSH_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => self.directory.flush_cache(),
                _ = self.shutdown.cancelled() => {
                    self.directory.flush_cache();
                    return;
                }
            }
        }
    }

    /// Follows Discovery's membership stream until shutdown, reconnecting
    /// with backoff; each (re)connection starts from a fresh `List`.
    pub async fn follow(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        loop {
            let result = tokio::select! {
                r = self.follow_once(&mut backoff) => r,
                _ = self.shutdown.cancelled() => return,
            };
            if let Err(e) = result {
                debug!(error = %e.message(), "membership watch ended; reconnecting");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn follow_once(&self, backoff: &mut Backoff) -> Result<(), Status> {
        // With the lease, the watch has this member's own slot at
        // Discovery, which no flood of anonymous watchers can take.
        let (lease_id, lease_token) = self
            .lease
            .lock()
            .expect("lease lock")
            .clone()
            .unwrap_or_default();
        let request = WatchRequest {
            lease_id,
            lease_token,
        };
        let watch = |request: WatchRequest| {
            self.discovery.call(move |mut client| {
                let request = request.clone();
                async move { client.watch(request).await }
            })
        };
        let with_lease = !request.lease_id.is_empty();
        let (mut replica, mut stream) = watch(request).await;
        if with_lease
            && let Err(s) = &stream
            && matches!(s.code(), Code::NotFound | Code::PermissionDenied)
        {
            // The lease is gone (and registering again has not worked yet):
            // watch anonymously meanwhile rather than not at all.
            debug!(error = %s.message(), "watching without the lease");
            (replica, stream) = watch(WatchRequest::default()).await;
        }
        let mut stream = stream?.into_inner();
        self.refresh().await?;
        backoff.reset();
        // A member's watch ends after its own LEFT or EXPIRED: then the
        // end of the stream is not the replica failing.
        let mut own_lease_ended = false;
        loop {
            let event = match stream.message().await {
                Ok(Some(event)) => event,
                Ok(None) if own_lease_ended => return Ok(()),
                Ok(None) => {
                    // The replica ended the stream (it is shutting down).
                    self.discovery.failed(replica);
                    return Ok(());
                }
                Err(status) => {
                    if replica_failed(&status) {
                        self.discovery.failed(replica);
                    }
                    return Err(status);
                }
            };
            let Some(member) = event.member.as_ref() else {
                continue;
            };
            if member.name == self.name {
                own_lease_ended = matches!(event.kind(), Kind::Left | Kind::Expired);
            }
            match event.kind() {
                Kind::Joined => self.apply_joined(member),
                // The lease of a key other than the one a contact proved
                // (someone who took its name) says nothing about it.
                Kind::Left => {
                    // Offline, not forgotten: the composition root forgets
                    // the contact only if nothing is queued for it.
                    if self
                        .directory
                        .mark_offline(&member.name, &member.public_key)
                    {
                        info!(peer = %member.name, "peer left");
                        self.tell(PeerEvent::Left(member.name.clone()));
                    }
                }
                Kind::Expired => {
                    // Gone silent (crashed, cut off): keep it, queue for it.
                    if self
                        .directory
                        .mark_offline(&member.name, &member.public_key)
                    {
                        info!(peer = %member.name, "peer expired; queueing messages for it");
                        self.tell(PeerEvent::Expired(member.name.clone()));
                    }
                }
                Kind::Unspecified => {}
            }
            self.directory.cache_changed();
        }
    }
}
