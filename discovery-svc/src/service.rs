//! `chat.v1.Discovery` over a registry [`Store`]: translates protobuf to
//! store calls and serves each watcher from the store's event feed, with a
//! cap on watchers and a limit on how far one may fall behind.

use std::{pin::Pin, sync::Arc};

use chat_proto::v1::{
    KeepAliveRequest, KeepAliveResponse, LeaveRequest, LeaveResponse, ListRequest, ListResponse,
    Member, MembershipEvent, RegisterRequest, RegisterResponse, WatchRequest,
    discovery_server::Discovery, membership_event::Kind,
};
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::{
    registry::{Event, EventKind, MemberInfo},
    store::Store,
};

/// Default events a watcher may fall behind by before it is dropped: a
/// burst of joins from a whole network starting at once fits with room to spare.
pub const DEFAULT_WATCH_LAG_LIMIT: usize = 4096;

/// Default most concurrent `Watch` streams: each holds a backlog cursor.
pub const DEFAULT_MAX_WATCHERS: usize = 1024;

/// The Discovery service; cheap to clone.
#[derive(Debug, Clone)]
pub struct DiscoveryService {
    store: Arc<dyn Store>,
    watchers: Arc<Semaphore>,
    max_watchers: usize,
    shutdown: CancellationToken,
}

impl DiscoveryService {
    /// A service over `store`; `shutdown` ends watch streams.
    pub fn new(store: Arc<dyn Store>, config: &crate::Config, shutdown: CancellationToken) -> Self {
        Self {
            store,
            watchers: Arc::new(Semaphore::new(config.max_watchers)),
            max_watchers: config.max_watchers,
            shutdown,
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
        let (grant, members) = self
            .store
            .register(&req.name, &req.address, &req.public_key)
            .await
            .map_err(|e| refused("Register", e.into()))?;
        Ok(Response::new(RegisterResponse {
            lease_id: grant.lease_id,
            lease_token: grant.lease_token,
            ttl_seconds: grant.ttl.as_secs().max(1) as u32,
            members: members.iter().map(to_member).collect(),
        }))
    }

    async fn keep_alive(
        &self,
        request: Request<KeepAliveRequest>,
    ) -> Result<Response<KeepAliveResponse>, Status> {
        let req = request.into_inner();
        let ttl = self
            .store
            .keep_alive(&req.lease_id, &req.lease_token)
            .await
            .map_err(|e| refused("KeepAlive", e.into()))?;
        debug!(lease = %req.lease_id, "lease renewed");
        Ok(Response::new(KeepAliveResponse {
            ttl_seconds: ttl.as_secs().max(1) as u32,
        }))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let members = self
            .store
            .list()
            .await
            .map_err(|e| refused("List", e.into()))?;
        Ok(Response::new(ListResponse {
            members: members.iter().map(to_member).collect(),
        }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let req = request.into_inner();
        self.store
            .leave(&req.lease_id, &req.lease_token)
            .await
            .map_err(|e| refused("Leave", e.into()))?;
        Ok(Response::new(LeaveResponse {}))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            refused(
                "Watch",
                Status::resource_exhausted(format!(
                    "too many watchers (limit {}); try again later",
                    self.max_watchers
                )),
            )
        })?;
        // The store takes snapshot and subscription together: no event is
        // missed or doubled.
        let (members, events) = self.store.subscribe().await;
        let snapshot: Vec<MembershipEvent> = members
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
        let stream = watch_stream(snapshot, events, permit)
            .take_until(self.shutdown.clone().cancelled_owned());
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
