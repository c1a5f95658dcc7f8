//! Behavioural tests of the IK handshake and the transport through the public
//! API: tampering, truncation, size limits, identities, associated data,
//! nonce limits and low-order keys.

use std::collections::HashSet;
use std::sync::Arc;

use chat_noise::{
    INITIATION_MIN_LEN, Initiator, InitiatorWaiting, MAX_INITIATION_PAYLOAD_LEN, MAX_MESSAGE_LEN,
    MAX_RESPONSE_PAYLOAD_LEN, MAX_TRANSPORT_MESSAGE_LEN, MAX_TRANSPORT_PAYLOAD_LEN, NoiseError,
    RESPONSE_MIN_LEN, ReplayError, ReplayWindow, Responder, ResponderPending, StaticKeypair,
    TAG_LEN, TRANSPORT_MIN_LEN, Transport,
};

const PROLOGUE: &[u8] = b"chat-noise test prologue";

/// Low-order X25519 points (and non-canonical encodings): every DH with
/// them is all zeros.
fn low_order_points() -> Vec<[u8; 32]> {
    let hexes = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    hexes
        .iter()
        .map(|h| hex::decode(h).unwrap().try_into().unwrap())
        .collect()
}

struct Pair {
    alice: StaticKeypair,
    bob: StaticKeypair,
}

impl Pair {
    fn new() -> Self {
        Self {
            alice: StaticKeypair::generate(),
            bob: StaticKeypair::generate(),
        }
    }

    fn msg1(&self, payload: &[u8]) -> (Vec<u8>, InitiatorWaiting) {
        Initiator::new(&self.alice, self.bob.public_key(), PROLOGUE)
            .write_message(payload)
            .unwrap()
    }

    fn pending(&self, msg1: &[u8]) -> ResponderPending {
        Responder::read_message(&self.bob, PROLOGUE, msg1).unwrap()
    }

    /// Full handshake: (initiator transport, responder transport).
    fn transports(&self) -> (Transport, Transport) {
        let (msg1, waiting) = self.msg1(b"init");
        let (msg2, responder) = self.pending(&msg1).write_message(b"resp").unwrap();
        let (_, initiator) = waiting.read_message(&msg2).unwrap();
        (initiator, responder)
    }
}

#[test]
fn message_sizes_match_the_ik_layout() {
    let pair = Pair::new();
    for len in [0usize, 1, 15, 16, 17, 1000] {
        let payload = vec![0xab; len];
        let (msg1, waiting) = pair.msg1(&payload);
        assert_eq!(msg1.len(), 32 + 48 + len + 16);
        assert_eq!(msg1.len(), INITIATION_MIN_LEN + len);
        let pending = pair.pending(&msg1);
        assert_eq!(pending.payload(), payload.as_slice());
        let (msg2, _) = pending.write_message(&payload).unwrap();
        assert_eq!(msg2.len(), 32 + len + 16);
        assert_eq!(msg2.len(), RESPONSE_MIN_LEN + len);
        let (received, _) = waiting.read_message(&msg2).unwrap();
        assert_eq!(received, payload);
    }
}

#[test]
fn identities_are_reported() {
    let pair = Pair::new();
    let (msg1, waiting) = pair.msg1(b"");
    let pending = pair.pending(&msg1);
    assert_eq!(pending.remote_static(), pair.alice.public_key());
    let (msg2, responder) = pending.write_message(b"").unwrap();
    let (_, initiator) = waiting.read_message(&msg2).unwrap();
    assert_eq!(responder.remote_static(), pair.alice.public_key());
    assert_eq!(initiator.remote_static(), pair.bob.public_key());
    assert_eq!(initiator.handshake_hash(), responder.handshake_hash());
    assert_eq!(initiator.session_id(), responder.session_id());
    assert_eq!(
        initiator.session_id().as_slice(),
        &initiator.handshake_hash()[..16]
    );
}

#[test]
fn every_handshake_is_fresh() {
    let pair = Pair::new();
    let (a, _) = pair.transports();
    let (b, _) = pair.transports();
    assert_ne!(a.handshake_hash(), b.handshake_hash());
    let (m1, _) = pair.msg1(b"same");
    let (m2, _) = pair.msg1(b"same");
    assert_ne!(m1, m2, "fresh ephemeral per handshake");
}

#[test]
fn flipping_any_bit_of_msg1_fails_with_decrypt() {
    let pair = Pair::new();
    let (msg1, _) = pair.msg1(b"hello");
    for index in 0..msg1.len() {
        for bit in 0..8 {
            let mut tampered = msg1.clone();
            tampered[index] ^= 1 << bit;
            assert_eq!(
                Responder::read_message(&pair.bob, PROLOGUE, &tampered).err(),
                Some(NoiseError::Decrypt),
                "byte {index} bit {bit}"
            );
        }
    }
}

#[test]
fn flipping_any_bit_of_msg2_fails_with_decrypt() {
    let pair = Pair::new();
    for index in 0..RESPONSE_MIN_LEN + 5 {
        for bit in 0..8 {
            let (msg1, waiting) = pair.msg1(b"hello");
            let (mut msg2, _) = pair.pending(&msg1).write_message(b"world").unwrap();
            msg2[index] ^= 1 << bit;
            assert_eq!(
                waiting.read_message(&msg2).err(),
                Some(NoiseError::Decrypt),
                "byte {index} bit {bit}"
            );
        }
    }
}

#[test]
fn flipping_any_bit_of_a_transport_message_fails_with_decrypt() {
    let (initiator, responder) = Pair::new().transports();
    let sealed = initiator.seal(7, b"aad", b"transport payload").unwrap();
    assert_eq!(
        responder.open(7, b"aad", &sealed).unwrap(),
        b"transport payload"
    );
    for index in 0..sealed.len() {
        for bit in 0..8 {
            let mut tampered = sealed.clone();
            tampered[index] ^= 1 << bit;
            assert_eq!(
                responder.open(7, b"aad", &tampered),
                Err(NoiseError::Decrypt),
                "byte {index} bit {bit}"
            );
        }
    }
}

#[test]
fn msg2_from_another_handshake_fails() {
    let pair = Pair::new();
    let (_, waiting) = pair.msg1(b"a");
    let (other_msg1, _) = pair.msg1(b"b");
    let (other_msg2, _) = pair.pending(&other_msg1).write_message(b"").unwrap();
    assert_eq!(
        waiting.read_message(&other_msg2).err(),
        Some(NoiseError::Decrypt)
    );
}

#[test]
fn every_truncated_msg1_is_refused() {
    let pair = Pair::new();
    let (msg1, _) = pair.msg1(b"");
    assert_eq!(msg1.len(), INITIATION_MIN_LEN);
    for len in 0..INITIATION_MIN_LEN {
        assert_eq!(
            Responder::read_message(&pair.bob, PROLOGUE, &msg1[..len]).err(),
            Some(NoiseError::Truncated {
                actual: len,
                minimum: INITIATION_MIN_LEN
            })
        );
    }
    // Truncating a message with a payload into the payload area breaks the tag.
    let (msg1, _) = pair.msg1(b"some payload");
    for len in INITIATION_MIN_LEN..msg1.len() {
        assert_eq!(
            Responder::read_message(&pair.bob, PROLOGUE, &msg1[..len]).err(),
            Some(NoiseError::Decrypt)
        );
    }
}

#[test]
fn every_truncated_msg2_is_refused() {
    let pair = Pair::new();
    for len in 0..RESPONSE_MIN_LEN {
        let (msg1, waiting) = pair.msg1(b"");
        let (msg2, _) = pair.pending(&msg1).write_message(b"").unwrap();
        assert_eq!(msg2.len(), RESPONSE_MIN_LEN);
        assert_eq!(
            waiting.read_message(&msg2[..len]).err(),
            Some(NoiseError::Truncated {
                actual: len,
                minimum: RESPONSE_MIN_LEN
            })
        );
    }
}

#[test]
fn every_truncated_transport_message_is_refused() {
    let (initiator, responder) = Pair::new().transports();
    let sealed = initiator.seal(0, b"", b"").unwrap();
    assert_eq!(sealed.len(), TRANSPORT_MIN_LEN);
    for len in 0..TRANSPORT_MIN_LEN {
        assert_eq!(
            responder.open(0, b"", &sealed[..len]),
            Err(NoiseError::Truncated {
                actual: len,
                minimum: TAG_LEN
            })
        );
    }
}

#[test]
fn garbage_of_every_small_length_never_panics() {
    let pair = Pair::new();
    for len in 0..=INITIATION_MIN_LEN + 2 {
        let garbage: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        assert!(Responder::read_message(&pair.bob, PROLOGUE, &garbage).is_err());
        let (_, waiting) = pair.msg1(b"");
        assert!(waiting.read_message(&garbage).is_err());
    }
}

#[test]
fn size_limits_are_enforced() {
    let pair = Pair::new();
    let too_big = vec![0u8; MAX_MESSAGE_LEN + 1];
    assert_eq!(
        Responder::read_message(&pair.bob, PROLOGUE, &too_big).err(),
        Some(NoiseError::MessageTooLarge {
            actual: MAX_MESSAGE_LEN + 1,
            maximum: MAX_MESSAGE_LEN
        })
    );
    let (_, waiting) = pair.msg1(b"");
    assert!(matches!(
        waiting.read_message(&too_big),
        Err(NoiseError::MessageTooLarge { .. })
    ));

    // Largest payloads fit exactly; one more byte does not.
    let (msg1, waiting) = pair.msg1(&vec![1u8; MAX_INITIATION_PAYLOAD_LEN]);
    assert_eq!(msg1.len(), MAX_MESSAGE_LEN);
    let initiator = Initiator::new(&pair.alice, pair.bob.public_key(), PROLOGUE);
    assert_eq!(
        initiator
            .write_message(&vec![1u8; MAX_INITIATION_PAYLOAD_LEN + 1])
            .err(),
        Some(NoiseError::MessageTooLarge {
            actual: MAX_MESSAGE_LEN + 1,
            maximum: MAX_MESSAGE_LEN
        })
    );
    let (msg1_again, _) = pair.msg1(b"");
    let too_large_reply =
        pair.pending(&msg1_again)
            .write_message(&vec![2u8; MAX_RESPONSE_PAYLOAD_LEN + 1]);
    assert!(matches!(
        too_large_reply,
        Err(NoiseError::MessageTooLarge { .. })
    ));
    let (msg2, responder) = pair
        .pending(&msg1)
        .write_message(&vec![2u8; MAX_RESPONSE_PAYLOAD_LEN])
        .unwrap();
    assert_eq!(msg2.len(), MAX_MESSAGE_LEN);
    let (_, initiator) = waiting.read_message(&msg2).unwrap();

    // Transport.
    let max = vec![3u8; MAX_TRANSPORT_PAYLOAD_LEN];
    let sealed = initiator.seal(0, b"", &max).unwrap();
    assert_eq!(sealed.len(), MAX_TRANSPORT_MESSAGE_LEN);
    assert_eq!(responder.open(0, b"", &sealed).unwrap(), max);
    let over = vec![3u8; MAX_TRANSPORT_PAYLOAD_LEN + 1];
    assert!(matches!(
        initiator.seal(1, b"", &over),
        Err(NoiseError::MessageTooLarge { .. })
    ));
    let sent_before = initiator.messages_sent();
    assert!(matches!(
        initiator.seal_next(b"", &over),
        Err(NoiseError::MessageTooLarge { .. })
    ));
    assert_eq!(
        initiator.messages_sent(),
        sent_before,
        "no counter consumed"
    );
    let too_big_transport = vec![0u8; MAX_TRANSPORT_MESSAGE_LEN + 1];
    assert!(matches!(
        responder.open(0, b"", &too_big_transport),
        Err(NoiseError::MessageTooLarge { .. })
    ));
}

#[test]
fn associated_data_must_match() {
    let (initiator, responder) = Pair::new().transports();
    let sealed = initiator.seal(3, b"header v1", b"body").unwrap();
    assert_eq!(
        responder.open(3, b"header v2", &sealed),
        Err(NoiseError::Decrypt)
    );
    assert_eq!(responder.open(3, b"", &sealed), Err(NoiseError::Decrypt));
    assert_eq!(responder.open(3, b"header v1", &sealed).unwrap(), b"body");
    let no_aad = initiator.seal(4, b"", b"body").unwrap();
    assert_eq!(responder.open(4, b"x", &no_aad), Err(NoiseError::Decrypt));
}

#[test]
fn counters_bind_and_directions_differ() {
    let (initiator, responder) = Pair::new().transports();
    let sealed = initiator.seal(10, b"", b"m").unwrap();
    assert_eq!(responder.open(11, b"", &sealed), Err(NoiseError::Decrypt));
    assert_eq!(responder.open(9, b"", &sealed), Err(NoiseError::Decrypt));
    // The sender cannot open its own message: each direction has its own key.
    assert_eq!(initiator.open(10, b"", &sealed), Err(NoiseError::Decrypt));
    let back = responder.seal(10, b"", b"m").unwrap();
    assert_ne!(back, sealed);
    assert_eq!(initiator.open(10, b"", &back).unwrap(), b"m");
    assert_eq!(responder.open(10, b"", &back), Err(NoiseError::Decrypt));
}

#[test]
fn reserved_counter_is_refused() {
    let (initiator, responder) = Pair::new().transports();
    assert_eq!(
        initiator.seal(u64::MAX, b"", b"x"),
        Err(NoiseError::NonceExhausted)
    );
    let forged = vec![0u8; TAG_LEN + 1];
    assert_eq!(
        responder.open(u64::MAX, b"", &forged),
        Err(NoiseError::NonceExhausted)
    );

    // The last usable counter works, after which seal_next is exhausted.
    let sealed = initiator.seal(u64::MAX - 1, b"", b"last").unwrap();
    assert_eq!(responder.open(u64::MAX - 1, b"", &sealed).unwrap(), b"last");
    assert_eq!(initiator.messages_sent(), u64::MAX);
    assert_eq!(
        initiator.seal_next(b"", b"x"),
        Err(NoiseError::NonceExhausted)
    );
    assert_eq!(
        initiator.seal_next(b"", b"x"),
        Err(NoiseError::NonceExhausted)
    );
}

#[test]
fn seal_next_never_reuses_an_explicit_counter() {
    let (initiator, _) = Pair::new().transports();
    assert_eq!(initiator.seal_next(b"", b"a").unwrap().0, 0);
    initiator.seal(41, b"", b"b").unwrap();
    assert_eq!(initiator.seal_next(b"", b"c").unwrap().0, 42);
    initiator.seal(5, b"", b"d").unwrap(); // lower explicit counter: no change
    assert_eq!(initiator.seal_next(b"", b"e").unwrap().0, 43);
    assert_eq!(initiator.messages_sent(), 44);
}

#[test]
fn seal_next_is_unique_across_threads() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250;
    let (initiator, responder) = Pair::new().transports();
    let initiator = Arc::new(initiator);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let initiator = Arc::clone(&initiator);
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| {
                        let plaintext = format!("{t}/{i}").into_bytes();
                        let (counter, sealed) = initiator.seal_next(b"", &plaintext).unwrap();
                        (counter, sealed, plaintext)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    let mut window = ReplayWindow::new();
    for handle in handles {
        for (counter, sealed, plaintext) in handle.join().unwrap() {
            assert!(seen.insert(counter), "counter {counter} handed out twice");
            assert_eq!(responder.open(counter, b"", &sealed).unwrap(), plaintext);
            window.accept(counter).unwrap();
            assert_eq!(window.accept(counter), Err(ReplayError::Duplicate));
        }
    }
    let total = (THREADS * PER_THREAD) as u64;
    assert_eq!(seen, (0..total).collect::<HashSet<_>>());
    assert_eq!(initiator.messages_sent(), total);
}

#[test]
fn low_order_responder_static_is_rejected_by_initiator() {
    let alice = StaticKeypair::generate();
    for point in low_order_points() {
        let initiator = Initiator::new(&alice, point, PROLOGUE);
        assert_eq!(
            initiator.write_message(b"").err(),
            Some(NoiseError::LowOrderDh)
        );
        assert_eq!(
            chat_noise::validate_public_key(&point),
            Err(NoiseError::InvalidPublicKey)
        );
    }
}

#[test]
fn low_order_initiator_ephemeral_is_rejected_by_responder() {
    let pair = Pair::new();
    let (msg1, _) = pair.msg1(b"payload");
    for point in low_order_points() {
        let mut forged = msg1.clone();
        forged[..32].copy_from_slice(&point);
        assert_eq!(
            Responder::read_message(&pair.bob, PROLOGUE, &forged).err(),
            Some(NoiseError::LowOrderDh)
        );
    }
}

#[test]
fn low_order_responder_ephemeral_is_rejected_by_initiator() {
    let pair = Pair::new();
    for point in low_order_points() {
        let (msg1, waiting) = pair.msg1(b"");
        let (mut msg2, _) = pair.pending(&msg1).write_message(b"").unwrap();
        msg2[..32].copy_from_slice(&point);
        assert_eq!(
            waiting.read_message(&msg2).err(),
            Some(NoiseError::LowOrderDh)
        );
    }
}

#[test]
fn debug_output_never_shows_secrets() {
    let secret = [0x5c; 32];
    let alice = StaticKeypair::from_secret_bytes(secret);
    let bob = StaticKeypair::generate();
    let secret_hex = hex::encode(secret);
    let bob_secret_hex = hex::encode(*bob.secret_bytes());

    let initiator = Initiator::new(&alice, bob.public_key(), PROLOGUE);
    let text = format!("{initiator:?}");
    assert!(!text.contains(&secret_hex) && text.contains("<redacted>"));

    let (msg1, waiting) = initiator.write_message(b"").unwrap();
    let text = format!("{waiting:?}");
    assert!(!text.contains(&secret_hex) && text.contains("<redacted>"));

    let pending = Responder::read_message(&bob, PROLOGUE, &msg1).unwrap();
    let text = format!("{pending:?}");
    assert!(!text.contains(&bob_secret_hex) && text.contains("<redacted>"));

    let (_, transport) = pending.write_message(b"").unwrap();
    let text = format!("{transport:?}");
    assert!(text.contains("<redacted>"));
    assert!(text.contains(&hex::encode(transport.handshake_hash())));
}

#[test]
fn transport_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Transport>();
    assert_send_sync::<ResponderPending>();
    assert_send_sync::<InitiatorWaiting>();
    assert_send_sync::<Initiator>();
    assert_send_sync::<StaticKeypair>();
}

#[test]
fn replay_window_pairs_with_open() {
    let (initiator, responder) = Pair::new().transports();
    let mut window = ReplayWindow::new();
    let (c0, m0) = initiator.seal_next(b"", b"zero").unwrap();
    let (c1, m1) = initiator.seal_next(b"", b"one").unwrap();
    // Out of order delivery, then a replay.
    for (counter, message, expected) in [
        (c1, &m1, Ok(())),
        (c0, &m0, Ok(())),
        (c1, &m1, Err(ReplayError::Duplicate)),
    ] {
        let checked = window.check(counter);
        assert_eq!(checked, expected);
        if checked.is_ok() {
            responder.open(counter, b"", message).unwrap();
            window.accept(counter).unwrap();
        }
    }
}
