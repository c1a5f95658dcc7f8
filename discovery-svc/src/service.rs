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
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;

use crate::config::Config;
use crate::proofs::Proofs;
use crate::registry::{self, Event, EventKind, MemberInfo};
use crate::status;
use crate::store::Store;
use crate::watchers::{self, Slot, Watchers};

/// Members in a List page when the request asks for none, and the most
/// it may ask for: 1000 members of the longest name and address encode to
/// well under the 4 MiB message limit.
pub const MAX_PAGE_SIZE: usize = 1000;

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
            watchers: Watchers::new(
                config.max_watchers,
                config.max_watchers_per_source,
                config.caps.members,
            ),
            shutdown,
        }
    }
}

/// The caller's source, for the per-source caps: its IP only (an IPv6
/// host's /64), since one host opens many connections.
fn source_of<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map(|a| chat_proto::conn::source_of(a.ip()).to_string())
        .unwrap_or_default()
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
        let source = source_of(&request);
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
        let grant = self
            .store
            .register(
                &req.name,
                &req.address,
                &req.public_key,
                proof_stamp,
                &source,
            )
            .await
            .map_err(|e| status::refused("Register", e))?;
        Ok(Response::new(RegisterResponse {
            lease_id: grant.lease_id,
            lease_token: grant.lease_token,
            ttl_seconds: grant.ttl.as_secs().max(1) as u32,
            ..Default::default()
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

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.page_size as usize {
            0 => MAX_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        // The token is the last name of the previous page.
        if !req.page_token.is_empty() {
            registry::validate_name(&req.page_token)
                .map_err(|_| status::refused("List", status::bad_page_token()))?;
        }
        let (members, next) = self
            .store
            .page(&req.page_token, limit)
            .await
            .map_err(|e| status::refused("List", e))?;
        let next_page_token = next.unwrap_or_default();
        Ok(Response::new(ListResponse {
            members: members.iter().map(to_member).collect(),
            next_page_token,
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

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let source = source_of(&request);
        let req = request.into_inner();
        let refused = |e: Status| status::refused("Watch", e);
        let (slot, member) = if req.lease_id.is_empty() && req.lease_token.is_empty() {
            (
                self.watchers
                    .admit(&source)
                    .map_err(|e| refused(e.into()))?,
                None,
            )
        } else {
            let member = self
                .store
                .holder(&req.lease_id, &req.lease_token)
                .await
                .map_err(|e| refused(e.into()))?;
            let slot = self
                .watchers
                .admit_member(&member.name)
                .map_err(|e| refused(e.into()))?;
            (slot, Some(member))
        };
        // The store takes snapshot and subscription together: no event is
        // missed or doubled.
        let (members, events) = self.store.subscribe().await;
        if let Some(member) = member
            && !members.contains(&member)
        {
            // Its lease ended (or it registered again) between the check
            // and the snapshot: its LEFT will never reach this watch.
            return Err(refused(registry::RegistryError::UnknownLease.into()));
        }
        let stream =
            watch_stream(members, events, slot).take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The snapshot (read from the shared copy as the client asks for it),
/// then live events, for one watcher (see [`watchers::live_events`]);
/// falling behind ends the stream with a status.
fn watch_stream(
    snapshot: Arc<[MemberInfo]>,
    events: broadcast::Receiver<Event>,
    slot: Slot,
) -> impl Stream<Item = Result<MembershipEvent, Status>> + Send {
    let initial = (0..snapshot.len()).map(move |i| {
        Ok(to_event(
            &Event {
                kind: EventKind::Joined,
                member: snapshot[i].clone(),
            },
            true,
        ))
    });
    let live = watchers::live_events(events, slot).map(|item| {
        item.map(|event| to_event(&event, false))
            .map_err(Into::into)
    });
    futures::stream::iter(initial).chain(live)
}
