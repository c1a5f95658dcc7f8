//! `chat.v1.Discovery` over a registry [`Store`]: translates protobuf to
//! store calls and serves each watcher from the store's event feed, within
//! the `Watchers` cap and lag limit. Refusals become statuses through
//! `status::refused`, the one mapping.

use std::{pin::Pin, sync::Arc};

use chat_proto::v1::{
    InfoRequest, InfoResponse, KeepAliveRequest, KeepAliveResponse, LeaveRequest, LeaveResponse,
    ListRequest, ListResponse, Member, MembershipEvent, RegisterRequest, RegisterResponse,
    WatchRequest, discovery_server::Discovery, membership_event::Kind,
};
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, broadcast};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::config::Config;
use crate::proofs::Proofs;
use crate::registry::{self, Event, EventKind, MemberInfo};
use crate::status;
use crate::store::Store;
use crate::watchers::{self, Watchers};

/// The Discovery service; cheap to clone.
#[derive(Debug, Clone)]
pub struct DiscoveryService {
    store: Arc<dyn Store>,
    proofs: Arc<Proofs>,
    watchers: Watchers,
    shutdown: CancellationToken,
}

impl DiscoveryService {
    /// A service over `store`; `shutdown` ends watch streams.
    pub fn new(store: Arc<dyn Store>, config: &Config, shutdown: CancellationToken) -> Self {
        Self {
            store,
            proofs: Arc::new(Proofs::new(config.key.clone())),
            watchers: Watchers::new(config.max_watchers),
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

type WatchStream = Pin<Box<dyn Stream<Item = Result<MembershipEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(self.proofs.info()))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let req = request.into_inner();
        // The request's own rules first (INVALID_ARGUMENT naming the rule),
        // then, before the store, the proof: only the key's holder gets a
        // lease for it.
        registry::check_registration(&req.name, &req.address, &req.public_key)
            .map_err(|e| status::refused("Register", e))?;
        let proof_stamp = self
            .proofs
            .accept(&req)
            .map_err(|e| status::refused("Register", status::unproven(e)))?;
        let (grant, members) = self
            .store
            .register(&req.name, &req.address, &req.public_key, proof_stamp)
            .await
            .map_err(|e| status::refused("Register", e))?;
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
            .map_err(|e| status::refused("KeepAlive", e))?;
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
            .map_err(|e| status::refused("List", e))?;
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
            .map_err(|e| status::refused("Leave", e))?;
        Ok(Response::new(LeaveResponse {}))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let permit = self
            .watchers
            .admit()
            .map_err(|e| status::refused("Watch", e))?;
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

/// The snapshot, then live events, for one watcher (see
/// [`watchers::live_events`]); falling behind ends the stream with a status.
fn watch_stream(
    snapshot: Vec<MembershipEvent>,
    events: broadcast::Receiver<Event>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<MembershipEvent, Status>> + Send {
    let live = watchers::live_events(events, permit).map(|item| {
        item.map(|event| to_event(&event, false))
            .map_err(Into::into)
    });
    futures::stream::iter(snapshot.into_iter().map(Ok)).chain(live)
}
