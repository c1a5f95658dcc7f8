//! A hybrid logical clock: physical milliseconds in the high bits, a
//! logical counter in the low 16, so stamps follow wall time yet every event
//! a peer has seen is ordered before what it sends next. History is ordered
//! by (hlc, sender, id), which is the same on every peer.

use std::sync::Mutex;

/// Bits of the stamp given to the logical counter: 65,536 events per
/// millisecond before the clock borrows from the next millisecond.
const LOGICAL_BITS: u32 = 16;

/// A hybrid logical clock, safe to share between tasks.
#[derive(Debug, Default)]
pub struct Hlc {
    last: Mutex<u64>,
}

impl Hlc {
    /// A clock that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A stamp for a local event at wall time `now_ms`: greater than every
    /// stamp issued or observed before.
    pub fn tick(&self, now_ms: u64) -> u64 {
        let mut last = self.last.lock().expect("hlc lock");
        let physical = now_ms << LOGICAL_BITS;
        *last = physical.max(last.saturating_add(1));
        *last
    }

    /// Takes in a stamp seen on a received message, so the next local stamp follows it.
    pub fn observe(&self, stamp: u64) {
        let mut last = self.last.lock().expect("hlc lock");
        *last = (*last).max(stamp);
    }

    /// The wall-clock milliseconds a stamp carries.
    pub fn millis(stamp: u64) -> u64 {
        stamp >> LOGICAL_BITS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_even_when_the_clock_stalls_or_goes_back() {
        let hlc = Hlc::new();
        let a = hlc.tick(1000);
        let b = hlc.tick(1000);
        let c = hlc.tick(999);
        assert!(a < b && b < c);
        assert_eq!(Hlc::millis(a), 1000);
        assert_eq!(Hlc::millis(c), 1000);
        let d = hlc.tick(2000);
        assert_eq!(d, 2000 << LOGICAL_BITS);
    }

    #[test]
    fn a_received_stamp_orders_later_local_events_after_it() {
        let hlc = Hlc::new();
        let remote = hlc_from(5000, 7);
        hlc.observe(remote);
        assert!(hlc.tick(10) > remote);
    }

    fn hlc_from(ms: u64, logical: u64) -> u64 {
        (ms << LOGICAL_BITS) | logical
    }
}
