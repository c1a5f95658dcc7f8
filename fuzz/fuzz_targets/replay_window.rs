//! Arbitrary counter sequences against the replay window, checked against
//! a set of every counter accepted: none is ever accepted twice.
#![no_main]

use std::collections::HashSet;

use chat_noise::ReplayWindow;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut window = ReplayWindow::new();
    let mut accepted = HashSet::new();
    for chunk in data.chunks_exact(8) {
        let counter = u64::from_le_bytes(chunk.try_into().unwrap());
        let checked = window.check(counter).is_ok();
        let took = window.accept(counter).is_ok();
        assert_eq!(checked, took, "check and accept disagree on {counter}");
        if took {
            assert!(accepted.insert(counter), "counter {counter} accepted twice");
        }
    }
});
