//! Properties over arbitrary input (the `cargo test` twin of fuzzing): no
//! input makes either handshake role, the transport or the replay window
//! panic, and nothing forged is ever accepted.

use chat_noise::{Initiator, ReplayWindow, Responder, StaticKeypair, Transport};
use proptest::prelude::*;

const PROLOGUE: &[u8] = b"p2p-chat/1 properties";

/// One established pair, shared by all cases (handshakes are slow-ish).
fn pair() -> &'static (StaticKeypair, StaticKeypair, Transport, Transport) {
    static PAIR: std::sync::OnceLock<(StaticKeypair, StaticKeypair, Transport, Transport)> =
        std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        let (a, b) = (StaticKeypair::generate(), StaticKeypair::generate());
        let (m1, waiting) = Initiator::new(&a, b.public_key(), PROLOGUE)
            .write_message(b"")
            .unwrap();
        let (m2, responder) = Responder::read_message(&b, PROLOGUE, &m1)
            .unwrap()
            .write_message(b"")
            .unwrap();
        let (_, initiator) = waiting.read_message(&m2).unwrap();
        (a, b, initiator, responder)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_responder_never_panics_and_rejects_random_initiations(msg in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (_, b, _, _) = pair();
        // Random bytes cannot carry a valid tag over an encrypted static key.
        prop_assert!(Responder::read_message(b, PROLOGUE, &msg).is_err());
    }

    #[test]
    fn the_initiator_never_panics_and_rejects_random_responses(msg in proptest::collection::vec(any::<u8>(), 0..200)) {
        let (a, b, _, _) = pair();
        let (_, waiting) = Initiator::new(a, b.public_key(), PROLOGUE).write_message(b"hi").unwrap();
        prop_assert!(waiting.read_message(&msg).is_err());
    }

    #[test]
    fn random_envelopes_never_open(counter in any::<u64>(), aad in proptest::collection::vec(any::<u8>(), 0..64), ct in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (_, _, _, responder) = pair();
        prop_assert!(responder.open(counter, &aad, &ct).is_err());
    }

    #[test]
    fn any_single_bit_flip_of_a_sealed_envelope_is_refused(text in proptest::collection::vec(any::<u8>(), 0..256), counter in 0u64..u64::MAX, bit in any::<prop::sample::Index>()) {
        let (_, _, initiator, responder) = pair();
        let mut sealed = initiator.seal(counter, b"aad", &text).unwrap();
        let i = bit.index(sealed.len() * 8);
        sealed[i / 8] ^= 1 << (i % 8);
        prop_assert!(responder.open(counter, b"aad", &sealed).is_err());
    }

    #[test]
    fn the_replay_window_accepts_each_counter_at_most_once(ops in proptest::collection::vec(0u64..5000, 1..2000)) {
        let mut window = ReplayWindow::new();
        let mut accepted = std::collections::HashSet::new();
        for c in ops {
            if window.accept(c).is_ok() {
                prop_assert!(accepted.insert(c), "counter {} accepted twice", c);
            }
        }
    }
}
