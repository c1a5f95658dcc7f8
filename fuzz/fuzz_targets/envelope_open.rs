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
    // The AAD as peer-svc's envelope::aad makes it: the length-prefixed session id.
    let mut aad = (envelope.session_id.len() as u32).to_be_bytes().to_vec();
    aad.extend_from_slice(&envelope.session_id);
    if responder
        .open(envelope.counter, &aad, &envelope.ciphertext)
        .is_ok()
    {
        window.accept(envelope.counter).expect("checked above");
    }
});
