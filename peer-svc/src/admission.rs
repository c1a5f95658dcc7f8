//! This peer's side of admission (see `credential` and docs/admission.md):
//! its own credential (or open mode), the removals it knows, and the
//! admission each member last showed. Handshakes ask it whether a peer is
//! a member; delivery asks whether one was removed.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

pub use crate::removals::MAX_REMOVALS_PER_BRANCH;

use chat_proto::v1::{Admission as AdmissionLink, Credential, Removal};
use ed25519_dalek::SigningKey;
use prost::Message;
use tracing::{debug, info, warn};

use crate::{
    checks::now_ms,
    config::MAX_CLOCK_AHEAD,
    credential::{self, CredentialError, Member},
    removals::{BUCKETS, RemovalSet},
    store::Store,
};

/// Removals sent in one handshake payload, newest first: the newest
/// spread at once; the rest by reconciling digests (`Peer/Removals`).
pub const REMOVALS_IN_HANDSHAKE: usize = 8;

/// Bytes of removals sent in one handshake payload, so the payload stays
/// well inside one Noise message (65,535 bytes).
pub const REMOVALS_BUDGET: usize = 8 * 1024;

/// Verified credentials remembered by their hash before the cache is reset.
const MAX_CACHED: usize = 4096;

/// Why a peer is not accepted, or an admission request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The peer showed no valid credential for this network.
    #[error("{name} is not a member of this network: {reason}")]
    NotMember {
        /// Who.
        name: String,
        /// Why.
        reason: CredentialError,
    },
    /// The peer's admission (or one above it) was removed.
    #[error("{0} was removed from this network")]
    Removed(String, Vec<u8>),
    /// The name is admitted here under another identity.
    #[error(
        "{0} is a member under another identity key; a second admission of the name is refused (remove the first to admit a new one)"
    )]
    OtherIdentity(String),
    /// This peer runs open: there is no network.
    #[error("this peer runs in open mode (--open): it has no network to invite to or remove from")]
    Open,
    /// The name to invite is this peer's own.
    #[error("{0} is this peer's own name; an invitation is for someone else")]
    Yourself(String),
    /// The name to invite is a member already: its admission was shown here.
    #[error(
        "{0} is a member already (identity {1}); to admit a new device or key for it, remove the old one first (`chat remove {0}`), then invite again"
    )]
    AlreadyMember(String, String),
    /// This peer's own admission was revoked (removed, or it left).
    #[error(
        "{0}: this peer is no longer a member, so it can neither invite nor remove; ask a member for a new invitation and start with a new data dir"
    )]
    NoLongerMember(String),
    /// The name looks like a member's (Unicode confusables, TR39).
    #[error(
        "{0:?} looks like {1:?}, a member's name (its characters are confusable, Unicode TR39): people could not tell the two apart; pick a name nobody can mistake for another"
    )]
    LooksLike(String, String),
    /// The invitation was used already, by another identity.
    #[error(
        "{name} joined with an invitation that another identity (safety number {first}) used first, and an invitation admits one identity; ask {inviter} for a new one, bound to your key (`chat key` prints it; they run `chat invite {name} --key KEY`), and start with a new data dir"
    )]
    UsedBy {
        /// The name invited.
        name: String,
        /// The safety number of the identity that used it first.
        first: String,
        /// Who issued the invitation (this peer).
        inviter: String,
    },
    /// This peer's store failed.
    #[error("admission store: {0}")]
    Store(String),
    /// This peer joined with a bearer token and waits for its inviter.
    #[error(
        "not a member yet: waiting for {0}, who made the invitation this peer joined with, to confirm it (it must be online once; the peer keeps asking)"
    )]
    Pending(String),
    /// The founder asked to leave: its key is the network's.
    #[error(
        "the founder cannot leave the network: its key is the network's, and every admission hangs from it. `chat stop` stops your peer (you stay a member)"
    )]
    FounderLeaves,
    /// No admission of the name is known here.
    #[error(
        "no admission of {0} is known here: it must have handshaken with this peer once, or been invited by it"
    )]
    Unknown(String),
    /// Not allowed, or a malformed request.
    #[error("{0}")]
    Credential(#[from] CredentialError),
}

/// This peer's own membership.
struct Own {
    identity: SigningKey,
    network: [u8; 32],
    /// The invitation keys of its own chain: revoking any removes it.
    invite_keys: Vec<[u8; 32]>,
    /// Its credential now (the inviter's confirmation is added to it once
    /// it arrives), and its encoding as handshakes carry it.
    current: std::sync::RwLock<Current>,
}

/// This peer's credential as it stands.
struct Current {
    credential: Credential,
    encoded: Vec<u8>,
}

impl Own {
    fn current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().expect("own credential lock")
    }

    /// The inviter's name, while this peer's own admission waits for its
    /// confirmation (joined with a bearer token, not yet met the inviter).
    fn pending(&self) -> Option<String> {
        let current = self.current();
        let chain = &current.credential.chain;
        let last = chain.last()?;
        (credential::needs_confirmation(last) && last.confirmation.is_empty()).then(|| {
            chain
                .len()
                .checked_sub(2)
                .map(|i| chain[i].name.clone())
                .unwrap_or_default()
        })
    }
}

/// A removal of this peer's own admission, as its owner is told of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnRemoval {
    /// When (ms since the epoch).
    pub at_millis: u64,
    /// Who signed it: a name from the chain, or a key fingerprint.
    pub by: String,
    /// True if this peer signed it itself (`chat leave`).
    pub left: bool,
}

impl std::fmt::Display for OwnRemoval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = chrono::DateTime::from_timestamp_millis(self.at_millis as i64)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| self.at_millis.to_string());
        if self.left {
            write!(f, "this member left the network at {at}")
        } else {
            write!(
                f,
                "{} removed this member from the network at {at}",
                self.by
            )
        }
    }
}

/// What changes as peers are met and removed.
#[derive(Default)]
struct State {
    /// Every removal known: the revoked invitation keys, with when and the
    /// removal itself.
    removals: RemovalSet,
    /// Removals that did not verify, by meaning (remover, signature, time
    /// and the chain's signed fields, whatever else the bytes carry): not
    /// checked again.
    rejected: HashSet<[u8; 32]>,
    /// Each member's last admission chain, verified.
    chains: HashMap<String, (Vec<AdmissionLink>, Member)>,
    /// Credentials verified already, by the SHA-256 of their encoding.
    verified: HashMap<[u8; 32], Member>,
}

/// Admission: open, or a member of one network.
pub struct Admission {
    own: Option<Own>,
    store: std::sync::Arc<Store>,
    state: Mutex<State>,
    /// The inviter's last refusal to confirm this peer's own admission.
    refusal: Mutex<Option<String>>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("network", &self.network_id())
            .finish_non_exhaustive()
    }
}

impl Admission {
    /// Open mode: no credential shown, none asked for.
    pub fn open(store: std::sync::Arc<Store>) -> Self {
        Self {
            own: None,
            store,
            state: Mutex::default(),
            refusal: Mutex::default(),
        }
    }

    /// A member holding `identity` and `credential`, with the removals and
    /// admissions `store` kept.
    pub fn member(
        identity: SigningKey,
        credential: Credential,
        store: std::sync::Arc<Store>,
    ) -> Result<Self, CredentialError> {
        let network = credential::network_of(&credential)?;
        let encoded = credential.encode_to_vec();
        let invite_keys = credential::verify_links(&network, &credential.chain)?.invite_keys;
        let admission = Self {
            own: Some(Own {
                identity,
                network,
                invite_keys,
                current: std::sync::RwLock::new(Current {
                    credential,
                    encoded,
                }),
            }),
            store,
            state: Mutex::default(),
            refusal: Mutex::default(),
        };
        admission.restore();
        Ok(admission)
    }

    /// Reads the removals and admissions kept in the store.
    fn restore(&self) {
        let Some(own) = &self.own else { return };
        // Every removal kept, none left out: they were verified before they
        // were stored, and the store is this peer's own (as its identity is).
        match self.store.removals() {
            Ok(removals) => {
                let mut state = self.state.lock().expect("admission lock");
                for (key, at, bytes) in removals {
                    let branch = Removal::decode(bytes.as_slice())
                        .ok()
                        .and_then(|r| branch_of(&own.network, &r));
                    state.removals.insert(key, at, bytes, branch);
                }
            }
            Err(e) => warn!(error = %e, "cannot read the removals kept"),
        }
        let Ok(admissions) = self.store.admissions() else {
            return;
        };
        let mut state = self.state.lock().expect("admission lock");
        for (name, chain) in admissions {
            let Ok(chain) = Credential::decode(chain.as_slice()) else {
                continue;
            };
            if let Ok(member) = credential::verify_links(&own.network, &chain.chain) {
                state.chains.insert(name, (chain.chain, member));
            }
        }
    }

    /// True in open mode.
    pub fn is_open(&self) -> bool {
        self.own.is_none()
    }

    /// Where this peer's own share of history begins (ms since the epoch;
    /// 0 = all, and in open mode): members hold nothing older for it.
    pub fn own_history_from_millis(&self) -> u64 {
        self.own.as_ref().map_or(0, |own| {
            credential::history_from(&own.current().credential.chain)
        })
    }

    /// The network's id (the founder's key's fingerprint), if a member.
    pub fn network_id(&self) -> Option<String> {
        self.own
            .as_ref()
            .map(|o| credential::network_id(&o.network))
    }

    /// The network's key (the founder's Ed25519 public key), empty when open.
    pub fn network_key(&self) -> Vec<u8> {
        self.own
            .as_ref()
            .map(|o| o.network.to_vec())
            .unwrap_or_default()
    }

    /// This peer's credential as sent in handshakes (empty when open).
    pub fn own_credential(&self) -> Vec<u8> {
        self.own
            .as_ref()
            .map(|o| o.current().encoded.clone())
            .unwrap_or_default()
    }

    /// The removals to send in a handshake: the newest, at most
    /// [`REMOVALS_IN_HANDSHAKE`] and [`REMOVALS_BUDGET`] bytes.
    pub fn removals(&self) -> Vec<Vec<u8>> {
        let state = self.state.lock().expect("admission lock");
        state
            .removals
            .newest(REMOVALS_IN_HANDSHAKE, REMOVALS_BUDGET)
    }

    /// The digest of every removal known, as a handshake carries it (empty
    /// when open).
    pub fn removals_digest(&self) -> Vec<u8> {
        if self.own.is_none() {
            return Vec::new();
        }
        let mut state = self.state.lock().expect("admission lock");
        state.removals.digest().to_vec()
    }

    /// The digest of each bucket of the removals known.
    pub fn removal_buckets(&self) -> [[u8; 32]; BUCKETS] {
        let mut state = self.state.lock().expect("admission lock");
        state.removals.bucket_digests()
    }

    /// How many invitation keys are revoked here.
    pub fn removal_count(&self) -> usize {
        self.state.lock().expect("admission lock").removals.len()
    }

    /// One page of removals for a member whose bucket digests are
    /// `theirs`: those in buckets that differ, after `after`; and the key
    /// to resume after if more follow.
    pub fn removals_page(
        &self,
        theirs: &[[u8; 32]],
        after: Option<[u8; 32]>,
    ) -> (Vec<Vec<u8>>, Option<[u8; 32]>) {
        let mut state = self.state.lock().expect("admission lock");
        state.removals.page(theirs, after)
    }

    /// Takes in removals a peer sent: each is verified and, if new,
    /// recorded. Returns the names newly removed: every member known here
    /// whose chain holds a revoked key (the removed one, and whoever was
    /// admitted through it).
    pub fn learn_removals(&self, removals: &[Vec<u8>]) -> Vec<String> {
        self.learn_removals_within(removals, usize::MAX).removed
    }

    /// Like [`Admission::learn_removals`], stopping after `max_refused`
    /// removals that do not verify: a peer sending forgeries is not worth
    /// more of this peer's CPU.
    pub fn learn_removals_within(&self, removals: &[Vec<u8>], max_refused: usize) -> Learned {
        let mut learned = Learned::default();
        let Some(own) = &self.own else {
            return learned;
        };
        let latest = now_ms().saturating_add(MAX_CLOCK_AHEAD.as_millis() as u64);
        for bytes in removals {
            if learned.refused >= max_refused {
                break;
            }
            match self.learn_one(own, bytes, latest) {
                Ok(Some((names, own_key))) => {
                    learned.added += 1;
                    learned.removed.extend(names);
                    learned.self_removed |= own_key;
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "ignoring a removal that does not verify");
                    learned.refused += 1;
                    if learned.first_refusal.is_none() {
                        learned.first_refusal = Some(e.to_string());
                    }
                }
            }
        }
        learned
    }

    /// One removal: None if known already (or over its branch's quota),
    /// the names it removes if new (and whether it revokes this peer's own
    /// admission), an error if it does not verify.
    fn learn_one(
        &self,
        own: &Own,
        bytes: &[u8],
        latest: u64,
    ) -> Result<Option<(Vec<String>, bool)>, CredentialError> {
        let removal = Removal::decode(bytes).map_err(|_| CredentialError::Malformed("removal"))?;
        if removal.at_millis > latest {
            return Err(CredentialError::Malformed("removal (dated in the future)"));
        }
        let key = credential::revoked_key(&removal)?;
        let branch = branch_of(&own.network, &removal);
        let meaning = meaning(&removal);
        {
            let state = self.state.lock().expect("admission lock");
            if state.removals.contains(&key) {
                return Ok(None);
            }
            if state.rejected.contains(&meaning) {
                return Err(CredentialError::Malformed(
                    "removal (the same one was refused before)",
                ));
            }
            if branch.is_some_and(|b| state.removals.branch_full(&b)) {
                debug!(
                    "a removal over its branch's quota of {MAX_REMOVALS_PER_BRANCH} is not taken"
                );
                return Ok(None);
            }
        }
        if let Err(e) = credential::verify_removal(&own.network, &removal) {
            let mut state = self.state.lock().expect("admission lock");
            if state.rejected.len() >= MAX_CACHED {
                state.rejected.clear();
            }
            state.rejected.insert(meaning);
            return Err(e);
        }
        let at = removal.at_millis;
        let mut state = self.state.lock().expect("admission lock");
        if !state.removals.insert(key, at, bytes.to_vec(), branch) {
            return Ok(None);
        }
        drop(state);
        if let Err(e) = self.store.save_removal(&key, at, bytes) {
            warn!(error = %e, "cannot record a removal");
        }
        let state = self.state.lock().expect("admission lock");
        let mut removed = Vec::new();
        for (name, (_, member)) in &state.chains {
            if member.invite_keys.contains(&key) {
                info!(peer = %name, "member removed from the network");
                removed.push(name.clone());
            }
        }
        let own_key = own.invite_keys.contains(&key);
        if own_key {
            warn!("a verified removal revokes this peer's own admission");
        }
        Ok(Some((removed, own_key)))
    }

    /// Checks that `name` with `static_key` showed a valid, unrevoked
    /// credential for this network; records its admission chain. Always
    /// Ok in open mode.
    pub fn check(
        &self,
        name: &str,
        static_key: &[u8; 32],
        encoded: &[u8],
    ) -> Result<Option<Vec<u8>>, AdmissionError> {
        let Some(own) = &self.own else {
            return Ok(None);
        };
        let not_member = |reason| AdmissionError::NotMember {
            name: name.to_owned(),
            reason,
        };
        if encoded.is_empty() {
            return Err(not_member(CredentialError::Missing));
        }
        // Cached by meaning, not bytes: an unknown field or another
        // encoding of the same credential costs a decode and a hash, not
        // its signatures again.
        let credential = Credential::decode(encoded)
            .map_err(|_| not_member(CredentialError::Malformed("credential")))?;
        let digest = credential::meaning(
            b"verified credential",
            &[
                &credential.static_key_signature,
                static_key,
                name.as_bytes(),
            ],
            &credential.chain,
        );
        let cached = self
            .state
            .lock()
            .expect("admission lock")
            .verified
            .get(&digest)
            .cloned();
        let (member, chain, confirmation) = match cached {
            Some(member) => (member, None, None),
            None => {
                // Verified once, the last link's confirmation aside: a
                // newcomer that joined with a bearer token, in its first
                // handshake with its inviter, has none yet, and only this
                // peer can confirm it (for the first identity only).
                let member = credential::verify_credential_unconfirmed(
                    &own.network,
                    &credential,
                    name,
                    static_key,
                )
                .map_err(not_member)?;
                let at = credential.chain.len() - 1;
                if credential::is_confirmed(&credential.chain[at], at) {
                    (member, Some(credential.chain), None)
                } else {
                    // A removal says more than a missing confirmation
                    // (and shows the newcomer the removal).
                    if let Some(removed) = self.removed_error(name, &member) {
                        return Err(removed);
                    }
                    let (chain, confirmation) =
                        self.confirm_use(own, &credential, &member, name)?;
                    (member, Some(chain), Some(confirmation))
                }
            }
        };
        if let Some(removed) = self.removed_error(name, &member) {
            return Err(removed);
        }
        let mut state = self.state.lock().expect("admission lock");
        // A name keeps the identity it was first seen with here, unless that
        // admission was removed: another member cannot admit a second
        // identity under a name in use and speak as it.
        if let Some((_, known)) = state.chains.get(name)
            && known.identity != [0; 32]
            && known.identity != member.identity
            && !known.invite_keys.iter().any(|k| state.removals.contains(k))
        {
            return Err(AdmissionError::OtherIdentity(name.to_owned()));
        }
        if let Some(chain) = chain {
            if confirmation.is_none() {
                if state.verified.len() >= MAX_CACHED {
                    state.verified.clear();
                }
                state.verified.insert(digest, member.clone());
            }
            let changed = state.chains.get(name).is_none_or(|(c, _)| *c != chain);
            if changed {
                let encoded_chain = Credential {
                    chain: chain.clone(),
                    static_key_signature: Vec::new(),
                }
                .encode_to_vec();
                state.chains.insert(name.to_owned(), (chain, member));
                drop(state);
                if let Err(e) = self.store.save_admission(name, &encoded_chain) {
                    warn!(peer = %name, error = %e, "cannot record an admission");
                }
            }
        }
        Ok(confirmation)
    }

    /// The refusal of `member` (shown under `name`) if a key of its chain
    /// is revoked, carrying the earliest removal that revoked it.
    fn removed_error(&self, name: &str, member: &Member) -> Option<AdmissionError> {
        let state = self.state.lock().expect("admission lock");
        let (_, removal) = member
            .invite_keys
            .iter()
            .filter_map(|k| state.removals.record(k))
            .min_by_key(|(at, _)| *at)?;
        Some(AdmissionError::Removed(name.to_owned(), removal.to_vec()))
    }

    /// Confirms the use of an invitation this peer issued by `member`, the
    /// identity of `credential` (verified, its last link without the
    /// confirmation): records that identity as the one that used it,
    /// durably, unless another did first, and signs the confirmation.
    /// Returns the chain with the confirmation, and the confirmation.
    fn confirm_use(
        &self,
        own: &Own,
        credential: &Credential,
        member: &Member,
        name: &str,
    ) -> Result<(Vec<AdmissionLink>, Vec<u8>), AdmissionError> {
        let own_identity = own.identity.verifying_key().to_bytes();
        let last = credential
            .chain
            .last()
            .expect("a verified chain is not empty");
        if last.issuer != own_identity {
            return Err(AdmissionError::NotMember {
                name: name.to_owned(),
                reason: CredentialError::Unconfirmed(name.to_owned()),
            });
        }
        let first = self
            .store
            .record_invitation_use(&last.invite_key, &member.identity)
            .map_err(|e| AdmissionError::Store(e.to_string()))?;
        if first != member.identity {
            warn!(
                name = %name,
                refused = %chat_proto::keys::fingerprint(&member.identity),
                kept = %chat_proto::keys::fingerprint(&first),
                "a second identity tried to use an invitation this peer made; refused (the first keeps it). If the first is not who you invited, remove the name (`chat remove NAME`) and invite again bound to their key (`chat invite NAME --key KEY`)"
            );
            return Err(AdmissionError::UsedBy {
                name: name.to_owned(),
                first: chat_proto::keys::fingerprint(&first),
                inviter: last_name(&own.current().credential),
            });
        }
        let confirmation = credential::confirm(&own.identity, last);
        let mut chain = credential.chain.clone();
        if let Some(link) = chain.last_mut() {
            link.confirmation = confirmation.clone();
        }
        info!(peer = %name, safety_number = %chat_proto::keys::fingerprint(&member.identity), "confirmed the use of an invitation this peer made");
        Ok((chain, confirmation))
    }

    /// The inviter's name while this peer's own admission waits for its
    /// confirmation (it joined with a bearer token and has not yet met its
    /// inviter); None once confirmed, and for admissions that need none.
    pub fn own_pending(&self) -> Option<String> {
        self.own.as_ref()?.pending()
    }

    /// Why the inviter last refused to confirm this peer's admission (its
    /// invitation was used first by another identity, say), if it did.
    pub fn pending_refusal(&self) -> Option<String> {
        self.refusal.lock().expect("refusal lock").clone()
    }

    /// Notes the inviter's refusal to confirm this peer's admission.
    pub fn set_pending_refusal(&self, why: String) {
        *self.refusal.lock().expect("refusal lock") = Some(why);
    }

    /// Takes in the inviter's confirmation of this peer's own admission:
    /// true if it was pending and `confirmation` verifies (the credential is
    /// then complete, and kept).
    pub fn take_confirmation(&self, confirmation: &[u8]) -> bool {
        let Some(own) = &self.own else {
            return false;
        };
        if own.pending().is_none() {
            return false;
        }
        let mut current = own.current.write().expect("own credential lock");
        let Some(last) = current.credential.chain.last() else {
            return false;
        };
        let at = current.credential.chain.len() - 1;
        if credential::verify_confirmation(last, confirmation, at).is_err() {
            warn!("ignoring a confirmation of this peer's admission that does not verify");
            return false;
        }
        if let Some(last) = current.credential.chain.last_mut() {
            last.confirmation = confirmation.to_vec();
        }
        current.encoded = current.credential.encode_to_vec();
        if let Err(e) = self.store.save_own_credential(&current.encoded) {
            warn!(error = %e, "cannot keep the confirmed credential; it is asked for again at the next start");
        }
        true
    }

    /// True if `name`'s known admission chain holds a revoked key (a name
    /// whose admission is not known here is checked at its handshake).
    pub fn is_removed(&self, name: &str) -> bool {
        let state = self.state.lock().expect("admission lock");
        state.chains.get(name).is_some_and(|(_, member)| {
            member
                .invite_keys
                .iter()
                .any(|k| state.removals.contains(k))
        })
    }

    /// When the earliest of `invite_keys` was revoked (ms since the epoch),
    /// if any was: a member admitted through it was removed then.
    pub fn removed_at(&self, invite_keys: &[[u8; 32]]) -> Option<u64> {
        let state = self.state.lock().expect("admission lock");
        invite_keys
            .iter()
            .filter_map(|k| state.removals.at(k))
            .min()
    }

    /// The earliest removal of this peer's own admission, if one is known:
    /// it is no longer a member (removed, or it left).
    pub fn own_removal(&self) -> Option<OwnRemoval> {
        let own = self.own.as_ref()?;
        let state = self.state.lock().expect("admission lock");
        let (at_millis, bytes) = own
            .invite_keys
            .iter()
            .filter_map(|k| state.removals.record(k))
            .min_by_key(|(at, _)| *at)?;
        let removal = Removal::decode(bytes).ok()?;
        let own_identity = own.identity.verifying_key().to_bytes();
        let by = if removal.by.as_slice() == own.network {
            own.current()
                .credential
                .chain
                .first()
                .map(|a| a.name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "the founder".to_owned())
        } else {
            own.current()
                .credential
                .chain
                .iter()
                .find(|a| a.identity_key == removal.by)
                .map(|a| a.name.clone())
                .unwrap_or_else(|| chat_proto::keys::fingerprint(&removal.by))
        };
        Some(OwnRemoval {
            at_millis,
            by,
            left: removal.by.as_slice() == own_identity,
        })
    }

    /// The admission chain `name` last showed here, with what it admits.
    pub fn member_chain(&self, name: &str) -> Option<(Vec<AdmissionLink>, Member)> {
        self.state
            .lock()
            .expect("admission lock")
            .chains
            .get(name)
            .cloned()
    }

    /// The identity key `name`'s last shown admission admits (no copy of
    /// the chain: asked for every message delivered).
    pub fn member_identity(&self, name: &str) -> Option<[u8; 32]> {
        self.state
            .lock()
            .expect("admission lock")
            .chains
            .get(name)
            .map(|(_, member)| member.identity)
    }

    /// This peer's own admission chain and identity key, if a member.
    pub fn own_chain(&self) -> Option<(Vec<AdmissionLink>, [u8; 32])> {
        self.own.as_ref().map(|o| {
            (
                o.current().credential.chain.clone(),
                o.identity.verifying_key().to_bytes(),
            )
        })
    }

    /// What an accepted admission chain relayed by another peer admits, if
    /// it verifies from this network's founder down to the admitted
    /// identity's own signature (revocations not applied).
    pub fn verify_chain(&self, chain: &[AdmissionLink]) -> Result<Member, CredentialError> {
        let own = self.own.as_ref().ok_or(CredentialError::Missing)?;
        credential::verify_accepted_links(&own.network, chain)
    }

    /// True if `name` showed (or was invited with) an admission here: a
    /// PERMISSION_DENIED answered in its name is then not its own word.
    pub fn is_known_member(&self, name: &str) -> bool {
        self.state
            .lock()
            .expect("admission lock")
            .chains
            .contains_key(name)
    }

    /// The names of the members known here and not removed (none in open
    /// mode), sorted: whoever showed a valid admission, or was invited here.
    pub fn members(&self) -> Vec<String> {
        if self.own.is_none() {
            return Vec::new();
        }
        let state = self.state.lock().expect("admission lock");
        let mut names: Vec<String> = state
            .chains
            .iter()
            .filter(|(_, (_, m))| !m.invite_keys.iter().any(|k| state.removals.contains(k)))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The members' names ([`Admission::members`]) and this peer's own.
    pub fn names(&self) -> Vec<String> {
        let mut names = self.members();
        if let Some(own) = &self.own {
            names.extend(
                own.current()
                    .credential
                    .chain
                    .last()
                    .map(|a| a.name.clone()),
            );
        }
        names
    }

    /// Where `name`'s share of history begins (ms since the epoch; 0 = all).
    pub fn history_from_millis(&self, name: &str) -> u64 {
        if self.own.is_none() {
            return 0;
        }
        self.state
            .lock()
            .expect("admission lock")
            .chains
            .get(name)
            .map_or(u64::MAX, |(_, m)| m.history_from_millis)
    }

    /// An invitation token for `name`, sharing all history or only what is
    /// said from now on. Returns (token, network id).
    pub fn invite(
        &self,
        name: &str,
        all_history: bool,
    ) -> Result<(String, String), AdmissionError> {
        self.invite_for(name, all_history, None)
    }

    /// Like [`Admission::invite`]; with `newcomer`, the invitation is bound
    /// to that identity key (`credential::invite_bound`: no secret in the
    /// token, only that identity can join with it).
    pub fn invite_for(
        &self,
        name: &str,
        all_history: bool,
        newcomer: Option<[u8; 32]>,
    ) -> Result<(String, String), AdmissionError> {
        let own = self.own.as_ref().ok_or(AdmissionError::Open)?;
        if let Some(removal) = self.own_removal() {
            return Err(AdmissionError::NoLongerMember(removal.to_string()));
        }
        if let Some(inviter) = own.pending() {
            return Err(AdmissionError::Pending(inviter));
        }
        if own
            .current()
            .credential
            .chain
            .last()
            .is_some_and(|a| a.name == name)
        {
            return Err(AdmissionError::Yourself(name.to_owned()));
        }
        // A name that looks like a member's (or this peer's own) would let
        // its holder pass for that member on every screen.
        let known = crate::names::Lookalikes::new(self.names());
        if let Some(other) = known.looks_like(name) {
            return Err(AdmissionError::LooksLike(name.to_owned(), other.to_owned()));
        }
        {
            // A member that has shown its admission here (not only been
            // invited) and was not removed: a second token would let
            // whoever holds it join as a second identity under the name.
            let state = self.state.lock().expect("admission lock");
            if let Some((_, member)) = state.chains.get(name)
                && member.identity != [0; 32]
                && !member
                    .invite_keys
                    .iter()
                    .any(|k| state.removals.contains(k))
            {
                return Err(AdmissionError::AlreadyMember(
                    name.to_owned(),
                    chat_proto::keys::fingerprint(&member.identity),
                ));
            }
        }
        let now = now_ms();
        let from = if all_history { 0 } else { now };
        let invitation = match newcomer {
            Some(key) => credential::invite_bound(
                &own.identity,
                &own.current().credential,
                name,
                &key,
                now,
                from,
            )?,
            None => credential::invite(&own.identity, &own.current().credential, name, now, from)?,
        };
        // Kept so the inviter can remove the name before it ever joins.
        let admission = invitation.admission.clone().expect("made with one");
        let mut chain = own.current().credential.chain.clone();
        chain.push(admission);
        let mut state = self.state.lock().expect("admission lock");
        if !state.chains.contains_key(name)
            && let Ok(member) = credential::verify_links(&own.network, &chain)
        {
            let encoded = Credential {
                chain: chain.clone(),
                static_key_signature: Vec::new(),
            }
            .encode_to_vec();
            state.chains.insert(name.to_owned(), (chain, member));
            drop(state);
            if let Err(e) = self.store.save_admission(name, &encoded) {
                warn!(peer = %name, error = %e, "cannot record an invitation");
            }
        }
        Ok((
            credential::encode_token(&invitation),
            credential::network_id(&own.network),
        ))
    }

    /// Removes `name`: signs a removal of its admission and takes it in
    /// here. The caller spreads it (handshakes carry it) and tells the
    /// names returned (the removed one, unless it was removed already).
    pub fn remove(&self, name: &str) -> Result<Vec<String>, AdmissionError> {
        let chain = self
            .state
            .lock()
            .expect("admission lock")
            .chains
            .get(name)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| AdmissionError::Unknown(name.to_owned()))?;
        self.remove_chain(chain)
    }

    /// Removes the member whose admission chain is `chain` (one this peer
    /// verified: shown in a handshake, invited here, or an author's), as
    /// [`Admission::remove`] does.
    pub fn remove_chain(&self, chain: Vec<AdmissionLink>) -> Result<Vec<String>, AdmissionError> {
        let own = self.own.as_ref().ok_or(AdmissionError::Open)?;
        if let Some(removal) = self.own_removal() {
            return Err(AdmissionError::NoLongerMember(removal.to_string()));
        }
        if let Some(inviter) = own.pending() {
            return Err(AdmissionError::Pending(inviter));
        }
        let removal = credential::remove(&own.identity, chain, now_ms())?;
        if let Some(branch) = branch_of(&own.network, &removal)
            && self
                .state
                .lock()
                .expect("admission lock")
                .removals
                .branch_full(&branch)
        {
            return Err(AdmissionError::Credential(CredentialError::Malformed(
                "removal: this branch of the network has used its quota of removals",
            )));
        }
        Ok(self.learn_removals(&[removal.encode_to_vec()]))
    }
}

impl Admission {
    /// This member leaves the network for good: signs a leave of its own
    /// admission (a removal of itself, §5.3) and takes it in here; returns
    /// the leave, which handshakes carry to the others from now on.
    pub fn leave(&self) -> Result<Vec<u8>, AdmissionError> {
        let own = self.own.as_ref().ok_or(AdmissionError::Open)?;
        if let Some(removal) = self.own_removal() {
            return Err(AdmissionError::NoLongerMember(removal.to_string()));
        }
        if own.current().credential.chain.len() < 2 {
            return Err(AdmissionError::FounderLeaves);
        }
        let leave = credential::leave(
            &own.identity,
            own.current().credential.chain.clone(),
            now_ms(),
        )?;
        let bytes = leave.encode_to_vec();
        let learned = self.learn_removals_within(std::slice::from_ref(&bytes), 1);
        if !learned.self_removed {
            return Err(AdmissionError::Credential(CredentialError::Malformed(
                "leave: not recorded (this branch of the network has used its quota of removals)",
            )));
        }
        Ok(bytes)
    }
}

/// The name the last link of `credential` admits.
fn last_name(credential: &Credential) -> String {
    credential
        .chain
        .last()
        .map(|a| a.name.clone())
        .unwrap_or_default()
}

/// What one call of [`Admission::learn_removals_within`] took in.
#[derive(Debug, Default)]
pub struct Learned {
    /// Names newly removed.
    pub removed: Vec<String>,
    /// New removals recorded.
    pub added: usize,
    /// Removals that did not verify.
    pub refused: usize,
    /// Why the first of them was refused.
    pub first_refusal: Option<String>,
    /// One of them revokes this peer's own admission.
    pub self_removed: bool,
}

/// The branch a removal counts against: the member the founder admitted
/// at the top of the removed admission's chain; None when the founder
/// removes (or the chain is too short to have one).
fn branch_of(network: &[u8; 32], removal: &Removal) -> Option<[u8; 32]> {
    if removal.by.as_slice() == network {
        return None;
    }
    removal
        .chain
        .get(1)
        .and_then(|a| <[u8; 32]>::try_from(a.identity_key.as_slice()).ok())
}

/// What a removal says, whatever else its bytes carry: the remover, the
/// time, the signature and every signed field of its chain.
fn meaning(removal: &Removal) -> [u8; 32] {
    let at = removal.at_millis.to_be_bytes();
    credential::meaning(
        b"removal",
        &[removal.by.as_slice(), &at, &removal.signature],
        &removal.chain,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&rand::random::<[u8; 32]>())
    }

    const S: [u8; 32] = [9; 32];

    /// alice founds; bob and carol are admitted by alice; alice's peer is
    /// the one under test, with its store in `dir`.
    struct World {
        alice: SigningKey,
        founder: Credential,
        bob: Vec<u8>,
        carol: Vec<u8>,
    }

    fn world() -> World {
        let alice = key();
        let founder = credential::found(&alice, "alice", &S, 1);
        let join = |name: &str| {
            let invitation = credential::invite(&alice, &founder, name, 2, 0).unwrap();
            credential::join(&invitation, &key(), name, &S)
                .unwrap()
                .encode_to_vec()
        };
        World {
            bob: join("bob"),
            carol: join("carol"),
            alice,
            founder,
        }
    }

    fn peer(w: &World, dir: &std::path::Path) -> Admission {
        let store = Arc::new(Store::open(dir).unwrap());
        Admission::member(w.alice.clone(), w.founder.clone(), store).unwrap()
    }

    /// Issue 26, item 1: a bearer token is used once. Its inviter confirms
    /// the first identity that uses it, durably, and refuses any other,
    /// naming the first; other members refuse the newcomer until it is
    /// confirmed; the confirmation completes the newcomer's credential.
    #[test]
    fn an_invitation_is_used_once_and_confirmed_by_its_inviter() {
        let alice_key = key();
        let now = now_ms();
        let founder = credential::found(&alice_key, "alice", &S, now);
        let alice_dir = tempfile::tempdir().unwrap();
        let alice_peer = || {
            let store = Arc::new(Store::open(alice_dir.path()).unwrap());
            Admission::member(alice_key.clone(), founder.clone(), store).unwrap()
        };
        let alice = alice_peer();
        assert_eq!(alice.own_pending(), None, "a founder confirms itself");
        // Bob, invited bound to his key: a member at once.
        let bob_key = key();
        let (token, _) = alice
            .invite_for("bob", false, Some(bob_key.verifying_key().to_bytes()))
            .unwrap();
        let invitation = credential::decode_token(&token).unwrap();
        let bob_credential = credential::join(&invitation, &bob_key, "bob", &S).unwrap();
        let bob_dir = tempfile::tempdir().unwrap();
        let bob = Admission::member(
            bob_key,
            bob_credential.clone(),
            Arc::new(Store::open(bob_dir.path()).unwrap()),
        )
        .unwrap();
        assert_eq!(bob.own_pending(), None);
        assert_eq!(
            alice
                .check("bob", &S, &bob_credential.encode_to_vec())
                .unwrap(),
            None
        );

        // Erin's bearer token, used by two identities.
        let (token, _) = alice.invite("erin", false).unwrap();
        let invitation = credential::decode_token(&token).unwrap();
        let (erin_a, erin_b) = (key(), key());
        let a = credential::join(&invitation, &erin_a, "erin", &S).unwrap();
        let b = credential::join(&invitation, &erin_b, "erin", &S).unwrap();
        let erin_dir = tempfile::tempdir().unwrap();
        let erin = Admission::member(
            erin_a.clone(),
            a.clone(),
            Arc::new(Store::open(erin_dir.path()).unwrap()),
        )
        .unwrap();
        assert_eq!(erin.own_pending().as_deref(), Some("alice"));
        // Bob is not its inviter: he refuses it until it is confirmed.
        assert!(matches!(
            bob.check("erin", &S, &a.encode_to_vec()),
            Err(AdmissionError::NotMember {
                reason: CredentialError::Unconfirmed(_),
                ..
            })
        ));
        // Alice confirms the first, and again the same for it.
        let confirmation = alice
            .check("erin", &S, &a.encode_to_vec())
            .unwrap()
            .expect("a confirmation");
        assert!(
            alice
                .check("erin", &S, &a.encode_to_vec())
                .unwrap()
                .is_some()
        );
        // The second is refused, naming the first, across her restart.
        let first = chat_proto::keys::fingerprint(&erin_a.verifying_key().to_bytes());
        drop(alice);
        let alice = alice_peer();
        match alice.check("erin", &S, &b.encode_to_vec()) {
            Err(AdmissionError::UsedBy { first: f, .. }) => assert_eq!(f, first),
            other => panic!("a second use was not refused: {other:?}"),
        }
        // The newcomer takes the real confirmation, not a forged one; then
        // everyone takes its credential.
        assert!(!erin.take_confirmation(&[7; 64]));
        assert!(erin.take_confirmation(&confirmation));
        assert_eq!(erin.own_pending(), None);
        bob.check("erin", &S, &erin.own_credential()).unwrap();
        // It was kept: the store holds the confirmed credential.
        let kept = Store::open(erin_dir.path())
            .unwrap()
            .own_credential()
            .unwrap()
            .unwrap();
        assert_eq!(kept, erin.own_credential());
    }

    /// Issue 26, item 4: the removed member learns its removal from a
    /// refusal that carries it, and keeps it across its restart.
    #[test]
    fn a_member_learns_its_own_removal_from_a_refusal_and_keeps_it() {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        let alice = peer(&w, dir.path());
        let (token, _) = alice.invite("carol", false).unwrap();
        let invitation = credential::decode_token(&token).unwrap();
        let carol_key = key();
        let carol_credential = credential::join(&invitation, &carol_key, "carol", &S).unwrap();
        let shown = carol_credential.encode_to_vec();
        let carol_dir = tempfile::tempdir().unwrap();
        let carol_peer = || {
            let store = Arc::new(Store::open(carol_dir.path()).unwrap());
            Admission::member(carol_key.clone(), carol_credential.clone(), store).unwrap()
        };
        let carol = carol_peer();
        assert_eq!(carol.own_removal(), None);
        alice.check("carol", &S, &shown).unwrap();
        alice.remove("carol").unwrap();
        let Err(AdmissionError::Removed(_, removal)) = alice.check("carol", &S, &shown) else {
            panic!("alice accepted carol after removing her");
        };
        assert!(!removal.is_empty(), "the refusal carries the removal");
        // A forged or altered removal teaches nothing.
        let mut altered = removal.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(!carol.learn_removals_within(&[altered], 1).self_removed);
        assert_eq!(carol.own_removal(), None);
        assert!(carol.learn_removals_within(&[removal], 1).self_removed);
        let own = carol.own_removal().unwrap();
        assert_eq!((own.by.as_str(), own.left), ("alice", false));
        assert!(own.to_string().starts_with("alice removed this member"));
        assert!(matches!(
            carol.invite("dave", false),
            Err(AdmissionError::NoLongerMember(_))
        ));
        drop(carol);
        assert_eq!(carol_peer().own_removal(), Some(own));
    }

    #[test]
    fn members_pass_strangers_do_not_and_a_removal_lasts_across_restarts() {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        let alice = peer(&w, dir.path());
        alice.check("bob", &S, &w.bob).unwrap();
        alice.check("carol", &S, &w.carol).unwrap();
        // A credential for another name, or none.
        assert!(matches!(
            alice.check("bob", &S, &w.carol),
            Err(AdmissionError::NotMember { .. })
        ));
        assert!(matches!(
            alice.check("eve", &S, &[]),
            Err(AdmissionError::NotMember {
                reason: CredentialError::Missing,
                ..
            })
        ));
        assert_eq!(alice.remove("carol").unwrap(), ["carol"]);
        assert!(alice.is_removed("carol") && !alice.is_removed("bob"));
        assert!(matches!(
            alice.check("carol", &S, &w.carol),
            Err(AdmissionError::Removed(..))
        ));
        assert!(matches!(
            alice.remove("nobody"),
            Err(AdmissionError::Unknown(_))
        ));
        let sent = alice.removals();
        drop(alice);

        // After a restart the removal is still known and still sent.
        let alice = peer(&w, dir.path());
        assert!(alice.is_removed("carol"));
        assert_eq!(alice.removals(), sent);

        // Another member hears of it in a handshake payload.
        let other = tempfile::tempdir().unwrap();
        let bob_side = peer(&w, other.path());
        bob_side.check("carol", &S, &w.carol).unwrap();
        assert_eq!(bob_side.learn_removals(&sent), ["carol"]);
        assert!(bob_side.learn_removals(&sent).is_empty(), "known already");
        assert!(matches!(
            bob_side.check("carol", &S, &w.carol),
            Err(AdmissionError::Removed(..))
        ));
        // A forged removal (bob's key, which did not admit carol) is ignored.
        let stranger = tempfile::tempdir().unwrap();
        let third = peer(&w, stranger.path());
        let forged = Removal {
            chain: Credential::decode(w.carol.as_slice()).unwrap().chain,
            by: key().verifying_key().to_bytes().to_vec(),
            at_millis: 5,
            signature: vec![0; 64],
        };
        assert!(third.learn_removals(&[forged.encode_to_vec()]).is_empty());
        third.check("carol", &S, &w.carol).unwrap();
    }

    /// The review's findings 4 and 5: a second identity under a name in
    /// use is refused (until the first is removed), and a removal dated in
    /// the future is not taken in; removing a member removes whoever it
    /// admitted too.
    #[test]
    fn a_name_keeps_its_identity_and_removals_cascade() {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        let alice = peer(&w, dir.path());
        alice.check("bob", &S, &w.bob).unwrap();
        // Another bob, admitted by alice's invitation to someone else.
        let other_bob = credential::join(
            &credential::invite(&w.alice, &w.founder, "bob", 3, 0).unwrap(),
            &key(),
            "bob",
            &S,
        )
        .unwrap()
        .encode_to_vec();
        assert!(matches!(
            alice.check("bob", &S, &other_bob),
            Err(AdmissionError::OtherIdentity(_))
        ));

        // Bob admits dave; removing bob removes dave as well.
        let bob_key = key();
        let bob_credential = credential::join(
            &credential::invite(&w.alice, &w.founder, "bob2", 3, 0).unwrap(),
            &bob_key,
            "bob2",
            &S,
        )
        .unwrap();
        let dave = credential::join(
            &credential::invite(&bob_key, &bob_credential, "dave", 4, 0).unwrap(),
            &key(),
            "dave",
            &S,
        )
        .unwrap();
        alice
            .check("bob2", &S, &bob_credential.encode_to_vec())
            .unwrap();
        alice.check("dave", &S, &dave.encode_to_vec()).unwrap();
        let mut removed = alice.remove("bob2").unwrap();
        removed.sort();
        assert_eq!(removed, ["bob2", "dave"]);

        // A removal dated far in the future is ignored.
        let future = credential::remove(
            &w.alice,
            Credential::decode(w.carol.as_slice()).unwrap().chain,
            u64::MAX / 2,
        )
        .unwrap();
        alice.check("carol", &S, &w.carol).unwrap();
        assert!(alice.learn_removals(&[future.encode_to_vec()]).is_empty());
        assert!(!alice.is_removed("carol"));
    }

    /// Issue 24's first two findings: every removal is kept across a
    /// restart (not the newest 64), and a member that missed one among
    /// many newer ones gets it by reconciling digests, pages of only the
    /// buckets that differ; with equal sets nothing is sent.
    #[test]
    fn every_removal_survives_a_restart_and_sets_reconcile() {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        let alice = peer(&w, dir.path());
        alice.check("carol", &S, &w.carol).unwrap();
        assert_eq!(alice.remove("carol").unwrap(), ["carol"]);
        for i in 0..100 {
            let name = format!("unused{i}");
            alice.invite(&name, false).unwrap();
            assert!(alice.remove(&name).unwrap().contains(&name));
        }
        assert!(
            !alice.removals().iter().any(|r| {
                Removal::decode(r.as_slice())
                    .unwrap()
                    .chain
                    .last()
                    .unwrap()
                    .name
                    == "carol"
            }),
            "carol's removal is no longer among the newest a handshake carries"
        );
        drop(alice);
        let alice = peer(&w, dir.path());
        assert_eq!(alice.removal_count(), 101);
        assert!(alice.is_removed("carol"));
        assert!(matches!(
            alice.check("carol", &S, &w.carol),
            Err(AdmissionError::Removed(..))
        ));

        // Bob knew carol's admission and none of the removals.
        let other = tempfile::tempdir().unwrap();
        let bob = peer(&w, other.path());
        bob.check("carol", &S, &w.carol).unwrap();
        assert_ne!(bob.removals_digest(), alice.removals_digest());
        // What handshakes carry is not enough...
        bob.learn_removals(&alice.removals());
        assert!(!bob.is_removed("carol"));
        // ...reconciling is.
        let (mut after, mut pages, mut removed) = (None, 0, Vec::new());
        loop {
            let (page, next) = alice.removals_page(&bob.removal_buckets(), after);
            pages += 1;
            removed.extend(bob.learn_removals_within(&page, 1).removed);
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(removed, ["carol"]);
        assert_eq!(bob.removals_digest(), alice.removals_digest());
        assert!(bob.is_removed("carol"), "after {pages} pages");
        let (page, next) = alice.removals_page(&bob.removal_buckets(), None);
        assert!(page.is_empty() && next.is_none(), "equal sets send nothing");
    }

    /// Issue 24's fourth finding: a removal that failed is not verified
    /// again when only its bytes change (an unknown field); a peer's
    /// forgeries stop being checked after the budget.
    #[test]
    fn refused_removals_are_remembered_by_meaning_and_budgeted() {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        let alice = peer(&w, dir.path());
        let mut forged = Removal {
            chain: Credential::decode(w.carol.as_slice()).unwrap().chain,
            by: w.alice.verifying_key().to_bytes().to_vec(),
            at_millis: 5,
            signature: vec![7; 64],
        };
        let first = alice.learn_removals_within(&[forged.encode_to_vec()], 5);
        assert_eq!(first.refused, 1);
        // The same removal with an unknown field appended.
        let mut bytes = forged.encode_to_vec();
        bytes.extend_from_slice(&[0x78, 0x01]);
        let again = alice.learn_removals_within(&[bytes], 5);
        assert!(again.first_refusal.unwrap().contains("refused before"));
        let many: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                forged.at_millis = i;
                forged.encode_to_vec()
            })
            .collect();
        assert_eq!(alice.learn_removals_within(&many, 3).refused, 3);
    }

    /// Issue 24, item 4d: the same credential with an unknown field (or
    /// any other encoding) is the same verified credential: one cache
    /// entry, no second verification.
    #[test]
    fn a_credential_is_cached_by_meaning_not_bytes() {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        let alice = peer(&w, dir.path());
        alice.check("bob", &S, &w.bob).unwrap();
        for junk in 0..5u8 {
            let mut padded = w.bob.clone();
            padded.extend_from_slice(&[0x78, junk]);
            alice.check("bob", &S, &padded).unwrap();
        }
        assert_eq!(alice.state.lock().unwrap().verified.len(), 1);
    }

    #[test]
    fn an_open_peer_asks_for_nothing_and_cannot_invite() {
        let dir = tempfile::tempdir().unwrap();
        let open = Admission::open(Arc::new(Store::open(dir.path()).unwrap()));
        open.check("anyone", &S, &[]).unwrap();
        assert!(open.own_credential().is_empty() && open.removals().is_empty());
        assert!(matches!(open.invite("x", false), Err(AdmissionError::Open)));
    }
}
