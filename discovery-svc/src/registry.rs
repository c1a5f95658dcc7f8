//! Who is online: members keyed by name, each held by a lease. Plain data and
//! plain methods with no I/O; the caller passes the current time, so the
//! rules are tested with tokio's paused clock and the gRPC layer only
//! translates.

use std::collections::{BTreeMap, HashMap};

use chat_proto::{
    keys::{self, KeyError, PUBLIC_KEY_LEN},
    validate,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::{Duration, Instant};

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
}

/// The set of live members and their leases.
#[derive(Debug)]
pub struct Registry {
    ttl: Duration,
    /// Members by name.
    members: BTreeMap<String, Entry>,
    /// Lease id → name.
    leases: HashMap<String, String>,
    next_seq: u64,
}

impl Registry {
    /// An empty registry whose leases live `ttl` unless renewed.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            members: BTreeMap::new(),
            leases: HashMap::new(),
            next_seq: 0,
        }
    }

    /// The lease time-to-live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Registers `name` at `address` with `public_key`, proven at
    /// `proof_stamp`, expiring leases due by `now` first. A live lease on the
    /// name with the same key (a restarted peer) is replaced, if this proof
    /// is newer than its; with another key the name is taken.
    pub fn register(
        &mut self,
        name: &str,
        address: &str,
        public_key: &[u8],
        proof_stamp: u64,
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
            let old = self.members.remove(name).expect("entry was just found");
            self.leases.remove(&old.lease_id);
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
        self.leases.insert(lease_id.clone(), name.to_owned());
        self.members.insert(
            name.to_owned(),
            Entry {
                info: info.clone(),
                lease_id: lease_id.clone(),
                token_hash: hash_token(&lease_token),
                expires_at: now + self.ttl,
                seq: self.next_seq,
                proof_stamp,
            },
        );
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
        let ttl = self.ttl;
        self.authorize(lease_id, token)?.expires_at = now + ttl;
        Ok((self.ttl, events))
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
        let entry = self.members.remove(&name).expect("authorized entry exists");
        self.leases.remove(lease_id);
        events.push(Event {
            kind: EventKind::Left,
            member: entry.info,
        });
        Ok(events)
    }

    /// Removes every member whose lease ran out by `now`, oldest first.
    pub fn expire(&mut self, now: Instant) -> Vec<Event> {
        let mut due: Vec<(u64, String)> = self
            .members
            .values()
            .filter(|e| e.expires_at <= now)
            .map(|e| (e.seq, e.info.name.clone()))
            .collect();
        due.sort_unstable();
        due.into_iter()
            .map(|(_, name)| {
                let entry = self.members.remove(&name).expect("due entry exists");
                self.leases.remove(&entry.lease_id);
                Event {
                    kind: EventKind::Expired,
                    member: entry.info,
                }
            })
            .collect()
    }

    /// When the next lease runs out, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.members.values().map(|e| e.expires_at).min()
    }

    /// The live members, oldest first.
    pub fn list(&self) -> Vec<MemberInfo> {
        let mut entries: Vec<&Entry> = self.members.values().collect();
        entries.sort_unstable_by_key(|e| e.seq);
        entries.into_iter().map(|e| e.info.clone()).collect()
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

    fn key() -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random()).to_bytes()
    }

    fn wall() -> DateTime<Utc> {
        Utc::now()
    }

    fn join(r: &mut Registry, name: &str, k: [u8; 32]) -> Grant {
        r.register(name, "127.0.0.1:5000", &k, 1, Instant::now(), wall())
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
        let (_, events) = r
            .register("alice", "127.0.0.1:1", &key(), 1, Instant::now(), wall())
            .unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Expired, EventKind::Joined]);
    }

    #[tokio::test(start_paused = true)]
    async fn live_name_with_other_key_is_taken() {
        let mut r = Registry::new(TTL);
        join(&mut r, "alice", key());
        let err = r
            .register("alice", "127.0.0.1:1", &key(), 1, Instant::now(), wall())
            .unwrap_err();
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
            r.register("alice", "127.0.0.1:6666", &k, 1, Instant::now(), wall())
                .unwrap_err(),
            RegistryError::StaleProof
        );
        let (new, events) = r
            .register("alice", "127.0.0.1:7777", &k, 2, Instant::now(), wall())
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
            r.list().iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["bob"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_reports_oldest_first_and_list_is_oldest_first() {
        let mut r = Registry::new(TTL);
        for name in ["c", "a", "b"] {
            join(&mut r, name, key());
        }
        let names: Vec<_> = r.list().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["c", "a", "b"]);
        tokio::time::advance(TTL).await;
        let names: Vec<_> = r
            .expire(Instant::now())
            .into_iter()
            .map(|e| e.member.name)
            .collect();
        assert_eq!(names, ["c", "a", "b"]);
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
