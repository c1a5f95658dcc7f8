//! Which key may sign messages under which name (docs/protocol.md §7.9). A
//! signature proves only that a key signed; this binds the key to a member:
//!
//! - In a network, a key speaks as NAME when an admission chain from the
//!   founder admits it as NAME: the chain NAME showed in its handshake (a
//!   message delivered on NAME's own session), or one a history relay
//!   introduced (verified here, from the founder down). A second, unremoved
//!   key for a name already known is refused, as at handshakes. A removed
//!   member's messages are accepted only from before its removal: that is
//!   how a member that lost its data dir, removed and admitted again under
//!   a new key, recovers the messages it signed with the old one.
//! - In open mode nobody admits anyone: the first key seen for a name is
//!   kept for it (trust on first use), and a session speaks for itself.
//!
//! Every key accepted is recorded with its chain, so this peer can
//! introduce it when it relays the author's messages later, even after the
//! member is admitted again under another key.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use chat_proto::v1::{Admission as AdmissionLink, Credential};
use prost::Message;
use tracing::warn;

use crate::{admission::Admission, credential::CredentialError, hlc::Hlc, store::Store};

/// How a message reached this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Delivered by its author on the author's own session.
    Session,
    /// Relayed by another peer (history sync).
    Relay,
}

/// Why a key may not sign as a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorError {
    /// Delivered on NAME's session, signed by a key NAME was not admitted with.
    #[error(
        "{name}'s message is signed by key {key}, not by the identity {name} was admitted with"
    )]
    NotAdmitted {
        /// The name.
        name: String,
        /// The key's fingerprint.
        key: String,
    },
    /// Relayed, by a key no admission chain introduced.
    #[error(
        "{name}'s message is signed by key {key}, which no admission chain known here admits (the relay did not introduce it)"
    )]
    Unknown {
        /// The name.
        name: String,
        /// The key's fingerprint.
        key: String,
    },
    /// The key was admitted under another name.
    #[error("key {key} speaks as {admitted}, not {name}")]
    WrongName {
        /// The name claimed.
        name: String,
        /// The name the key was admitted as.
        admitted: String,
        /// The key's fingerprint.
        key: String,
    },
    /// The key's admission was removed before the message's clock.
    #[error("{name} (key {key}) was removed from the network before this message was sent")]
    RemovedBefore {
        /// The name.
        name: String,
        /// The key's fingerprint.
        key: String,
    },
    /// The name already speaks here with another key, not removed.
    #[error("{name} speaks here with another key, not removed; key {key} is refused for it")]
    OtherIdentity {
        /// The name.
        name: String,
        /// The refused key's fingerprint.
        key: String,
    },
    /// A relayed admission chain does not verify.
    #[error("an author's admission chain does not verify: {0}")]
    Chain(CredentialError),
}

/// A key accepted for a name.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    /// Its chain's invitation keys (revoking any removes it); none when open.
    invite_keys: Vec<[u8; 32]>,
    /// Its admission chain, founder's first; empty when open.
    chain: Vec<AdmissionLink>,
}

/// The keys this peer accepts messages from, by key.
#[derive(Debug)]
pub struct Authors {
    admission: Arc<Admission>,
    store: Arc<Store>,
    known: Mutex<HashMap<[u8; 32], Known>>,
    /// Chains that did not verify, by meaning: a relay repeating one (or
    /// one with only its bytes changed) costs a hash, not its signatures.
    refused: Mutex<HashSet<[u8; 32]>>,
}

/// Refused chains remembered before the set is cleared.
const MAX_REFUSED: usize = 4096;

/// An admission chain as the store keeps it: a `Credential` holding the
/// chain only.
fn encode_chain(chain: &[AdmissionLink]) -> Vec<u8> {
    Credential {
        chain: chain.to_vec(),
        static_key_signature: Vec::new(),
    }
    .encode_to_vec()
}

fn fingerprint(key: &[u8]) -> String {
    chat_proto::keys::fingerprint(key)
}

impl Authors {
    /// The authors `store` recorded, and this peer itself (`name`, with
    /// identity `own_key`).
    /// Every name known here as a member or as an author, this peer's own
    /// included: what a name shown on screen is compared with, to mark one
    /// that looks like another (`names::Lookalikes`).
    pub fn names(&self) -> Vec<String> {
        let mut names = self.admission.names();
        names.extend(
            self.known
                .lock()
                .expect("authors lock")
                .values()
                .map(|k| k.name.clone()),
        );
        names
    }

    pub fn new(
        admission: Arc<Admission>,
        store: Arc<Store>,
        name: &str,
        own_key: [u8; 32],
    ) -> Self {
        let authors = Self {
            admission,
            store,
            known: Mutex::default(),
            refused: Mutex::default(),
        };
        match authors.store.authors() {
            Ok(rows) => {
                let mut known = authors.known.lock().expect("authors lock");
                for (key, name, chain) in rows {
                    let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else {
                        continue;
                    };
                    let chain = Credential::decode(chain.as_slice())
                        .map(|c| c.chain)
                        .unwrap_or_default();
                    let invite_keys = if authors.admission.is_open() {
                        Vec::new()
                    } else {
                        match authors.admission.verify_chain(&chain) {
                            Ok(member) if member.identity == key && member.name == name => {
                                member.invite_keys
                            }
                            _ => continue,
                        }
                    };
                    known.insert(
                        key,
                        Known {
                            name,
                            invite_keys,
                            chain,
                        },
                    );
                }
            }
            Err(e) => warn!(error = %e, "cannot read the authors kept"),
        }
        authors.learn_own(name, own_key);
        authors
    }

    /// Records this peer's own key as `name`'s, with its admission chain
    /// once that verifies (a newcomer's does when its inviter confirmed
    /// it: called again then).
    pub fn learn_own(&self, name: &str, own_key: [u8; 32]) {
        match self.admission.own_chain() {
            Some((chain, identity)) => {
                if let Ok(member) = self.admission.verify_chain(&chain) {
                    self.record(identity, name, member.invite_keys, chain);
                }
            }
            None => self.record(own_key, name, Vec::new(), Vec::new()),
        }
    }

    fn record(
        &self,
        key: [u8; 32],
        name: &str,
        invite_keys: Vec<[u8; 32]>,
        chain: Vec<AdmissionLink>,
    ) {
        let mut known = self.known.lock().expect("authors lock");
        if known.contains_key(&key) {
            return;
        }
        let encoded = encode_chain(&chain);
        known.insert(
            key,
            Known {
                name: name.to_owned(),
                invite_keys,
                chain,
            },
        );
        drop(known);
        self.save(&key, name, &encoded);
    }

    /// Keeps `key` → `name` (with its encoded chain) in the store.
    fn save(&self, key: &[u8; 32], name: &str, encoded_chain: &[u8]) {
        if let Err(e) = self.store.save_author(key, name, encoded_chain) {
            warn!(author = %name, error = %e, "cannot record an author key");
        }
    }

    /// Whether `key` may sign as `name` a message with clock `hlc` that came
    /// `via` a session or a relay. A key accepted is recorded.
    pub fn check(&self, name: &str, key: &[u8], hlc: u64, via: Via) -> Result<(), AuthorError> {
        let fp = || fingerprint(key);
        let key: [u8; 32] = key.try_into().map_err(|_| AuthorError::Unknown {
            name: name.to_owned(),
            key: fp(),
        })?;
        // The name and invitation keys only: this runs for every message
        // delivered, and the chain is not needed here.
        let found = self
            .known
            .lock()
            .expect("authors lock")
            .get(&key)
            .map(|k| (k.name.clone(), k.invite_keys.clone()));
        let (known_name, invite_keys) = match found {
            Some(known) => known,
            None if self.admission.is_open() => {
                let taken = self
                    .known
                    .lock()
                    .expect("authors lock")
                    .values()
                    .any(|k| k.name == name);
                if taken && via == Via::Relay {
                    return Err(AuthorError::OtherIdentity {
                        name: name.to_owned(),
                        key: fp(),
                    });
                }
                self.record(key, name, Vec::new(), Vec::new());
                return Ok(());
            }
            None => match self.admission.member_chain(name) {
                Some((chain, member)) if member.identity == key => {
                    self.record(key, name, member.invite_keys.clone(), chain);
                    (name.to_owned(), member.invite_keys)
                }
                _ if via == Via::Session => {
                    return Err(AuthorError::NotAdmitted {
                        name: name.to_owned(),
                        key: fp(),
                    });
                }
                _ => {
                    return Err(AuthorError::Unknown {
                        name: name.to_owned(),
                        key: fp(),
                    });
                }
            },
        };
        if known_name != name {
            return Err(AuthorError::WrongName {
                name: name.to_owned(),
                admitted: known_name,
                key: fp(),
            });
        }
        if let Some(removed) = self.admission.removed_at(&invite_keys)
            && Hlc::millis(hlc) >= removed
        {
            return Err(AuthorError::RemovedBefore {
                name: name.to_owned(),
                key: fp(),
            });
        }
        Ok(())
    }

    /// Takes in an author's admission chain introduced by a history relay:
    /// verified from the founder down, and refused when it would give a
    /// name known here a second key while neither was removed.
    pub fn learn(&self, chain: Vec<AdmissionLink>) -> Result<(), AuthorError> {
        // A chain already recorded, as it is, costs a comparison, not its
        // signatures (a relay introduces every author in every stream).
        let claimed = chain
            .last()
            .and_then(|l| <[u8; 32]>::try_from(l.identity_key.as_slice()).ok());
        if let Some(key) = claimed
            && self
                .known
                .lock()
                .expect("authors lock")
                .get(&key)
                .is_some_and(|k| k.chain == chain)
        {
            return Ok(());
        }
        let meaning = crate::credential::meaning(b"author chain", &[], &chain);
        if self
            .refused
            .lock()
            .expect("authors lock")
            .contains(&meaning)
        {
            return Err(AuthorError::Chain(CredentialError::Malformed(
                "author chain (the same one was refused before)",
            )));
        }
        let member = match self.admission.verify_chain(&chain) {
            Ok(member) => member,
            Err(e) => {
                let mut refused = self.refused.lock().expect("authors lock");
                if refused.len() >= MAX_REFUSED {
                    refused.clear();
                }
                refused.insert(meaning);
                return Err(AuthorError::Chain(e));
            }
        };
        let removed = |keys: &[[u8; 32]]| self.admission.removed_at(keys).is_some();
        let encoded = encode_chain(&chain);
        {
            // Checked and recorded under one lock, so two relays racing
            // cannot record two keys for one name (lock order: these
            // authors, then admission's state; admission never calls here).
            let mut known = self.known.lock().expect("authors lock");
            if let Some(k) = known.get(&member.identity) {
                return if k.name == member.name {
                    Ok(())
                } else {
                    Err(AuthorError::WrongName {
                        name: member.name.clone(),
                        admitted: k.name.clone(),
                        key: fingerprint(&member.identity),
                    })
                };
            }
            // Another unremoved identity of the name: one recorded here, or
            // the one the name showed at its last handshake.
            let shown = self
                .admission
                .member_chain(&member.name)
                .is_some_and(|(_, m)| {
                    m.identity != [0; 32]
                        && m.identity != member.identity
                        && !removed(&m.invite_keys)
                });
            let clash = shown
                || known
                    .values()
                    .any(|k| k.name == member.name && !removed(&k.invite_keys));
            if clash && !removed(&member.invite_keys) {
                return Err(AuthorError::OtherIdentity {
                    name: member.name.clone(),
                    key: fingerprint(&member.identity),
                });
            }
            known.insert(
                member.identity,
                Known {
                    name: member.name.clone(),
                    invite_keys: member.invite_keys,
                    chain,
                },
            );
        }
        self.save(&member.identity, &member.name, &encoded);
        Ok(())
    }

    /// The admission chain that introduces `key` to a peer this one relays
    /// its messages to (None when open or unknown).
    pub fn chain(&self, key: &[u8]) -> Option<Vec<AdmissionLink>> {
        let key: [u8; 32] = key.try_into().ok()?;
        self.known
            .lock()
            .expect("authors lock")
            .get(&key)
            .map(|k| k.chain.clone())
            .filter(|c| !c.is_empty())
    }

    /// True if `key` is the one `name` speaks with now: in a network, the
    /// identity its last handshake showed; in open mode, the key kept for it.
    pub fn is_current(&self, name: &str, key: &[u8]) -> bool {
        let Ok(key) = <[u8; 32]>::try_from(key) else {
            return false;
        };
        if self.admission.is_open() {
            return self
                .known
                .lock()
                .expect("authors lock")
                .get(&key)
                .is_some_and(|k| k.name == name);
        }
        self.admission.member_identity(name) == Some(key)
    }

    /// The name `key` was accepted for, if it was.
    pub fn name_of(&self, key: &[u8]) -> Option<String> {
        let key: [u8; 32] = key.try_into().ok()?;
        self.known
            .lock()
            .expect("authors lock")
            .get(&key)
            .map(|k| k.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use chat_proto::v1::Credential;
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::credential;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&rand::random::<[u8; 32]>())
    }

    /// alice founds the network; the peer under test is hers.
    struct World {
        alice: SigningKey,
        founder: Credential,
        authors: Authors,
        admission: Arc<Admission>,
        _dir: tempfile::TempDir,
    }

    fn world() -> World {
        let alice = key();
        let founder = credential::found(&alice, "alice", &[9; 32], 1);
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let admission =
            Arc::new(Admission::member(alice.clone(), founder.clone(), store.clone()).unwrap());
        let own = alice.verifying_key().to_bytes();
        let authors = Authors::new(admission.clone(), store, "alice", own);
        World {
            alice,
            founder,
            authors,
            admission,
            _dir: dir,
        }
    }

    /// `name` admitted by the founder with a new identity: (identity, chain).
    fn admit(
        founder: &SigningKey,
        own: &Credential,
        name: &str,
    ) -> (SigningKey, Vec<AdmissionLink>) {
        let identity = key();
        let invitation = credential::invite(founder, own, name, 2, 0).unwrap();
        let credential = credential::join(&invitation, &identity, name, &[9; 32]).unwrap();
        (identity, credential.chain)
    }

    const NOW: u64 = 1_000_000 << 16;

    #[test]
    fn a_relayed_chain_speaks_for_its_own_key_and_name_only() {
        let w = world();
        let (bob, chain) = admit(&w.alice, &w.founder, "bob");
        let bob_key = bob.verifying_key().to_bytes();
        assert!(matches!(
            w.authors.check("bob", &bob_key, NOW, Via::Relay),
            Err(AuthorError::Unknown { .. })
        ));
        // A relay puts its own key under bob's real admission: the
        // acceptance and identity signature do not cover it.
        let relay = key();
        let mut stolen = chain.clone();
        stolen.last_mut().unwrap().identity_key = relay.verifying_key().to_bytes().to_vec();
        assert!(matches!(
            w.authors.learn(stolen),
            Err(AuthorError::Chain(_))
        ));
        // An invitation never accepted does not speak for anyone either.
        let invitation = credential::invite(&w.alice, &w.founder, "dan", 2, 0).unwrap();
        assert!(
            w.authors
                .learn(vec![invitation.admission.unwrap()])
                .is_err()
        );

        w.authors.learn(chain).unwrap();
        w.authors.check("bob", &bob_key, NOW, Via::Relay).unwrap();
        assert!(matches!(
            w.authors.check("carol", &bob_key, NOW, Via::Relay),
            Err(AuthorError::WrongName { .. })
        ));
        // Alice's own key speaks for her, from the start.
        let own = w.alice.verifying_key().to_bytes();
        w.authors.check("alice", &own, NOW, Via::Relay).unwrap();
        assert!(w.authors.chain(&own).is_some() && w.authors.chain(&bob_key).is_some());
    }

    #[test]
    fn a_second_identity_for_a_name_waits_for_the_first_ones_removal() {
        let w = world();
        let (first, chain) = admit(&w.alice, &w.founder, "bob");
        let (second, again) = admit(&w.alice, &w.founder, "bob");
        let first_key = first.verifying_key().to_bytes();
        let second_key = second.verifying_key().to_bytes();
        w.authors.learn(chain.clone()).unwrap();
        assert!(matches!(
            w.authors.learn(again.clone()),
            Err(AuthorError::OtherIdentity { .. })
        ));
        // Bob's first admission is removed at time 5,000 ms: the second
        // identity is taken, and the first still speaks for what it
        // signed before.
        let removal = credential::remove(&w.alice, chain, 5_000).unwrap();
        use prost::Message;
        assert_eq!(
            w.admission.learn_removals(&[removal.encode_to_vec()]),
            Vec::<String>::new()
        );
        w.authors.learn(again).unwrap();
        w.authors
            .check("bob", &second_key, NOW, Via::Relay)
            .unwrap();
        w.authors
            .check("bob", &first_key, 4_999 << 16, Via::Relay)
            .unwrap();
        assert!(matches!(
            w.authors.check("bob", &first_key, 5_000 << 16, Via::Relay),
            Err(AuthorError::RemovedBefore { .. })
        ));
    }

    #[test]
    fn authors_are_remembered_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let alice = key();
        let founder = credential::found(&alice, "alice", &[9; 32], 1);
        let own = alice.verifying_key().to_bytes();
        let open = |dir: &std::path::Path| {
            let store = Arc::new(Store::open(dir).unwrap());
            let admission =
                Arc::new(Admission::member(alice.clone(), founder.clone(), store.clone()).unwrap());
            Authors::new(admission, store, "alice", own)
        };
        let (bob, chain) = admit(&alice, &founder, "bob");
        open(dir.path()).learn(chain).unwrap();
        let authors = open(dir.path());
        let bob_key = bob.verifying_key().to_bytes();
        authors.check("bob", &bob_key, NOW, Via::Relay).unwrap();
        assert!(authors.chain(&bob_key).is_some());
    }

    #[test]
    fn open_mode_keeps_the_first_key_seen_for_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let admission = Arc::new(Admission::open(store.clone()));
        let authors = Authors::new(admission, store, "alice", [1; 32]);
        let (bob, other) = (
            key().verifying_key().to_bytes(),
            key().verifying_key().to_bytes(),
        );
        authors.check("bob", &bob, NOW, Via::Session).unwrap();
        authors.check("bob", &bob, NOW, Via::Relay).unwrap();
        assert!(matches!(
            authors.check("bob", &other, NOW, Via::Relay),
            Err(AuthorError::OtherIdentity { .. })
        ));
        assert!(matches!(
            authors.check("carol", &bob, NOW, Via::Session),
            Err(AuthorError::WrongName { .. })
        ));
        assert!(authors.learn(Vec::new()).is_err(), "no chains when open");
    }
}
