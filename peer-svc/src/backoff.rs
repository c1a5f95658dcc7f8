//! Exponential backoff with jitter, for everything that retries: Discovery
//! calls, the membership watch, and the outbox's redelivery to a peer.

use std::time::Duration;

/// First retry delay; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Longest retry delay: a returning Discovery or peer is noticed within seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Exponential backoff with jitter: each delay is random in [d/2, d], and
/// d doubles after each failure.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: MIN_BACKOFF }
    }
}

impl Backoff {
    /// The delay to wait now (random in [d/2, d]); the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d / 2 + d.mul_f64(rand::random::<f64>() / 2.0)
    }

    /// After a success, start again from the shortest delay.
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::default();
        let mut bound = MIN_BACKOFF;
        for _ in 0..10 {
            let d = backoff.next_delay();
            assert!(
                d >= bound / 2 && d <= bound,
                "{d:?} outside [{:?}, {bound:?}]",
                bound / 2
            );
            bound = (bound * 2).min(MAX_BACKOFF);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= MIN_BACKOFF);
    }
}
