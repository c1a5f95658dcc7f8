//! Anti-replay window tests, in the style of boringtun's `test_replay_counter`
//! but checked against a plain `HashSet` reference model: in-order and
//! out-of-order delivery, duplicates, the exact window edge at every block
//! alignment, forward jumps of every size up to beyond the ring, the reserved
//! counter, all orderings of a set of edge-case counters, and a long random
//! operation sequence.

use std::collections::HashSet;

use chat_noise::{REPLAY_WINDOW_SIZE, ReplayError, ReplayWindow};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Window size as a usize-friendly alias.
const W: u64 = REPLAY_WINDOW_SIZE;

/// Bits per ring block in the implementation (u64).
const BLOCK: u64 = 64;

/// Total bits in the implementation's ring (window plus one spare block).
const RING_BITS: u64 = W + BLOCK;

/// Operations in the randomized model check.
const RANDOM_OPS: usize = 100_000;

/// Seed for the randomized model check.
const SEED: u64 = 0x6479;

/// Obviously-correct reference: remembers every accepted counter.
#[derive(Default, Clone)]
struct Model {
    seen: HashSet<u64>,
    highest: Option<u64>,
}

impl Model {
    fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if counter == u64::MAX {
            return Err(ReplayError::Exhausted);
        }
        match self.highest {
            Some(h) if counter <= h => {
                // The window holds the W counters h-W+1 ..= h.
                if h - counter >= W {
                    Err(ReplayError::TooOld)
                } else if self.seen.contains(&counter) {
                    Err(ReplayError::Duplicate)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn accept(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        self.seen.insert(counter);
        self.highest = Some(self.highest.map_or(counter, |h| h.max(counter)));
        Ok(())
    }
}

/// Both implementations side by side; every operation is compared.
#[derive(Default, Clone)]
struct Checked {
    window: ReplayWindow,
    model: Model,
}

impl Checked {
    fn accept(&mut self, counter: u64) -> Result<(), ReplayError> {
        let before = self.window.clone();
        let got = self.window.accept(counter);
        assert_eq!(got, self.model.accept(counter), "accept({counter})");
        if got.is_err() {
            assert_eq!(
                self.window, before,
                "failed accept({counter}) changed state"
            );
        }
        got
    }

    fn check(&self, counter: u64) -> Result<(), ReplayError> {
        let got = self.window.check(counter);
        assert_eq!(got, self.model.check(counter), "check({counter})");
        got
    }

    /// Compares `check` for every counter from below the window to past
    /// the highest accepted one.
    fn scan(&self) {
        let next = self.window.next_expected();
        let low = next.saturating_sub(W + 2 * BLOCK);
        let high = next.saturating_add(2 * BLOCK);
        for counter in low..=high {
            let _ = self.check(counter);
        }
        let _ = self.check(u64::MAX);
    }
}

#[test]
fn in_order_counters_are_accepted_once() {
    let mut c = Checked::default();
    for counter in 0..10 * W {
        assert_eq!(c.check(counter), Ok(()));
        assert_eq!(c.accept(counter), Ok(()));
        assert_eq!(c.accept(counter), Err(ReplayError::Duplicate));
        assert_eq!(c.check(counter), Err(ReplayError::Duplicate));
        assert_eq!(c.window.next_expected(), counter + 1);
    }
    c.scan();
}

#[test]
fn every_counter_below_next_is_duplicate_or_too_old() {
    let mut c = Checked::default();
    let n = 3 * W + 17;
    for counter in 0..n {
        c.accept(counter).unwrap();
    }
    for counter in 0..n {
        let expected = if n - counter > W {
            Err(ReplayError::TooOld)
        } else {
            Err(ReplayError::Duplicate)
        };
        assert_eq!(c.check(counter), expected, "counter {counter}");
        assert_eq!(c.accept(counter), expected, "counter {counter}");
    }
}

#[test]
fn out_of_order_within_window_is_accepted_once() {
    let mut c = Checked::default();
    // Highest first, then everything below it that fits in the window, in
    // reverse order, then in a scrambled order as duplicates.
    let top = W - 1;
    c.accept(top).unwrap();
    for counter in (0..top).rev() {
        assert_eq!(c.accept(counter), Ok(()), "counter {counter}");
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    for _ in 0..4 * W {
        let counter = rng.random_range(0..=top);
        assert_eq!(c.accept(counter), Err(ReplayError::Duplicate));
    }
    // Interleaved: odd counters first, then the even ones.
    let mut c = Checked::default();
    let n = 2 * W;
    for counter in (1..n).step_by(2) {
        c.accept(counter).unwrap();
    }
    for counter in (0..n).step_by(2) {
        let expected = if n - 1 - counter >= W {
            Err(ReplayError::TooOld)
        } else {
            Ok(())
        };
        assert_eq!(c.accept(counter), expected, "counter {counter}");
    }
    c.scan();
}

#[test]
fn window_edge_is_exact_at_every_alignment() {
    for offset in 0..2 * BLOCK {
        let mut c = Checked::default();
        let highest = W + offset;
        c.accept(highest).unwrap();
        // Oldest counter still inside: highest - (W - 1).
        assert_eq!(c.check(highest - (W - 1)), Ok(()), "offset {offset}");
        assert_eq!(
            c.check(highest - W),
            Err(ReplayError::TooOld),
            "offset {offset}"
        );
        assert_eq!(c.accept(highest - (W - 1)), Ok(()));
        assert_eq!(c.accept(highest - (W - 1)), Err(ReplayError::Duplicate));
        // One step forward pushes that counter out.
        c.accept(highest + 1).unwrap();
        assert_eq!(c.check(highest - (W - 1)), Err(ReplayError::TooOld));
        c.scan();
    }
}

#[test]
fn forward_jumps_of_every_size_slide_and_clear_correctly() {
    // From several partially filled states at different block alignments,
    // jump forward by every delta up to past the whole ring, and compare
    // every counter in and around the window with the model.
    for start in [0u64, 1, BLOCK - 1, BLOCK, 5 * BLOCK + 17] {
        // Fill the window densely (every third counter missing) so stale
        // bits would be noticed.
        let mut filled = Checked::default();
        for counter in start..start + W {
            if !counter.is_multiple_of(3) {
                filled.accept(counter).unwrap();
            }
        }
        for delta in 0..=RING_BITS + 2 * BLOCK {
            let mut c = filled.clone();
            let target = start + W + delta;
            assert_eq!(c.accept(target), Ok(()), "start {start} delta {delta}");
            if delta.is_multiple_of(7) || delta <= 2 * BLOCK || delta >= W - BLOCK {
                c.scan();
            } else {
                // Cheaper spot checks for the remaining deltas.
                for counter in [
                    target,
                    target - 1,
                    target - (W - 1),
                    target - W,
                    start + W - 1,
                ] {
                    let _ = c.check(counter);
                }
            }
        }
    }
}

#[test]
fn named_jumps_window_size_ring_size_and_many_blocks() {
    for jump in [
        W - 1,
        W,
        W + 1,
        RING_BITS - 1,
        RING_BITS,
        RING_BITS + 1,
        2 * RING_BITS,
        100 * BLOCK + 5,
        1 << 40,
    ] {
        let mut c = Checked::default();
        for counter in 0..100 {
            c.accept(counter).unwrap();
        }
        let target = 99 + jump;
        c.accept(target).unwrap();
        c.scan();
        // Counters just behind the new highest are accepted unless they
        // were seen before the jump; one more step back is too old.
        let seen_before = |counter: u64| counter < 100;
        for counter in [target - 1, target - (W - 1)] {
            let expected = if seen_before(counter) {
                Err(ReplayError::Duplicate)
            } else {
                Ok(())
            };
            assert_eq!(c.accept(counter), expected, "jump {jump} counter {counter}");
        }
        assert_eq!(c.accept(target - W), Err(ReplayError::TooOld));
        c.scan();
    }
}

#[test]
fn reserved_counter_and_the_top_of_the_range() {
    let mut c = Checked::default();
    assert_eq!(c.check(u64::MAX), Err(ReplayError::Exhausted));
    assert_eq!(c.accept(u64::MAX), Err(ReplayError::Exhausted));
    c.accept(5).unwrap();
    assert_eq!(c.accept(u64::MAX), Err(ReplayError::Exhausted));
    // The last usable counter, then its neighbours.
    c.accept(u64::MAX - 1).unwrap();
    assert_eq!(c.window.next_expected(), u64::MAX);
    assert_eq!(c.accept(u64::MAX - 1), Err(ReplayError::Duplicate));
    assert_eq!(c.accept(u64::MAX), Err(ReplayError::Exhausted));
    c.accept(u64::MAX - 2).unwrap();
    c.accept(u64::MAX - W).unwrap();
    assert_eq!(c.accept(u64::MAX - W - 1), Err(ReplayError::TooOld));
    assert_eq!(c.accept(5), Err(ReplayError::TooOld));
    c.scan();
}

/// Calls `f` with every permutation of `items` (Heap's algorithm).
fn for_each_permutation(items: &mut [u64], f: &mut impl FnMut(&[u64])) {
    fn heap(k: usize, items: &mut [u64], f: &mut impl FnMut(&[u64])) {
        if k <= 1 {
            f(items);
            return;
        }
        heap(k - 1, items, f);
        for i in 0..k - 1 {
            if k.is_multiple_of(2) {
                items.swap(i, k - 1);
            } else {
                items.swap(0, k - 1);
            }
            heap(k - 1, items, f);
        }
    }
    let n = items.len();
    heap(n, items, f);
}

#[test]
fn every_order_of_edge_counters_matches_the_model() {
    // 7! = 5040 orders of counters around block and window boundaries.
    let mut counters = [0, 1, BLOCK - 1, BLOCK, W - 1, W, W + BLOCK];
    let probes: Vec<u64> = counters
        .iter()
        .flat_map(|&c| [c.saturating_sub(1), c, c + 1])
        .chain([2 * W, RING_BITS, u64::MAX])
        .collect();
    let mut orders = 0;
    for_each_permutation(&mut counters, &mut |order| {
        orders += 1;
        let mut c = Checked::default();
        for &counter in order {
            let _ = c.accept(counter);
            let _ = c.accept(counter); // immediate replay
        }
        for &probe in &probes {
            let _ = c.check(probe);
        }
    });
    assert_eq!(orders, 5040);
}

#[test]
fn random_operations_match_the_model() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut c = Checked::default();
    let mut base = 0u64;
    let mut outcomes = [0usize; 4]; // ok, too old, duplicate, exhausted
    for op in 0..RANDOM_OPS {
        // Counters in a range a bit larger than the window, drifting upward
        // with occasional big jumps and rare reserved values.
        let roll = rng.random_range(0..1000u32);
        let counter = match roll {
            0 => u64::MAX,
            1..=3 => {
                base += rng.random_range(W..4 * RING_BITS);
                base + rng.random_range(0..W)
            }
            _ => base + rng.random_range(0..W + W / 4),
        };
        if roll.is_multiple_of(10) {
            base += rng.random_range(0..BLOCK);
        }
        let result = if op.is_multiple_of(4) {
            let before = c.window.clone();
            let r = c.check(counter);
            assert_eq!(c.window, before, "check must not change state");
            r
        } else {
            c.accept(counter)
        };
        outcomes[match result {
            Ok(()) => 0,
            Err(ReplayError::TooOld) => 1,
            Err(ReplayError::Duplicate) => 2,
            Err(_) => 3,
        }] += 1;
        if op.is_multiple_of(10_000) {
            c.scan();
        }
    }
    c.scan();
    // The random walk must have exercised every outcome substantially.
    for (name, count) in ["ok", "too old", "duplicate", "exhausted"]
        .iter()
        .zip(outcomes)
    {
        assert!(
            count > 50,
            "outcome {name} only seen {count} times: {outcomes:?}"
        );
    }
}

#[test]
fn default_equals_new() {
    assert_eq!(ReplayWindow::default(), ReplayWindow::new());
    assert_eq!(ReplayWindow::new().next_expected(), 0);
}
