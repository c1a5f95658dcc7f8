//! The etcd store: several `discovery-svc` replicas on one etcd cluster act
//! as one Discovery service.
//!
//! Layout under the configured prefix:
//! - `members/NAME` → the member record, attached to the member's etcd lease,
//!   so etcd deletes it when the lease runs out;
//! - `leases/ID` → the same record under its lease id (ID = the etcd lease id
//!   in hex), so `KeepAlive` and `Leave` find the member in one read.
//!
//! The lease token is never stored: only its SHA-256, compared in constant
//! time. Name uniqueness is one etcd transaction that succeeds only if the
//! name is still absent, or still held by the record that was read.
//!
//! Events come from one etcd watch on `members/` per replica, which keeps a
//! mirror of the members and feeds the replica's watchers; after a broken
//! connection it resumes from the next revision, and if that revision was
//! compacted away it lists again and reports the difference. A `Leave` first
//! marks the record as leaving and then revokes the lease, so the watch can
//! tell LEFT from EXPIRED when the key disappears.
//!
//! This file holds the connection, the key layout and the reads every call
//! shares; the parts are:
//! - `record`: the stored record;
//! - `mirror`: a replica's copy of the members and how two copies differ;
//! - `follower`: the watch that keeps the mirror and feeds watchers;
//! - `calls`: the [`Store`](crate::store::Store) calls as etcd
//!   transactions and lease operations.

use std::{sync::Arc, time::Duration};

use etcd_client::{Client, ConnectOptions, KeyValue};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::{Caps, Config};
use crate::registry::{RegistryError, check_lease_fields};

mod calls;
mod follower;
mod mirror;
mod record;

use follower::Follower;
use record::Record;

/// Deadline of one etcd request.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to an etcd endpoint may take.
const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The registry in etcd.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    ttl: Duration,
    caps: Caps,
    /// New names being registered through this replica, for the caps.
    inflight: chat_proto::tally::Tally<String>,
    /// This replica's view of the members, kept by an etcd watch.
    follower: Arc<Follower>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// An etcd failure as the registry reports it.
fn unavailable(e: etcd_client::Error) -> RegistryError {
    RegistryError::Unavailable(format!("etcd: {e}"))
}

impl EtcdStore {
    /// Connects to etcd at `endpoints`, loads the members under `prefix`,
    /// and follows them with a watch until `shutdown`.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        config: &Config,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, etcd_client::Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(ETCD_CONNECT_TIMEOUT)
            .with_timeout(ETCD_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let client = Client::connect(endpoints, Some(options)).await?;
        let follower = Follower::load(
            client.clone(),
            members_prefix(prefix),
            config.watch_lag_limit,
        )
        .await?;
        info!(endpoints = %endpoints.join(","), prefix, members = follower.len(), "registry in etcd");
        tokio::spawn(follower.clone().follow(shutdown));
        Ok(Arc::new(Self {
            client,
            prefix: prefix.to_owned(),
            ttl: config.ttl,
            caps: config.caps,
            inflight: Default::default(),
            follower,
        }))
    }

    fn members_prefix(&self) -> String {
        members_prefix(&self.prefix)
    }

    fn member_key(&self, name: &str) -> String {
        format!("{}members/{name}", self.prefix)
    }

    fn lease_key(&self, lease: i64) -> String {
        format!("{}leases/{lease:016x}", self.prefix)
    }

    /// The record under `key` and its etcd metadata, if any.
    async fn read(&self, key: &str) -> Result<Option<(Record, KeyValue)>, RegistryError> {
        let response = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        Ok(response.kvs().first().and_then(|kv| {
            Record::decode(kv.value())
                .ok()
                .map(|record| (record, kv.clone()))
        }))
    }

    /// The lease behind `lease_id`, once its token is checked.
    async fn authorize(&self, lease_id: &str, token: &str) -> Result<(i64, Record), RegistryError> {
        check_lease_fields(lease_id, token)?;
        let lease = i64::from_str_radix(lease_id, 16).map_err(|_| RegistryError::UnknownLease)?;
        let (record, _) = self
            .read(&self.lease_key(lease))
            .await?
            .ok_or(RegistryError::UnknownLease)?;
        if !record.token_matches(token) {
            return Err(RegistryError::WrongToken);
        }
        Ok((lease, record))
    }

    async fn revoke(&self, lease: i64) {
        if let Err(e) = self.client.lease_client().revoke(lease).await {
            debug!(error = %e, "could not revoke an etcd lease; it will expire");
        }
    }
}

/// The keys of the members under `prefix`.
fn members_prefix(prefix: &str) -> String {
    format!("{prefix}members/")
}
