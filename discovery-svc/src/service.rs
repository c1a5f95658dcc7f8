//! `chat.v1.Discovery` over the registry: translates protobuf to registry
//! calls, publishes membership events to watchers, and expires leases in the
//! background. The registry lock is held only for in-memory work, and events
//! are published under it so every watcher sees them in registry order.

use std::{pin::Pin, sync::Arc, sync::Mutex};

use chat_proto::v1::{
    KeepAliveRequest, KeepAliveResponse, LeaveRequest, LeaveResponse, ListRequest, ListResponse,
    Member, MembershipEvent, RegisterRequest, RegisterResponse, WatchRequest,
    discovery_server::Discovery, membership_event::Kind,
};
use futures::{Stream, StreamExt};
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::registry::{Event, EventKind, MemberInfo, Registry};

/// Default events a watcher may fall behind by before it is dropped: a
/// burst of joins from a whole network starting at once fits with room to spare.
pub const DEFAULT_WATCH_LAG_LIMIT: usize = 4096;

/// Default most concurrent `Watch` streams: each holds a backlog cursor.
pub const DEFAULT_MAX_WATCHERS: usize = 1024;

/// When no lease is live, the reaper still wakes this often to re-check.
const IDLE_REAPER_PERIOD: std::time::Duration = std::time::Duration::from_secs(60);

/// State shared by the service handles and the reaper.
#[derive(Debug)]
struct Shared {
    registry: Mutex<Registry>,
    events: broadcast::Sender<Event>,
    /// Wakes the reaper when a new lease may expire sooner than it planned.
    reaper_wake: Notify,
    watchers: Arc<Semaphore>,
    max_watchers: usize,
    shutdown: CancellationToken,
}

/// The Discovery service; cheap to clone.
#[derive(Debug, Clone)]
pub struct DiscoveryService {
    shared: Arc<Shared>,
}

impl DiscoveryService {
    /// A service over an empty registry; `shutdown` ends watch streams.
    pub fn new(config: &crate::Config, shutdown: CancellationToken) -> Self {
        let (events, _) = broadcast::channel(config.watch_lag_limit.max(1));
        Self {
            shared: Arc::new(Shared {
                registry: Mutex::new(Registry::new(config.ttl)),
                events,
                reaper_wake: Notify::new(),
                watchers: Arc::new(Semaphore::new(config.max_watchers)),
                max_watchers: config.max_watchers,
                shutdown,
            }),
        }
    }

    /// Expires leases as they run out, until shutdown. Spawn it once.
    pub async fn run_reaper(self) {
        let shared = &self.shared;
        loop {
            let next = shared
                .registry
                .lock()
                .expect("registry lock")
                .next_expiry()
                .unwrap_or_else(|| Instant::now() + IDLE_REAPER_PERIOD);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shared.reaper_wake.notified() => continue,
                _ = shared.shutdown.cancelled() => return,
            }
            let mut registry = shared.registry.lock().expect("registry lock");
            let events = registry.expire(Instant::now());
            self.publish(events);
        }
    }

    /// Sends events to every watcher; called with the registry lock held.
    fn publish(&self, events: Vec<Event>) {
        for event in events {
            match event.kind {
                EventKind::Joined => {
                    info!(name = %event.member.name, address = %event.member.address, "member joined")
                }
                EventKind::Left => info!(name = %event.member.name, "member left"),
                EventKind::Expired => info!(name = %event.member.name, "member expired"),
            }
            // An error only means nobody is watching.
            let _ = self.shared.events.send(event);
        }
    }
}

fn to_member(info: &MemberInfo) -> Member {
    Member {
        name: info.name.clone(),
        address: info.address.clone(),
        public_key: info.public_key.to_vec(),
        fingerprint: info.fingerprint.clone(),
        joined_at: Some(prost_types::Timestamp {
            seconds: info.joined_at.timestamp(),
            nanos: info.joined_at.timestamp_subsec_nanos() as i32,
        }),
    }
}

fn to_event(event: &Event, initial: bool) -> MembershipEvent {
    let kind = match event.kind {
        EventKind::Joined => Kind::Joined,
        EventKind::Left => Kind::Left,
        EventKind::Expired => Kind::Expired,
    };
    MembershipEvent {
        kind: kind.into(),
        member: Some(to_member(&event.member)),
        initial,
    }
}

/// Logs a refused request and passes its status on.
fn refused(rpc: &'static str, status: Status) -> Status {
    warn!(rpc, code = ?status.code(), reason = status.message(), "request refused");
    status
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<MembershipEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        let mut registry = self.shared.registry.lock().expect("registry lock");
        let (grant, events) = registry
            .register(
                &req.name,
                &req.address,
                &req.public_key,
                Instant::now(),
                chrono::Utc::now(),
            )
            .map_err(|e| refused("Register", e.into()))?;
        let members = registry.list().iter().map(to_member).collect();
        self.publish(events);
        drop(registry);
        self.shared.reaper_wake.notify_one();
        Ok(Response::new(RegisterResponse {
            lease_id: grant.lease_id,
            lease_token: grant.lease_token,
            ttl_seconds: grant.ttl.as_secs().max(1) as u32,
            members,
        }))
    }

    async fn keep_alive(
        &self,
        request: Request<KeepAliveRequest>,
    ) -> Result<Response<KeepAliveResponse>, Status> {
        let req = request.into_inner();
        let mut registry = self.shared.registry.lock().expect("registry lock");
        let (ttl, events) = registry
            .keep_alive(&req.lease_id, &req.lease_token, Instant::now())
            .map_err(|e| refused("KeepAlive", e.into()))?;
        self.publish(events);
        debug!(lease = %req.lease_id, "lease renewed");
        Ok(Response::new(KeepAliveResponse {
            ttl_seconds: ttl.as_secs().max(1) as u32,
        }))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let registry = self.shared.registry.lock().expect("registry lock");
        let members = registry.list().iter().map(to_member).collect();
        Ok(Response::new(ListResponse { members }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let req = request.into_inner();
        let mut registry = self.shared.registry.lock().expect("registry lock");
        let events = registry
            .leave(&req.lease_id, &req.lease_token, Instant::now())
            .map_err(|e| refused("Leave", e.into()))?;
        self.publish(events);
        Ok(Response::new(LeaveResponse {}))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let permit = self
            .shared
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                refused(
                    "Watch",
                    Status::resource_exhausted(format!(
                        "too many watchers (limit {}); try again later",
                        self.shared.max_watchers
                    )),
                )
            })?;
        // Snapshot and subscription under one lock: no event is missed or doubled.
        let (snapshot, events) = {
            let registry = self.shared.registry.lock().expect("registry lock");
            let snapshot: Vec<MembershipEvent> = registry
                .list()
                .into_iter()
                .map(|member| {
                    to_event(
                        &Event {
                            kind: EventKind::Joined,
                            member,
                        },
                        true,
                    )
                })
                .collect();
            (snapshot, self.shared.events.subscribe())
        };
        let stream = watch_stream(snapshot, events, permit)
            .take_until(self.shared.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The snapshot, then live events, for one watcher.
///
/// The stream reads the shared backlog only when HTTP/2 asks for the next
/// item, so a client that stops reading exerts backpressure on its own
/// stream alone; once it is more than the lag limit events behind, its
/// next item is a status telling it to watch again. No per-watcher task or
/// queue is needed, and the registry never waits for anyone.
fn watch_stream(
    snapshot: Vec<MembershipEvent>,
    events: broadcast::Receiver<Event>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<MembershipEvent, Status>> + Send {
    let live = futures::stream::unfold(Some((events, permit)), |state| async move {
        let (mut events, permit) = state?;
        match events.recv().await {
            Ok(event) => Some((Ok(to_event(&event, false)), Some((events, permit)))),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "watcher fell behind; dropping it");
                let status = Status::resource_exhausted(format!(
                    "watch fell {missed} events behind; call Watch again"
                ));
                Some((Err(status), None))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    });
    futures::stream::iter(snapshot.into_iter().map(Ok)).chain(live)
}
