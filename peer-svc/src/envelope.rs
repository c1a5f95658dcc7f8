//! Envelopes: a message sealed under a session, and opened again on the
//! other side. No I/O: unary `Deliver`, the delivery stream and history sync
//! all seal and open through here.
//!
//! An envelope carries only what routing needs: the session id, the counter
//! and the ciphertext. The sender is the session's peer (the handshake
//! authenticated it); the message id and everything else are inside the
//! ciphertext, so the wire shows neither. The associated data is the
//! session id preceded by its length as 4 bytes big-endian. The counter is
//! the ChaCha20-Poly1305 nonce, carried in clear and checked against the
//! session's replay window before and after decryption.

use std::sync::Arc;

use chat_noise::ReplayError;
use chat_proto::v1::{ChatMessage, Envelope};

use crate::{peers::Peers, session::Session};

/// The associated data of an envelope: the session id, length-prefixed.
pub fn aad(session_id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(session_id.len() + 4);
    aad.extend_from_slice(&(session_id.len() as u32).to_be_bytes());
    aad.extend_from_slice(session_id);
    aad
}

/// Why an envelope could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// No envelope where one is required.
    #[error("envelope is required")]
    Missing,
    /// The session id is not a session id.
    #[error("session_id must be {} bytes", chat_noise::SESSION_ID_LEN)]
    BadSessionId,
    /// The ciphertext is over this peer's limit.
    #[error("ciphertext is {len} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// No live session has this id (expired, or this peer restarted).
    #[error("unknown or expired session; handshake again")]
    UnknownSession,
    /// The counter was seen before, or is too old.
    #[error("envelope refused: {0}")]
    Replayed(ReplayError),
    /// Authentication failed.
    #[error("decryption failed: the envelope was altered or sealed under another key")]
    Decrypt,
    /// The session cannot seal any more (its nonces ran out).
    #[error("cannot seal: {0}")]
    Seal(String),
    /// The message does not fit one Noise transport message (stored under
    /// an older, larger limit): it can never be sent.
    #[error(
        "the message is {len} bytes sealed, more than one Noise message carries ({max}); it was stored under an older limit and cannot be sent"
    )]
    TooLargeToSeal {
        /// Its sealed length.
        len: usize,
        /// The most a transport message holds.
        max: usize,
    },
}

/// A message ready to seal: its id and its encoded `SealedMessage`, made
/// once and shared by every recipient's copy.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message id (inside the sealed plaintext; kept here for logs and
    /// bookkeeping, never sent in clear).
    pub id: String,
    /// The encoded `SealedMessage`.
    pub plaintext: Arc<[u8]>,
}

impl Outgoing {
    /// Encodes `message` for sealing.
    pub fn of(message: &ChatMessage) -> Self {
        Self {
            id: message.id.clone(),
            plaintext: crate::authorship::sealed(message).into(),
        }
    }
}

/// Seals `plaintext` under `session`, as the next message on it.
pub fn seal(session: &Session, plaintext: &[u8]) -> Result<Envelope, EnvelopeError> {
    let len = plaintext.len() + chat_noise::TAG_LEN;
    if len > chat_noise::MAX_TRANSPORT_MESSAGE_LEN {
        return Err(EnvelopeError::TooLargeToSeal {
            len,
            max: chat_noise::MAX_TRANSPORT_MESSAGE_LEN,
        });
    }
    let session_id = session.id();
    let (counter, ciphertext) = session
        .transport
        .seal_next(&aad(&session_id), plaintext)
        .map_err(|e| EnvelopeError::Seal(e.to_string()))?;
    Ok(Envelope {
        session_id: session_id.to_vec(),
        counter,
        ciphertext,
    })
}

/// Seals one outgoing message as Deliver carries it.
pub fn seal_outgoing(session: &Session, message: &Outgoing) -> Result<Envelope, EnvelopeError> {
    seal(session, &message.plaintext)
}

/// Opens an envelope on the live session it names, rejecting replays:
/// returns the session and the plaintext. `max_ciphertext` bounds what is
/// decrypted at all.
pub fn open(
    peers: &Peers,
    envelope: &Envelope,
    max_ciphertext: usize,
) -> Result<(Arc<Session>, Vec<u8>), EnvelopeError> {
    if envelope.session_id.len() != chat_noise::SESSION_ID_LEN {
        return Err(EnvelopeError::BadSessionId);
    }
    if envelope.ciphertext.len() > max_ciphertext {
        return Err(EnvelopeError::TooLarge {
            len: envelope.ciphertext.len(),
            limit: max_ciphertext,
        });
    }
    let session = peers
        .by_id(&envelope.session_id)
        .ok_or(EnvelopeError::UnknownSession)?;
    // Checked before decrypting (cheap refusal of a replay) and marked
    // after (only an authentic envelope may move the window).
    session
        .check_counter(envelope.counter)
        .map_err(EnvelopeError::Replayed)?;
    let plaintext = decrypt(&session, envelope)?;
    session
        .accept_counter(envelope.counter)
        .map_err(EnvelopeError::Replayed)?;
    Ok((session, plaintext))
}

/// Opens an envelope whose counter the replay window has already seen,
/// without touching the window: authentic means it is the sender's own
/// envelope again (a retry after a lost answer, or a replay). The caller
/// may only answer for it as for the first time, never act on it again.
pub fn reopen(
    peers: &Peers,
    envelope: &Envelope,
) -> Result<(Arc<Session>, Vec<u8>), EnvelopeError> {
    let session = peers
        .by_id(&envelope.session_id)
        .ok_or(EnvelopeError::UnknownSession)?;
    let plaintext = decrypt(&session, envelope)?;
    Ok((session, plaintext))
}

fn decrypt(session: &Session, envelope: &Envelope) -> Result<Vec<u8>, EnvelopeError> {
    let aad = aad(&envelope.session_id);
    session
        .transport
        .open(envelope.counter, &aad, &envelope.ciphertext)
        .map_err(|_| EnvelopeError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Role, tests::transports};

    #[test]
    fn the_aad_is_the_length_prefixed_session_id() {
        assert_eq!(aad(b"abc"), [0, 0, 0, 3, b'a', b'b', b'c']);
    }

    /// The largest message any peer may send (the longest text, id, sender
    /// name in 4-byte characters, fingerprint, clocks and sequence number,
    /// with its author key, network key, link and signature) seals to one
    /// conformant Noise transport message, with room to spare.
    #[test]
    fn the_largest_message_seals_to_one_noise_message() {
        use crate::config::{ENVELOPE_OVERHEAD_BYTES, MAX_ID_BYTES, MAX_MESSAGE_BYTES_LIMIT};
        let (alice_end, _) = transports();
        let alice = Session::new(alice_end, "bob".into(), Role::Initiator);
        let sign = |text: String| {
            let author = crate::authorship::Author::new(
                ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
                vec![7; 32],
                &"\u{10FFFF}".repeat(chat_proto::validate::MAX_NAME_CHARS),
                &"f".repeat(64),
                Some((u64::MAX - 1, [0xff; 32])),
            );
            author.sign(
                || {
                    (
                        "i".repeat(MAX_ID_BYTES),
                        u64::MAX,
                        prost_types::Timestamp {
                            seconds: i64::MIN,
                            nanos: -999_999_999,
                        },
                    )
                },
                text,
            )
        };
        let largest = sign("t".repeat(MAX_MESSAGE_BYTES_LIMIT));
        assert_eq!(largest.seq, u64::MAX);
        let sealed_around_text = Outgoing::of(&largest).plaintext.len() - largest.text.len();
        assert!(
            sealed_around_text + chat_noise::TAG_LEN < 800 && 800 < ENVELOPE_OVERHEAD_BYTES,
            "{sealed_around_text} bytes around the text"
        );
        let envelope = seal_outgoing(&alice, &Outgoing::of(&largest)).unwrap();
        assert!(envelope.ciphertext.len() <= chat_noise::MAX_MESSAGE_LEN);
        // A message stored under an older, larger limit cannot be sent, for good.
        let stored_before = sign("t".repeat(70_000));
        assert!(matches!(
            seal_outgoing(&alice, &Outgoing::of(&stored_before)),
            Err(EnvelopeError::TooLargeToSeal { .. })
        ));
    }

    #[test]
    fn a_sealed_message_opens_once_and_any_change_is_refused() {
        let (alice_end, bob_end) = transports();
        let alice = Session::new(alice_end, "bob".into(), Role::Initiator);
        let bob = Peers::new();
        bob.insert(Session::new(bob_end, "alice".into(), Role::Responder));
        let sealed = seal(&alice, b"hello").unwrap();

        let mut forged = sealed.clone();
        forged.counter += 1;
        assert_eq!(
            open(&bob, &forged, 1024).unwrap_err(),
            EnvelopeError::Decrypt
        );
        let mut forged = sealed.clone();
        forged.ciphertext[0] ^= 1;
        assert_eq!(
            open(&bob, &forged, 1024).unwrap_err(),
            EnvelopeError::Decrypt
        );
        let mut forged = sealed.clone();
        forged.session_id = vec![0; 3];
        assert_eq!(
            open(&bob, &forged, 1024).unwrap_err(),
            EnvelopeError::BadSessionId
        );
        assert!(matches!(
            open(&bob, &sealed, 4),
            Err(EnvelopeError::TooLarge { limit: 4, .. })
        ));

        let (_, plaintext) = open(&bob, &sealed, 1024).unwrap();
        assert_eq!(plaintext, b"hello");
        assert!(matches!(
            open(&bob, &sealed, 1024),
            Err(EnvelopeError::Replayed(_))
        ));
        let mut unknown = sealed;
        unknown.session_id = vec![7; chat_noise::SESSION_ID_LEN];
        assert_eq!(
            open(&bob, &unknown, 1024).unwrap_err(),
            EnvelopeError::UnknownSession
        );
    }
}
