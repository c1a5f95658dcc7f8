//! Where the registry lives, behind one trait: in this process's memory (the
//! default, no dependencies) or in etcd (feature `etcd`), where several
//! `discovery-svc` replicas share one view.
//!
//! A store answers the four unary calls and hands out a membership
//! subscription; the service above it owns the watcher cap, the lag limit
//! and the protobuf translation, so both stores behave the same on the wire.
//! Which store to open is the composition root's choice (`crate::run`).

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;

use crate::registry::{Event, EventKind, Grant, MemberInfo, RegistryError};

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;

/// A membership registry with leases.
#[tonic::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Registers `name` at `address` with `public_key`, sent from `source`
    /// (an IP address, for the per-source cap). A live lease on the name
    /// with the same key is replaced; with another key the name is taken; a
    /// new name must fit the member caps. Returns the new lease.
    async fn register(
        &self,
        name: &str,
        address: &str,
        public_key: &[u8],
        proof_stamp: u64,
        source: &str,
    ) -> Result<Grant, RegistryError>;

    /// Renews a lease for another TTL; returns the TTL.
    async fn keep_alive(&self, lease_id: &str, token: &str) -> Result<Duration, RegistryError>;

    /// Ends a lease; its member is gone (watchers see LEFT).
    async fn leave(&self, lease_id: &str, token: &str) -> Result<(), RegistryError>;

    /// The member holding `lease_id`, if `token` is its token (nothing is renewed).
    async fn holder(&self, lease_id: &str, token: &str) -> Result<MemberInfo, RegistryError>;

    /// Up to `limit` live members in name order after the name `after`
    /// (from the first when empty), and the name to continue after when
    /// more follow.
    async fn page(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<MemberInfo>, Option<String>), RegistryError>;

    /// The current members (oldest first, shared between watchers) and a
    /// subscription to every event after them, taken together so that no
    /// event is missed or seen twice.
    async fn subscribe(&self) -> (Arc<[MemberInfo]>, broadcast::Receiver<Event>);
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// This binary was built without the store's cargo feature.
    #[error("this discovery-svc was built without etcd support; rebuild with `--features etcd`")]
    NotBuilt,
    /// The store's backend refused or could not be reached.
    #[error("{0}")]
    Backend(String),
}

/// Logs a membership event once, where the store learns of it.
pub(crate) fn log_event(event: &Event) {
    let m = &event.member;
    match event.kind {
        EventKind::Joined => tracing::info!(name = %m.name, address = %m.address, "member joined"),
        EventKind::Left => tracing::info!(name = %m.name, "member left"),
        EventKind::Expired => tracing::info!(name = %m.name, "member expired"),
    }
}
