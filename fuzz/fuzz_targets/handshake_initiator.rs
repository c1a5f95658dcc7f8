//! Arbitrary bytes as IK message 2 to a waiting initiator: never a panic.
#![no_main]

mod common;

use chat_noise::Initiator;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (a, b) = (common::initiator_key(), common::responder_key());
    let (_, waiting) = Initiator::with_ephemeral(&a, b.public_key(), common::PROLOGUE, [0x33; 32])
        .write_message(b"")
        .expect("message 1");
    let _ = waiting.read_message(data);
});
