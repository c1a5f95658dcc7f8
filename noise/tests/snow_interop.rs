//! Interoperability with the `snow` crate (an independent Noise
//! implementation): both role pairings, random keys, prologues and payloads,
//! transport traffic in both directions with explicit counters, identical
//! handshake hashes, and refusal of tampered messages and wrong prologues.

use chat_noise::{
    Initiator, MAX_INITIATION_PAYLOAD_LEN, MAX_MESSAGE_LEN, MAX_RESPONSE_PAYLOAD_LEN, NoiseError,
    PROTOCOL_NAME, Responder, ResponderPrecomputed, StaticDh, StaticKeypair, TAG_LEN, Transport,
};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use snow::{Builder, HandshakeState, StatelessTransportState};

/// Handshakes per role pairing.
const ROUNDS: usize = 200;

/// Transport messages per direction after each handshake.
const TRANSPORT_MESSAGES: usize = 6;

/// Usual upper bound for random payload sizes.
const TYPICAL_PAYLOAD_MAX: usize = 300;

/// One round in this many uses a payload of the maximum size.
const MAX_SIZE_EVERY: usize = 50;

/// Upper bound for random prologue sizes.
const PROLOGUE_MAX: usize = 64;

/// Noise transport messages carry no associated data.
const NO_AAD: &[u8] = &[];

/// Fixed seeds keep failures reproducible.
const SEED_OURS_INITIATES: u64 = 0x1c_0ffee;
/// Seed for the snow-initiates pairing.
const SEED_SNOW_INITIATES: u64 = 0x5_0e5;
/// Seed for the tampering tests.
const SEED_TAMPER: u64 = 0x7a_3be2;

fn params() -> snow::params::NoiseParams {
    PROTOCOL_NAME.parse().expect("snow knows IK")
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

fn random_keypair(rng: &mut StdRng) -> StaticKeypair {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    StaticKeypair::from_secret_bytes(secret)
}

fn payload_len(rng: &mut StdRng, round: usize, max: usize) -> usize {
    if round % MAX_SIZE_EVERY == MAX_SIZE_EVERY - 1 {
        max
    } else {
        rng.random_range(0..=TYPICAL_PAYLOAD_MAX)
    }
}

fn snow_initiator(local: &StaticKeypair, remote: &[u8; 32], prologue: &[u8]) -> HandshakeState {
    let secret = local.secret_bytes();
    Builder::new(params())
        .local_private_key(secret.as_slice())
        .unwrap()
        .remote_public_key(remote)
        .unwrap()
        .prologue(prologue)
        .unwrap()
        .build_initiator()
        .unwrap()
}

fn snow_responder(local: &StaticKeypair, prologue: &[u8]) -> HandshakeState {
    let secret = local.secret_bytes();
    Builder::new(params())
        .local_private_key(secret.as_slice())
        .unwrap()
        .prologue(prologue)
        .unwrap()
        .build_responder()
        .unwrap()
}

fn snow_write(state: &mut HandshakeState, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let len = state.write_message(payload, &mut buf).expect("snow write");
    buf.truncate(len);
    buf
}

fn snow_read(state: &mut HandshakeState, message: &[u8]) -> Result<Vec<u8>, snow::Error> {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let len = state.read_message(message, &mut buf)?;
    buf.truncate(len);
    Ok(buf)
}

/// Exchanges transport messages both ways between our `Transport` and
/// snow's stateless transport, with increasing but gappy counters.
fn exchange_transport(rng: &mut StdRng, ours: &Transport, theirs: &StatelessTransportState) {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut counter = 0u64;
    for i in 0..TRANSPORT_MESSAGES {
        // The largest Noise transport message (snow's limit, and ours).
        let len = if i == 0 {
            MAX_MESSAGE_LEN - TAG_LEN
        } else {
            rng.random_range(0..=TYPICAL_PAYLOAD_MAX)
        };
        let plaintext = random_bytes(rng, len);

        // Ours -> snow.
        let sealed = ours.seal(counter, NO_AAD, &plaintext).expect("seal");
        let n = theirs
            .read_message(counter, &sealed, &mut buf)
            .expect("snow opens ours");
        assert_eq!(&buf[..n], plaintext.as_slice());

        // Snow -> ours.
        let n = theirs
            .write_message(counter, &plaintext, &mut buf)
            .expect("snow seals");
        let opened = ours
            .open(counter, NO_AAD, &buf[..n])
            .expect("we open snow's");
        assert_eq!(opened, plaintext);

        // Wrong counter fails both ways.
        assert_eq!(
            ours.open(counter + 1, NO_AAD, &buf[..n]),
            Err(NoiseError::Decrypt)
        );
        assert!(theirs.read_message(counter + 1, &sealed, &mut buf).is_err());

        counter += rng.random_range(1..=3u64);
    }
    // One byte more is no Noise message: neither side seals it.
    let over = vec![0u8; MAX_MESSAGE_LEN - TAG_LEN + 1];
    assert!(matches!(
        ours.seal(counter, NO_AAD, &over),
        Err(NoiseError::MessageTooLarge { .. })
    ));
    let mut big = vec![0u8; 2 * MAX_MESSAGE_LEN];
    assert!(theirs.write_message(counter, &over, &mut big).is_err());
}

#[test]
fn our_initiator_with_snow_responder() {
    let mut rng = StdRng::seed_from_u64(SEED_OURS_INITIATES);
    for round in 0..ROUNDS {
        let alice = random_keypair(&mut rng);
        let bob = random_keypair(&mut rng);
        let prologue_len = rng.random_range(0..=PROLOGUE_MAX);
        let prologue = random_bytes(&mut rng, prologue_len);
        let len1 = payload_len(&mut rng, round, MAX_INITIATION_PAYLOAD_LEN);
        let payload1 = random_bytes(&mut rng, len1);
        let len2 = payload_len(&mut rng, round, MAX_RESPONSE_PAYLOAD_LEN);
        let payload2 = random_bytes(&mut rng, len2);

        let (msg1, waiting) = Initiator::new(&alice, bob.public_key(), &prologue)
            .write_message(&payload1)
            .unwrap();
        assert_eq!(msg1.len(), 32 + 48 + payload1.len() + 16);

        let mut snow = snow_responder(&bob, &prologue);
        assert_eq!(
            snow_read(&mut snow, &msg1).expect("snow reads msg1"),
            payload1
        );
        assert_eq!(
            snow.get_remote_static(),
            Some(alice.public_key().as_slice())
        );
        let msg2 = snow_write(&mut snow, &payload2);
        assert_eq!(msg2.len(), 32 + payload2.len() + 16);

        let (received2, transport) = waiting.read_message(&msg2).expect("we read msg2");
        assert_eq!(received2, payload2);
        assert!(snow.is_handshake_finished());
        assert_eq!(
            transport.handshake_hash().as_slice(),
            snow.get_handshake_hash()
        );
        assert_eq!(transport.remote_static(), bob.public_key());

        let snow = snow.into_stateless_transport_mode().unwrap();
        exchange_transport(&mut rng, &transport, &snow);
    }
}

#[test]
fn snow_initiator_with_our_responder() {
    let mut rng = StdRng::seed_from_u64(SEED_SNOW_INITIATES);
    for round in 0..ROUNDS {
        let alice = random_keypair(&mut rng);
        let bob = random_keypair(&mut rng);
        let prologue_len = rng.random_range(0..=PROLOGUE_MAX);
        let prologue = random_bytes(&mut rng, prologue_len);
        let len1 = payload_len(&mut rng, round, MAX_INITIATION_PAYLOAD_LEN);
        let payload1 = random_bytes(&mut rng, len1);
        let len2 = payload_len(&mut rng, round, MAX_RESPONSE_PAYLOAD_LEN);
        let payload2 = random_bytes(&mut rng, len2);

        let mut snow = snow_initiator(&alice, &bob.public_key(), &prologue);
        let msg1 = snow_write(&mut snow, &payload1);

        // Every other round the responder's work for alice is done ahead.
        let ahead = round % 2 == 1;
        let pending = if ahead {
            let ss = std::sync::Arc::new(StaticDh::new(&bob, alice.public_key()).unwrap());
            Responder::read_message_with_static(&bob, &prologue, &msg1, |_| Some(ss))
        } else {
            Responder::read_message(&bob, &prologue, &msg1)
        }
        .expect("we read msg1");
        assert_eq!(pending.payload(), payload1.as_slice());
        assert_eq!(pending.remote_static(), alice.public_key());
        let work = ahead.then(|| ResponderPrecomputed::new(&bob, alice.public_key()).unwrap());
        let (msg2, transport) = pending.write_message_precomputed(&payload2, work).unwrap();

        assert_eq!(
            snow_read(&mut snow, &msg2).expect("snow reads msg2"),
            payload2
        );
        assert!(snow.is_handshake_finished());
        assert_eq!(
            transport.handshake_hash().as_slice(),
            snow.get_handshake_hash()
        );
        assert_eq!(transport.remote_static(), alice.public_key());

        let snow = snow.into_stateless_transport_mode().unwrap();
        exchange_transport(&mut rng, &transport, &snow);
    }
}

#[test]
fn snow_responder_refuses_our_tampered_msg1() {
    let mut rng = StdRng::seed_from_u64(SEED_TAMPER);
    let alice = random_keypair(&mut rng);
    let bob = random_keypair(&mut rng);
    let prologue = b"tamper";
    let (msg1, _) = Initiator::new(&alice, bob.public_key(), prologue)
        .write_message(b"payload")
        .unwrap();
    for index in 0..msg1.len() {
        let mut tampered = msg1.clone();
        tampered[index] ^= 1 << rng.random_range(0..8u32);
        let mut snow = snow_responder(&bob, prologue);
        assert!(snow_read(&mut snow, &tampered).is_err(), "byte {index}");
    }
    // Untampered is accepted (the loop above is not vacuous).
    assert!(snow_read(&mut snow_responder(&bob, prologue), &msg1).is_ok());
}

#[test]
fn our_responder_refuses_snows_tampered_msg1() {
    let mut rng = StdRng::seed_from_u64(SEED_TAMPER + 1);
    let alice = random_keypair(&mut rng);
    let bob = random_keypair(&mut rng);
    let prologue = b"tamper";
    let msg1 = snow_write(
        &mut snow_initiator(&alice, &bob.public_key(), prologue),
        b"payload",
    );
    for index in 0..msg1.len() {
        let mut tampered = msg1.clone();
        tampered[index] ^= 1 << rng.random_range(0..8u32);
        assert_eq!(
            Responder::read_message(&bob, prologue, &tampered).err(),
            Some(NoiseError::Decrypt),
            "byte {index}"
        );
    }
    assert!(Responder::read_message(&bob, prologue, &msg1).is_ok());
}

#[test]
fn tampered_msg2_is_refused_both_ways() {
    let mut rng = StdRng::seed_from_u64(SEED_TAMPER + 2);
    let alice = random_keypair(&mut rng);
    let bob = random_keypair(&mut rng);
    let prologue = b"tamper2";

    // snow responder's msg2, tampered, to our initiator.
    let (msg1, _) = Initiator::new(&alice, bob.public_key(), prologue)
        .write_message(b"one")
        .unwrap();
    let mut snow = snow_responder(&bob, prologue);
    snow_read(&mut snow, &msg1).unwrap();
    let msg2 = snow_write(&mut snow, b"two");
    for index in 0..msg2.len() {
        // A fresh initiator state for each attempt: a failed read consumes it.
        let (msg1, waiting) = Initiator::new(&alice, bob.public_key(), prologue)
            .write_message(b"one")
            .unwrap();
        let mut snow = snow_responder(&bob, prologue);
        snow_read(&mut snow, &msg1).unwrap();
        let mut tampered = snow_write(&mut snow, b"two");
        tampered[index] ^= 1 << rng.random_range(0..8u32);
        assert_eq!(
            waiting.read_message(&tampered).err(),
            Some(NoiseError::Decrypt),
            "byte {index}"
        );
    }

    // Our responder's msg2, tampered, to snow's initiator.
    for index in 0..msg2.len() {
        let mut snow = snow_initiator(&alice, &bob.public_key(), prologue);
        let msg1 = snow_write(&mut snow, b"one");
        let pending = Responder::read_message(&bob, prologue, &msg1).unwrap();
        let (mut tampered, _) = pending.write_message(b"two").unwrap();
        tampered[index] ^= 1 << rng.random_range(0..8u32);
        assert!(snow_read(&mut snow, &tampered).is_err(), "byte {index}");
    }
}

#[test]
fn wrong_prologue_fails_both_ways() {
    let mut rng = StdRng::seed_from_u64(SEED_TAMPER + 3);
    let alice = random_keypair(&mut rng);
    let bob = random_keypair(&mut rng);

    let (msg1, _) = Initiator::new(&alice, bob.public_key(), b"prologue A")
        .write_message(b"hi")
        .unwrap();
    assert!(snow_read(&mut snow_responder(&bob, b"prologue B"), &msg1).is_err());
    assert!(snow_read(&mut snow_responder(&bob, b""), &msg1).is_err());
    assert!(snow_read(&mut snow_responder(&bob, b"prologue A"), &msg1).is_ok());

    let msg1 = snow_write(
        &mut snow_initiator(&alice, &bob.public_key(), b"prologue A"),
        b"hi",
    );
    assert_eq!(
        Responder::read_message(&bob, b"prologue B", &msg1).err(),
        Some(NoiseError::Decrypt)
    );
    assert_eq!(
        Responder::read_message(&bob, b"", &msg1).err(),
        Some(NoiseError::Decrypt)
    );
    assert!(Responder::read_message(&bob, b"prologue A", &msg1).is_ok());
}

#[test]
fn wrong_responder_key_fails_both_ways() {
    let mut rng = StdRng::seed_from_u64(SEED_TAMPER + 4);
    let alice = random_keypair(&mut rng);
    let bob = random_keypair(&mut rng);
    let mallory = random_keypair(&mut rng);

    // Addressed to Bob, read by Mallory.
    let (msg1, _) = Initiator::new(&alice, bob.public_key(), b"p")
        .write_message(b"hi")
        .unwrap();
    assert!(snow_read(&mut snow_responder(&mallory, b"p"), &msg1).is_err());
    let msg1 = snow_write(&mut snow_initiator(&alice, &bob.public_key(), b"p"), b"hi");
    assert_eq!(
        Responder::read_message(&mallory, b"p", &msg1).err(),
        Some(NoiseError::Decrypt)
    );
}
