//! Typed errors for the handshake, the transport and the anti-replay window.
//!
//! Every failure is reported as a value; no input, however malformed, makes
//! this crate panic. None of the variants carries secret material, so they can
//! be logged freely.

/// Errors produced by the Noise handshake and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// A handshake or transport message is shorter than the smallest valid
    /// message at that step (so it cannot even hold the public keys and tags).
    #[error("message truncated: {actual} bytes, at least {minimum} required")]
    Truncated {
        /// Length of the message received.
        actual: usize,
        /// Smallest length accepted at this step.
        minimum: usize,
    },
    /// A message (or the message a payload would produce) exceeds the Noise
    /// limit of 65535 bytes (spec §3).
    #[error("message too large: {actual} bytes, at most {maximum} allowed")]
    MessageTooLarge {
        /// Length of the (resulting) message.
        actual: usize,
        /// Largest length accepted.
        maximum: usize,
    },
    /// AEAD authentication failed: the ciphertext, the associated data, the
    /// key or the nonce does not match (tampering, wrong peer, wrong prologue).
    #[error("decryption failed: authentication tag mismatch")]
    Decrypt,
    /// A Diffie-Hellman operation produced the all-zero output, which means
    /// the peer supplied a low-order (small-subgroup) public key (RFC 7748 §6.1).
    #[error("Diffie-Hellman output is all zeros: low-order public key")]
    LowOrderDh,
    /// A public key has the wrong length or is a low-order point.
    #[error("invalid X25519 public key")]
    InvalidPublicKey,
    /// The nonce / counter space is used up: counter 2^64-1 is reserved
    /// (spec §5.1) and may never be used to encrypt or decrypt.
    #[error("nonce exhausted: counter 2^64-1 is reserved")]
    NonceExhausted,
}

/// Why the anti-replay window refused a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The counter lies below the window: it can no longer be told apart
    /// from a replay, so it is refused.
    #[error("counter too old: below the anti-replay window")]
    TooOld,
    /// The counter was already accepted once: this is a replay.
    #[error("duplicate counter: message replayed")]
    Duplicate,
    /// The counter is 2^64-1, which is reserved (spec §5.1) and never sent.
    #[error("counter exhausted: 2^64-1 is reserved")]
    Exhausted,
}
