//! Fixed keys and an established session shared by the targets, so every
//! run explores the same state and crashes reproduce from their input.
#![allow(dead_code)] // each target uses part of it

use chat_noise::{Initiator, Responder, StaticKeypair, Transport};

pub const PROLOGUE: &[u8] = b"p2p-chat/1 Noise_IK_25519_ChaChaPoly_SHA256";

pub fn initiator_key() -> StaticKeypair {
    StaticKeypair::from_secret_bytes([0x11; 32])
}

pub fn responder_key() -> StaticKeypair {
    StaticKeypair::from_secret_bytes([0x22; 32])
}

/// (initiator transport, responder transport) from one fixed handshake.
pub fn transports() -> (Transport, Transport) {
    let (a, b) = (initiator_key(), responder_key());
    let (m1, waiting) = Initiator::with_ephemeral(&a, b.public_key(), PROLOGUE, [0x33; 32])
        .write_message(b"")
        .expect("message 1");
    let (m2, responder) = Responder::read_message_with_ephemeral(&b, PROLOGUE, &m1, [0x44; 32])
        .expect("read 1")
        .write_message(b"")
        .expect("message 2");
    let (_, initiator) = waiting.read_message(&m2).expect("read 2");
    (initiator, responder)
}
