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

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chat_proto::keys::{self, PUBLIC_KEY_LEN};
use chrono::{DateTime, Utc};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, WatchOptions, WatchRequestSender,
};
use prost::Message;
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Store, log_event};
use crate::registry::{
    Event, EventKind, Grant, MemberInfo, RegistryError, check_lease_fields, check_registration,
    hash_token, new_lease_token,
};

/// Deadline of one etcd request.
const ETCD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to an etcd endpoint may take.
const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Attempts at the register transaction when other writers race for the name.
const REGISTER_ATTEMPTS: usize = 8;

/// Longest a call waits for this replica's watch to catch up with a write
/// or read: well under a peer's 3 s call deadline. Past it, the call
/// answers anyway and the event reaches watchers live.
const CATCH_UP_WAIT: Duration = Duration::from_secs(1);

/// Longest wait between attempts to re-establish the etcd watch.
const MAX_WATCH_BACKOFF: Duration = Duration::from_secs(2);

/// A member as stored in etcd (protobuf, so replicas of different versions
/// can read each other's records).
#[derive(Clone, PartialEq, Message)]
struct Record {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    address: String,
    #[prost(bytes = "vec", tag = "3")]
    public_key: Vec<u8>,
    /// When the lease began, Unix milliseconds.
    #[prost(int64, tag = "4")]
    joined_at_ms: i64,
    /// SHA-256 of the lease token.
    #[prost(bytes = "vec", tag = "5")]
    token_hash: Vec<u8>,
    /// The TTL etcd granted, in seconds.
    #[prost(int64, tag = "6")]
    ttl_seconds: i64,
    /// Set by `Leave` just before the lease is revoked.
    #[prost(bool, tag = "7")]
    leaving: bool,
}

impl Record {
    fn info(&self) -> Option<MemberInfo> {
        let public_key: [u8; PUBLIC_KEY_LEN] = self.public_key.as_slice().try_into().ok()?;
        Some(MemberInfo {
            name: self.name.clone(),
            address: self.address.clone(),
            public_key,
            fingerprint: keys::fingerprint(&public_key),
            joined_at: DateTime::<Utc>::from_timestamp_millis(self.joined_at_ms)
                .unwrap_or_default(),
        })
    }

    fn token_matches(&self, token: &str) -> bool {
        self.token_hash.len() == 32 && bool::from(self.token_hash.ct_eq(&hash_token(token)))
    }
}

/// One member in a replica's mirror.
#[derive(Debug, Clone)]
struct Mirrored {
    info: MemberInfo,
    /// Revision of the record's last write: lists are sorted by it.
    mod_revision: i64,
    /// Marked by `Leave`: its deletion is a LEFT, not an EXPIRED.
    leaving: bool,
}

/// The members as this replica's watch last saw them.
#[derive(Debug, Default)]
struct Mirror {
    members: HashMap<String, Mirrored>,
    /// Every event up to this revision has been applied.
    revision: i64,
}

impl Mirror {
    fn sorted(&self) -> Vec<MemberInfo> {
        let mut all: Vec<&Mirrored> = self.members.values().collect();
        all.sort_unstable_by_key(|m| m.mod_revision);
        all.into_iter().map(|m| m.info.clone()).collect()
    }
}

/// The registry in etcd.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    ttl: Duration,
    mirror: Mutex<Mirror>,
    events: broadcast::Sender<Event>,
    /// The revision the mirror has applied, for callers waiting to read
    /// their own writes.
    applied: watch::Sender<i64>,
    /// The live etcd watch's request side, to ask for a progress report.
    progress: tokio::sync::Mutex<Option<WatchRequestSender>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: etcd_client::Error) -> RegistryError {
    RegistryError::Unavailable(format!("etcd: {e}"))
}

impl EtcdStore {
    /// Connects to etcd at `endpoints`, loads the members under `prefix`,
    /// and follows them with a watch until `shutdown`.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        config: &crate::Config,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, etcd_client::Error> {
        let options = ConnectOptions::new()
            .with_connect_timeout(ETCD_CONNECT_TIMEOUT)
            .with_timeout(ETCD_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let client = Client::connect(endpoints, Some(options)).await?;
        let (events, _) = broadcast::channel(config.watch_lag_limit.max(1));
        let store = Arc::new(Self {
            client,
            prefix: prefix.to_owned(),
            ttl: config.ttl,
            mirror: Mutex::new(Mirror::default()),
            events,
            applied: watch::channel(0).0,
            progress: tokio::sync::Mutex::new(None),
        });
        let loaded = store.load().await?;
        store.applied.send_replace(loaded.revision);
        *store.lock() = loaded;
        info!(endpoints = %endpoints.join(","), prefix, members = store.lock().members.len(), "registry in etcd");
        tokio::spawn(store.clone().follow(shutdown));
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().expect("mirror lock")
    }

    fn members_prefix(&self) -> String {
        format!("{}members/", self.prefix)
    }

    fn member_key(&self, name: &str) -> String {
        format!("{}members/{name}", self.prefix)
    }

    fn lease_key(&self, lease: i64) -> String {
        format!("{}leases/{lease:016x}", self.prefix)
    }

    /// Reads every member, with the revision the read saw.
    async fn load(&self) -> Result<Mirror, etcd_client::Error> {
        let response = self
            .client
            .kv_client()
            .get(self.members_prefix(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let members = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let record = Record::decode(kv.value()).ok()?;
                let info = record.info()?;
                Some((
                    info.name.clone(),
                    Mirrored {
                        info,
                        mod_revision: kv.mod_revision(),
                        leaving: record.leaving,
                    },
                ))
            })
            .collect();
        Ok(Mirror { members, revision })
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

    /// Follows the members with an etcd watch until `shutdown`.
    async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                r = self.follow_once() => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Ok(()) => delay = Duration::from_millis(100),
                Err(e) => {
                    warn!(error = %e, "etcd watch failed; resuming");
                    delay = (delay * 2).min(MAX_WATCH_BACKOFF);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One etcd watch from the revision after the last applied one, until it
    /// ends. A compacted start revision means events were lost to this
    /// replica: it lists again and publishes the difference.
    async fn follow_once(&self) -> Result<(), etcd_client::Error> {
        let from = self.lock().revision + 1;
        let stream = self
            .client
            .watch_client()
            .watch(
                self.members_prefix(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(from)
                        .with_progress_notify(),
                ),
            )
            .await?;
        let (sender, mut stream) = stream.split();
        *self.progress.lock().await = Some(sender);
        while let Some(response) = stream.message().await? {
            if response.created() {
                // Its header is the current revision, not how far the
                // events from `from` have been replayed.
                continue;
            }
            if response.canceled() {
                if response.compact_revision() > 0 {
                    warn!(
                        from,
                        compacted = response.compact_revision(),
                        "etcd compacted the watched revisions; listing again"
                    );
                    let fresh = self.load().await?;
                    self.replace_mirror(fresh);
                }
                return Ok(());
            }
            let mut mirror = self.lock();
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                self.apply(&mut mirror, event.event_type(), kv);
                mirror.revision = mirror.revision.max(kv.mod_revision());
            }
            if response.events().is_empty()
                && let Some(header) = response.header()
            {
                // A progress notification: nothing under the prefix changed
                // up to this revision.
                mirror.revision = mirror.revision.max(header.revision());
            }
            self.applied.send_replace(mirror.revision);
        }
        Ok(())
    }

    /// Applies one watch event to the mirror and publishes what it means;
    /// called with the mirror locked, so watchers see events in etcd order.
    fn apply(&self, mirror: &mut Mirror, kind: EventType, kv: &KeyValue) {
        if kv.mod_revision() <= mirror.revision {
            return; // Already applied before a reconnect.
        }
        let Some(name) = kv
            .key()
            .strip_prefix(self.members_prefix().as_bytes())
            .and_then(|n| std::str::from_utf8(n).ok())
        else {
            return;
        };
        match kind {
            EventType::Put => {
                let Some((record, info)) = Record::decode(kv.value())
                    .ok()
                    .and_then(|r| r.info().map(|i| (r, i)))
                else {
                    warn!(key = name, "undecodable member record in etcd; ignored");
                    return;
                };
                if record.leaving {
                    if let Some(m) = mirror.members.get_mut(name) {
                        m.leaving = true;
                    }
                    return;
                }
                mirror.members.insert(
                    name.to_owned(),
                    Mirrored {
                        info: info.clone(),
                        mod_revision: kv.mod_revision(),
                        leaving: false,
                    },
                );
                self.publish(Event {
                    kind: EventKind::Joined,
                    member: info,
                });
            }
            EventType::Delete => {
                if let Some(gone) = mirror.members.remove(name) {
                    let kind = if gone.leaving {
                        EventKind::Left
                    } else {
                        EventKind::Expired
                    };
                    self.publish(Event {
                        kind,
                        member: gone.info,
                    });
                }
            }
        }
    }

    /// Swaps in a freshly listed mirror and publishes how it differs from
    /// the old one (members gone are reported as EXPIRED: why is unknown).
    fn replace_mirror(&self, fresh: Mirror) {
        let mut mirror = self.lock();
        let old = std::mem::replace(&mut *mirror, fresh);
        for event in mirror_diff(&old, &mirror) {
            self.publish(event);
        }
        self.applied.send_replace(mirror.revision);
    }

    /// Waits until the mirror has applied `revision` (this replica's own
    /// write, or the store's revision at a read), so that a Watch opened
    /// after a call sees that call's effect in its snapshot. Gives up after
    /// the etcd deadline: the event then arrives live instead.
    async fn caught_up(&self, revision: i64) {
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(CATCH_UP_WAIT, applied.wait_for(|&r| r >= revision)).await;
    }

    /// The store's current revision, from a linearizable read.
    async fn current_revision(&self) -> Result<i64, etcd_client::Error> {
        let response = self
            .client
            .kv_client()
            .get(
                self.members_prefix(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    fn publish(&self, event: Event) {
        log_event(&event);
        // An error only means nobody is watching.
        let _ = self.events.send(event);
    }
}

/// The events that turn `old` into `new`: JOINED for new or changed
/// members (in write order), EXPIRED for members gone.
fn mirror_diff(old: &Mirror, new: &Mirror) -> Vec<Event> {
    let mut events: Vec<Event> = old
        .members
        .values()
        .filter(|m| !new.members.contains_key(&m.info.name))
        .map(|m| Event {
            kind: EventKind::Expired,
            member: m.info.clone(),
        })
        .collect();
    let mut joined: Vec<&Mirrored> = new
        .members
        .values()
        .filter(|m| {
            old.members
                .get(&m.info.name)
                .is_none_or(|o| o.mod_revision != m.mod_revision)
        })
        .collect();
    joined.sort_unstable_by_key(|m| m.mod_revision);
    events.extend(joined.into_iter().map(|m| Event {
        kind: EventKind::Joined,
        member: m.info.clone(),
    }));
    events
}

#[tonic::async_trait]
impl Store for EtcdStore {
    async fn register(
        &self,
        name: &str,
        address: &str,
        public_key: &[u8],
    ) -> Result<(Grant, Vec<MemberInfo>), RegistryError> {
        let public_key = check_registration(name, address, public_key)?;
        let granted = self
            .client
            .lease_client()
            .grant(self.ttl.as_secs().max(1) as i64, None)
            .await
            .map_err(unavailable)?;
        let lease = granted.id();
        let ttl_seconds = granted.ttl().max(1);
        let lease_token = new_lease_token();
        let record = Record {
            name: name.to_owned(),
            address: address.to_owned(),
            public_key: public_key.to_vec(),
            joined_at_ms: Utc::now().timestamp_millis(),
            token_hash: hash_token(&lease_token).to_vec(),
            ttl_seconds,
            leaving: false,
        }
        .encode_to_vec();
        let member_key = self.member_key(name);

        for _ in 0..REGISTER_ATTEMPTS {
            let existing = match self.read(&member_key).await {
                Ok(existing) => existing,
                Err(e) => {
                    self.revoke(lease).await;
                    return Err(e);
                }
            };
            let mut ops = vec![
                TxnOp::put(
                    member_key.as_str(),
                    record.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(
                    self.lease_key(lease),
                    record.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ];
            let (condition, replaced) = match &existing {
                None => (
                    Compare::create_revision(member_key.as_str(), CompareOp::Equal, 0),
                    None,
                ),
                Some((held, kv)) => {
                    if held.public_key != public_key {
                        self.revoke(lease).await;
                        return Err(RegistryError::NameTaken(name.to_owned()));
                    }
                    // The same key again (a restarted peer): replace its lease.
                    ops.push(TxnOp::delete(self.lease_key(kv.lease()), None));
                    (
                        Compare::mod_revision(
                            member_key.as_str(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        ),
                        Some(kv.lease()),
                    )
                }
            };
            let txn = Txn::new().when([condition]).and_then(ops);
            let committed = match self.client.kv_client().txn(txn).await {
                Ok(response) => response
                    .succeeded()
                    .then(|| response.header().map_or(0, |h| h.revision())),
                Err(e) => {
                    self.revoke(lease).await;
                    return Err(unavailable(e));
                }
            };
            if let Some(revision) = committed {
                if let Some(old) = replaced.filter(|&old| old != lease) {
                    self.revoke(old).await;
                }
                let members = self.list().await?;
                self.caught_up(revision).await;
                let grant = Grant {
                    lease_id: format!("{lease:016x}"),
                    lease_token,
                    ttl: Duration::from_secs(ttl_seconds as u64),
                };
                return Ok((grant, members));
            }
            // Someone else wrote the name between our read and our write.
        }
        self.revoke(lease).await;
        Err(RegistryError::Unavailable(format!(
            "name {name:?} changed {REGISTER_ATTEMPTS} times while registering"
        )))
    }

    async fn keep_alive(&self, lease_id: &str, token: &str) -> Result<Duration, RegistryError> {
        let (lease, record) = self.authorize(lease_id, token).await?;
        match self.client.lease_client().keep_alive(lease).await {
            Ok(_) => Ok(Duration::from_secs(record.ttl_seconds.max(1) as u64)),
            // etcd-client reports a lease that is gone as a keepalive error.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Err(RegistryError::UnknownLease),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn leave(&self, lease_id: &str, token: &str) -> Result<(), RegistryError> {
        let (lease, mut record) = self.authorize(lease_id, token).await?;
        let member_key = self.member_key(&record.name);
        // Mark the record as leaving, if it is still this lease's, so the
        // watch reports LEFT rather than EXPIRED when the key goes.
        record.leaving = true;
        let txn = Txn::new()
            .when([Compare::lease(member_key.as_str(), CompareOp::Equal, lease)])
            .and_then([TxnOp::put(
                member_key.as_str(),
                record.encode_to_vec(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let marked = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(unavailable)?
            .succeeded();
        let revoked = self
            .client
            .lease_client()
            .revoke(lease)
            .await
            .map_err(unavailable)?;
        if marked {
            // Only then does the revoke delete a member key to wait for.
            self.caught_up(revoked.header().map_or(0, |h| h.revision()))
                .await;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<MemberInfo>, RegistryError> {
        Ok(self.load().await.map_err(unavailable)?.sorted())
    }

    async fn subscribe(&self) -> (Vec<MemberInfo>, broadcast::Receiver<Event>) {
        // Catch up with everything written through any replica so far.
        if let Ok(now) = self.current_revision().await
            && *self.applied.borrow() < now
        {
            if let Some(sender) = self.progress.lock().await.as_mut() {
                let _ = sender.request_progress().await;
            }
            self.caught_up(now).await;
        }
        let mirror = self.lock();
        (mirror.sorted(), self.events.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, rev: i64) -> Mirrored {
        Mirrored {
            info: MemberInfo {
                name: name.into(),
                address: "127.0.0.1:1".into(),
                public_key: [9; 32],
                fingerprint: String::new(),
                joined_at: Utc::now(),
            },
            mod_revision: rev,
            leaving: false,
        }
    }

    fn mirror(members: &[(&str, i64)]) -> Mirror {
        Mirror {
            members: members
                .iter()
                .map(|&(n, r)| (n.to_owned(), member(n, r)))
                .collect(),
            revision: 0,
        }
    }

    #[test]
    fn relisting_reports_the_difference() {
        let old = mirror(&[("alice", 2), ("bob", 3), ("carol", 4)]);
        let new = mirror(&[("alice", 2), ("carol", 9), ("dave", 7)]);
        let events: Vec<(EventKind, String)> = mirror_diff(&old, &new)
            .into_iter()
            .map(|e| (e.kind, e.member.name))
            .collect();
        assert_eq!(
            events,
            vec![
                (EventKind::Expired, "bob".to_owned()),
                (EventKind::Joined, "dave".to_owned()),
                (EventKind::Joined, "carol".to_owned()),
            ]
        );
    }

    #[test]
    fn records_round_trip_and_check_tokens() {
        let record = Record {
            name: "alice".into(),
            address: "10.0.0.2:7000".into(),
            public_key: vec![7; 32],
            joined_at_ms: 1_700_000_000_123,
            token_hash: hash_token("secret").to_vec(),
            ttl_seconds: 10,
            leaving: false,
        };
        let decoded = Record::decode(record.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, record);
        assert!(decoded.token_matches("secret"));
        assert!(!decoded.token_matches("secreT"));
        let info = decoded.info().unwrap();
        assert_eq!(info.joined_at.timestamp_millis(), 1_700_000_000_123);
        let short = Record {
            public_key: vec![7; 31],
            ..record
        };
        assert!(short.info().is_none());
    }
}
