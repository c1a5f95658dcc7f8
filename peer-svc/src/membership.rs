//! This peer's membership in Discovery: register (and register again when
//! Discovery forgets the lease, e.g. after a restart), keep the lease alive,
//! and follow `Watch` to keep the connection list current — the original's
//! pushed `refresh_connections`.

use std::{sync::atomic::Ordering, time::Duration};

use chat_proto::v1::{
    KeepAliveRequest, LeaveRequest, ListRequest, Member, RegisterRequest, WatchRequest,
    membership_event::Kind,
};
use tonic::{Code, Status};
use tracing::{debug, error, info, warn};

use crate::{directory::Change, node::Node};

/// Deadline of one call to Discovery.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// First retry delay after Discovery fails; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Longest retry delay: a returning Discovery is noticed within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Keepalives per TTL: renewing at a third of it survives two lost renewals.
const KEEPALIVES_PER_TTL: u32 = 3;

/// Exponential backoff with full jitter.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: MIN_BACKOFF }
    }
}

impl Backoff {
    /// The delay to wait now (random in [d/2, d]); the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d / 2 + d.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// After a success, start again from the shortest delay.
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

fn with_timeout<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(DISCOVERY_TIMEOUT);
    request
}

/// Registers this peer and takes in the member list. Returns the lease TTL.
pub async fn register(node: &Node) -> Result<Duration, Status> {
    let request = RegisterRequest {
        name: node.name().to_owned(),
        address: node.address.clone(),
        public_key: node.public_key().to_vec(),
    };
    let (_, response) = node
        .discovery
        .call(|mut client| {
            let request = with_timeout(request.clone());
            async move { client.register(request).await }
        })
        .await;
    let response = response?.into_inner();
    *node.lease.lock().expect("lease lock") = Some((response.lease_id, response.lease_token));
    apply_members(node, &response.members);
    info!(discovery = %node.discovery.current_url(), members = response.members.len(), "registered");
    Ok(Duration::from_secs(u64::from(response.ttl_seconds.max(1))))
}

/// Replaces the connection list with Discovery's current members.
pub async fn refresh(node: &Node) -> Result<(), Status> {
    let (_, response) = node
        .discovery
        .call(|mut client| async move { client.list(with_timeout(ListRequest {})).await })
        .await;
    let members = response?.into_inner().members;
    apply_members(node, &members);
    Ok(())
}

fn apply_members(node: &Node, members: &[Member]) {
    for m in members {
        apply_joined(node, m);
    }
    node.directory
        .mark_unlisted(members.iter().map(|m| m.name.as_str()));
    node.directory.cache_changed();
}

fn apply_joined(node: &Node, m: &Member) {
    let was_online = node.directory.get(&m.name).is_some_and(|c| c.online);
    let change = node.directory.upsert(&m.name, &m.address, &m.public_key);
    if !was_online || matches!(change, Some(Change::AddressChanged | Change::KeyChanged)) {
        // Back, new, or moved: whatever is queued for it can go now.
        node.retry_outbox(&m.name);
    }
    match change {
        Some(Change::Added) => info!(peer = %m.name, address = %m.address, "peer joined"),
        Some(Change::KeyChanged) => node.sessions.forget_peer(&m.name),
        Some(Change::AddressChanged) => {
            // A new address almost always means a restarted peer, whose
            // sessions died with it.
            info!(peer = %m.name, address = %m.address, "peer moved");
            node.sessions.forget_peer(&m.name);
        }
        Some(Change::Unchanged) | None => {}
    }
}

/// Ends the lease at Discovery (best effort, bounded by the call deadline).
pub async fn leave(node: &Node) {
    let lease = node.lease.lock().expect("lease lock").take();
    if let Some((lease_id, lease_token)) = lease {
        let request = LeaveRequest {
            lease_id,
            lease_token,
        };
        let (_, response) = node
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
}

/// Keeps this peer registered until shutdown: keepalives at a third of the
/// TTL, registering again when Discovery answers NOT_FOUND or was down.
pub async fn keep_registered(node: std::sync::Arc<Node>, mut ttl: Option<Duration>) {
    let mut backoff = Backoff::default();
    loop {
        let delay = match ttl {
            Some(ttl) => ttl / KEEPALIVES_PER_TTL,
            None => backoff.next_delay(),
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = node.shutdown.cancelled() => return,
        }
        if node.leaving.load(Ordering::SeqCst) {
            return;
        }
        let lease = node.lease.lock().expect("lease lock").clone();
        let renewed = match lease {
            Some((lease_id, lease_token)) => {
                let request = KeepAliveRequest {
                    lease_id,
                    lease_token,
                };
                node.discovery
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
        ttl = match renewed {
            Ok(t) => {
                backoff.reset();
                Some(t)
            }
            Err(status)
                if status.code() == Code::NotFound || status.code() == Code::PermissionDenied =>
            {
                debug!("lease unknown to Discovery; registering again");
                match register(node.as_ref()).await {
                    Ok(t) => {
                        backoff.reset();
                        Some(t)
                    }
                    Err(e) => {
                        if e.code() == Code::AlreadyExists {
                            error!(reason = e.message(), "cannot register again: name taken");
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
        };
    }
}

/// How often a changed member list is written to the cache file.
const CACHE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the member cache when it changed, until shutdown (and once more then).
pub async fn flush_cache(node: std::sync::Arc<Node>) {
    let mut tick = tokio::time::interval(CACHE_FLUSH_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => node.directory.flush_cache(),
            _ = node.shutdown.cancelled() => {
                node.directory.flush_cache();
                return;
            }
        }
    }
}

/// Follows Discovery's membership stream until shutdown, reconnecting with
/// backoff; each (re)connection starts from a fresh `List`.
pub async fn follow(node: std::sync::Arc<Node>) {
    let mut backoff = Backoff::default();
    loop {
        let result = tokio::select! {
            r = follow_once(&node, &mut backoff) => r,
            _ = node.shutdown.cancelled() => return,
        };
        if let Err(e) = result {
            debug!(error = %e.message(), "membership watch ended; reconnecting");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = node.shutdown.cancelled() => return,
        }
    }
}

async fn follow_once(node: &Node, backoff: &mut Backoff) -> Result<(), Status> {
    let (replica, stream) = node
        .discovery
        .call(|mut client| async move { client.watch(WatchRequest {}).await })
        .await;
    let mut stream = stream?.into_inner();
    refresh(node).await?;
    backoff.reset();
    loop {
        let event = match stream.message().await {
            Ok(Some(event)) => event,
            Ok(None) => {
                // The replica ended the stream (it is shutting down).
                node.discovery.failed(replica);
                return Ok(());
            }
            Err(status) => {
                if crate::replicas::replica_failed(&status) {
                    node.discovery.failed(replica);
                }
                return Err(status);
            }
        };
        let Some(member) = event.member.as_ref() else {
            continue;
        };
        match event.kind() {
            Kind::Joined => apply_joined(node, member),
            Kind::Left => {
                // It left for good: nothing more is owed to it.
                if node.directory.remove(&member.name) {
                    let dropped = node.store.clear_pending(&member.name).unwrap_or(0);
                    info!(peer = %member.name, dropped_queued = dropped, "peer left");
                }
                node.sessions.forget_peer(&member.name);
            }
            Kind::Expired => {
                // Gone silent (crashed, cut off): keep it, queue for it.
                node.directory.mark_offline(&member.name);
                node.sessions.forget_peer(&member.name);
                info!(peer = %member.name, "peer expired; queueing messages for it");
            }
            Kind::Unspecified => {}
        }
        node.directory.cache_changed();
    }
}
