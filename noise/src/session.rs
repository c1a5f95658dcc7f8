//! Transport phase: the two `CipherState` keys from `Split()` (spec §5.2)
//! with explicit 64-bit counters instead of implicit nonces.
//!
//! Noise normally keeps the nonce `n` inside each `CipherState` and expects
//! in-order delivery. Over an unreliable or multiplexed channel the counter is
//! sent alongside each message instead, the "explicit nonce" arrangement of
//! spec §11.4 (as WireGuard does): [`Transport::seal`] takes the counter, and
//! the receiver passes it to [`Transport::open`] and then to a
//! [`crate::ReplayWindow`]. With counters 0, 1, 2, ... per direction and empty
//! associated data the ciphertexts are exactly Noise transport messages.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::NoiseError;
use crate::keys::{HexBytes, PUBLIC_KEY_LEN};
use crate::symmetric::{CipherKey, HASH_LEN, MAX_MESSAGE_LEN, RESERVED_NONCE, TAG_LEN};

/// Length in bytes of a [`SessionId`]: half of the 32-byte handshake hash,
/// enough to make accidental collisions negligible (2^-64 birthday bound).
pub const SESSION_ID_LEN: usize = 16;

// The session id is a prefix of the handshake hash.
const _: () = assert!(SESSION_ID_LEN <= HASH_LEN);

/// Identifier of a session: the first [`SESSION_ID_LEN`] bytes of the
/// handshake hash. Both peers compute the same value; it is public.
pub type SessionId = [u8; SESSION_ID_LEN];

/// Smallest transport ciphertext: an empty plaintext plus its tag.
pub const TRANSPORT_MIN_LEN: usize = TAG_LEN;

/// Largest transport message (ciphertext with tag): Noise's limit on every
/// message, 65535 bytes (spec §3), so that any Noise implementation can
/// open what this one seals. A chat text is limited so that its sealed
/// message fits (peer-svc's `--max-message-bytes`).
pub const MAX_TRANSPORT_MESSAGE_LEN: usize = MAX_MESSAGE_LEN;

/// Largest transport plaintext: [`MAX_TRANSPORT_MESSAGE_LEN`] minus the tag.
pub const MAX_TRANSPORT_PAYLOAD_LEN: usize = MAX_TRANSPORT_MESSAGE_LEN - TAG_LEN;

/// Transport keys produced by `Split()`, plus the handshake hash.
///
/// The initiator sends with the first `Split()` key (`c1`) and receives with
/// `c2`; the responder the opposite (spec §5.2). Keys are zeroized on drop
/// and redacted from `Debug`. `Transport` is `Send + Sync`: sealing and
/// opening take `&self`.
pub struct Transport {
    /// Key for messages we send.
    send: CipherKey,
    /// Key for messages we receive.
    recv: CipherKey,
    /// `h` at the end of the handshake (channel binding, spec §11.2).
    handshake_hash: [u8; HASH_LEN],
    /// The peer's static public key.
    remote_static: [u8; PUBLIC_KEY_LEN],
    /// One past the highest counter sealed so far; the next counter
    /// [`Transport::seal_next`] hands out.
    next_send: AtomicU64,
}

impl Transport {
    /// Builds the transport from `Split()` output, already oriented.
    pub(crate) fn new(
        send: CipherKey,
        recv: CipherKey,
        handshake_hash: [u8; HASH_LEN],
        remote_static: [u8; PUBLIC_KEY_LEN],
    ) -> Self {
        Self {
            send,
            recv,
            handshake_hash,
            remote_static,
            next_send: AtomicU64::new(0),
        }
    }

    /// The handshake hash `h` (spec §11.2), identical on both sides.
    #[must_use]
    pub fn handshake_hash(&self) -> [u8; HASH_LEN] {
        self.handshake_hash
    }

    /// The session identifier: the first [`SESSION_ID_LEN`] bytes of the
    /// handshake hash.
    #[must_use]
    pub fn session_id(&self) -> SessionId {
        let mut id = [0u8; SESSION_ID_LEN];
        id.copy_from_slice(&self.handshake_hash[..SESSION_ID_LEN]);
        id
    }

    /// The peer's static public key (authenticated by the handshake).
    #[must_use]
    pub fn remote_static(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.remote_static
    }

    /// Encrypts `plaintext` with the send key, counter nonce `counter`
    /// (encoded as 4 zero bytes || counter little-endian, spec §12.3) and
    /// associated data `aad`. The output is `plaintext.len() + 16` bytes.
    ///
    /// **Each counter must be used at most once per session.** Do not mix
    /// explicit counters with [`Transport::seal_next`] unless you keep them
    /// disjoint; `seal` does raise `seal_next`'s next counter above any
    /// counter it is given.
    ///
    /// # Errors
    ///
    /// [`NoiseError::NonceExhausted`] for `counter == u64::MAX` (reserved,
    /// spec §5.1); [`NoiseError::MessageTooLarge`] if the plaintext exceeds
    /// [`MAX_TRANSPORT_PAYLOAD_LEN`].
    pub fn seal(&self, counter: u64, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if counter == RESERVED_NONCE {
            return Err(NoiseError::NonceExhausted);
        }
        let ciphertext = self
            .send
            .encrypt(counter, aad, plaintext, MAX_TRANSPORT_MESSAGE_LEN)?;
        // Keep seal_next() from ever handing out a counter used here.
        // `counter + 1` cannot overflow: counter < u64::MAX.
        self.next_send.fetch_max(counter + 1, Ordering::Relaxed);
        Ok(ciphertext)
    }

    /// Encrypts with the next unused counter, allocated atomically (safe to
    /// call from many tasks at once). Returns the counter, which must be sent
    /// alongside the ciphertext, and the ciphertext.
    ///
    /// # Errors
    ///
    /// [`NoiseError::NonceExhausted`] once all counters below `u64::MAX` are
    /// used; [`NoiseError::MessageTooLarge`] if the plaintext exceeds
    /// [`MAX_TRANSPORT_PAYLOAD_LEN`] (no counter is consumed then).
    pub fn seal_next(&self, aad: &[u8], plaintext: &[u8]) -> Result<(u64, Vec<u8>), NoiseError> {
        let actual = plaintext.len().saturating_add(TAG_LEN);
        if actual > MAX_TRANSPORT_MESSAGE_LEN {
            return Err(NoiseError::MessageTooLarge {
                actual,
                maximum: MAX_TRANSPORT_MESSAGE_LEN,
            });
        }
        // Relaxed suffices: read-modify-write operations on one atomic are
        // totally ordered, so every caller gets a distinct counter; no other
        // memory is synchronized through it.
        let counter = self
            .next_send
            // Hands out `n` unless it is the reserved 2^64-1, exactly the
            // case where `n + 1` overflows.
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| NoiseError::NonceExhausted)?;
        let ciphertext = self
            .send
            .encrypt(counter, aad, plaintext, MAX_TRANSPORT_MESSAGE_LEN)?;
        Ok((counter, ciphertext))
    }

    /// Decrypts `ciphertext` sent with counter `counter` and associated data
    /// `aad`, using the receive key.
    ///
    /// Does **not** check for replays: after a successful `open`, call
    /// [`crate::ReplayWindow::accept`] with the same counter and discard the
    /// plaintext if it refuses.
    ///
    /// # Errors
    ///
    /// [`NoiseError::Decrypt`] if authentication fails (wrong key, counter,
    /// AAD or tampered ciphertext); [`NoiseError::Truncated`] below
    /// [`TRANSPORT_MIN_LEN`]; [`NoiseError::MessageTooLarge`] above
    /// [`MAX_TRANSPORT_MESSAGE_LEN`]; [`NoiseError::NonceExhausted`] for `counter == u64::MAX`.
    pub fn open(&self, counter: u64, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if counter == RESERVED_NONCE {
            return Err(NoiseError::NonceExhausted);
        }
        self.recv
            .decrypt(counter, aad, ciphertext, MAX_TRANSPORT_MESSAGE_LEN)
    }

    /// One past the highest counter sealed so far: the number of messages
    /// sent when only [`Transport::seal_next`] (or counters 0, 1, 2, ... with
    /// [`Transport::seal`]) are used.
    #[must_use]
    pub fn messages_sent(&self) -> u64 {
        self.next_send.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("send", &self.send)
            .field("recv", &self.recv)
            .field("handshake_hash", &HexBytes(&self.handshake_hash))
            .field("remote_static", &HexBytes(&self.remote_static))
            .field("messages_sent", &self.messages_sent())
            .finish()
    }
}
