//! Arbitrary bytes as a DeliverRequest: decode, then open on an established
//! session with the replay window, as `Peer/Deliver` does. Nothing may
//! panic (that a random ciphertext never authenticates is a property test
//! in noise/tests/properties.rs).
#![no_main]

mod common;

use chat_noise::ReplayWindow;
use chat_proto::v1::DeliverRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = DeliverRequest::decode(data) else {
        return;
    };
    let Some(envelope) = request.envelope else {
        return;
    };
    let (_, responder) = common::transports();
    let mut window = ReplayWindow::new();
    if window.check(envelope.counter).is_err() {
        return;
    }
    let mut aad = envelope.session_id.clone();
    aad.extend_from_slice(envelope.sender.as_bytes());
    aad.extend_from_slice(envelope.message_id.as_bytes());
    if responder
        .open(envelope.counter, &aad, &envelope.ciphertext)
        .is_ok()
    {
        window.accept(envelope.counter).expect("checked above");
    }
});
