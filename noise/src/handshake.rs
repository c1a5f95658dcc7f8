//! The `Noise_IK_25519_ChaChaPoly_SHA256` handshake (spec §5.3, §7.5) as an
//! explicit state machine per role.
//!
//! ```text
//! IK:
//!   <- s
//!   ...
//!   -> e, es, s, ss
//!   <- e, ee, se
//! ```
//!
//! Initiator: [`Initiator`] --`write_message`--> [`InitiatorWaiting`]
//! --`read_message`--> [`Transport`].
//!
//! Responder: [`Responder::read_message`] --> [`ResponderPending`] (the
//! caller inspects the initiator's static key and payload) --`write_message`-->
//! [`Transport`].
//!
//! Work that does not depend on the other side's next message can be done
//! ahead of time, off the latency path, with the same result the spec's
//! order gives: [`Initiator::new`] already runs `e, es, s, ss` (only the
//! payload is left for `write_message`); a [`StaticDh`] keeps `ss` per peer
//! (as WireGuard keeps its static-static DH); a [`ResponderPrecomputed`]
//! holds a responder's ephemeral key and `se` for one expected initiator,
//! used only once that initiator is accepted. Every ephemeral key serves one
//! handshake only.
//!
//! Every transition consumes the previous state, so a state can never be used
//! twice and a failed step aborts the handshake (spec §5.3: WriteMessage and
//! ReadMessage perform their steps "aborting if any EncryptAndHash()" /
//! "DecryptAndHash() call returns an error"). No message is ever sliced
//! without a length check.
//!
//! Security note on the first payload (spec §7.7, IK message 1: source
//! property 1, destination property 2): it is encrypted to the responder's
//! static key and authenticated by the initiator's static key, but it can be
//! *replayed* by an attacker, is not forward secret against compromise of the
//! responder's static key, and its sender authentication is open to
//! key-compromise impersonation (whoever holds the responder's static key can
//! forge message 1 from any initiator). Do not act on it in a non-idempotent
//! way before the handshake completes.

use core::fmt;

use crate::error::NoiseError;
use std::sync::Arc;
use x25519_dalek::SharedSecret;

use crate::keys::{HexBytes, PUBLIC_KEY_LEN, SECRET_KEY_LEN, StaticKeypair};
use crate::session::Transport;
use crate::symmetric::{MAX_MESSAGE_LEN, SymmetricState, TAG_LEN};

/// The full Noise protocol name (spec §8), hashed into the initial state.
pub const PROTOCOL_NAME: &str = "Noise_IK_25519_ChaChaPoly_SHA256";

/// Length of the encrypted static key in message 1: the 32-byte public key
/// plus its authentication tag (`-> s` after `es`, so it is encrypted).
const ENCRYPTED_STATIC_LEN: usize = PUBLIC_KEY_LEN + TAG_LEN;

/// Smallest IK message 1 (`-> e, es, s, ss` with an empty payload):
/// `e` (32) + encrypted `s` (32 + 16) + payload tag (16) = 96 bytes.
pub const INITIATION_MIN_LEN: usize = PUBLIC_KEY_LEN + ENCRYPTED_STATIC_LEN + TAG_LEN;

/// Smallest IK message 2 (`<- e, ee, se` with an empty payload):
/// `e` (32) + payload tag (16) = 48 bytes.
pub const RESPONSE_MIN_LEN: usize = PUBLIC_KEY_LEN + TAG_LEN;

/// Largest payload that fits in message 1 without exceeding the 65535-byte
/// Noise message limit.
pub const MAX_INITIATION_PAYLOAD_LEN: usize = MAX_MESSAGE_LEN - INITIATION_MIN_LEN;

/// Largest payload that fits in message 2 without exceeding the 65535-byte
/// Noise message limit.
pub const MAX_RESPONSE_PAYLOAD_LEN: usize = MAX_MESSAGE_LEN - RESPONSE_MIN_LEN;

/// Runs `Initialize()` (spec §5.3) for IK: both roles start from the same
/// state, which already commits to the prologue and the responder's static key.
fn initialize(prologue: &[u8], responder_static: &[u8; PUBLIC_KEY_LEN]) -> SymmetricState {
    // "Calls InitializeSymmetric(protocol_name)."
    let mut symmetric = SymmetricState::initialize(PROTOCOL_NAME.as_bytes());
    // "Calls MixHash(prologue)."
    symmetric.mix_hash(prologue);
    // "Calls MixHash() once for each public key listed in the pre-messages
    // from handshake_pattern": IK's pre-message is `<- s`, the responder's
    // static public key.
    symmetric.mix_hash(responder_static);
    symmetric
}

/// Checks a received message's length against `minimum` and the Noise maximum.
fn check_received_len(message: &[u8], minimum: usize) -> Result<(), NoiseError> {
    if message.len() < minimum {
        return Err(NoiseError::Truncated {
            actual: message.len(),
            minimum,
        });
    }
    if message.len() > MAX_MESSAGE_LEN {
        return Err(NoiseError::MessageTooLarge {
            actual: message.len(),
            maximum: MAX_MESSAGE_LEN,
        });
    }
    Ok(())
}

/// Checks that a message of `overhead + payload_len` bytes stays within the
/// Noise maximum.
fn check_outgoing_len(overhead: usize, payload_len: usize) -> Result<(), NoiseError> {
    let actual = overhead.saturating_add(payload_len);
    if actual > MAX_MESSAGE_LEN {
        return Err(NoiseError::MessageTooLarge {
            actual,
            maximum: MAX_MESSAGE_LEN,
        });
    }
    Ok(())
}

/// Splits the leading public key off `message`.
fn take_public_key(message: &[u8]) -> Result<([u8; PUBLIC_KEY_LEN], &[u8]), NoiseError> {
    let (key, rest) =
        message
            .split_first_chunk::<PUBLIC_KEY_LEN>()
            .ok_or(NoiseError::Truncated {
                actual: message.len(),
                minimum: PUBLIC_KEY_LEN,
            })?;
    Ok((*key, rest))
}

/// IK initiator, before sending message 1. Knows the responder's static key.
///
/// Made with the tokens before the payload already run, so it can be built
/// ahead of time; `write_message` consumes it, so its ephemeral key serves
/// one handshake.
pub struct Initiator {
    /// Message 1 up to its payload (`e` and the encrypted `s`) and the
    /// symmetric state after `ss`, or the error one of those tokens hit.
    prepared: Result<(SymmetricState, Vec<u8>), NoiseError>,
    /// `s`: the local static key pair.
    s: StaticKeypair,
    /// `e`: the ephemeral key pair to send in message 1.
    e: StaticKeypair,
    /// `rs`: the responder's static public key.
    rs: [u8; PUBLIC_KEY_LEN],
}

impl Initiator {
    /// Starts IK toward a responder whose static key is known, with a fresh
    /// random ephemeral key. Both sides must use the same `prologue`.
    ///
    /// This runs message 1's `e, es, s, ss` tokens now (three X25519
    /// operations), so it can be called before the message is needed.
    ///
    /// A low-order `remote_static` is reported when message 1 is written
    /// ([`NoiseError::LowOrderDh`]); use [`crate::validate_public_key`] to
    /// check untrusted keys earlier.
    #[must_use]
    pub fn new(
        local: &StaticKeypair,
        remote_static: [u8; PUBLIC_KEY_LEN],
        prologue: &[u8],
    ) -> Self {
        Self::with_ephemeral_keypair(
            local,
            remote_static,
            prologue,
            StaticKeypair::generate(),
            None,
        )
    }

    /// Like [`Initiator::new`] toward the peer `statics` was made for, taking `ss` from
    /// `statics` instead of computing it (two X25519 operations instead of
    /// three). A `statics` made for another local key pair is not used.
    #[must_use]
    pub fn with_static(local: &StaticKeypair, statics: &StaticDh, prologue: &[u8]) -> Self {
        Self::with_ephemeral_keypair(
            local,
            statics.remote,
            prologue,
            StaticKeypair::generate(),
            Some(statics),
        )
    }

    /// Like [`Initiator::with_static`] but with a fixed ephemeral private
    /// key.
    ///
    /// For test vectors only: reusing an ephemeral key destroys the
    /// handshake's security.
    #[doc(hidden)]
    #[must_use]
    pub fn with_static_and_ephemeral(
        local: &StaticKeypair,
        statics: &StaticDh,
        prologue: &[u8],
        ephemeral_secret: [u8; SECRET_KEY_LEN],
    ) -> Self {
        Self::with_ephemeral_keypair(
            local,
            statics.remote,
            prologue,
            StaticKeypair::from_secret_bytes(ephemeral_secret),
            Some(statics),
        )
    }

    /// Like [`Initiator::new`] but with a fixed ephemeral private key.
    ///
    /// For test vectors only: reusing an ephemeral key destroys the
    /// handshake's security.
    #[doc(hidden)]
    #[must_use]
    pub fn with_ephemeral(
        local: &StaticKeypair,
        remote_static: [u8; PUBLIC_KEY_LEN],
        prologue: &[u8],
        ephemeral_secret: [u8; SECRET_KEY_LEN],
    ) -> Self {
        Self::with_ephemeral_keypair(
            local,
            remote_static,
            prologue,
            StaticKeypair::from_secret_bytes(ephemeral_secret),
            None,
        )
    }

    /// Shared constructor.
    fn with_ephemeral_keypair(
        local: &StaticKeypair,
        remote_static: [u8; PUBLIC_KEY_LEN],
        prologue: &[u8],
        e: StaticKeypair,
        statics: Option<&StaticDh>,
    ) -> Self {
        let s = local.clone();
        let ss = statics.and_then(|st| st.for_keys(&s, &remote_static));
        let prepared = Self::tokens_before_payload(
            initialize(prologue, &remote_static),
            &s,
            &e,
            &remote_static,
            ss,
        );
        Self {
            prepared,
            s,
            e,
            rs: remote_static,
        }
    }

    /// Message 1's `e, es, s, ss` (spec §5.3 WriteMessage, in order).
    fn tokens_before_payload(
        mut symmetric: SymmetricState,
        s: &StaticKeypair,
        e: &StaticKeypair,
        rs: &[u8; PUBLIC_KEY_LEN],
        ss: Option<&SharedSecret>,
    ) -> Result<(SymmetricState, Vec<u8>), NoiseError> {
        let mut message = Vec::with_capacity(INITIATION_MIN_LEN + 128);

        // e: "Sets e (which must be empty) to GENERATE_KEYPAIR(). Appends
        // e.public_key to the buffer. Calls MixHash(e.public_key)."
        let e_public = e.public_key();
        message.extend_from_slice(&e_public);
        symmetric.mix_hash(&e_public);

        // es: "Calls MixKey(DH(e, rs)) if initiator".
        symmetric.mix_key(e.dh(rs)?.as_bytes());

        // s: "Appends EncryptAndHash(s.public_key) to the buffer."
        message.extend_from_slice(&symmetric.encrypt_and_hash(&s.public_key())?);

        // ss: "Calls MixKey(DH(s, rs))." (Perhaps computed once before.)
        match ss {
            Some(ss) => symmetric.mix_key(ss.as_bytes()),
            None => symmetric.mix_key(s.dh(rs)?.as_bytes()),
        }
        Ok((symmetric, message))
    }

    /// The responder's static key this initiation is for.
    #[must_use]
    pub fn remote_static(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.rs
    }

    /// Writes message 1, `-> e, es, s, ss`, carrying `payload`. Returns the
    /// message and the state awaiting the response.
    ///
    /// # Errors
    ///
    /// [`NoiseError::MessageTooLarge`] if the payload exceeds
    /// [`MAX_INITIATION_PAYLOAD_LEN`]; [`NoiseError::LowOrderDh`] if the
    /// responder's static key is a low-order point.
    pub fn write_message(self, payload: &[u8]) -> Result<(Vec<u8>, InitiatorWaiting), NoiseError> {
        check_outgoing_len(INITIATION_MIN_LEN, payload.len())?;
        let Self { prepared, s, e, rs } = self;
        // e, es, s, ss: run when this initiator was made.
        let (mut symmetric, mut message) = prepared?;

        // payload: "Appends EncryptAndHash(payload) to the buffer."
        message.extend_from_slice(&symmetric.encrypt_and_hash(payload)?);

        Ok((
            message,
            InitiatorWaiting {
                symmetric,
                s,
                e,
                rs,
            },
        ))
    }
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field(
                "symmetric",
                &self.prepared.as_ref().map(|(symmetric, _)| symmetric),
            )
            .field("s", &self.s)
            .field("e", &self.e)
            .field("rs", &HexBytes(&self.rs))
            .finish()
    }
}

/// IK initiator after sending message 1, waiting for message 2.
pub struct InitiatorWaiting {
    /// Symmetric state after message 1.
    symmetric: SymmetricState,
    /// `s`: the local static key pair.
    s: StaticKeypair,
    /// `e`: the ephemeral key pair sent in message 1.
    e: StaticKeypair,
    /// `rs`: the responder's static public key.
    rs: [u8; PUBLIC_KEY_LEN],
}

impl InitiatorWaiting {
    /// Reads message 2, `<- e, ee, se`. Returns the responder's payload and
    /// the transport keys.
    ///
    /// # Errors
    ///
    /// [`NoiseError::Truncated`] / [`NoiseError::MessageTooLarge`] for bad
    /// lengths, [`NoiseError::LowOrderDh`] for a low-order ephemeral key,
    /// [`NoiseError::Decrypt`] if the message was not produced by the
    /// expected responder for this message 1 (or was tampered with).
    pub fn read_message(self, message: &[u8]) -> Result<(Vec<u8>, Transport), NoiseError> {
        check_received_len(message, RESPONSE_MIN_LEN)?;
        let Self {
            mut symmetric,
            s,
            e,
            rs,
        } = self;

        // e: "Sets re (which must be empty) to the next DHLEN bytes from the
        // message. Calls MixHash(re.public_key)."
        let (re, rest) = take_public_key(message)?;
        symmetric.mix_hash(&re);

        // ee: "Calls MixKey(DH(e, re))."
        symmetric.mix_key(e.dh(&re)?.as_bytes());

        // se: "Calls MixKey(DH(s, re)) if initiator".
        symmetric.mix_key(s.dh(&re)?.as_bytes());

        // payload: "Calls DecryptAndHash() on the remaining bytes of the
        // message and stores the output into payload_buffer."
        let payload = symmetric.decrypt_and_hash(rest)?;

        // "If there are no more message patterns returns two new CipherState
        // objects by calling Split()." The initiator sends with c1.
        let (c1, c2, handshake_hash) = symmetric.split();
        Ok((payload, Transport::new(c1, c2, handshake_hash, rs)))
    }
}

impl fmt::Debug for InitiatorWaiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitiatorWaiting")
            .field("symmetric", &self.symmetric)
            .field("s", &self.s)
            .field("e", &self.e)
            .field("rs", &HexBytes(&self.rs))
            .finish()
    }
}

/// IK responder entry point: reads message 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct Responder;

impl Responder {
    /// Reads message 1, `-> e, es, s, ss`, addressed to `local`. Returns a
    /// state exposing the initiator's static key and payload, so the caller
    /// can decide (e.g. check the key against a directory) before answering.
    ///
    /// # Errors
    ///
    /// [`NoiseError::Truncated`] / [`NoiseError::MessageTooLarge`] for bad
    /// lengths, [`NoiseError::LowOrderDh`] for low-order keys,
    /// [`NoiseError::Decrypt`] if the message is not for `local` under this
    /// prologue (or was tampered with).
    pub fn read_message(
        local: &StaticKeypair,
        prologue: &[u8],
        message: &[u8],
    ) -> Result<ResponderPending, NoiseError> {
        Self::read_message_with_keypair(local, prologue, message, None, |_| None)
    }

    /// Like [`Responder::read_message`], with `ss` computed before: once
    /// message 1's `s` is decrypted, `known` is asked for the [`StaticDh`]
    /// of that key; a value made for other keys is not used. Nothing is
    /// consumed here: a forged or replayed message 1 costs no prepared work
    /// (see [`ResponderPending::write_message_precomputed`]).
    ///
    /// # Errors
    ///
    /// As [`Responder::read_message`].
    pub fn read_message_with_static(
        local: &StaticKeypair,
        prologue: &[u8],
        message: &[u8],
        known: impl FnOnce(&[u8; PUBLIC_KEY_LEN]) -> Option<Arc<StaticDh>>,
    ) -> Result<ResponderPending, NoiseError> {
        Self::read_message_with_keypair(local, prologue, message, None, known)
    }

    /// Like [`Responder::read_message`] but with a fixed ephemeral private
    /// key for message 2.
    ///
    /// For test vectors only: reusing an ephemeral key destroys the
    /// handshake's security.
    ///
    /// # Errors
    ///
    /// As [`Responder::read_message`].
    #[doc(hidden)]
    pub fn read_message_with_ephemeral(
        local: &StaticKeypair,
        prologue: &[u8],
        message: &[u8],
        ephemeral_secret: [u8; SECRET_KEY_LEN],
    ) -> Result<ResponderPending, NoiseError> {
        Self::read_message_with_keypair(
            local,
            prologue,
            message,
            Some(StaticKeypair::from_secret_bytes(ephemeral_secret)),
            |_| None,
        )
    }

    /// Shared implementation; unless `e` is supplied, message 2's
    /// ephemeral key is generated (or taken precomputed) when it is written.
    fn read_message_with_keypair(
        local: &StaticKeypair,
        prologue: &[u8],
        message: &[u8],
        e: Option<StaticKeypair>,
        known: impl FnOnce(&[u8; PUBLIC_KEY_LEN]) -> Option<Arc<StaticDh>>,
    ) -> Result<ResponderPending, NoiseError> {
        check_received_len(message, INITIATION_MIN_LEN)?;
        let s = local.clone();
        let mut symmetric = initialize(prologue, &s.public_key());

        // e: "Sets re (which must be empty) to the next DHLEN bytes from the
        // message. Calls MixHash(re.public_key)."
        let (re, rest) = take_public_key(message)?;
        symmetric.mix_hash(&re);

        // es: "MixKey(DH(s, re)) if responder."
        symmetric.mix_key(s.dh(&re)?.as_bytes());

        // s: "Sets temp to the next DHLEN + 16 bytes of the message if
        // HasKey() == True, or to the next DHLEN bytes otherwise. Sets rs
        // (which must be empty) to DecryptAndHash(temp)." (HasKey() is true
        // after es.)
        let (encrypted_static, rest) =
            rest.split_first_chunk::<ENCRYPTED_STATIC_LEN>()
                .ok_or(NoiseError::Truncated {
                    actual: message.len(),
                    minimum: INITIATION_MIN_LEN,
                })?;
        let rs: [u8; PUBLIC_KEY_LEN] = symmetric
            .decrypt_and_hash(encrypted_static)?
            .as_slice()
            .try_into()
            // Unreachable: a 48-byte ciphertext decrypts to 32 bytes.
            .map_err(|_| NoiseError::InvalidPublicKey)?;

        // ss: "Calls MixKey(DH(s, rs))." (DH(s, rs) may have been computed
        // before for this very rs and s.)
        match known(&rs).as_deref().and_then(|k| k.for_keys(&s, &rs)) {
            Some(ss) => symmetric.mix_key(ss.as_bytes()),
            None => symmetric.mix_key(s.dh(&rs)?.as_bytes()),
        }

        // payload: "Calls DecryptAndHash() on the remaining bytes of the
        // message and stores the output into payload_buffer."
        let payload = symmetric.decrypt_and_hash(rest)?;

        Ok(ResponderPending {
            symmetric,
            local_public: s.public_key(),
            e,
            rs,
            re,
            payload,
        })
    }
}

/// IK responder after reading message 1, before answering.
///
/// Exposes the initiator's (authenticated) static key and payload. Dropping
/// this value rejects the initiator without answering.
pub struct ResponderPending {
    /// Symmetric state after message 1.
    symmetric: SymmetricState,
    /// The responder's static public key (IK's second message does not use
    /// the static key pair itself, so it is not kept).
    local_public: [u8; PUBLIC_KEY_LEN],
    /// `e`, when fixed in advance (test vectors); otherwise generated, or
    /// taken precomputed, when message 2 is written.
    e: Option<StaticKeypair>,
    /// `rs`: the initiator's static public key, decrypted from message 1.
    rs: [u8; PUBLIC_KEY_LEN],
    /// `re`: the initiator's ephemeral public key.
    re: [u8; PUBLIC_KEY_LEN],
    /// Decrypted payload of message 1.
    payload: Vec<u8>,
}

impl ResponderPending {
    /// The initiator's static public key, authenticated by message 1.
    #[must_use]
    pub fn remote_static(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.rs
    }

    /// The payload of message 1 (replayable: see the module docs).
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Writes message 2, `<- e, ee, se`, carrying `payload`. Returns the
    /// message and the transport keys.
    ///
    /// # Errors
    ///
    /// [`NoiseError::MessageTooLarge`] if the payload exceeds
    /// [`MAX_RESPONSE_PAYLOAD_LEN`]; [`NoiseError::LowOrderDh`] for
    /// low-order initiator keys (already excluded by `read_message`).
    pub fn write_message(self, payload: &[u8]) -> Result<(Vec<u8>, Transport), NoiseError> {
        self.write_message_precomputed(payload, None)
    }

    /// Like [`ResponderPending::write_message`], with the ephemeral key and
    /// `se` from `precomputed` when it was made for this initiator and this
    /// responder (otherwise they are made now, as without it). Call it once
    /// the initiator is accepted, so only a handshake that is answered uses
    /// precomputed work.
    ///
    /// # Errors
    ///
    /// As [`ResponderPending::write_message`].
    pub fn write_message_precomputed(
        self,
        payload: &[u8],
        precomputed: Option<ResponderPrecomputed>,
    ) -> Result<(Vec<u8>, Transport), NoiseError> {
        check_outgoing_len(RESPONSE_MIN_LEN, payload.len())?;
        let Self {
            mut symmetric,
            local_public,
            e,
            rs,
            re,
            payload: _,
        } = self;
        let precomputed =
            precomputed.filter(|p| p.rs == rs && p.local_public == local_public && e.is_none());
        let (e, se) = match (e, precomputed) {
            (Some(e), _) => (e, None),
            (None, Some(p)) => (p.e, Some(p.se)),
            (None, None) => (StaticKeypair::generate(), None),
        };
        let mut message = Vec::with_capacity(RESPONSE_MIN_LEN + payload.len());

        // e: "Sets e (which must be empty) to GENERATE_KEYPAIR(). Appends
        // e.public_key to the buffer. Calls MixHash(e.public_key)."
        let e_public = e.public_key();
        message.extend_from_slice(&e_public);
        symmetric.mix_hash(&e_public);

        // ee: "Calls MixKey(DH(e, re))."
        symmetric.mix_key(e.dh(&re)?.as_bytes());

        // se: "MixKey(DH(e, rs)) if responder." (Perhaps computed before.)
        match se {
            Some(se) => symmetric.mix_key(se.as_bytes()),
            None => symmetric.mix_key(e.dh(&rs)?.as_bytes()),
        }

        // payload: "Appends EncryptAndHash(payload) to the buffer."
        message.extend_from_slice(&symmetric.encrypt_and_hash(payload)?);

        // "If there are no more message patterns returns two new CipherState
        // objects by calling Split()." The responder sends with c2.
        let (c1, c2, handshake_hash) = symmetric.split();
        Ok((message, Transport::new(c2, c1, handshake_hash, rs)))
    }
}

impl fmt::Debug for ResponderPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponderPending")
            .field("symmetric", &self.symmetric)
            .field("local_public", &HexBytes(&self.local_public))
            .field("e", &self.e)
            .field("rs", &HexBytes(&self.rs))
            .field("re", &HexBytes(&self.re))
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// `DH(s, rs)` of this peer's static key pair and one other peer's static
/// key, computed once and reused by every handshake between the two in
/// either role (the `ss` token; WireGuard keeps the same
/// `precomputed_static_static`). It is a secret as long-lived as the static
/// keys: zeroized on drop and redacted from `Debug`.
pub struct StaticDh {
    /// The local static public key it was made with.
    local_public: [u8; PUBLIC_KEY_LEN],
    /// The other side's static public key.
    remote: [u8; PUBLIC_KEY_LEN],
    /// `DH(s, rs)`.
    ss: SharedSecret,
}

impl StaticDh {
    /// Computes `DH(local, remote)`.
    ///
    /// # Errors
    ///
    /// [`NoiseError::LowOrderDh`] if `remote` is a low-order point.
    pub fn new(local: &StaticKeypair, remote: [u8; PUBLIC_KEY_LEN]) -> Result<Self, NoiseError> {
        Ok(Self {
            local_public: local.public_key(),
            remote,
            ss: local.dh(&remote)?,
        })
    }

    /// The value, if it was made for exactly `local` and `remote`.
    fn for_keys(
        &self,
        local: &StaticKeypair,
        remote: &[u8; PUBLIC_KEY_LEN],
    ) -> Option<&SharedSecret> {
        (self.local_public == local.public_key() && self.remote == *remote).then_some(&self.ss)
    }
}

impl fmt::Debug for StaticDh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticDh")
            .field("local_public", &HexBytes(&self.local_public))
            .field("remote", &HexBytes(&self.remote))
            .field("ss", &"<redacted>")
            .finish()
    }
}

/// A responder's message-2 work for one future handshake with a known
/// initiator, done ahead of time: a fresh ephemeral key pair `e` and
/// `se = DH(e, rs)`. Given to
/// [`ResponderPending::write_message_precomputed`] once that initiator is
/// accepted; consumed there, so the ephemeral key serves one handshake.
///
/// Secrets are zeroized on drop and redacted from `Debug`.
pub struct ResponderPrecomputed {
    /// The responder's own static public key it was made for.
    local_public: [u8; PUBLIC_KEY_LEN],
    /// The initiator's static public key it was made for.
    rs: [u8; PUBLIC_KEY_LEN],
    /// The ephemeral key pair for message 2.
    e: StaticKeypair,
    /// `DH(e, rs)`.
    se: SharedSecret,
}

impl ResponderPrecomputed {
    /// Does the work for the next answer from `local` to
    /// `initiator_static` (two X25519 operations).
    ///
    /// # Errors
    ///
    /// [`NoiseError::LowOrderDh`] if `initiator_static` is a low-order point.
    pub fn new(
        local: &StaticKeypair,
        initiator_static: [u8; PUBLIC_KEY_LEN],
    ) -> Result<Self, NoiseError> {
        Self::with_ephemeral_keypair(local, initiator_static, StaticKeypair::generate())
    }

    /// Like [`ResponderPrecomputed::new`] but with a fixed ephemeral private
    /// key.
    ///
    /// For test vectors only: reusing an ephemeral key destroys the
    /// handshake's security.
    ///
    /// # Errors
    ///
    /// As [`ResponderPrecomputed::new`].
    #[doc(hidden)]
    pub fn with_ephemeral(
        local: &StaticKeypair,
        initiator_static: [u8; PUBLIC_KEY_LEN],
        ephemeral_secret: [u8; SECRET_KEY_LEN],
    ) -> Result<Self, NoiseError> {
        Self::with_ephemeral_keypair(
            local,
            initiator_static,
            StaticKeypair::from_secret_bytes(ephemeral_secret),
        )
    }

    /// Shared constructor.
    fn with_ephemeral_keypair(
        local: &StaticKeypair,
        initiator_static: [u8; PUBLIC_KEY_LEN],
        e: StaticKeypair,
    ) -> Result<Self, NoiseError> {
        Ok(Self {
            local_public: local.public_key(),
            rs: initiator_static,
            se: e.dh(&initiator_static)?,
            e,
        })
    }

    /// The ephemeral public key message 2 will carry.
    #[must_use]
    pub fn ephemeral_public(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.e.public_key()
    }
}

impl fmt::Debug for ResponderPrecomputed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponderPrecomputed")
            .field("local_public", &HexBytes(&self.local_public))
            .field("rs", &HexBytes(&self.rs))
            .field("e", &self.e)
            .field("se", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds message 1 by hand, as an attacker could, with an arbitrary
    /// claimed static key `claimed_s` and `ss` input `ss_input`.
    fn forged_msg1(
        responder: &StaticKeypair,
        prologue: &[u8],
        claimed_s: &[u8; PUBLIC_KEY_LEN],
        ss_input: &[u8],
    ) -> Vec<u8> {
        let e = StaticKeypair::generate();
        let mut symmetric = initialize(prologue, &responder.public_key());
        let mut message = e.public_key().to_vec();
        symmetric.mix_hash(&e.public_key());
        symmetric.mix_key(e.dh(&responder.public_key()).unwrap().as_bytes());
        message.extend(symmetric.encrypt_and_hash(claimed_s).unwrap());
        symmetric.mix_key(ss_input);
        message.extend(symmetric.encrypt_and_hash(b"forged").unwrap());
        message
    }

    #[test]
    fn forged_construction_is_valid_for_a_real_key() {
        let bob = StaticKeypair::generate();
        let alice = StaticKeypair::generate();
        let ss = alice.dh(&bob.public_key()).unwrap();
        let msg = forged_msg1(&bob, b"p", &alice.public_key(), ss.as_bytes());
        let pending = Responder::read_message(&bob, b"p", &msg).unwrap();
        assert_eq!(pending.remote_static(), alice.public_key());
        assert_eq!(pending.payload(), b"forged");
    }

    #[test]
    fn low_order_initiator_static_is_rejected_by_responder() {
        let bob = StaticKeypair::generate();
        let mut one = [0u8; PUBLIC_KEY_LEN];
        one[0] = 1;
        for point in [[0u8; PUBLIC_KEY_LEN], one] {
            // An all-zero DH output is what a low-order static key yields.
            let msg = forged_msg1(&bob, b"p", &point, &[0u8; PUBLIC_KEY_LEN]);
            assert_eq!(
                Responder::read_message(&bob, b"p", &msg).err(),
                Some(NoiseError::LowOrderDh)
            );
        }
    }

    /// Runs a handshake: alice initiates (with `alice_ss` if given), bob
    /// answers (with `bob_ss` and `precomputed` if given). Returns both
    /// transports and message 2.
    fn handshake_with(
        alice: &StaticKeypair,
        bob: &StaticKeypair,
        alice_ss: Option<&StaticDh>,
        bob_ss: Option<StaticDh>,
        precomputed: Option<ResponderPrecomputed>,
    ) -> Result<(Transport, Transport, Vec<u8>), NoiseError> {
        let initiator = match alice_ss {
            Some(ss) => Initiator::with_static(alice, ss, b"p"),
            None => Initiator::new(alice, bob.public_key(), b"p"),
        };
        let (m1, waiting) = initiator.write_message(b"1")?;
        let bob_ss = bob_ss.map(Arc::new);
        let pending = Responder::read_message_with_static(bob, b"p", &m1, |_| bob_ss)?;
        assert_eq!(pending.remote_static(), alice.public_key());
        let (m2, bob_t) = pending.write_message_precomputed(b"2", precomputed)?;
        let (_, alice_t) = waiting.read_message(&m2)?;
        Ok((alice_t, bob_t, m2))
    }

    #[test]
    fn precomputed_responder_work_is_used_only_for_its_own_keys() {
        let (alice, bob, carol) = (
            StaticKeypair::generate(),
            StaticKeypair::generate(),
            StaticKeypair::generate(),
        );
        let right = ResponderPrecomputed::new(&bob, alice.public_key()).unwrap();
        let e = right.ephemeral_public();
        let (a, b, m2) = handshake_with(&alice, &bob, None, None, Some(right)).unwrap();
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        assert_eq!(m2[..PUBLIC_KEY_LEN], e, "message 2 carries the prepared e");

        // Made for another initiator, or by another responder key: not used
        // (using it would fail the handshake), and the handshake still works.
        for wrong in [
            ResponderPrecomputed::new(&bob, carol.public_key()).unwrap(),
            ResponderPrecomputed::new(&carol, alice.public_key()).unwrap(),
        ] {
            let e = wrong.ephemeral_public();
            let (a, b, m2) = handshake_with(&alice, &bob, None, None, Some(wrong)).unwrap();
            assert_eq!(a.handshake_hash(), b.handshake_hash());
            assert_ne!(m2[..PUBLIC_KEY_LEN], e);
        }
    }

    #[test]
    fn static_dh_is_used_only_for_its_own_keys() {
        let (alice, bob, carol) = (
            StaticKeypair::generate(),
            StaticKeypair::generate(),
            StaticKeypair::generate(),
        );
        // Right keys on both sides, then each side given carol's value.
        let cases = [
            (
                StaticDh::new(&alice, bob.public_key()),
                StaticDh::new(&bob, alice.public_key()),
            ),
            (
                StaticDh::new(&carol, bob.public_key()),
                StaticDh::new(&carol, alice.public_key()),
            ),
        ];
        for (for_alice, for_bob) in cases {
            let (a, b, _) = handshake_with(
                &alice,
                &bob,
                Some(&for_alice.unwrap()),
                Some(for_bob.unwrap()),
                None,
            )
            .unwrap();
            assert_eq!(a.handshake_hash(), b.handshake_hash());
        }
        assert_eq!(
            StaticDh::new(&alice, [0; PUBLIC_KEY_LEN]).err(),
            Some(NoiseError::LowOrderDh)
        );
    }

    #[test]
    fn a_wrong_static_dh_for_the_right_keys_fails_the_handshake() {
        // Proves the value is really used on each side: a garbage ss filed
        // under the right keys makes message 1 undecryptable.
        let (alice, bob) = (StaticKeypair::generate(), StaticKeypair::generate());
        let garbage = |local: &StaticKeypair, remote: &StaticKeypair| StaticDh {
            local_public: local.public_key(),
            remote: remote.public_key(),
            ss: StaticKeypair::generate().dh(&remote.public_key()).unwrap(),
        };
        let bad_alice = garbage(&alice, &bob);
        assert_eq!(
            handshake_with(&alice, &bob, Some(&bad_alice), None, None).err(),
            Some(NoiseError::Decrypt)
        );
        let bad_bob = garbage(&bob, &alice);
        assert_eq!(
            handshake_with(&alice, &bob, None, Some(bad_bob), None).err(),
            Some(NoiseError::Decrypt)
        );
    }

    #[test]
    fn precomputed_work_for_a_low_order_key_is_refused() {
        let bob = StaticKeypair::generate();
        assert_eq!(
            ResponderPrecomputed::new(&bob, [0u8; PUBLIC_KEY_LEN]).err(),
            Some(NoiseError::LowOrderDh)
        );
        assert_eq!(
            Initiator::new(&bob, [0u8; PUBLIC_KEY_LEN], b"p")
                .write_message(b"")
                .err(),
            Some(NoiseError::LowOrderDh)
        );
    }

    #[test]
    fn min_lengths_follow_the_pattern() {
        assert_eq!(INITIATION_MIN_LEN, 96);
        assert_eq!(RESPONSE_MIN_LEN, 48);
        assert_eq!(MAX_INITIATION_PAYLOAD_LEN, 65_535 - 96);
        assert_eq!(MAX_RESPONSE_PAYLOAD_LEN, 65_535 - 48);
    }
}
