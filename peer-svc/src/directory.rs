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
    sync::Mutex,
};

use chat_proto::keys::{PUBLIC_KEY_LEN, fingerprint, validate_public_key};
use tracing::warn;

/// The pin file's name inside the data dir.
pub const KNOWN_PEERS_FILE: &str = "known_peers";

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
        Ok(Self {
            own_name: own_name.to_owned(),
            pins_path,
            inner: Mutex::new(Inner {
                pins,
                ..Default::default()
            }),
        })
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
        if key_changed {
            warn!(
                peer = %name,
                pinned = %fingerprint(&pinned),
                offered = %fingerprint(&key),
                "peer's key differs from the pinned key; refusing it until `chat trust {name}`"
            );
        }
        let dropped = inner.dropped.contains(name);
        let contact = Contact {
            name: name.to_owned(),
            address: address.to_owned(),
            public_key: key,
            fingerprint: fingerprint(&key),
            key_changed,
            dropped,
        };
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

    /// Replaces the whole list (a fresh `List` from Discovery); returns the
    /// names that were removed.
    pub fn replace_all<'a>(
        &self,
        members: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8])>,
    ) -> Vec<String> {
        let mut seen = HashSet::new();
        for (name, address, key) in members {
            self.upsert(name, address, key);
            seen.insert(name.to_owned());
        }
        let mut inner = self.inner.lock().expect("directory lock");
        let gone: Vec<String> = inner
            .contacts
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in &gone {
            inner.contacts.remove(name);
        }
        gone
    }

    /// Forgets a member that left or expired.
    pub fn remove(&self, name: &str) -> bool {
        self.inner
            .lock()
            .expect("directory lock")
            .contacts
            .remove(name)
            .is_some()
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

    /// Records an address a peer announced in an authenticated handshake.
    pub fn learn_address(&self, name: &str, address: &str) {
        let mut inner = self.inner.lock().expect("directory lock");
        if let Some(contact) = inner.contacts.get_mut(name) {
            contact.address = address.to_owned();
        }
    }

    /// Checks an initiator's name and static key against Discovery and the pin.
    pub fn verify(&self, name: &str, key: &[u8; PUBLIC_KEY_LEN]) -> Result<Contact, Refusal> {
        let inner = self.inner.lock().expect("directory lock");
        let contact = inner
            .contacts
            .get(name)
            .ok_or_else(|| Refusal::Unknown(name.to_owned()))?;
        if &contact.public_key != key {
            return Err(Refusal::WrongKey(name.to_owned()));
        }
        if contact.key_changed {
            return Err(Refusal::KeyChanged(name.to_owned()));
        }
        Ok(contact.clone())
    }

    /// Pins `key` for `name` after a handshake with it, unless a key is
    /// already pinned (changing a pin takes `chat trust`).
    pub fn pin(&self, name: &str, key: &[u8; PUBLIC_KEY_LEN]) {
        let mut inner = self.inner.lock().expect("directory lock");
        if !inner.pins.contains_key(name) {
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

    /// Accepts the key Discovery lists now for `name` and pins it.
    pub fn trust(&self, name: &str) -> Option<Contact> {
        let mut inner = self.inner.lock().expect("directory lock");
        let contact = inner.contacts.get_mut(name)?;
        contact.key_changed = false;
        contact.dropped = false;
        let (key, contact) = (contact.public_key, contact.clone());
        inner.dropped.remove(name);
        inner.pins.insert(name.to_owned(), key);
        self.save_pins(&inner);
        Some(contact)
    }

    /// Writes the pins atomically (temp file, fsync, rename).
    fn save_pins(&self, inner: &Inner) {
        let mut lines: Vec<String> = inner
            .pins
            .iter()
            .map(|(name, key)| format!("{name} {}\n", hex::encode(key)))
            .collect();
        lines.sort();
        let tmp = self.pins_path.with_extension("tmp");
        let result = fs::File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(lines.concat().as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &self.pins_path));
        if let Err(e) = result {
            warn!(file = %self.pins_path.display(), error = %e, "cannot save known peers");
        }
    }
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
            d.verify("bob", &k2a),
            Err(Refusal::KeyChanged("bob".into()))
        );
        d.trust("bob").unwrap();
        assert!(d.verify("bob", &k2a).is_ok());
        let d = Directory::open("me", dir.path()).unwrap();
        assert_eq!(d.upsert("bob", "127.0.0.1:1", &k2), Some(Change::Added));
        assert!(!d.get("bob").unwrap().key_changed);
    }

    #[test]
    fn verify_refuses_unknown_names_and_unlisted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::open("me", dir.path()).unwrap();
        let k: [u8; 32] = key().try_into().unwrap();
        assert_eq!(d.verify("eve", &k), Err(Refusal::Unknown("eve".into())));
        d.upsert("bob", "127.0.0.1:1", &key());
        assert_eq!(d.verify("bob", &k), Err(Refusal::WrongKey("bob".into())));
    }

    #[test]
    fn replace_all_removes_members_no_longer_listed() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::open("me", dir.path()).unwrap();
        let (ka, kb) = (key(), key());
        d.upsert("a", "127.0.0.1:1", &ka);
        d.upsert("b", "127.0.0.1:2", &kb);
        let gone = d.replace_all([("b", "127.0.0.1:3", kb.as_slice())]);
        assert_eq!(gone, ["a"]);
        assert_eq!(d.get("b").unwrap().address, "127.0.0.1:3");
    }
}
