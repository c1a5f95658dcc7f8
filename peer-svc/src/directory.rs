//! The peer's connection list — the original's `get_connections` — fed by
//! Discovery, with trust on first use: the key of the first handshake with a
//! name is pinned in the data dir's `known_peers` file, and a different key
//! later is refused until the user accepts it with `chat trust PEER`. (Only
//! peers actually talked to are pinned, so the file does not grow with every
//! name that ever passes through Discovery.)

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use chat_proto::keys::{PUBLIC_KEY_LEN, fingerprint, validate_public_key};
use tracing::{info, warn};

/// The pin file's name inside the data dir.
pub const KNOWN_PEERS_FILE: &str = "known_peers";

/// The member cache's name inside the data dir: the original's `peers` file
/// (names, addresses, keys), read when Discovery is down at start.
pub const PEERS_CACHE_FILE: &str = "peers";

/// A peer as this peer knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// The peer's name.
    pub name: String,
    /// Where its Peer service listens.
    pub address: String,
    /// The key Discovery lists for it now.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// That key's fingerprint.
    pub fingerprint: String,
    /// The listed key differs from the pinned one: nothing is sent until `trust`.
    pub key_changed: bool,
    /// The user dropped this peer (`chat leave PEER`): nothing is sent to it.
    pub dropped: bool,
    /// Discovery lists it now (false after its lease expired, or when known
    /// only from the cache): messages for it are queued rather than sent.
    pub online: bool,
    /// Known only because another peer said so (Discovery was down): its
    /// key is used but never pinned until Discovery lists it.
    pub vouched_by_peer: bool,
    /// Since when it is offline (None while online): a peer offline for
    /// longer than `--forget-offline-after` is forgotten.
    pub offline_since: Option<std::time::Instant>,
    /// The pinned key proved itself in a handshake since its lease last
    /// ended: Discovery listing another key for the name (someone who took
    /// the name while this peer's owner was away) does not replace it.
    pub proven: bool,
    /// Another key Discovery lists for the name while the proven pinned
    /// one is kept; `chat trust` adopts it (in a network, once it shows an
    /// admission).
    pub listed_other: Option<[u8; PUBLIC_KEY_LEN]>,
    /// Not a contact yet: an initiator Discovery does not list with this
    /// key, which only its credential can vouch for.
    pub unlisted: bool,
}

impl Contact {
    /// A contact for `name` with `key`, flagged against the pins and the
    /// user's drops; offline and not vouched until the caller says otherwise.
    fn new(name: &str, address: &str, key: [u8; PUBLIC_KEY_LEN], inner: &Inner) -> Self {
        Self {
            name: name.to_owned(),
            address: address.to_owned(),
            public_key: key,
            fingerprint: fingerprint(&key),
            key_changed: inner.pins.get(name).is_some_and(|p| *p != key),
            dropped: inner.dropped.contains(name),
            online: false,
            offline_since: Some(std::time::Instant::now()),
            vouched_by_peer: false,
            proven: false,
            listed_other: None,
            unlisted: false,
        }
    }
}

/// What an update changed, so the caller can re-handshake when needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A peer not known before.
    Added,
    /// Same key, same address.
    Unchanged,
    /// Same key, new address: sessions stay valid but dial the new address.
    AddressChanged,
    /// A different key than before (or than pinned).
    KeyChanged,
}

/// Why an initiator was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Discovery does not list the name.
    #[error("{0} is not registered with Discovery; register before handshaking")]
    Unknown(String),
    /// The key is not the one Discovery lists for the name.
    #[error("the static key offered for {0} is not the one Discovery lists for it")]
    WrongKey(String),
    /// The key differs from the pinned one.
    #[error(
        "{0}'s key changed since it was pinned; its owner must run `chat trust {0}` after comparing fingerprints"
    )]
    KeyChanged(String),
}

#[derive(Debug, Default)]
struct Inner {
    contacts: BTreeMap<String, Contact>,
    pins: HashMap<String, [u8; PUBLIC_KEY_LEN]>,
    dropped: HashSet<String>,
}

/// The connection list and the pins.
#[derive(Debug)]
pub struct Directory {
    own_name: String,
    pins_path: PathBuf,
    cache_path: PathBuf,
    /// The member list changed since the cache was last written.
    cache_dirty: AtomicBool,
    inner: Mutex<Inner>,
}

impl Directory {
    /// A directory for peer `own_name`, loading pins from `data_dir`.
    pub fn open(own_name: &str, data_dir: &Path) -> std::io::Result<Self> {
        let pins_path = data_dir.join(KNOWN_PEERS_FILE);
        let mut pins = HashMap::new();
        match fs::read_to_string(&pins_path) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    let parsed = line.split_once(' ').and_then(|(name, key)| {
                        let bytes = hex::decode(key.trim()).ok()?;
                        Some((name.to_owned(), validate_public_key(&bytes).ok()?))
                    });
                    match parsed {
                        Some((name, key)) => {
                            pins.insert(name, key);
                        }
                        None => {
                            warn!(file = %pins_path.display(), "skipping a malformed known_peers line")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let directory = Self {
            own_name: own_name.to_owned(),
            pins_path,
            cache_path: data_dir.join(PEERS_CACHE_FILE),
            cache_dirty: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                pins,
                ..Default::default()
            }),
        };
        directory.load_cache();
        Ok(directory)
    }

    /// Adds the cached members, offline until Discovery or a handshake says more.
    fn load_cache(&self) {
        let Ok(text) = fs::read_to_string(&self.cache_path) else {
            return;
        };
        for line in text.lines() {
            let mut parts = line.split(' ');
            if let (Some(name), Some(address), Some(key)) =
                (parts.next(), parts.next(), parts.next())
                && let Ok(key) = hex::decode(key)
            {
                if parts.next() == Some("vouched") {
                    self.add_vouched(name, address, &key);
                } else {
                    self.upsert(name, address, &key);
                    let _ = self.mark_offline(name, &key);
                }
            }
        }
    }

    /// Notes that the member list changed; [`Directory::flush_cache`] writes
    /// it. (Membership churn can be hundreds of events a second; one write
    /// per flush interval keeps that off the disk.)
    pub fn cache_changed(&self) {
        self.cache_dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the cache if the member list changed since the last write.
    pub fn flush_cache(&self) {
        if self.cache_dirty.swap(false, Ordering::Relaxed) {
            self.save_cache();
        }
    }

    /// Writes the members to the cache file (atomically).
    pub fn save_cache(&self) {
        let lines: String = self
            .all()
            .iter()
            .map(|c| {
                let how = if c.vouched_by_peer { " vouched" } else { "" };
                format!(
                    "{} {} {}{how}\n",
                    c.name,
                    c.address,
                    hex::encode(c.public_key)
                )
            })
            .collect();
        if let Err(e) = write_atomically(&self.cache_path, lines.as_bytes()) {
            warn!(file = %self.cache_path.display(), error = %e, "cannot save the member cache");
        }
    }

    /// Adds or updates a member Discovery listed; flags a key that differs
    /// from the pinned one.
    pub fn upsert(&self, name: &str, address: &str, public_key: &[u8]) -> Option<Change> {
        if name == self.own_name {
            return None;
        }
        let Ok(key) = validate_public_key(public_key) else {
            warn!(peer = %name, "ignoring a member with an invalid key");
            return None;
        };
        let mut inner = self.inner.lock().expect("directory lock");
        let pinned = inner.pins.get(name).copied().unwrap_or(key);
        let key_changed = pinned != key;
        if key_changed
            && let Some(old) = inner.contacts.get_mut(name)
            && old.proven
            && old.public_key == pinned
        {
            // The pinned key proved itself since its lease last ended: the
            // listing is someone else's, or a new key its owner has not
            // trusted yet. The contact stays; the listing is shown.
            if old.listed_other != Some(key) {
                warn!(
                    peer = %name,
                    pinned = %fingerprint(&pinned),
                    listed = %fingerprint(&key),
                    "Discovery lists another key for a peer whose pinned key proved itself; keeping the pinned one"
                );
                old.listed_other = Some(key);
            }
            return Some(Change::Unchanged);
        }
        if key_changed {
            warn!(
                peer = %name,
                pinned = %fingerprint(&pinned),
                offered = %fingerprint(&key),
                "peer's key differs from the pinned key; refusing it until `chat trust {name}`"
            );
        }
        let mut contact = Contact::new(name, address, key, &inner);
        contact.online = true;
        contact.offline_since = None;
        let change = match inner.contacts.get(name) {
            None if key_changed => Change::KeyChanged,
            None => Change::Added,
            Some(old) if old.public_key != key => Change::KeyChanged,
            Some(old) if old.address != address => Change::AddressChanged,
            Some(_) => Change::Unchanged,
        };
        inner.contacts.insert(name.to_owned(), contact);
        Some(change)
    }

    /// Marks the peers missing from a fresh `List` offline. They are not
    /// forgotten: only a LEFT event removes a peer (and its queued
    /// messages); one whose lease merely expired may come back.
    pub fn mark_unlisted<'a>(&self, listed: impl IntoIterator<Item = &'a str>) {
        let listed: HashSet<&str> = listed.into_iter().collect();
        let mut inner = self.inner.lock().expect("directory lock");
        for contact in inner.contacts.values_mut() {
            if !listed.contains(contact.name.as_str()) {
                if contact.online {
                    contact.offline_since = Some(std::time::Instant::now());
                }
                contact.online = false;
            }
        }
    }

    /// Marks a peer offline: the lease of `key` for it ended (left or
    /// expired). The lease of another key (someone who took the name) says
    /// nothing of a contact whose pinned key proved itself.
    /// Returns false when the lease was not the contact's (nothing changed).
    pub fn mark_offline(&self, name: &str, key: &[u8]) -> bool {
        let mut inner = self.inner.lock().expect("directory lock");
        if let Some(contact) = inner.contacts.get_mut(name) {
            if contact.proven && contact.public_key.as_slice() != key {
                if contact.listed_other.is_some_and(|k| k.as_slice() == key) {
                    contact.listed_other = None;
                }
                return false;
            }
            contact.proven = false;
            if contact.online {
                contact.offline_since = Some(std::time::Instant::now());
            }
            contact.online = false;
        }
        true
    }

    /// Forgets every peer offline for longer than `grace` (an expired
    /// registration that never came back: a ghost); returns their names.
    pub fn forget_offline(&self, grace: std::time::Duration) -> Vec<String> {
        let now = std::time::Instant::now();
        let mut inner = self.inner.lock().expect("directory lock");
        let ghosts: Vec<String> = inner
            .contacts
            .values()
            .filter(|c| {
                !c.online
                    && c.offline_since
                        .is_some_and(|since| now.duration_since(since) >= grace)
            })
            .map(|c| c.name.clone())
            .collect();
        for name in &ghosts {
            inner.contacts.remove(name);
        }
        ghosts
    }

    /// Adds a member another peer told us about (Discovery being down), if
    /// we know nothing of that name: offline, and never pinned from this
    /// word alone. A name we know keeps the key we have.
    pub fn add_vouched(&self, name: &str, address: &str, public_key: &[u8]) {
        if name == self.own_name || chat_proto::validate::address(address).is_err() {
            return;
        }
        let Ok(key) = validate_public_key(public_key) else {
            return;
        };
        let mut inner = self.inner.lock().expect("directory lock");
        if inner.contacts.contains_key(name) {
            return;
        }
        let mut contact = Contact::new(name, address, key, &inner);
        contact.vouched_by_peer = true;
        inner.contacts.insert(name.to_owned(), contact);
    }

    /// Forgets a member that left.
    pub fn remove(&self, name: &str) -> bool {
        self.inner
            .lock()
            .expect("directory lock")
            .contacts
            .remove(name)
            .is_some()
    }

    /// True if `name` is this peer's own.
    pub fn is_own(&self, name: &str) -> bool {
        name == self.own_name
    }

    /// The contact for `name`.
    pub fn get(&self, name: &str) -> Option<Contact> {
        self.inner
            .lock()
            .expect("directory lock")
            .contacts
            .get(name)
            .cloned()
    }

    /// Every known peer, by name.
    pub fn all(&self) -> Vec<Contact> {
        self.inner
            .lock()
            .expect("directory lock")
            .contacts
            .values()
            .cloned()
            .collect()
    }

    /// Records where a peer says it is, in an authenticated handshake: it is
    /// online there.
    pub fn learn_address(&self, name: &str, address: &str) {
        let mut inner = self.inner.lock().expect("directory lock");
        if let Some(contact) = inner.contacts.get_mut(name) {
            if !address.is_empty() {
                contact.address = address.to_owned();
            }
            contact.online = true;
            contact.offline_since = None;
        }
    }

    /// Checks an initiator's name and static key against Discovery and the
    /// pin. A name Discovery does not list (it may be down) is accepted when
    /// the key is the one pinned for it, at the address it announced.
    pub fn verify(
        &self,
        name: &str,
        key: &[u8; PUBLIC_KEY_LEN],
        address: &str,
    ) -> Result<Contact, Refusal> {
        let inner = self.inner.lock().expect("directory lock");
        let Some(contact) = inner.contacts.get(name) else {
            if inner.pins.get(name) == Some(key) && chat_proto::validate::address(address).is_ok() {
                drop(inner);
                self.upsert(name, address, key);
                return self
                    .get(name)
                    .ok_or_else(|| Refusal::Unknown(name.to_owned()));
            }
            return Err(Refusal::Unknown(name.to_owned()));
        };
        if &contact.public_key != key || contact.key_changed {
            // The key pinned for the name is accepted whatever Discovery
            // lists: its owner may be away from Discovery because someone
            // else took the name there.
            if inner.pins.get(name) == Some(key) {
                let mut pinned = contact.clone();
                pinned.public_key = *key;
                pinned.fingerprint = fingerprint(key);
                pinned.key_changed = false;
                if chat_proto::validate::address(address).is_ok() {
                    pinned.address = address.to_owned();
                }
                return Ok(pinned);
            }
            return Err(if &contact.public_key != key {
                Refusal::WrongKey(name.to_owned())
            } else {
                Refusal::KeyChanged(name.to_owned())
            });
        }
        Ok(contact.clone())
    }

    /// A contact for an initiator Discovery does not list with `key`, not
    /// added: only its credential can make it one ([`Directory::add_admitted`]).
    pub fn unlisted(&self, name: &str, address: &str, key: &[u8; PUBLIC_KEY_LEN]) -> Contact {
        let inner = self.inner.lock().expect("directory lock");
        let mut contact = Contact::new(name, address, *key, &inner);
        contact.online = true;
        contact.offline_since = None;
        contact.unlisted = true;
        contact
    }

    /// Adds (or sets to `key`) a member whose credential just verified in a
    /// handshake, though Discovery does not list it with that key; a key
    /// pinned for the name stays the only one accepted.
    pub fn add_admitted(&self, name: &str, address: &str, key: &[u8; PUBLIC_KEY_LEN]) {
        if name == self.own_name {
            return;
        }
        let mut inner = self.inner.lock().expect("directory lock");
        if inner.pins.get(name).is_some_and(|p| p != key) {
            return;
        }
        let listed = inner
            .contacts
            .get(name)
            .map(|c| c.public_key)
            .filter(|k| k != key);
        let mut contact = Contact::new(name, address, *key, &inner);
        contact.online = true;
        contact.offline_since = None;
        contact.listed_other = listed;
        inner.contacts.insert(name.to_owned(), contact);
        self.cache_dirty.store(true, Ordering::Relaxed);
    }

    /// Records that `name` proved `key` in a handshake (its credential
    /// checked, in a network) at `address`: if `key` is the pinned one, the
    /// contact holds it again, online there, whatever Discovery lists (that
    /// listing is kept as `listed_other`).
    /// Returns true if the contact held another key until now (the peer is
    /// back under its pinned key: what is queued for it can go).
    pub fn learn_proven(&self, name: &str, key: &[u8; PUBLIC_KEY_LEN], address: &str) -> bool {
        let mut inner = self.inner.lock().expect("directory lock");
        if inner.pins.get(name) != Some(key) {
            return false;
        }
        let Some(contact) = inner.contacts.get_mut(name) else {
            return false;
        };
        let switched = contact.public_key != *key;
        if switched {
            info!(peer = %name, listed = %contact.fingerprint, "the pinned key proved itself; Discovery's listing of another key is kept aside");
            contact.listed_other = Some(contact.public_key);
            contact.public_key = *key;
            contact.fingerprint = fingerprint(key);
            if chat_proto::validate::address(address).is_ok() {
                contact.address = address.to_owned();
            }
            contact.online = true;
            contact.offline_since = None;
        }
        contact.key_changed = false;
        contact.proven = true;
        switched
    }

    /// Pins `key` for `name` after a handshake with it, unless a key is
    /// already pinned (changing a pin takes `chat trust`).
    pub fn pin(&self, name: &str, key: &[u8; PUBLIC_KEY_LEN]) {
        let mut inner = self.inner.lock().expect("directory lock");
        let vouched = inner.contacts.get(name).is_some_and(|c| c.vouched_by_peer);
        if !vouched && !inner.pins.contains_key(name) {
            inner.pins.insert(name.to_owned(), *key);
            self.save_pins(&inner);
        }
    }

    /// Stops sending to `name` (`chat leave PEER`).
    pub fn drop_peer(&self, name: &str) -> bool {
        let mut inner = self.inner.lock().expect("directory lock");
        inner.dropped.insert(name.to_owned());
        match inner.contacts.get_mut(name) {
            Some(c) => {
                c.dropped = true;
                true
            }
            None => false,
        }
    }

    /// Takes back a peer the user dropped (`chat handshake PEER` or `chat
    /// refresh PEER` name it again); true if it was dropped.
    pub fn undrop(&self, name: &str) -> bool {
        let mut inner = self.inner.lock().expect("directory lock");
        if let Some(c) = inner.contacts.get_mut(name) {
            c.dropped = false;
        }
        inner.dropped.remove(name)
    }

    /// The key pinned for `name`, if any.
    pub fn pinned(&self, name: &str) -> Option<[u8; PUBLIC_KEY_LEN]> {
        self.inner
            .lock()
            .expect("directory lock")
            .pins
            .get(name)
            .copied()
    }

    /// The key `chat trust NAME` would pin: the one Discovery lists now.
    pub fn listed_key(&self, name: &str) -> Option<Contact> {
        let inner = self.inner.lock().expect("directory lock");
        let mut contact = inner.contacts.get(name)?.clone();
        if let Some(other) = contact.listed_other {
            contact.public_key = other;
            contact.fingerprint = fingerprint(&other);
        }
        Some(contact)
    }

    /// Accepts the key Discovery lists now for `name` and pins it.
    pub fn trust(&self, name: &str) -> Option<Contact> {
        let mut inner = self.inner.lock().expect("directory lock");
        let contact = inner.contacts.get_mut(name)?;
        if let Some(other) = contact.listed_other.take() {
            contact.public_key = other;
            contact.fingerprint = fingerprint(&other);
        }
        contact.key_changed = false;
        contact.dropped = false;
        contact.proven = false;
        let (key, contact) = (contact.public_key, contact.clone());
        inner.dropped.remove(name);
        inner.pins.insert(name.to_owned(), key);
        self.save_pins(&inner);
        Some(contact)
    }

    /// Writes the pins atomically.
    fn save_pins(&self, inner: &Inner) {
        let mut lines: Vec<String> = inner
            .pins
            .iter()
            .map(|(name, key)| format!("{name} {}\n", hex::encode(key)))
            .collect();
        lines.sort();
        if let Err(e) = write_atomically(&self.pins_path, lines.concat().as_bytes()) {
            warn!(file = %self.pins_path.display(), error = %e, "cannot save known peers");
        }
    }
}

/// Writes `path` via a temp file, fsync and rename: a crash leaves the old
/// file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // Private from the start: the member list and pins are nobody else's.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::identity::PRIVATE_FILE_MODE)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Vec<u8> {
        chat_noise::StaticKeypair::generate().public_key().to_vec()
    }

    #[test]
    fn first_key_is_pinned_and_a_new_one_refused_until_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2) = (key(), key());
        {
            let d = Directory::open("me", dir.path()).unwrap();
            assert_eq!(d.upsert("bob", "127.0.0.1:1", &k1), Some(Change::Added));
            assert_eq!(
                d.upsert("me", "127.0.0.1:2", &k1),
                None,
                "self is not a contact"
            );
            // The first handshake pins; a later pin call changes nothing.
            d.pin("bob", &k1.clone().try_into().unwrap());
            d.pin("bob", &k2.clone().try_into().unwrap());
        }
        // A restart reloads the pin; Discovery now lists another key for bob.
        let d = Directory::open("me", dir.path()).unwrap();
        assert_eq!(
            d.upsert("bob", "127.0.0.1:1", &k2),
            Some(Change::KeyChanged)
        );
        assert!(d.get("bob").unwrap().key_changed);
        let k2a: [u8; 32] = k2.clone().try_into().unwrap();
        assert_eq!(
            d.verify("bob", &k2a, ""),
            Err(Refusal::KeyChanged("bob".into()))
        );
        d.trust("bob").unwrap();
        assert!(d.verify("bob", &k2a, "").is_ok());
        let d = Directory::open("me", dir.path()).unwrap();
        assert_eq!(d.upsert("bob", "127.0.0.1:1", &k2), Some(Change::Added));
        assert!(!d.get("bob").unwrap().key_changed);
    }

    #[test]
    fn verify_refuses_unknown_names_and_unlisted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::open("me", dir.path()).unwrap();
        let k: [u8; 32] = key().try_into().unwrap();
        assert_eq!(
            d.verify("eve", &k, "127.0.0.1:1"),
            Err(Refusal::Unknown("eve".into()))
        );
        d.upsert("bob", "127.0.0.1:1", &key());
        assert_eq!(
            d.verify("bob", &k, "127.0.0.1:1"),
            Err(Refusal::WrongKey("bob".into()))
        );
        // A pinned name Discovery does not list (it is down) is accepted.
        d.pin("carol", &k);
        let carol = d.verify("carol", &k, "127.0.0.1:7").unwrap();
        assert_eq!(carol.address, "127.0.0.1:7");
    }

    #[test]
    fn unlisted_members_go_offline_and_the_cache_brings_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let (ka, kb) = (key(), key());
        {
            let d = Directory::open("me", dir.path()).unwrap();
            d.upsert("a", "127.0.0.1:1", &ka);
            d.upsert("b", "127.0.0.1:2", &kb);
            d.mark_unlisted(["b"]);
            assert!(!d.get("a").unwrap().online);
            assert!(d.get("b").unwrap().online);
            d.save_cache();
        }
        let d = Directory::open("me", dir.path()).unwrap();
        let names: Vec<String> = d.all().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(
            d.all().iter().all(|c| !c.online),
            "cached members start offline"
        );
        assert_eq!(d.get("b").unwrap().public_key.to_vec(), kb);
    }

    #[test]
    fn a_peer_s_word_adds_unknown_names_only_and_is_never_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::open("me", dir.path()).unwrap();
        let (real, forged) = (key(), key());
        d.upsert("carol", "127.0.0.1:1", &real);
        d.add_vouched("carol", "127.0.0.1:666", &forged);
        assert_eq!(
            d.get("carol").unwrap().public_key.to_vec(),
            real,
            "a known key stays"
        );
        d.add_vouched("dave", "127.0.0.1:2", &forged);
        let dave = d.get("dave").unwrap();
        assert!(dave.vouched_by_peer && !dave.online);
        d.pin("dave", &forged.clone().try_into().unwrap());
        d.save_cache();
        let again = Directory::open("me", dir.path()).unwrap();
        assert!(
            again.get("dave").unwrap().vouched_by_peer,
            "still only vouched after a restart"
        );
        let dave_key: [u8; 32] = forged.try_into().unwrap();
        assert_eq!(
            again
                .verify("dave", &dave_key, "127.0.0.1:2")
                .map(|c| c.name),
            Ok("dave".into())
        );
        // Not pinned: Discovery later listing another key for dave is no key change.
        assert_eq!(
            again.upsert("dave", "127.0.0.1:3", &key()),
            Some(Change::KeyChanged)
        );
        assert!(!again.get("dave").unwrap().key_changed);
    }
}
