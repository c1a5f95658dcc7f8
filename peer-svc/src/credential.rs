//! Admission credentials (docs/admission.md): who is a member of a network,
//! proven by Ed25519 signatures that every peer checks for itself, without
//! trusting Discovery.
//!
//! A network is named by its founder's Ed25519 identity key. A member admits
//! a newcomer with an invitation: an [`Admission`] naming the newcomer and a
//! fresh one-time invitation key, signed by the member's identity key; the
//! token carries the invitation key's secret, with which the newcomer signs
//! its own identity key into the admission. A member's [`Credential`] is the
//! chain of admissions from the founder's own down to its own, plus its
//! identity key's signature over its static X25519 key, which binds the
//! Noise key to the admitted identity (as libp2p's Noise handshake binds its
//! static key to the identity key). A [`Removal`] revokes one admission's
//! invitation key, and with it every member admitted through it.
//!
//! Every signature covers a context string and the fields as length-prefixed
//! bytes ([`to_be_signed`]), never a protobuf serialisation.

use base64::Engine;
use chat_proto::v1::{Admission, Credential, Invitation, Removal};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;

/// What an invitation token starts with.
pub const TOKEN_PREFIX: &str = "p2pchat-invite:";

/// The longest chain accepted: admissions through at most this many members.
pub const MAX_CHAIN: usize = 8;

const INVITATION_CONTEXT: &[u8] = b"p2p-chat/3 admission invitation";
const ACCEPTANCE_CONTEXT: &[u8] = b"p2p-chat/3 admission acceptance";
const STATIC_KEY_CONTEXT: &[u8] = b"p2p-chat/3 static key";
const REMOVAL_CONTEXT: &[u8] = b"p2p-chat/3 removal";
const LEAVE_CONTEXT: &[u8] = b"p2p-chat/3 leave";
const USE_CONTEXT: &[u8] = b"p2p-chat/3 admission use";

/// Links issued from this time (2026-12-05T00:00:00Z, ms since the epoch)
/// need their issuer's confirmation of the identity that used them
/// (`Admission.confirmation`): an invitation is used once. Older links
/// (from before confirmations existed) are taken as they are.
pub const CONFIRMED_SINCE_MILLIS: u64 = 1_796_428_800_000;
const LEAVE_KEY_CONTEXT: &[u8] = b"p2p-chat/3 leave key";

/// Why a credential, invitation or removal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No credential at all.
    #[error("no credential: not admitted to any network")]
    Missing,
    /// Not a protobuf of the right type, or a token of the wrong shape.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// An empty chain, or one longer than [`MAX_CHAIN`].
    #[error("admission chain of {0} links (1 to {MAX_CHAIN})")]
    ChainLength(usize),
    /// Admitted to another network.
    #[error("admitted to another network ({0})")]
    OtherNetwork(String),
    /// A link not issued by the one before it (or the first not by the founder).
    #[error("admission {0} of the chain was not issued by the member before it")]
    BrokenChain(usize),
    /// A key field that is not an Ed25519 public key.
    #[error("{0} is not an Ed25519 public key")]
    BadKey(&'static str),
    /// A signature that does not verify.
    #[error("{what} of admission {at} does not verify")]
    BadSignature {
        /// Which signature.
        what: &'static str,
        /// Its position in the chain.
        at: usize,
    },
    /// The credential admits another name than the one claimed.
    #[error("the credential admits {admitted:?}, not {claimed:?}")]
    WrongName {
        /// The admitted name.
        admitted: String,
        /// The name claimed.
        claimed: String,
    },
    /// The static key is not certified by the admitted identity.
    #[error("the static key is not signed by the admitted identity")]
    StaticKeyNotSigned,
    /// The founder's own admission cannot be revoked.
    #[error("the founder cannot be removed")]
    Founder,
    /// The remover is neither the founder nor an issuer above the removed member.
    #[error(
        "only the founder or a member who admitted {0} (directly or through others) can remove it"
    )]
    NotAllowed(String),
    /// A link issued since confirmations exist lacks its issuer's.
    #[error(
        "{0}'s admission is not confirmed by its inviter: an invitation is used once, and the inviter confirms the identity that used it in its first handshake with that identity"
    )]
    Unconfirmed(String),
    /// A bound invitation is for another identity key than this one.
    #[error(
        "this invitation is bound to another identity (safety number {bound}), not this data dir's ({own}): it was made with `chat invite NAME --key` for someone else's key; ask for one made for yours (`chat key` prints it)"
    )]
    BoundToAnother {
        /// The bound key's safety number.
        bound: String,
        /// This identity's safety number.
        own: String,
    },
}

/// A member whose credential verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The admitted name.
    pub name: String,
    /// Its Ed25519 identity key.
    pub identity: [u8; 32],
    /// Every key whose revocation removes it: the invitation keys of its
    /// chain, founder's first, then its identity's leave key
    /// ([`leave_key`]; none while the identity is not known).
    pub invite_keys: Vec<[u8; 32]>,
    /// History is shared with it from this time (ms since the epoch; 0 = all).
    pub history_from_millis: u64,
}

/// The bytes a signature covers: the context and each part, each preceded
/// by its length as 4 bytes big-endian.
pub fn to_be_signed(context: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(4 + context.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>());
    for part in std::iter::once(&context).chain(parts) {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// What `fields` and a chain say, whatever else their bytes carry (unknown
/// protobuf fields, another valid encoding): SHA-256 over `kind`, each of
/// `fields` and every field of every link, each length-prefixed. Caches of
/// verified and refused chains are keyed by it, so changing the bytes and
/// not the meaning buys no new verification.
pub fn meaning(kind: &[u8], fields: &[&[u8]], chain: &[Admission]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u32).to_be_bytes());
        h.update(bytes);
    };
    part(kind);
    for field in fields {
        part(field);
    }
    for a in chain {
        part(&a.network);
        part(a.name.as_bytes());
        part(&a.invite_key);
        part(&a.issued_at_millis.to_be_bytes());
        part(&a.history_from_millis.to_be_bytes());
        part(&a.issuer);
        part(&a.issuer_signature);
        part(&a.identity_key);
        part(&a.acceptance);
        part(&a.identity_signature);
        part(&a.confirmation);
    }
    h.finalize().into()
}

fn invitation_signed(a: &Admission) -> Vec<u8> {
    to_be_signed(
        INVITATION_CONTEXT,
        &[
            &a.network,
            a.name.as_bytes(),
            &a.invite_key,
            &a.issued_at_millis.to_be_bytes(),
            &a.history_from_millis.to_be_bytes(),
            &a.issuer,
        ],
    )
}

fn acceptance_signed(a: &Admission) -> Vec<u8> {
    to_be_signed(
        ACCEPTANCE_CONTEXT,
        &[
            &a.network,
            a.name.as_bytes(),
            &a.invite_key,
            &a.issuer,
            &a.identity_key,
        ],
    )
}

fn static_key_signed(network: &[u8], name: &str, static_key: &[u8; 32]) -> Vec<u8> {
    to_be_signed(STATIC_KEY_CONTEXT, &[network, name.as_bytes(), static_key])
}

fn removal_signed(network: &[u8], removed: &Admission, at_millis: u64) -> Vec<u8> {
    to_be_signed(
        REMOVAL_CONTEXT,
        &[
            network,
            &removed.invite_key,
            removed.name.as_bytes(),
            &at_millis.to_be_bytes(),
        ],
    )
}

/// `bytes` as a 32-byte key.
pub fn key32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], CredentialError> {
    bytes.try_into().map_err(|_| CredentialError::BadKey(what))
}

fn verify(
    key: &[u8],
    message: &[u8],
    signature: &[u8],
    what: &'static str,
    at: usize,
) -> Result<(), CredentialError> {
    let bad = CredentialError::BadSignature { what, at };
    let key = VerifyingKey::from_bytes(&key32(key, "a signing key")?)
        .map_err(|_| CredentialError::BadKey("a signing key"))?;
    let signature = Signature::from_slice(signature).map_err(|_| bad.clone())?;
    key.verify_strict(message, &signature).map_err(|_| bad)
}

/// The network id users compare: the founder's key's fingerprint.
pub fn network_id(network: &[u8]) -> String {
    chat_proto::keys::fingerprint(network)
}

/// Checks `chain` as admissions into `network`, each issued by the one
/// before (the first by the founder, admitting the founder's own key); the
/// last must also be accepted when `last_accepted`. Every accepted link is
/// signed by its invitation key and by the identity it admits, so nobody
/// can splice another's key under a link of their own. Returns the
/// invitation keys, founder's first.
/// How much of a chain's last link must be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    /// An invitation: issued, maybe not accepted yet.
    Issued,
    /// Accepted by its identity, not yet confirmed by its issuer (what an
    /// inviter sees in the first handshake of a bearer token's user).
    Accepted,
    /// Accepted and, if issued since [`CONFIRMED_SINCE_MILLIS`], confirmed.
    Confirmed,
}

/// True if `link` needs its issuer's confirmation (issued since
/// [`CONFIRMED_SINCE_MILLIS`]).
pub fn needs_confirmation(link: &Admission) -> bool {
    link.issued_at_millis >= CONFIRMED_SINCE_MILLIS
}

fn use_signed(a: &Admission) -> Vec<u8> {
    to_be_signed(
        USE_CONTEXT,
        &[
            &a.network,
            a.name.as_bytes(),
            &a.invite_key,
            &a.issuer,
            &a.identity_key,
        ],
    )
}

/// The issuer's confirmation that `link`'s identity is the one that used
/// its invitation (`issuer` must be the link's issuer).
pub fn confirm(issuer: &SigningKey, link: &Admission) -> Vec<u8> {
    issuer.sign(&use_signed(link)).to_bytes().to_vec()
}

/// True if `link` (at `at` in its chain) needs no confirmation or carries
/// a valid one.
pub fn is_confirmed(link: &Admission, at: usize) -> bool {
    !needs_confirmation(link) || verify_confirmation(link, &link.confirmation, at).is_ok()
}

/// Checks `confirmation` of `link` by its issuer.
pub fn verify_confirmation(
    link: &Admission,
    confirmation: &[u8],
    at: usize,
) -> Result<(), CredentialError> {
    verify(
        &link.issuer,
        &use_signed(link),
        confirmation,
        "the inviter's confirmation of its use",
        at,
    )
    .map_err(|_| CredentialError::Unconfirmed(link.name.clone()))
}

fn verify_chain(
    network: &[u8; 32],
    chain: &[Admission],
    last_accepted: bool,
) -> Result<Vec<[u8; 32]>, CredentialError> {
    let last = if last_accepted {
        Last::Confirmed
    } else {
        Last::Issued
    };
    verify_chain_to(network, chain, last)
}

fn verify_chain_to(
    network: &[u8; 32],
    chain: &[Admission],
    last: Last,
) -> Result<Vec<[u8; 32]>, CredentialError> {
    if chain.is_empty() || chain.len() > MAX_CHAIN {
        return Err(CredentialError::ChainLength(chain.len()));
    }
    let mut invite_keys = Vec::with_capacity(chain.len());
    for (at, a) in chain.iter().enumerate() {
        if a.network.as_slice() != network {
            return Err(CredentialError::OtherNetwork(network_id(&a.network)));
        }
        let issuer: &[u8] = if at == 0 {
            network
        } else {
            &chain[at - 1].identity_key
        };
        if a.issuer.as_slice() != issuer {
            return Err(CredentialError::BrokenChain(at));
        }
        verify(
            &a.issuer,
            &invitation_signed(a),
            &a.issuer_signature,
            "the issuer's signature",
            at,
        )?;
        if at == 0 && a.identity_key.as_slice() != network {
            return Err(CredentialError::BrokenChain(0));
        }
        let is_last = at + 1 == chain.len();
        if !is_last || last != Last::Issued {
            key32(&a.identity_key, "identity_key")?;
            let accepted = acceptance_signed(a);
            verify(
                &a.invite_key,
                &accepted,
                &a.acceptance,
                "the acceptance",
                at,
            )?;
            verify(
                &a.identity_key,
                &accepted,
                &a.identity_signature,
                "the admitted identity's signature",
                at,
            )?;
            if needs_confirmation(a) && (!is_last || last == Last::Confirmed) {
                verify_confirmation(a, &a.confirmation, at)?;
            }
        }
        invite_keys.push(key32(&a.invite_key, "invite_key")?);
    }
    Ok(invite_keys)
}

/// Verifies that `credential` admits `name` with `static_key` into `network`.
/// Revocation is the caller's to check, against [`Member::invite_keys`].
pub fn verify_credential(
    network: &[u8; 32],
    credential: &Credential,
    name: &str,
    static_key: &[u8; 32],
) -> Result<Member, CredentialError> {
    verify_credential_to(network, credential, name, static_key, Last::Confirmed)
}

/// Like [`verify_credential`], with the last link's confirmation not yet
/// there: what an inviter checks before it confirms a bearer token's use,
/// and a newcomer of its own credential while it waits for that.
pub fn verify_credential_unconfirmed(
    network: &[u8; 32],
    credential: &Credential,
    name: &str,
    static_key: &[u8; 32],
) -> Result<Member, CredentialError> {
    verify_credential_to(network, credential, name, static_key, Last::Accepted)
}

fn verify_credential_to(
    network: &[u8; 32],
    credential: &Credential,
    name: &str,
    static_key: &[u8; 32],
    last: Last,
) -> Result<Member, CredentialError> {
    let invite_keys = verify_chain_to(network, &credential.chain, last)?;
    let own = credential
        .chain
        .last()
        .expect("a verified chain is not empty");
    if own.name != name {
        return Err(CredentialError::WrongName {
            admitted: own.name.clone(),
            claimed: name.to_owned(),
        });
    }
    verify(
        &own.identity_key,
        &static_key_signed(network, name, static_key),
        &credential.static_key_signature,
        "the static key signature",
        credential.chain.len() - 1,
    )
    .map_err(|_| CredentialError::StaticKeyNotSigned)?;
    let identity = key32(&own.identity_key, "identity_key")?;
    Ok(Member {
        name: own.name.clone(),
        identity,
        invite_keys: with_leave_key(invite_keys, &identity),
        history_from_millis: history_from(&credential.chain),
    })
}

/// The key a leave by `identity` revokes (§5.3): SHA-256 over the leave
/// key context and the identity key, each length-prefixed. Only the
/// members with that identity hold it, so a leave removes the leaver and
/// not whoever it admitted (as revoking its invitation key would).
pub fn leave_key(identity: &[u8; 32]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(to_be_signed(LEAVE_KEY_CONTEXT, &[identity])).into()
}

/// `invite_keys` and, if the identity is known, its leave key.
fn with_leave_key(mut invite_keys: Vec<[u8; 32]>, identity: &[u8; 32]) -> Vec<[u8; 32]> {
    if *identity != [0; 32] {
        invite_keys.push(leave_key(identity));
    }
    invite_keys
}

/// True if `removal` is a leave: signed by the removed admission's own
/// identity key.
pub fn is_leave(removal: &Removal) -> bool {
    removal
        .chain
        .last()
        .is_some_and(|a| !a.identity_key.is_empty() && a.identity_key == removal.by)
}

/// The key a removal revokes, unverified (for looking it up before its
/// signatures are checked): the leaver's leave key for a leave, else the
/// removed link's invitation key.
pub fn revoked_key(removal: &Removal) -> Result<[u8; 32], CredentialError> {
    let last = removal
        .chain
        .last()
        .ok_or(CredentialError::ChainLength(0))?;
    if is_leave(removal) {
        Ok(leave_key(&key32(&last.identity_key, "identity_key")?))
    } else {
        key32(&last.invite_key, "invite_key")
    }
}

/// Where a chain's share of history begins: the latest along it, so a
/// member admitted to history from some time cannot admit another (itself
/// under a second key, say) to more.
pub fn history_from(chain: &[Admission]) -> u64 {
    chain
        .iter()
        .map(|a| a.history_from_millis)
        .max()
        .unwrap_or(0)
}

/// The member the links of `chain` admit into `network` (the last link
/// need not be accepted yet: an unused invitation). No static key is checked.
pub fn verify_links(network: &[u8; 32], chain: &[Admission]) -> Result<Member, CredentialError> {
    let invite_keys = verify_chain(network, chain, false)?;
    let own = chain.last().expect("a verified chain is not empty");
    let identity = key32(&own.identity_key, "identity_key").unwrap_or_default();
    Ok(Member {
        name: own.name.clone(),
        identity,
        invite_keys: with_leave_key(invite_keys, &identity),
        history_from_millis: history_from(chain),
    })
}

/// The member an accepted chain admits into `network`: like
/// [`verify_links`], with the last link's acceptance and identity
/// signature checked too (what a relayed author chain must show: without
/// them anyone could put its own key under another's admission). No static
/// key is checked.
pub fn verify_accepted_links(
    network: &[u8; 32],
    chain: &[Admission],
) -> Result<Member, CredentialError> {
    let invite_keys = verify_chain(network, chain, true)?;
    let own = chain.last().expect("a verified chain is not empty");
    let identity = key32(&own.identity_key, "identity_key")?;
    Ok(Member {
        name: own.name.clone(),
        identity,
        invite_keys: with_leave_key(invite_keys, &identity),
        history_from_millis: history_from(chain),
    })
}

/// A new admission of `name` into `network`, signed by `issuer`, with its
/// one-time invitation key.
fn issue(
    issuer: &SigningKey,
    network: [u8; 32],
    name: &str,
    now_millis: u64,
    history_from_millis: u64,
) -> (Admission, SigningKey) {
    let invite = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let mut admission = Admission {
        network: network.to_vec(),
        name: name.to_owned(),
        invite_key: invite.verifying_key().to_bytes().to_vec(),
        issued_at_millis: now_millis,
        history_from_millis,
        issuer: issuer.verifying_key().to_bytes().to_vec(),
        ..Default::default()
    };
    admission.issuer_signature = issuer
        .sign(&invitation_signed(&admission))
        .to_bytes()
        .to_vec();
    (admission, invite)
}

/// `admission` accepted by `identity` with the invitation key, and the
/// credential it completes for `static_key`.
fn accept(
    chain: Vec<Admission>,
    mut admission: Admission,
    invite: &SigningKey,
    identity: &SigningKey,
    static_key: &[u8; 32],
) -> Credential {
    admission.identity_key = identity.verifying_key().to_bytes().to_vec();
    admission.acceptance = invite
        .sign(&acceptance_signed(&admission))
        .to_bytes()
        .to_vec();
    complete(chain, admission, identity, static_key)
}

/// The member's part of an accepted link: its identity's signature over
/// the acceptance, and over its static key.
fn complete(
    mut chain: Vec<Admission>,
    mut admission: Admission,
    identity: &SigningKey,
    static_key: &[u8; 32],
) -> Credential {
    let accepted = acceptance_signed(&admission);
    admission.identity_signature = identity.sign(&accepted).to_bytes().to_vec();
    let signed = static_key_signed(&admission.network, &admission.name, static_key);
    chain.push(admission);
    Credential {
        chain,
        static_key_signature: identity.sign(&signed).to_bytes().to_vec(),
    }
}

/// Founds a network named by `identity`'s key, with `name` as its first
/// member (all history is its own).
pub fn found(
    identity: &SigningKey,
    name: &str,
    static_key: &[u8; 32],
    now_millis: u64,
) -> Credential {
    let network = identity.verifying_key().to_bytes();
    let (admission, invite) = issue(identity, network, name, now_millis, 0);
    let mut credential = accept(Vec::new(), admission, &invite, identity, static_key);
    // The founder is its own issuer: it confirms its own use.
    if let Some(own) = credential.chain.last_mut() {
        own.confirmation = confirm(identity, own);
    }
    credential
}

/// Signs `static_key` into `credential` with `identity`, if `identity` is
/// the one it admits (a peer whose X25519 key was replaced keeps its
/// admission: its identity certifies the new key). False if it is not.
pub fn certify_static_key(
    identity: &SigningKey,
    credential: &mut Credential,
    static_key: &[u8; 32],
) -> bool {
    let Some(own) = credential.chain.last() else {
        return false;
    };
    if own.identity_key.as_slice() != identity.verifying_key().as_bytes() {
        return false;
    }
    let signed = static_key_signed(&own.network, &own.name, static_key);
    credential.static_key_signature = identity.sign(&signed).to_bytes().to_vec();
    true
}

/// The network `credential` is a member of.
pub fn network_of(credential: &Credential) -> Result<[u8; 32], CredentialError> {
    let first = credential
        .chain
        .first()
        .ok_or(CredentialError::ChainLength(0))?;
    key32(&first.network, "network")
}

/// An invitation for `name` from the member holding `identity` and `own`
/// credential; history is shared from `history_from_millis` (0 = all).
pub fn invite(
    identity: &SigningKey,
    own: &Credential,
    name: &str,
    now_millis: u64,
    history_from_millis: u64,
) -> Result<Invitation, CredentialError> {
    let network = network_of(own)?;
    let (admission, invite) = issue(identity, network, name, now_millis, history_from_millis);
    Ok(Invitation {
        admission: Some(admission),
        issuer_chain: own.chain.clone(),
        invite_secret: invite.to_bytes().to_vec(),
    })
}

/// An invitation for `name` bound to the newcomer's identity key
/// `newcomer` (`chat invite NAME --key KEY`): the inviter accepts it with
/// the invitation key itself, for that identity, and the token carries no
/// secret. Only the holder of `newcomer`'s private key can join with it
/// (its own signature completes the link), so it is single-use by
/// construction and a copy of the token is worth nothing.
pub fn invite_bound(
    identity: &SigningKey,
    own: &Credential,
    name: &str,
    newcomer: &[u8; 32],
    now_millis: u64,
    history_from_millis: u64,
) -> Result<Invitation, CredentialError> {
    VerifyingKey::from_bytes(newcomer).map_err(|_| CredentialError::BadKey("identity_key"))?;
    let network = network_of(own)?;
    let (mut admission, invite) = issue(identity, network, name, now_millis, history_from_millis);
    admission.identity_key = newcomer.to_vec();
    admission.acceptance = invite
        .sign(&acceptance_signed(&admission))
        .to_bytes()
        .to_vec();
    // Bound to one identity, its use is known now: confirmed at once.
    admission.confirmation = confirm(identity, &admission);
    Ok(Invitation {
        admission: Some(admission),
        issuer_chain: own.chain.clone(),
        invite_secret: Vec::new(),
    })
}

/// Joins with `invitation` as `name`: checks it, and accepts it with
/// `identity` for `static_key` (a bound invitation, see [`invite_bound`],
/// only with the identity it is bound to).
pub fn join(
    invitation: &Invitation,
    identity: &SigningKey,
    name: &str,
    static_key: &[u8; 32],
) -> Result<Credential, CredentialError> {
    let admission = invitation
        .admission
        .clone()
        .ok_or(CredentialError::Malformed("invitation"))?;
    if admission.name != name {
        return Err(CredentialError::WrongName {
            admitted: admission.name,
            claimed: name.to_owned(),
        });
    }
    let network = key32(&admission.network, "network")?;
    let mut chain = invitation.issuer_chain.clone();
    chain.push(admission.clone());
    verify_chain(&network, &chain, false)?;
    if !admission.identity_key.is_empty() {
        let own = identity.verifying_key().to_bytes();
        if admission.identity_key != own {
            return Err(CredentialError::BoundToAnother {
                bound: chat_proto::keys::fingerprint(&admission.identity_key),
                own: chat_proto::keys::fingerprint(&own),
            });
        }
        chain.pop();
        let credential = complete(chain, admission, identity, static_key);
        verify_chain(&network, &credential.chain, true)?;
        return Ok(credential);
    }
    let secret = key32(&invitation.invite_secret, "invite_secret")?;
    let invite = SigningKey::from_bytes(&secret);
    if invite.verifying_key().to_bytes().as_slice() != admission.invite_key {
        return Err(CredentialError::Malformed(
            "invitation (its secret is not its key's)",
        ));
    }
    chain.pop();
    Ok(accept(chain, admission, &invite, identity, static_key))
}

/// The token for `invitation`: [`TOKEN_PREFIX`] and base64url of its bytes.
pub fn encode_token(invitation: &Invitation) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{TOKEN_PREFIX}{}", b64.encode(invitation.encode_to_vec()))
}

/// The invitation in `token`.
pub fn decode_token(token: &str) -> Result<Invitation, CredentialError> {
    let body = token
        .trim()
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(CredentialError::Malformed(
            "token: it starts with p2pchat-invite:",
        ))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| CredentialError::Malformed("token: not base64url"))?;
    Invitation::decode(bytes.as_slice()).map_err(|_| CredentialError::Malformed("token"))
}

fn leave_signed(network: &[u8], left: &Admission, at_millis: u64) -> Vec<u8> {
    to_be_signed(
        LEAVE_CONTEXT,
        &[
            network,
            &left.identity_key,
            left.name.as_bytes(),
            &at_millis.to_be_bytes(),
        ],
    )
}

/// A leave: the member whose identity is `identity` and whose admission
/// is the last of `chain` leaves the network at `at_millis` (a removal of
/// itself, signed by itself).
pub fn leave(
    identity: &SigningKey,
    chain: Vec<Admission>,
    at_millis: u64,
) -> Result<Removal, CredentialError> {
    signed_removal(identity, chain, at_millis, leave_signed)
}

/// A removal of the last admission of `chain`, by `by` at `at_millis`.
pub fn remove(
    by: &SigningKey,
    chain: Vec<Admission>,
    at_millis: u64,
) -> Result<Removal, CredentialError> {
    signed_removal(by, chain, at_millis, removal_signed)
}

/// A `Removal` of the last admission of `chain` by `by` at `at_millis`,
/// signed over what `signed` makes of (network, that admission, time), and
/// checked as any received one is.
fn signed_removal(
    by: &SigningKey,
    chain: Vec<Admission>,
    at_millis: u64,
    signed: fn(&[u8], &Admission, u64) -> Vec<u8>,
) -> Result<Removal, CredentialError> {
    let network = key32(
        &chain
            .first()
            .ok_or(CredentialError::ChainLength(0))?
            .network,
        "network",
    )?;
    let last = chain.last().expect("not empty");
    let signature = by
        .sign(&signed(&network, last, at_millis))
        .to_bytes()
        .to_vec();
    let removal = Removal {
        chain,
        by: by.verifying_key().to_bytes().to_vec(),
        at_millis,
        signature,
    };
    verify_removal(&network, &removal)?;
    Ok(removal)
}

/// Checks a removal in `network`; returns the revoked invitation key and
/// the removed name. The cheap checks come first: the remover must be an
/// issuer in the chain, and its signature must verify, before the chain's
/// signatures are checked.
pub fn verify_removal(
    network: &[u8; 32],
    removal: &Removal,
) -> Result<([u8; 32], String), CredentialError> {
    let Some(removed) = removal.chain.last() else {
        return Err(CredentialError::ChainLength(0));
    };
    if removal.chain.len() > MAX_CHAIN {
        return Err(CredentialError::ChainLength(removal.chain.len()));
    }
    // The founder's own admission (issued by the network, admitting the
    // network's key) is never revoked.
    if removal.chain.len() < 2
        || (removed.issuer.as_slice() == network && removed.identity_key.as_slice() == network)
    {
        return Err(CredentialError::Founder);
    }
    // A leave: the removed admission's own identity, of itself; its leave
    // key is revoked, not its invitation key (those it admitted stay).
    if is_leave(removal) {
        verify(
            &removal.by,
            &leave_signed(network, removed, removal.at_millis),
            &removal.signature,
            "the leave signature",
            removal.chain.len() - 1,
        )?;
        verify_chain(network, &removal.chain, true)?;
        return Ok((revoked_key(removal)?, removed.name.clone()));
    }
    // The founder (the first issuer) or an issuer at or above the removed one.
    if !removal.chain.iter().any(|a| a.issuer == removal.by) {
        return Err(CredentialError::NotAllowed(removed.name.clone()));
    }
    verify(
        &removal.by,
        &removal_signed(network, removed, removal.at_millis),
        &removal.signature,
        "the removal signature",
        removal.chain.len() - 1,
    )?;
    let invite_keys = verify_chain(network, &removal.chain, false)?;
    Ok((
        *invite_keys.last().expect("not empty"),
        removed.name.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&rand::random::<[u8; 32]>())
    }

    const S: [u8; 32] = [9; 32];

    /// Issue 26, item 1: an invitation bound to the newcomer's identity key
    /// carries no secret, only that identity can join with it, and moving
    /// it to another key breaks the inviter's acceptance.
    #[test]
    fn a_bound_invitation_admits_only_its_identity() {
        let (alice, erin, thief) = (key(), key(), key());
        let a = found(&alice, "alice", &S, 1);
        let network = network_of(&a).unwrap();
        let erin_key = erin.verifying_key().to_bytes();
        let invitation = invite_bound(&alice, &a, "erin", &erin_key, 2, 0).unwrap();
        assert!(invitation.invite_secret.is_empty(), "no bearer secret");
        let token = encode_token(&invitation);
        let decoded = decode_token(&token).unwrap();

        let e = join(&decoded, &erin, "erin", &S).unwrap();
        let member = verify_credential(&network, &e, "erin", &S).unwrap();
        assert_eq!(member.identity, erin_key);

        // Anyone else holding the token: refused, naming both numbers.
        assert_eq!(
            join(&decoded, &thief, "erin", &S).unwrap_err(),
            CredentialError::BoundToAnother {
                bound: chat_proto::keys::fingerprint(&erin_key),
                own: chat_proto::keys::fingerprint(&thief.verifying_key().to_bytes()),
            }
        );
        // Rewriting the bound key to the thief's: the acceptance no longer
        // verifies, so the credential is refused everywhere.
        let mut moved = decoded.clone();
        moved.admission.as_mut().unwrap().identity_key = thief.verifying_key().to_bytes().to_vec();
        let forged = join(&moved, &thief, "erin", &S);
        assert!(forged.is_err(), "{forged:?}");
    }

    /// Issue 26, item 5: a leave is a removal of oneself, signed by
    /// oneself; it revokes the leaver's leave key, not its invitation key,
    /// so whoever it admitted stays. Nobody else can sign one for it, and
    /// the founder cannot leave.
    #[test]
    fn a_leave_removes_only_the_leaver_and_only_the_leaver_can_sign_it() {
        let (alice, bob, carol) = (key(), key(), key());
        let a = found(&alice, "alice", &S, 1);
        let network = network_of(&a).unwrap();
        let b = join(&invite(&alice, &a, "bob", 2, 0).unwrap(), &bob, "bob", &S).unwrap();
        let c = join(
            &invite(&bob, &b, "carol", 3, 0).unwrap(),
            &carol,
            "carol",
            &S,
        )
        .unwrap();
        let bob_member = verify_credential(&network, &b, "bob", &S).unwrap();
        let carol_member = verify_credential(&network, &c, "carol", &S).unwrap();

        let left = leave(&bob, b.chain.clone(), 10).unwrap();
        assert!(is_leave(&left));
        let (revoked, name) = verify_removal(&network, &left).unwrap();
        assert_eq!(name, "bob");
        assert_eq!(revoked, leave_key(&bob.verifying_key().to_bytes()));
        assert!(bob_member.invite_keys.contains(&revoked));
        assert!(
            !carol_member.invite_keys.contains(&revoked),
            "bob's invitee stays a member"
        );
        // A removal of bob by alice revokes his invitation key, which
        // carol's chain holds too.
        let removed = remove(&alice, b.chain.clone(), 10).unwrap();
        let (revoked, _) = verify_removal(&network, &removed).unwrap();
        assert!(carol_member.invite_keys.contains(&revoked));

        // Tampered: another time, another name's chain, another signer.
        let mut later = left.clone();
        later.at_millis += 1;
        assert!(verify_removal(&network, &later).is_err());
        let mut theirs = left.clone();
        theirs.chain = c.chain.clone();
        assert!(verify_removal(&network, &theirs).is_err());
        assert!(leave(&carol, b.chain.clone(), 10).is_err());
        // The founder's own admission is never revoked, by a leave either.
        assert_eq!(
            leave(&alice, a.chain.clone(), 10).unwrap_err(),
            CredentialError::Founder
        );
    }

    #[test]
    fn founder_invites_member_invites_member_and_each_verifies() {
        let (alice, bob, carol) = (key(), key(), key());
        let a = found(&alice, "alice", &S, 1);
        let network = network_of(&a).unwrap();
        assert_eq!(network, alice.verifying_key().to_bytes());
        verify_credential(&network, &a, "alice", &S).unwrap();
        let token = encode_token(&invite(&alice, &a, "bob", 2, 0).unwrap());
        let b = join(&decode_token(&token).unwrap(), &bob, "bob", &[7; 32]).unwrap();
        let member = verify_credential(&network, &b, "bob", &[7; 32]).unwrap();
        // The founder's and bob's invitation keys, and bob's leave key.
        assert_eq!(member.invite_keys.len(), 3);
        assert_eq!(
            member.invite_keys[2],
            leave_key(&bob.verifying_key().to_bytes())
        );
        assert_eq!(member.identity, bob.verifying_key().to_bytes());
        let c = join(
            &invite(&bob, &b, "carol", 3, 3).unwrap(),
            &carol,
            "carol",
            &S,
        )
        .unwrap();
        let member = verify_credential(&network, &c, "carol", &S).unwrap();
        assert_eq!(member.history_from_millis, 3);

        // Wrong name, wrong static key, another network, a token for someone else.
        assert!(matches!(
            verify_credential(&network, &c, "alice", &S),
            Err(CredentialError::WrongName { .. })
        ));
        assert_eq!(
            verify_credential(&network, &c, "carol", &[1; 32]),
            Err(CredentialError::StaticKeyNotSigned)
        );
        let elsewhere = found(&key(), "alice", &S, 1);
        assert!(matches!(
            verify_credential(&network, &elsewhere, "alice", &S),
            Err(CredentialError::OtherNetwork(_))
        ));
        assert!(matches!(
            join(&decode_token(&token).unwrap(), &bob, "eve", &S),
            Err(CredentialError::WrongName { .. })
        ));
    }

    #[test]
    fn forged_or_tampered_credentials_are_refused() {
        let (alice, bob, mallory) = (key(), key(), key());
        let a = found(&alice, "alice", &S, 1);
        let network = network_of(&a).unwrap();
        let b = join(&invite(&alice, &a, "bob", 2, 0).unwrap(), &bob, "bob", &S).unwrap();
        // Mallory admits herself, claiming alice as the issuer.
        let mut forged = b.clone();
        forged.chain[1].identity_key = mallory.verifying_key().to_bytes().to_vec();
        assert!(matches!(
            verify_credential(&network, &forged, "bob", &S),
            Err(CredentialError::BadSignature { at: 1, .. })
        ));
        // A renamed admission.
        let mut renamed = b.clone();
        renamed.chain[1].name = "mallory".into();
        assert!(matches!(
            verify_credential(&network, &renamed, "mallory", &S),
            Err(CredentialError::BadSignature { at: 1, .. })
        ));
        // Mallory's own network, spliced under alice's founder link.
        let m = found(&mallory, "mallory", &S, 1);
        let mut spliced = m.clone();
        spliced.chain.insert(0, a.chain[0].clone());
        assert!(verify_credential(&network, &spliced, "mallory", &S).is_err());
        // A token whose secret was swapped cannot be accepted.
        let mut inv = invite(&alice, &a, "bob", 2, 0).unwrap();
        inv.invite_secret = vec![1; 32];
        assert!(join(&inv, &bob, "bob", &S).is_err());
        assert_eq!(
            decode_token("hello").unwrap_err(),
            CredentialError::Malformed("token: it starts with p2pchat-invite:")
        );
    }

    /// The review's attack: mallory puts the founder's key under a link of
    /// her own, so she seems to be above the founder's admission, and
    /// removes it. Without the admitted identity's signature on every link
    /// it verified, and revoked everyone.
    #[test]
    fn nobody_can_splice_another_key_under_a_link_of_their_own() {
        let (alice, mallory) = (key(), key());
        let a = found(&alice, "alice", &S, 1);
        let network = network_of(&a).unwrap();
        let m = join(
            &invite(&alice, &a, "mallory", 2, 0).unwrap(),
            &mallory,
            "mallory",
            &S,
        )
        .unwrap();
        // Link Z: issued by mallory, her own invitation key, admitting alice's key.
        let (mut z, z_invite) = issue(&mallory, network, "alice", 3, 0);
        z.identity_key = alice.verifying_key().to_bytes().to_vec();
        z.acceptance = z_invite.sign(&acceptance_signed(&z)).to_bytes().to_vec();
        z.identity_signature = vec![0; 64]; // she cannot make alice's
        let mut chain = m.chain.clone();
        chain.push(z);
        chain.push(a.chain[0].clone());
        let signature = mallory
            .sign(&removal_signed(&network, &a.chain[0], 5))
            .to_bytes()
            .to_vec();
        let forged = Removal {
            chain,
            by: mallory.verifying_key().to_bytes().to_vec(),
            at_millis: 5,
            signature,
        };
        assert!(verify_removal(&network, &forged).is_err());
        // The same splice against bob, whom alice admitted: refused because
        // alice never signed link Z.
        let bob = key();
        let b = join(&invite(&alice, &a, "bob", 2, 0).unwrap(), &bob, "bob", &S).unwrap();
        let mut chain = forged.chain.clone();
        chain.pop();
        chain.push(b.chain[1].clone());
        let signature = mallory
            .sign(&removal_signed(&network, &b.chain[1], 5))
            .to_bytes()
            .to_vec();
        let against_bob = Removal {
            chain,
            by: mallory.verifying_key().to_bytes().to_vec(),
            at_millis: 5,
            signature,
        };
        assert!(matches!(
            verify_removal(&network, &against_bob),
            Err(CredentialError::BadSignature {
                what: "the admitted identity's signature",
                ..
            })
        ));
        // Nor the founder's link directly, by anyone.
        assert_eq!(
            remove(&alice, vec![a.chain[0].clone(), a.chain[0].clone()], 6).unwrap_err(),
            CredentialError::Founder
        );
    }

    #[test]
    fn history_starts_at_the_latest_point_along_the_chain() {
        let (alice, bob, bob2) = (key(), key(), key());
        let a = found(&alice, "alice", &S, 1);
        let network = network_of(&a).unwrap();
        let b = join(
            &invite(&alice, &a, "bob", 100, 100).unwrap(),
            &bob,
            "bob",
            &S,
        )
        .unwrap();
        // Bob admits a second key of his own "with all history".
        let b2 = join(
            &invite(&bob, &b, "bob2", 200, 0).unwrap(),
            &bob2,
            "bob2",
            &S,
        )
        .unwrap();
        let member = verify_credential(&network, &b2, "bob2", &S).unwrap();
        assert_eq!(member.history_from_millis, 100);
    }

    #[test]
    fn removal_is_for_the_founder_or_an_issuer_above() {
        let (alice, bob, carol, dave) = (key(), key(), key(), key());
        let a = found(&alice, "alice", &S, 1);
        let network = network_of(&a).unwrap();
        let b = join(&invite(&alice, &a, "bob", 2, 0).unwrap(), &bob, "bob", &S).unwrap();
        let c = join(
            &invite(&bob, &b, "carol", 3, 0).unwrap(),
            &carol,
            "carol",
            &S,
        )
        .unwrap();
        let d = join(
            &invite(&alice, &a, "dave", 3, 0).unwrap(),
            &dave,
            "dave",
            &S,
        )
        .unwrap();
        // Bob removes carol (he admitted her); alice removes carol (founder).
        for by in [&bob, &alice] {
            let r = remove(by, c.chain.clone(), 10).unwrap();
            let (revoked, name) = verify_removal(&network, &r).unwrap();
            assert_eq!(name, "carol");
            assert_eq!(revoked.as_slice(), c.chain[2].invite_key);
        }
        // Dave did not admit carol; carol cannot remove bob; nobody removes the founder.
        assert_eq!(
            remove(&dave, c.chain.clone(), 10).unwrap_err(),
            CredentialError::NotAllowed("carol".into())
        );
        assert!(remove(&carol, b.chain.clone(), 10).is_err());
        assert_eq!(
            remove(&alice, a.chain.clone(), 10).unwrap_err(),
            CredentialError::Founder
        );
        // An unused invitation can be revoked by its issuer.
        let unused = invite(&alice, &a, "erin", 4, 0).unwrap();
        let mut chain = unused.issuer_chain.clone();
        chain.push(unused.admission.unwrap());
        remove(&alice, chain, 11).unwrap();
        // A tampered removal fails.
        let mut r = remove(&alice, d.chain.clone(), 10).unwrap();
        r.at_millis += 1;
        assert!(verify_removal(&network, &r).is_err());
    }
}
