//! Who is online: members keyed by name, each held by a lease. Plain data and
//! plain methods with no I/O; the caller passes the current time, so the
//! rules are tested with tokio's paused clock and the gRPC layer only
//! translates.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chat_proto::{
    keys::{self, KeyError, PUBLIC_KEY_LEN},
    validate,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::{Duration, Instant};

pub use crate::config::Caps;

/// Random bytes in a lease id: enough that ids never collide among live leases.
const LEASE_ID_BYTES: usize = 8;

/// Random bytes in a lease token: 256 bits from a CSPRNG cannot be guessed.
const LEASE_TOKEN_BYTES: usize = 32;

/// One member as the rest of the system sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The registered name.
    pub name: String,
    /// Where the member's Peer service listens, host:port.
    pub address: String,
    /// The member's static X25519 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The key's fingerprint, as `chat_proto::keys::fingerprint` prints it.
    pub fingerprint: String,
    /// When the current lease began (wall clock, for display).
    pub joined_at: DateTime<Utc>,
}

/// What happened to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Registered (or registered again with a new lease).
    Joined,
    /// Ended its lease with Leave.
    Left,
    /// Its lease ran out.
    Expired,
}

/// A change in membership, for watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// To whom.
    pub member: MemberInfo,
}

/// A lease as handed to its holder: the only time the token is seen in clear.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Identifies the lease.
    pub lease_id: String,
    /// The secret that renews or ends the lease.
    pub lease_token: String,
    /// How long the lease lives unless renewed.
    pub ttl: Duration,
}

/// Why the registry refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name breaks a rule.
    #[error("name {0}")]
    InvalidName(&'static str),
    /// The address breaks a rule.
    #[error("address {0}")]
    InvalidAddress(&'static str),
    /// The public key breaks a rule.
    #[error("public_key {0}")]
    InvalidPublicKey(KeyError),
    /// The lease id is empty or the token is empty.
    #[error("{0} must not be empty")]
    MissingField(&'static str),
    /// Another key holds this name.
    #[error("name {0:?} is held by a live lease with a different public key; pick another name")]
    NameTaken(String),
    /// The backing store (etcd) could not be reached or failed.
    #[error("registry store unavailable: {0}; try again")]
    Unavailable(String),
    /// No live lease has this id.
    #[error("unknown or expired lease; register again")]
    UnknownLease,
    /// The token does not match the lease.
    #[error("wrong lease token; only the lease's holder can renew or end it")]
    WrongToken,
    /// The key's live registration was proven later than this one: a
    /// captured proof sent again (to another replica, say).
    #[error(
        "registration proof is older than the key's live registration (a replay?); make a new proof"
    )]
    StaleProof,
    /// A member cap is reached: nothing was inserted.
    #[error("{0}")]
    Full(CapError),
}

/// Which member cap a registration would exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// The registry holds its most members.
    #[error("the registry is full: {limit} live members (--max-members); try again later")]
    Total {
        /// The cap.
        limit: usize,
    },
    /// The caller's source address holds its most members.
    #[error(
        "{limit} live members are registered from this address (--max-members-per-source); \
         try again later"
    )]
    PerSource {
        /// The cap.
        limit: usize,
    },
}

/// Whether one more new member fits `caps`, given the live `total` and the
/// live members `from_source` (the caller's address).
pub fn admit(caps: &Caps, total: usize, from_source: usize) -> Result<(), CapError> {
    if total >= caps.members {
        return Err(CapError::Total {
            limit: caps.members,
        });
    }
    if from_source >= caps.per_source {
        return Err(CapError::PerSource {
            limit: caps.per_source,
        });
    }
    Ok(())
}

/// A member and the lease that keeps it listed.
#[derive(Debug)]
struct Entry {
    info: MemberInfo,
    lease_id: String,
    /// SHA-256 of the token: the token itself is never stored.
    token_hash: [u8; 32],
    expires_at: Instant,
    /// Registration order, so lists are oldest first.
    seq: u64,
    /// The timestamp of the proof it was registered with.
    proof_stamp: u64,
    /// The address it registered from, for the per-source cap.
    source: String,
}

/// The set of live members and their leases. Every call costs O(log n) in
/// the member count n (plus the leases it expires), except [`Registry::snapshot`]
/// after a change.
#[derive(Debug)]
pub struct Registry {
    ttl: Duration,
    caps: Caps,
    /// Members by name.
    members: BTreeMap<String, Entry>,
    /// Lease id → name.
    leases: HashMap<String, String>,
    /// (expiry, seq) → name: the next lease to run out is the first.
    deadlines: BTreeMap<(Instant, u64), String>,
    /// Live members per source address.
    per_source: HashMap<String, usize>,
    /// Every member, oldest first, shared by watchers until the next change.
    snapshot: Option<Arc<[MemberInfo]>>,
    next_seq: u64,
}

impl Registry {
    /// An empty registry whose leases live `ttl` unless renewed, without caps.
    pub fn new(ttl: Duration) -> Self {
        Self::with_caps(ttl, Caps::NONE)
    }

    /// An empty registry whose leases live `ttl`, holding at most `caps`.
    pub fn with_caps(ttl: Duration, caps: Caps) -> Self {
        Self {
            ttl,
            caps,
            members: BTreeMap::new(),
            leases: HashMap::new(),
            deadlines: BTreeMap::new(),
            per_source: HashMap::new(),
            snapshot: None,
            next_seq: 0,
        }
    }

    /// The lease time-to-live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Registers `name` at `address` with `public_key`, proven at
    /// `proof_stamp`, sent from `source`, expiring leases due by `now`
    /// first. A live lease on the name with the same key (a restarted peer)
    /// is replaced, if this proof is newer than its; with another key the
    /// name is taken. A new name must fit the caps.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        name: &str,
        address: &str,
        public_key: &[u8],
        proof_stamp: u64,
        source: &str,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Result<(Grant, Vec<Event>), RegistryError> {
        let public_key = check_registration(name, address, public_key)?;

        let mut events = self.expire(now);
        if let Some(existing) = self.members.get(name) {
            if existing.info.public_key != public_key {
                return Err(RegistryError::NameTaken(name.to_owned()));
            }
            if existing.proof_stamp >= proof_stamp {
                return Err(RegistryError::StaleProof);
            }
            self.remove(name);
        } else {
            let from_source = self.per_source.get(source).copied().unwrap_or(0);
            admit(&self.caps, self.members.len(), from_source).map_err(RegistryError::Full)?;
        }

        let lease_id = hex::encode(rand::random::<[u8; LEASE_ID_BYTES]>());
        let lease_token = new_lease_token();
        let info = MemberInfo {
            name: name.to_owned(),
            address: address.to_owned(),
            public_key,
            fingerprint: keys::fingerprint(&public_key),
            joined_at: wall,
        };
        self.insert(Entry {
            info: info.clone(),
            lease_id: lease_id.clone(),
            token_hash: hash_token(&lease_token),
            expires_at: now + self.ttl,
            seq: self.next_seq,
            proof_stamp,
            source: source.to_owned(),
        });
        self.next_seq += 1;
        events.push(Event {
            kind: EventKind::Joined,
            member: info,
        });
        let grant = Grant {
            lease_id,
            lease_token,
            ttl: self.ttl,
        };
        Ok((grant, events))
    }

    /// Renews a lease for another TTL from `now`.
    pub fn keep_alive(
        &mut self,
        lease_id: &str,
        token: &str,
        now: Instant,
    ) -> Result<(Duration, Vec<Event>), RegistryError> {
        let events = self.expire(now);
        let expires_at = now + self.ttl;
        let entry = self.authorize(lease_id, token)?;
        let old = ((entry.expires_at, entry.seq), (expires_at, entry.seq));
        entry.expires_at = expires_at;
        let name = self
            .deadlines
            .remove(&old.0)
            .expect("every entry has a deadline");
        self.deadlines.insert(old.1, name);
        Ok((self.ttl, events))
    }

    /// The member holding `lease_id`, if `token` is its token.
    pub fn holder(
        &mut self,
        lease_id: &str,
        token: &str,
        now: Instant,
    ) -> Result<(MemberInfo, Vec<Event>), RegistryError> {
        let events = self.expire(now);
        let info = self.authorize(lease_id, token)?.info.clone();
        Ok((info, events))
    }

    /// Ends a lease; its member is gone.
    pub fn leave(
        &mut self,
        lease_id: &str,
        token: &str,
        now: Instant,
    ) -> Result<Vec<Event>, RegistryError> {
        let mut events = self.expire(now);
        let name = self.authorize(lease_id, token)?.info.name.clone();
        let entry = self.remove(&name).expect("authorized entry exists");
        events.push(Event {
            kind: EventKind::Left,
            member: entry.info,
        });
        Ok(events)
    }

    /// Removes every member whose lease ran out by `now`, oldest first.
    /// Removes every member whose lease ran out by `now`, in expiry order
    /// (registration order among equal deadlines).
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some((&(due, _), name)) = self.deadlines.first_key_value() {
            if due > now {
                break;
            }
            let name = name.clone();
            let entry = self.remove(&name).expect("every deadline names a member");
            events.push(Event {
                kind: EventKind::Expired,
                member: entry.info,
            });
        }
        events
    }

    /// When the next lease runs out, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|(&(due, _), _)| due)
    }

    /// The live members, oldest first, shared until the registry changes.
    pub fn snapshot(&mut self) -> Arc<[MemberInfo]> {
        self.snapshot
            .get_or_insert_with(|| {
                let mut entries: Vec<&Entry> = self.members.values().collect();
                entries.sort_unstable_by_key(|e| e.seq);
                entries.into_iter().map(|e| e.info.clone()).collect()
            })
            .clone()
    }

    /// Up to `limit` live members in name order, after the name `after`
    /// (from the start when empty); and whether more follow.
    pub fn page(&self, after: &str, limit: usize) -> (Vec<MemberInfo>, bool) {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = if after.is_empty() {
            Unbounded
        } else {
            Excluded(after)
        };
        let mut page: Vec<MemberInfo> = self
            .members
            .range::<str, _>((start, Unbounded))
            .take(limit.saturating_add(1))
            .map(|(_, e)| e.info.clone())
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    fn insert(&mut self, entry: Entry) {
        let name = entry.info.name.clone();
        self.leases.insert(entry.lease_id.clone(), name.clone());
        self.deadlines
            .insert((entry.expires_at, entry.seq), name.clone());
        *self.per_source.entry(entry.source.clone()).or_default() += 1;
        self.members.insert(name, entry);
        self.snapshot = None;
    }

    fn remove(&mut self, name: &str) -> Option<Entry> {
        let entry = self.members.remove(name)?;
        self.leases.remove(&entry.lease_id);
        self.deadlines.remove(&(entry.expires_at, entry.seq));
        if let Some(count) = self.per_source.get_mut(&entry.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        self.snapshot = None;
        Some(entry)
    }

    /// How many members are live.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True when nobody is registered.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn authorize(&mut self, lease_id: &str, token: &str) -> Result<&mut Entry, RegistryError> {
        check_lease_fields(lease_id, token)?;
        let name = self
            .leases
            .get(lease_id)
            .ok_or(RegistryError::UnknownLease)?;
        let entry = self
            .members
            .get_mut(name)
            .expect("every lease id names a live member");
        // Compare hashes in constant time so the token can't be found byte by byte.
        if bool::from(entry.token_hash.ct_eq(&hash_token(token))) {
            Ok(entry)
        } else {
            Err(RegistryError::WrongToken)
        }
    }
}

/// SHA-256 of a lease token: what stores keep instead of the token.
pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Checks a registration's fields; returns the key as fixed-size bytes.
pub(crate) fn check_registration(
    name: &str,
    address: &str,
    public_key: &[u8],
) -> Result<[u8; PUBLIC_KEY_LEN], RegistryError> {
    validate_name(name)?;
    validate_address(address)?;
    keys::validate_public_key(public_key).map_err(RegistryError::InvalidPublicKey)
}

/// Checks that a lease id and token were given.
pub(crate) fn check_lease_fields(lease_id: &str, token: &str) -> Result<(), RegistryError> {
    if lease_id.is_empty() {
        return Err(RegistryError::MissingField("lease_id"));
    }
    if token.is_empty() {
        return Err(RegistryError::MissingField("lease_token"));
    }
    Ok(())
}

/// A fresh lease token: 256 bits from the OS CSPRNG, hex-encoded.
pub(crate) fn new_lease_token() -> String {
    hex::encode(rand::random::<[u8; LEASE_TOKEN_BYTES]>())
}

/// A name is 1 to 64 characters, none of them a control character or white space.
pub fn validate_name(name: &str) -> Result<(), RegistryError> {
    validate::name(name).map_err(RegistryError::InvalidName)
}

/// An address is `host:port` (see [`validate::address`]).
pub fn validate_address(address: &str) -> Result<(), RegistryError> {
    validate::address(address).map_err(RegistryError::InvalidAddress)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);
    const SOURCE: &str = "127.0.0.1";

    fn key() -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random()).to_bytes()
    }

    fn wall() -> DateTime<Utc> {
        Utc::now()
    }

    /// Registers `name` with `k` at a made-up address, proven at `stamp`.
    fn try_join(
        r: &mut Registry,
        name: &str,
        k: &[u8; 32],
        stamp: u64,
    ) -> Result<(Grant, Vec<Event>), RegistryError> {
        r.register(
            name,
            "127.0.0.1:1",
            k,
            stamp,
            SOURCE,
            Instant::now(),
            wall(),
        )
    }

    fn join(r: &mut Registry, name: &str, k: [u8; 32]) -> Grant {
        r.register(
            name,
            "127.0.0.1:5000",
            &k,
            1,
            SOURCE,
            Instant::now(),
            wall(),
        )
        .unwrap()
        .0
    }

    #[tokio::test(start_paused = true)]
    async fn lease_expires_after_ttl_without_keepalive() {
        let mut r = Registry::new(TTL);
        join(&mut r, "alice", key());
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(r.expire(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        let events = r.expire(Instant::now());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Expired);
        assert!(r.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_renews_for_another_ttl() {
        let mut r = Registry::new(TTL);
        let g = join(&mut r, "alice", key());
        tokio::time::advance(TTL / 2).await;
        r.keep_alive(&g.lease_id, &g.lease_token, Instant::now())
            .unwrap();
        tokio::time::advance(TTL - Duration::from_millis(1)).await;
        assert!(r.expire(Instant::now()).is_empty());
        assert_eq!(
            r.next_expiry(),
            Some(Instant::now() + Duration::from_millis(1))
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(r.expire(Instant::now()).len(), 1);
        let err = r
            .keep_alive(&g.lease_id, &g.lease_token, Instant::now())
            .unwrap_err();
        assert_eq!(err, RegistryError::UnknownLease);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_name_can_be_taken_by_another_key() {
        let mut r = Registry::new(TTL);
        join(&mut r, "alice", key());
        tokio::time::advance(TTL).await;
        let (_, events) = try_join(&mut r, "alice", &key(), 1).unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Expired, EventKind::Joined]);
    }

    #[tokio::test(start_paused = true)]
    async fn live_name_with_other_key_is_taken() {
        let mut r = Registry::new(TTL);
        join(&mut r, "alice", key());
        let err = try_join(&mut r, "alice", &key(), 1).unwrap_err();
        assert_eq!(err, RegistryError::NameTaken("alice".into()));
        assert_eq!(r.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn same_key_registering_again_replaces_the_old_lease() {
        let mut r = Registry::new(TTL);
        let k = key();
        let old = join(&mut r, "alice", k);
        // A proof no newer than the live lease's is a replay.
        assert_eq!(
            r.register(
                "alice",
                "127.0.0.1:6666",
                &k,
                1,
                SOURCE,
                Instant::now(),
                wall()
            )
            .unwrap_err(),
            RegistryError::StaleProof
        );
        let (new, events) = r
            .register(
                "alice",
                "127.0.0.1:7777",
                &k,
                2,
                SOURCE,
                Instant::now(),
                wall(),
            )
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].member.address, "127.0.0.1:7777");
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.keep_alive(&old.lease_id, &old.lease_token, Instant::now()),
            Err(RegistryError::UnknownLease)
        );
        r.keep_alive(&new.lease_id, &new.lease_token, Instant::now())
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_token_is_refused_and_changes_nothing() {
        let mut r = Registry::new(TTL);
        let g = join(&mut r, "alice", key());
        let other = join(&mut r, "bob", key());
        assert_eq!(
            r.leave(&g.lease_id, &other.lease_token, Instant::now()),
            Err(RegistryError::WrongToken)
        );
        assert_eq!(
            r.keep_alive(&g.lease_id, "", Instant::now()),
            Err(RegistryError::MissingField("lease_token"))
        );
        assert_eq!(r.len(), 2);
        let events = r
            .leave(&g.lease_id, &g.lease_token, Instant::now())
            .unwrap();
        assert_eq!(events[0].kind, EventKind::Left);
        assert_eq!(
            r.snapshot()
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            ["bob"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_reports_oldest_first_and_list_is_oldest_first() {
        let mut r = Registry::new(TTL);
        for name in ["c", "a", "b"] {
            join(&mut r, name, key());
        }
        let names: Vec<_> = r.snapshot().iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, ["c", "a", "b"]);
        tokio::time::advance(TTL).await;
        let names: Vec<_> = r
            .expire(Instant::now())
            .into_iter()
            .map(|e| e.member.name)
            .collect();
        assert_eq!(names, ["c", "a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn caps_refuse_new_names_and_insert_nothing() {
        let caps = Caps {
            members: 3,
            per_source: 2,
        };
        let mut r = Registry::with_caps(TTL, caps);
        let k = key();
        let now = Instant::now();
        r.register("a", "127.0.0.1:1", &k, 1, "10.0.0.1", now, wall())
            .unwrap();
        r.register("b", "127.0.0.1:1", &key(), 1, "10.0.0.1", now, wall())
            .unwrap();
        let err = r
            .register("c", "127.0.0.1:1", &key(), 1, "10.0.0.1", now, wall())
            .unwrap_err();
        assert_eq!(err, RegistryError::Full(CapError::PerSource { limit: 2 }));
        assert!(
            err.to_string().contains("--max-members-per-source"),
            "{err}"
        );
        // The same key again is a restart, not a new member: it fits.
        r.register("a", "127.0.0.1:2", &k, 2, "10.0.0.1", now, wall())
            .unwrap();
        r.register("c", "127.0.0.1:1", &key(), 1, "10.0.0.2", now, wall())
            .unwrap();
        let err = r
            .register("d", "127.0.0.1:1", &key(), 1, "10.0.0.3", now, wall())
            .unwrap_err();
        assert_eq!(err, RegistryError::Full(CapError::Total { limit: 3 }));
        assert_eq!(r.len(), 3);
        // Room comes back as leases end.
        tokio::time::advance(TTL).await;
        r.register(
            "d",
            "127.0.0.1:1",
            &key(),
            1,
            "10.0.0.1",
            Instant::now(),
            wall(),
        )
        .unwrap();
        assert_eq!(r.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pages_walk_every_member_once_in_name_order() {
        let mut r = Registry::new(TTL);
        for name in ["e", "b", "d", "a", "c"] {
            join(&mut r, name, key());
        }
        let mut seen = Vec::new();
        let mut after = String::new();
        loop {
            let (page, more) = r.page(&after, 2);
            assert!(page.len() <= 2);
            seen.extend(page.iter().map(|m| m.name.clone()));
            if !more {
                break;
            }
            after = page.last().unwrap().name.clone();
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        // A token past a member who left still continues after it.
        assert_eq!(r.page("bb", 10).0.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_deadline_follows_keepalives() {
        let mut r = Registry::new(TTL);
        let a = join(&mut r, "a", key());
        tokio::time::advance(Duration::from_secs(1)).await;
        join(&mut r, "b", key());
        tokio::time::advance(Duration::from_secs(1)).await;
        r.keep_alive(&a.lease_id, &a.lease_token, Instant::now())
            .unwrap();
        // b now runs out first.
        assert_eq!(
            r.next_expiry(),
            Some(Instant::now() + TTL - Duration::from_secs(1))
        );
        tokio::time::advance(TTL - Duration::from_secs(1)).await;
        let gone: Vec<_> = r
            .expire(Instant::now())
            .into_iter()
            .map(|e| e.member.name)
            .collect();
        assert_eq!(gone, ["b"]);
        assert_eq!(
            r.holder(&a.lease_id, &a.lease_token, Instant::now())
                .unwrap()
                .0
                .name,
            "a"
        );
    }

    #[test]
    fn names_follow_the_rules() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("Алиса-1@host").is_ok());
        assert!(validate_name(&"x".repeat(64)).is_ok());
        for bad in ["", "a b", "tab\there", "bell\u{7}", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_follow_the_rules() {
        for good in [
            "127.0.0.1:50061",
            "[::1]:80",
            "peer-1.example.org:1",
            "localhost:65535",
        ] {
            assert!(validate_address(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            ":80",
            "::1:80",
            "a b:80",
            "host:+80",
            "-bad.host:80",
            "host..x:80",
            "http://x:80",
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }
}
