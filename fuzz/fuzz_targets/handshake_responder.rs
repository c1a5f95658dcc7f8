//! Arbitrary bytes as IK message 1 to the responder, and the answer when
//! one parses: never a panic.
#![no_main]

mod common;

use chat_noise::Responder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let b = common::responder_key();
    if let Ok(pending) = Responder::read_message(&b, common::PROLOGUE, data) {
        let echo = pending.payload().to_vec();
        let _ = pending.write_message(&echo);
    }
});
