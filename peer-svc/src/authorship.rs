//! Authorship (protocol 3, docs/protocol.md §7.9): every chat message is
//! signed by its author's Ed25519 identity key, the key its credential
//! admits, over the exact bytes that travel (an encoded `AuthoredMessage`),
//! never over a re-serialisation. Receivers store those bytes and the
//! signature verbatim and relay them unchanged, so a peer that serves
//! history cannot invent, alter or re-attribute a third party's message.
//!
//! Each author numbers its messages 1, 2, 3, … per identity key and puts
//! the SHA-256 of its previous message's authored bytes into the next (a
//! feed, as Secure Scuttlebutt's): a relay that drops or reorders an
//! author's messages leaves a gap or a broken link that [`check_feed`]
//! finds. No I/O here; binding a key to a name is `authors`' job.

use std::sync::Mutex;

use chat_proto::v1::{AuthoredMessage, ChatMessage, SealedMessage};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::{
    checks::CheckError,
    config::{MAX_ID_BYTES, MAX_SENT_AT_BEHIND},
    credential::{self},
    feed_order::FeedOrder,
    hlc::Hlc,
};

/// The signature's context string (the first length-prefixed part of the
/// signed bytes).
pub const MESSAGE_CONTEXT: &[u8] = b"p2p-chat/3 message";

/// Why a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No authored bytes: a message stored before protocol 3.
    #[error("message {id} has no signature (stored before protocol 3)")]
    Unsigned {
        /// Its id.
        id: String,
    },
    /// The authored bytes are not an `AuthoredMessage` of the right shape.
    #[error("malformed signed message: {0}")]
    Malformed(&'static str),
    /// The signature does not verify under the author key.
    #[error(
        "{sender}'s message {id} (seq {seq}) does not verify under its author key: forged or altered"
    )]
    BadSignature {
        /// The claimed author.
        sender: String,
        /// The message id.
        id: String,
        /// Its sequence number.
        seq: u64,
    },
}

/// The bytes a message signature covers: the context and the SHA-256 of
/// the authored bytes (the feed's link hash), each preceded by its length
/// as 4 bytes big-endian. Pure Ed25519 over these 58 bytes binds the exact
/// authored bytes through SHA-256, and spares Ed25519's two SHA-512 passes
/// over the whole text (on this project's machines, half of signing).
pub fn signed_bytes(authored: &[u8]) -> Vec<u8> {
    credential::to_be_signed(MESSAGE_CONTEXT, &[&hash(authored)])
}

/// What the next message's `prev` holds: SHA-256 of these authored bytes.
pub fn hash(authored: &[u8]) -> [u8; 32] {
    Sha256::digest(authored).into()
}

/// The author's side: its identity key and the head of its own feed.
#[derive(Debug)]
pub struct Author {
    key: SigningKey,
    network: Vec<u8>,
    name: String,
    fingerprint: String,
    /// The last message signed (or recovered): seq and hash.
    head: Mutex<(u64, [u8; 32])>,
    /// The order written messages are handed to the store in.
    order: FeedOrder,
}

impl Author {
    /// `name` with identity `key` in `network` (empty when open), whose
    /// static key has `fingerprint`, continuing after `head` (seq, hash) of
    /// the newest own message stored.
    pub fn new(
        key: SigningKey,
        network: Vec<u8>,
        name: &str,
        fingerprint: &str,
        head: Option<(u64, [u8; 32])>,
    ) -> Self {
        Self {
            key,
            network,
            name: name.to_owned(),
            fingerprint: fingerprint.to_owned(),
            head: Mutex::new(head.unwrap_or((0, [0; 32]))),
            order: FeedOrder::new(head.map_or(1, |(seq, _)| seq + 1)),
        }
    }

    /// The order this author's written messages are stored in.
    pub fn order(&self) -> &FeedOrder {
        &self.order
    }

    /// The identity key's public half.
    pub fn key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The static key's fingerprint the messages carry.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Signs a new message, numbered after the last and linked to it:
    /// [`Author::write`] then [`Author::sign_written`].
    pub fn sign(
        &self,
        stamp: impl FnOnce() -> (String, u64, prost_types::Timestamp),
        text: String,
    ) -> ChatMessage {
        let mut message = self.write(stamp, text);
        self.sign_written(&mut message);
        message
    }

    /// Signs a message [`Author::write`] made. Signing costs several times
    /// what writing does, and needs no lock: a sender signs in parallel.
    pub fn sign_written(&self, message: &mut ChatMessage) {
        message.signature = self
            .key
            .sign(&signed_bytes(&message.authored))
            .to_bytes()
            .to_vec();
    }

    /// Writes a new message, not yet signed, numbered after the last and
    /// linked to it (the link covers the authored bytes, not the
    /// signature); `stamp` gives its (id, clock, time), taken under the
    /// feed's lock so sequence numbers and clocks rise together.
    pub fn write(
        &self,
        stamp: impl FnOnce() -> (String, u64, prost_types::Timestamp),
        text: String,
    ) -> ChatMessage {
        let mut head = self.head.lock().expect("feed head lock");
        let (id, hlc, sent_at) = stamp();
        let (last, prev) = *head;
        let seq = last + 1;
        let authored = AuthoredMessage {
            network: self.network.clone(),
            author_key: self.key().to_vec(),
            sender: self.name.clone(),
            sender_fingerprint: self.fingerprint.clone(),
            id,
            seq,
            prev: if last == 0 { Vec::new() } else { prev.to_vec() },
            hlc,
            sent_at: Some(sent_at),
            text,
        };
        let bytes = authored.encode_to_vec();
        *head = (seq, hash(&bytes));
        drop(head);
        message_of(authored, bytes, Vec::new())
    }

    /// One of this author's own messages, recovered from another peer (its
    /// store was lost): the feed continues after it if it is the newest.
    pub fn observe(&self, message: &ChatMessage) {
        if message.author_key != self.key() {
            return;
        }
        let mut head = self.head.lock().expect("feed head lock");
        if message.seq > head.0 {
            *head = (message.seq, hash(&message.authored));
            self.order.skip_to(message.seq);
        }
    }
}

fn message_of(authored: AuthoredMessage, bytes: Vec<u8>, signature: Vec<u8>) -> ChatMessage {
    ChatMessage {
        id: authored.id,
        sender: authored.sender,
        sender_fingerprint: authored.sender_fingerprint,
        sent_at: authored.sent_at,
        text: authored.text,
        hlc: authored.hlc,
        authored: bytes,
        signature,
        seq: authored.seq,
        author_key: authored.author_key,
    }
}

/// Reads a signed message from its authored bytes and signature: decoded
/// and held to its shape (a 32-byte key, a 64-byte signature, seq ≥ 1 with
/// a 32-byte `prev` after the first), in `network`. The signature itself is
/// checked by [`verify`] or [`verify_all`].
pub fn decode(
    authored: Vec<u8>,
    signature: Vec<u8>,
    network: &[u8],
) -> Result<ChatMessage, SignatureError> {
    let decoded = AuthoredMessage::decode(authored.as_slice())
        .map_err(|_| SignatureError::Malformed("not an AuthoredMessage"))?;
    if decoded.author_key.len() != 32 {
        return Err(SignatureError::Malformed("author_key must be 32 bytes"));
    }
    if signature.len() != Signature::BYTE_SIZE {
        return Err(SignatureError::Malformed("signature must be 64 bytes"));
    }
    if decoded.seq > i64::MAX as u64 {
        // Stored as SQLite's signed 64-bit integer, and counted on from.
        return Err(SignatureError::Malformed("seq must be below 2^63"));
    }
    let linked = match decoded.seq {
        0 => false,
        1 => decoded.prev.is_empty(),
        _ => decoded.prev.len() == 32,
    };
    if !linked {
        return Err(SignatureError::Malformed(
            "seq must be 1 with no prev, or more with a 32-byte prev",
        ));
    }
    if decoded.network != network {
        return Err(SignatureError::Malformed("signed for another network"));
    }
    let mut message = message_of(decoded, authored, signature);
    match message.sent_at {
        Some(ref t) => sent_at_fits(t, message.hlc)?,
        // Absent (it is optional): shown as the clock's time, never 1970.
        None => message.sent_at = Some(timestamp(Hlc::millis(message.hlc))),
    }
    Ok(message)
}

/// The milliseconds since the epoch a `sent_at` states, if it is a valid
/// timestamp (seconds not negative, nanoseconds below a second).
pub fn sent_at_millis(sent_at: Option<&prost_types::Timestamp>) -> Option<u64> {
    let t = sent_at?;
    let seconds = u64::try_from(t.seconds).ok()?;
    let nanos = u64::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    seconds.checked_mul(1000)?.checked_add(nanos / 1_000_000)
}

/// A timestamp of `ms` milliseconds since the epoch.
pub fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A message's `sent_at`, when present, must be a valid time, not after
/// its clock's time and at most [`MAX_SENT_AT_BEHIND`] before it
/// (docs/protocol.md §7.7).
fn sent_at_fits(sent_at: &prost_types::Timestamp, hlc: u64) -> Result<(), SignatureError> {
    let sent = sent_at_millis(Some(sent_at))
        .ok_or(SignatureError::Malformed("sent_at is not a valid time"))?;
    let clock = Hlc::millis(hlc);
    if sent > clock || clock - sent > MAX_SENT_AT_BEHIND.as_millis() as u64 {
        return Err(SignatureError::Malformed(
            "sent_at must not be after the message's clock, nor more than an hour before it",
        ));
    }
    Ok(())
}

/// The message inside a delivered envelope from `peer` (the session's):
/// decoded from its signed bytes, and held to the rules a sender must keep
/// (its own message, an id of 1 to 128 bytes, a text within `max_text`).
/// The signature is checked separately.
pub fn delivered(
    plaintext: &[u8],
    peer: &str,
    max_text: usize,
    network: &[u8],
) -> Result<ChatMessage, CheckError> {
    let sealed = SealedMessage::decode(plaintext).map_err(|_| CheckError::NotAMessage)?;
    if sealed.authored.is_empty() {
        return Err(CheckError::NotAMessage);
    }
    let message = decode(sealed.authored, sealed.signature, network)
        .map_err(|e| CheckError::BadSigned(e.to_string()))?;
    if message.sender != peer {
        return Err(CheckError::NotItsOwn);
    }
    if message.id.is_empty() || message.id.len() > MAX_ID_BYTES {
        return Err(CheckError::BadId);
    }
    if message.text.len() > max_text {
        return Err(CheckError::TextTooLong {
            len: message.text.len(),
            limit: max_text,
            flag: "",
        });
    }
    Ok(message)
}

/// What a message carries to be sent or relayed: its authored bytes and
/// signature, as an encoded `SealedMessage` (fields 2 and 3), written
/// straight from the message without copying it first.
pub fn sealed(message: &ChatMessage) -> Vec<u8> {
    use prost::encoding::{bytes, encoded_len_varint, key_len};
    let len = [&message.authored, &message.signature]
        .iter()
        .map(|b| key_len(2) + encoded_len_varint(b.len() as u64) + b.len())
        .sum();
    let mut out = Vec::with_capacity(len);
    bytes::encode(2, &message.authored, &mut out);
    bytes::encode(3, &message.signature, &mut out);
    out
}

fn parts(message: &ChatMessage) -> Result<(VerifyingKey, Signature), SignatureError> {
    if message.authored.is_empty() {
        return Err(SignatureError::Unsigned {
            id: message.id.clone(),
        });
    }
    let bad = || SignatureError::BadSignature {
        sender: message.sender.clone(),
        id: message.id.clone(),
        seq: message.seq,
    };
    let key: [u8; 32] = message
        .author_key
        .as_slice()
        .try_into()
        .map_err(|_| bad())?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| bad())?;
    let signature = Signature::from_slice(&message.signature).map_err(|_| bad())?;
    Ok((key, signature))
}

/// Verifies one message's signature (strictly: no weak keys, no
/// malleable signatures).
pub fn verify(message: &ChatMessage) -> Result<(), SignatureError> {
    let (key, signature) = parts(message)?;
    key.verify_strict(&signed_bytes(&message.authored), &signature)
        .map_err(|_| SignatureError::BadSignature {
            sender: message.sender.clone(),
            id: message.id.clone(),
            seq: message.seq,
        })
}

/// Verifies many messages' signatures: one batch verification (about
/// twice as fast per signature) and, only if the batch fails, each on its
/// own to find which. For each, whether it verifies.
pub fn verify_all(messages: &[ChatMessage]) -> Vec<Result<(), SignatureError>> {
    if messages.len() < 2 {
        return messages.iter().map(verify).collect();
    }
    let mut checked_keys = std::collections::HashMap::new();
    let mut keys = Vec::with_capacity(messages.len());
    let mut signatures = Vec::with_capacity(messages.len());
    let mut signed = Vec::with_capacity(messages.len());
    for message in messages {
        match parts(message) {
            Ok((key, signature)) => {
                // Batch verification accepts some of what strict
                // verification refuses (a small-order or mixed-order key, a
                // small-order or non-canonical R); such a batch goes one by
                // one.
                let key_ok = *checked_keys
                    .entry(key.to_bytes())
                    .or_insert_with(|| batchable_key(&key));
                if !key_ok || !batchable(&signature) {
                    return messages.iter().map(verify).collect();
                }
                keys.push(key);
                signatures.push(signature);
                signed.push(signed_bytes(&message.authored));
            }
            Err(_) => return messages.iter().map(verify).collect(),
        }
    }
    let refs: Vec<&[u8]> = signed.iter().map(Vec::as_slice).collect();
    if ed25519_dalek::verify_batch(&refs, &signatures, &keys).is_ok() {
        return messages.iter().map(|_| Ok(())).collect();
    }
    messages.iter().map(verify).collect()
}

/// The numbers missing between the lowest and highest of `seqs`
/// (ascending), as inclusive ranges.
pub fn missing(seqs: &[u64]) -> Vec<(u64, u64)> {
    seqs.windows(2)
        .filter(|w| w[1] > w[0] + 1)
        .map(|w| (w[0] + 1, w[1] - 1))
        .collect()
}

/// Whether a key may go into a batch: not of small order and without a
/// torsion component (as every honest key is). Checked once per key.
fn batchable_key(key: &VerifyingKey) -> bool {
    !key.is_weak() && key.to_edwards().is_torsion_free()
}

/// Whether a signature may go into a batch: its R decodes and is not of
/// small order (as every honest signature's is). A torsion component in R
/// or a non-canonical encoding of it is not checked here (that would cost
/// half as much as verifying again): only the author itself can make one,
/// see docs/protocol.md §12.
fn batchable(signature: &Signature) -> bool {
    VerifyingKey::from_bytes(signature.r_bytes()).is_ok_and(|r| !r.is_weak())
}

/// What [`check_feed`] found in one author's messages.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FeedReport {
    /// Messages looked at.
    pub messages: u64,
    /// The lowest and highest seq seen (0 when none).
    pub first_seq: u64,
    /// The highest.
    pub last_seq: u64,
    /// Missing seq ranges between them (from, to), inclusive.
    pub missing: Vec<(u64, u64)>,
    /// Broken links and forks, one line each.
    pub problems: Vec<String>,
}

/// Checks one author's messages (all under one author key), given as
/// (seq, id, authored bytes) in seq order: consecutive numbers, and each
/// message's `prev` the hash of the one before. A first seq above 1 is
/// not a gap (history shared from some time on starts there).
pub fn check_feed<'a>(items: impl IntoIterator<Item = (u64, &'a str, &'a [u8])>) -> FeedReport {
    let mut report = FeedReport::default();
    let mut last: Option<(u64, String, [u8; 32])> = None;
    for (seq, id, authored) in items {
        report.messages += 1;
        let prev = AuthoredMessage::decode(authored)
            .map(|a| a.prev)
            .unwrap_or_default();
        match &last {
            None => report.first_seq = seq,
            Some((last_seq, last_id, _)) if *last_seq == seq => {
                report.problems.push(format!(
                    "fork: messages {last_id} and {id} both have seq {seq} (the author signed two)"
                ));
            }
            Some((last_seq, _, _)) if seq > last_seq + 1 => {
                report.missing.push((last_seq + 1, seq - 1));
            }
            Some((last_seq, last_id, last_hash)) => {
                if prev != last_hash.as_slice() {
                    report.problems.push(format!(
                        "broken link: message {id} (seq {seq}) does not follow {last_id} (seq {last_seq})"
                    ));
                }
            }
        }
        report.last_seq = seq;
        last = Some((seq, id.to_owned(), hash(authored)));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(seed: u8) -> Author {
        Author::new(
            SigningKey::from_bytes(&[seed; 32]),
            vec![9; 32],
            "alice",
            "fp",
            None,
        )
    }

    fn say(author: &Author, n: u64) -> ChatMessage {
        author.sign(
            || (format!("m{n}"), (n * 1000) << 16, timestamp(n * 1000)),
            format!("text {n}"),
        )
    }

    fn feed(messages: &[ChatMessage]) -> FeedReport {
        check_feed(
            messages
                .iter()
                .map(|m| (m.seq, m.id.as_str(), m.authored.as_slice())),
        )
    }

    #[test]
    fn messages_are_numbered_linked_and_verify_as_sent() {
        let alice = author(1);
        let messages: Vec<_> = (1..=4).map(|n| say(&alice, n)).collect();
        assert_eq!(
            messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        for m in &messages {
            verify(m).unwrap();
            let read = decode(m.authored.clone(), m.signature.clone(), &[9; 32]).unwrap();
            assert_eq!(&read, m);
        }
        assert!(verify_all(&messages).iter().all(Result::is_ok));
        let report = feed(&messages);
        assert_eq!((report.first_seq, report.last_seq), (1, 4));
        assert!(report.missing.is_empty() && report.problems.is_empty());
    }

    #[test]
    fn a_changed_byte_or_another_key_does_not_verify_and_batches_find_which() {
        let alice = author(1);
        let mallory = author(2);
        let mut messages: Vec<_> = (1..=6).map(|n| say(&alice, n)).collect();
        // Altered text, re-encoded with the original signature.
        let mut altered = AuthoredMessage::decode(messages[1].authored.as_slice()).unwrap();
        altered.text = "altered".into();
        messages[1].authored = altered.encode_to_vec();
        // Mallory signs a message claiming alice's key.
        let mut forged = say(&mallory, 3);
        forged.author_key = alice.key().to_vec();
        messages[3] = forged;
        let results = verify_all(&messages);
        let bad: Vec<usize> = (0..6).filter(|i| results[*i].is_err()).collect();
        assert_eq!(bad, [1, 3]);
        assert!(matches!(
            verify(&messages[1]),
            Err(SignatureError::BadSignature { seq: 2, .. })
        ));
        // Another network's message is refused before any signature check.
        assert!(matches!(
            decode(
                messages[0].authored.clone(),
                messages[0].signature.clone(),
                &[8; 32]
            ),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn what_batch_verification_would_decide_differently_goes_one_by_one() {
        let alice = author(1);
        let message = say(&alice, 1);
        let (key, signature) = parts(&message).unwrap();
        assert!(batchable_key(&key) && batchable(&signature));
        // R = the identity point (small order): strict verification refuses
        // it, batch verification might not; so it is never batched.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut bytes = signature.to_bytes();
        bytes[..32].copy_from_slice(&identity);
        assert!(!batchable(&Signature::from_bytes(&bytes)));
        // A weak (small-order) key likewise.
        let weak = VerifyingKey::from_bytes(&identity).unwrap();
        assert!(!batchable_key(&weak));
        // A seq past 2^63 (stored as a signed integer) is malformed.
        let mut huge = AuthoredMessage::decode(message.authored.as_slice()).unwrap();
        huge.seq = u64::MAX;
        huge.prev = vec![0; 32];
        assert!(matches!(
            decode(huge.encode_to_vec(), message.signature.clone(), &[9; 32]),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn a_dropped_reordered_or_forked_message_shows_in_the_feed() {
        let alice = author(1);
        let messages: Vec<_> = (1..=6).map(|n| say(&alice, n)).collect();
        let mut dropped = messages.clone();
        dropped.remove(2);
        dropped.remove(2);
        let report = feed(&dropped);
        assert_eq!(report.missing, [(3, 4)]);
        assert!(report.problems.is_empty());
        // Shared from seq 3 on: not a gap.
        let report = feed(&messages[2..]);
        assert_eq!((report.first_seq, report.missing.len()), (3, 0));
        // A second message 4 signed by the same key (an author whose
        // store was lost and restarted its numbering): a fork.
        let again = Author::new(
            SigningKey::from_bytes(&[1; 32]),
            vec![9; 32],
            "alice",
            "fp",
            Some((3, hash(&messages[2].authored))),
        );
        let mut forked = messages[..4].to_vec();
        forked.push(say(&again, 44));
        forked.sort_by_key(|m| m.seq);
        let report = feed(&forked);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].starts_with("fork"));
        // A link to another message than the one before.
        let relinked = Author::new(
            SigningKey::from_bytes(&[1; 32]),
            vec![9; 32],
            "alice",
            "fp",
            Some((4, [0; 32])),
        );
        let mut broken = messages[..4].to_vec();
        broken.push(say(&relinked, 5));
        let report = feed(&broken);
        assert!(report.problems[0].starts_with("broken link"));
    }

    /// The example of docs/protocol.md §7.9, computed independently (with
    /// Python's `cryptography` over the documented bytes): the encoding, the
    /// framing, the signature and the next message's `prev`.
    #[test]
    fn known_answer() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let authored = AuthoredMessage {
            network: vec![7; 32],
            author_key: key.verifying_key().to_bytes().to_vec(),
            sender: "bob".into(),
            id: "m1".into(),
            seq: 1,
            hlc: 0x018c_2d5e_3a00_0000,
            text: "hi".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(authored.len(), 93);
        assert_eq!(signed_bytes(&authored).len(), 58);
        let signature = key.sign(&signed_bytes(&authored));
        assert_eq!(
            hex::encode(signature.to_bytes()),
            "c608ba26adad9c336944c45adf29c35f1ca8d0aabc72f1a52929e1b58058fa7c\
             20d492113a8417881871833c5e35e67bfa1312076a4330c621a07e95d470bd0a"
        );
        assert_eq!(
            hex::encode(hash(&authored)),
            "1bb84d7e460d3f7dcf5246d6e6516fbfc9e6ba5ef60135e47153dcde7cc63d8f"
        );
        let message = decode(authored, signature.to_bytes().to_vec(), &[7; 32]).unwrap();
        verify(&message).unwrap();
    }

    #[test]
    fn a_delivered_message_is_its_senders_own_and_within_the_limits() {
        let bob = author(1);
        let sealed = |m: &ChatMessage| {
            let bytes = sealed(m);
            let expected = SealedMessage {
                authored: m.authored.clone(),
                signature: m.signature.clone(),
                author_chain: Vec::new(),
            }
            .encode_to_vec();
            assert_eq!(bytes, expected);
            bytes
        };
        let hi = say(&bob, 1);
        let network = [9; 32];
        assert_eq!(delivered(&sealed(&hi), "alice", 100, &network).unwrap(), hi);
        assert_eq!(
            delivered(&sealed(&hi), "carol", 100, &network),
            Err(CheckError::NotItsOwn)
        );
        assert!(matches!(
            delivered(&sealed(&hi), "alice", 3, &network),
            Err(CheckError::TextTooLong { limit: 3, .. })
        ));
        assert!(matches!(
            delivered(&sealed(&hi), "alice", 100, &[1; 32]),
            Err(CheckError::BadSigned(_))
        ));
        assert_eq!(
            delivered(b"\xff\xff", "alice", 100, &network),
            Err(CheckError::NotAMessage)
        );
        let unsigned = SealedMessage::default().encode_to_vec();
        assert_eq!(
            delivered(&unsigned, "alice", 100, &network),
            Err(CheckError::NotAMessage)
        );
    }

    #[test]
    fn a_recovered_own_message_moves_the_feed_on() {
        let alice = author(1);
        let sent: Vec<_> = (1..=3).map(|n| say(&alice, n)).collect();
        let fresh = author(1);
        for m in sent.iter().rev() {
            fresh.observe(m);
        }
        let next = say(&fresh, 4);
        assert_eq!(next.seq, 4);
        let mut all = sent;
        all.push(next);
        assert!(feed(&all).problems.is_empty());
    }
}
