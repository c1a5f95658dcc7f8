//! Known-answer tests against the cacophony Noise test vectors
//! (`testdata/noise-cacophony-25519-chachapoly-sha256.json`): the
//! `Noise_IK_25519_ChaChaPoly_SHA256` entry is reproduced byte for byte in
//! both roles, including the handshake hash and every transport message.

use chat_noise::{
    Initiator, PROTOCOL_NAME, Responder, ResponderPrecomputed, StaticDh, StaticKeypair, Transport,
    handshake::InitiatorWaiting,
};
use serde::Deserialize;
use std::sync::Arc;

/// Path of the vector file, relative to the crate root.
const VECTOR_FILE: &str = "testdata/noise-cacophony-25519-chachapoly-sha256.json";

/// Number of handshake messages in IK; the rest are transport messages.
const HANDSHAKE_MESSAGES: usize = 2;

/// Transport messages use empty associated data in plain Noise.
const NO_AAD: &[u8] = &[];

#[derive(Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    protocol_name: String,
    init_prologue: String,
    init_static: String,
    init_ephemeral: String,
    #[serde(default)]
    init_remote_static: Option<String>,
    #[serde(default)]
    init_psks: Option<Vec<String>>,
    resp_prologue: String,
    resp_static: String,
    resp_ephemeral: String,
    #[serde(default)]
    resp_psks: Option<Vec<String>>,
    handshake_hash: String,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    payload: String,
    ciphertext: String,
}

/// Decoded form of the IK vector.
struct IkVector {
    init_prologue: Vec<u8>,
    init_static: [u8; 32],
    init_ephemeral: [u8; 32],
    init_remote_static: [u8; 32],
    resp_prologue: Vec<u8>,
    resp_static: [u8; 32],
    resp_ephemeral: [u8; 32],
    handshake_hash: [u8; 32],
    /// (payload, ciphertext) pairs.
    messages: Vec<(Vec<u8>, Vec<u8>)>,
}

fn bytes(s: &str) -> Vec<u8> {
    hex::decode(s).expect("vector hex")
}

fn key(s: &str) -> [u8; 32] {
    bytes(s).try_into().expect("32-byte key")
}

fn ik_vectors() -> Vec<IkVector> {
    let path = format!("{}/{VECTOR_FILE}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("read vector file");
    let file: VectorFile = serde_json::from_str(&text).expect("parse vector file");
    let vectors: Vec<IkVector> = file
        .vectors
        .into_iter()
        .filter(|v| v.protocol_name == PROTOCOL_NAME)
        .filter(|v| v.init_psks.is_none() && v.resp_psks.is_none())
        .map(|v| IkVector {
            init_prologue: bytes(&v.init_prologue),
            init_static: key(&v.init_static),
            init_ephemeral: key(&v.init_ephemeral),
            init_remote_static: key(v
                .init_remote_static
                .as_deref()
                .expect("IK initiator knows rs")),
            resp_prologue: bytes(&v.resp_prologue),
            resp_static: key(&v.resp_static),
            resp_ephemeral: key(&v.resp_ephemeral),
            handshake_hash: key(&v.handshake_hash),
            messages: v
                .messages
                .iter()
                .map(|m| (bytes(&m.payload), bytes(&m.ciphertext)))
                .collect(),
        })
        .collect();
    assert_eq!(
        vectors.len(),
        1,
        "expected exactly one {PROTOCOL_NAME} vector"
    );
    assert!(
        vectors[0].messages.len() > HANDSHAKE_MESSAGES,
        "vector has transport messages"
    );
    vectors
}

/// Runs the initiator role: writes message 0, reads message 1.
fn run_initiator(v: &IkVector) -> Transport {
    run_initiator_with(v, false)
}

/// The initiator role, its `ss` computed beforehand (a [`StaticDh`]) when
/// `precomputed`.
fn run_initiator_with(v: &IkVector, precomputed: bool) -> Transport {
    let local = StaticKeypair::from_secret_bytes(v.init_static);
    let initiator = if precomputed {
        let statics = StaticDh::new(&local, v.init_remote_static).expect("ss");
        Initiator::with_static_and_ephemeral(&local, &statics, &v.init_prologue, v.init_ephemeral)
    } else {
        Initiator::with_ephemeral(
            &local,
            v.init_remote_static,
            &v.init_prologue,
            v.init_ephemeral,
        )
    };
    let (payload0, ciphertext0) = &v.messages[0];
    let (message0, waiting): (Vec<u8>, InitiatorWaiting) =
        initiator.write_message(payload0).expect("write message 0");
    assert_eq!(
        hex::encode(&message0),
        hex::encode(ciphertext0),
        "message 0 ciphertext"
    );

    let (payload1, ciphertext1) = &v.messages[1];
    let (received1, transport) = waiting.read_message(ciphertext1).expect("read message 1");
    assert_eq!(&received1, payload1, "message 1 payload");
    assert_eq!(
        transport.handshake_hash(),
        v.handshake_hash,
        "initiator handshake hash"
    );
    assert_eq!(transport.remote_static(), v.init_remote_static);
    transport
}

/// Runs the responder role: reads message 0, writes message 1.
fn run_responder(v: &IkVector) -> Transport {
    run_responder_with(v, false)
}

/// The responder role, its `ss` (a [`StaticDh`]), ephemeral key and `se`
/// (a [`ResponderPrecomputed`]) computed ahead of time when `precomputed`.
fn run_responder_with(v: &IkVector, precomputed: bool) -> Transport {
    let local = StaticKeypair::from_secret_bytes(v.resp_static);
    let (payload0, ciphertext0) = &v.messages[0];
    let initiator = StaticKeypair::from_secret_bytes(v.init_static).public_key();
    let pending = if precomputed {
        let ss = Arc::new(StaticDh::new(&local, initiator).expect("ss"));
        Responder::read_message_with_static(&local, &v.resp_prologue, ciphertext0, |rs| {
            assert_eq!(*rs, initiator, "asked for the initiator's key");
            Some(ss)
        })
    } else {
        Responder::read_message_with_ephemeral(
            &local,
            &v.resp_prologue,
            ciphertext0,
            v.resp_ephemeral,
        )
    }
    .expect("read message 0");
    assert_eq!(pending.payload(), payload0.as_slice(), "message 0 payload");
    assert_eq!(
        pending.remote_static(),
        StaticKeypair::from_secret_bytes(v.init_static).public_key(),
        "responder learns the initiator's static key"
    );

    let (payload1, ciphertext1) = &v.messages[1];
    let work = precomputed.then(|| {
        ResponderPrecomputed::with_ephemeral(&local, initiator, v.resp_ephemeral)
            .expect("precompute")
    });
    let (message1, transport) = pending
        .write_message_precomputed(payload1, work)
        .expect("write message 1");
    assert_eq!(
        hex::encode(&message1),
        hex::encode(ciphertext1),
        "message 1 ciphertext"
    );
    assert_eq!(
        transport.handshake_hash(),
        v.handshake_hash,
        "responder handshake hash"
    );
    transport
}

/// Direction of transport message `index` (counting from the first
/// transport message): IK's last handshake message goes responder ->
/// initiator, so transport traffic starts initiator -> responder and
/// alternates.
fn initiator_sends(index: usize) -> bool {
    index.is_multiple_of(2)
}

#[test]
fn vector_keys_are_consistent() {
    for v in ik_vectors() {
        assert_eq!(
            StaticKeypair::from_secret_bytes(v.resp_static).public_key(),
            v.init_remote_static,
            "init_remote_static is the responder's public key"
        );
        assert_eq!(v.init_prologue, v.resp_prologue);
    }
}

#[test]
fn initiator_role_reproduces_handshake() {
    for v in ik_vectors() {
        run_initiator(&v);
    }
}

#[test]
fn responder_role_reproduces_handshake() {
    for v in ik_vectors() {
        run_responder(&v);
    }
}

/// Both roles with the work that can be done ahead done ahead: the
/// messages, hashes and keys are the vector's.
#[test]
fn responder_with_precomputed_work_reproduces_handshake() {
    for v in ik_vectors() {
        let r = run_responder_with(&v, true);
        let i = run_initiator_with(&v, true);
        assert_eq!(r.session_id(), i.session_id());
    }
}

#[test]
fn session_ids_match_handshake_hash_prefix() {
    for v in ik_vectors() {
        let i = run_initiator(&v);
        let r = run_responder(&v);
        assert_eq!(i.session_id(), r.session_id());
        assert_eq!(
            i.session_id().as_slice(),
            &v.handshake_hash[..chat_noise::SESSION_ID_LEN]
        );
    }
}

#[test]
fn transport_messages_with_explicit_counters() {
    for v in ik_vectors() {
        let initiator = run_initiator(&v);
        let responder = run_responder(&v);
        let (mut i_to_r, mut r_to_i) = (0u64, 0u64);
        for (index, (payload, ciphertext)) in v.messages[HANDSHAKE_MESSAGES..].iter().enumerate() {
            let (sender, receiver, counter) = if initiator_sends(index) {
                i_to_r += 1;
                (&initiator, &responder, i_to_r - 1)
            } else {
                r_to_i += 1;
                (&responder, &initiator, r_to_i - 1)
            };
            let sealed = sender.seal(counter, NO_AAD, payload).expect("seal");
            assert_eq!(
                hex::encode(&sealed),
                hex::encode(ciphertext),
                "transport message {index}"
            );
            let opened = receiver.open(counter, NO_AAD, ciphertext).expect("open");
            assert_eq!(&opened, payload, "transport payload {index}");
        }
        assert_eq!(initiator.messages_sent(), i_to_r);
        assert_eq!(responder.messages_sent(), r_to_i);
    }
}

#[test]
fn transport_messages_with_seal_next() {
    for v in ik_vectors() {
        let initiator = run_initiator(&v);
        let responder = run_responder(&v);
        for (index, (payload, ciphertext)) in v.messages[HANDSHAKE_MESSAGES..].iter().enumerate() {
            let (sender, receiver) = if initiator_sends(index) {
                (&initiator, &responder)
            } else {
                (&responder, &initiator)
            };
            let expected_counter = sender.messages_sent();
            let (counter, sealed) = sender.seal_next(NO_AAD, payload).expect("seal_next");
            assert_eq!(counter, expected_counter);
            assert_eq!(
                hex::encode(&sealed),
                hex::encode(ciphertext),
                "transport message {index}"
            );
            assert_eq!(
                &receiver.open(counter, NO_AAD, &sealed).expect("open"),
                payload
            );
        }
    }
}

#[test]
fn initiator_talks_to_responder_built_from_same_vector() {
    // Cross the two roles: our initiator's real message 0 goes to our
    // responder, whose real message 1 goes back.
    for v in ik_vectors() {
        let init_local = StaticKeypair::from_secret_bytes(v.init_static);
        let resp_local = StaticKeypair::from_secret_bytes(v.resp_static);
        let (m0, waiting) = Initiator::with_ephemeral(
            &init_local,
            v.init_remote_static,
            &v.init_prologue,
            v.init_ephemeral,
        )
        .write_message(&v.messages[0].0)
        .unwrap();
        let pending = Responder::read_message_with_ephemeral(
            &resp_local,
            &v.resp_prologue,
            &m0,
            v.resp_ephemeral,
        )
        .unwrap();
        let (m1, r) = pending.write_message(&v.messages[1].0).unwrap();
        let (_, i) = waiting.read_message(&m1).unwrap();
        assert_eq!(i.handshake_hash(), v.handshake_hash);
        assert_eq!(r.handshake_hash(), v.handshake_hash);
    }
}
