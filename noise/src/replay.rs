//! Sliding anti-replay window for explicit transport counters (RFC 6479,
//! the scheme WireGuard uses; compare boringtun's
//! `ReceivingKeyCounterValidator`).
//!
//! The window remembers which of the last [`REPLAY_WINDOW_SIZE`] counters
//! (ending at the highest one accepted) have been seen. The bitmap is a ring
//! of 64-bit blocks with one block more than the window needs, so sliding
//! forward only ever clears whole blocks (RFC 6479 §2) instead of shifting
//! bits.

use crate::error::ReplayError;

/// Bits in one bitmap block.
const BLOCK_BITS: u64 = u64::BITS as u64;

/// Total bits in the ring bitmap: 2048, the size used by WireGuard's
/// original counter validator (`COUNTER_BITS_TOTAL`). Must be a multiple of
/// [`BLOCK_BITS`].
const BITMAP_BITS: u64 = 2048;

/// Number of 64-bit blocks in the ring.
const RING_BLOCKS: usize = (BITMAP_BITS / BLOCK_BITS) as usize;

/// How many counters the window tracks: the highest accepted counter and the
/// `REPLAY_WINDOW_SIZE - 1` below it (1984). As in RFC 6479 and WireGuard
/// (`COUNTER_WINDOW_SIZE = COUNTER_BITS_TOTAL - COUNTER_REDUNDANT_BITS`), one
/// block of the ring is redundant, so the tracked counters never share a ring
/// block with stale ones and sliding clears whole blocks. Counters further
/// below are refused as [`ReplayError::TooOld`].
pub const REPLAY_WINDOW_SIZE: u64 = BITMAP_BITS - BLOCK_BITS;

/// Counter value that is never accepted: 2^64-1 is the reserved nonce
/// (Noise spec §5.1), so no legitimate sender uses it.
const RESERVED_COUNTER: u64 = u64::MAX;

/// RFC 6479-style sliding anti-replay window.
///
/// Usage per received message: [`ReplayWindow::check`] (cheap early reject),
/// decrypt, then [`ReplayWindow::accept`] (only after authentication
/// succeeded, so forged counters cannot slide the window).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// One past the highest counter accepted so far; 0 before the first.
    next: u64,
    /// Ring of seen-bits: counter `c` is bit `c % 64` of block
    /// `(c / 64) % RING_BLOCKS`.
    bitmap: [u64; RING_BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every counter below `u64::MAX` is acceptable.
    #[must_use]
    pub fn new() -> Self {
        Self {
            next: 0,
            bitmap: [0; RING_BLOCKS],
        }
    }

    /// Would `counter` be accepted? Does not change the state; use it to
    /// reject replays before spending time on decryption.
    ///
    /// # Errors
    ///
    /// [`ReplayError::Exhausted`] for `u64::MAX`, [`ReplayError::TooOld`]
    /// below the window, [`ReplayError::Duplicate`] if already accepted.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if counter == RESERVED_COUNTER {
            return Err(ReplayError::Exhausted);
        }
        if counter >= self.next {
            // Ahead of everything seen: new.
            return Ok(());
        }
        // counter < next, so the subtraction cannot underflow.
        if self.next - counter > REPLAY_WINDOW_SIZE {
            return Err(ReplayError::TooOld);
        }
        let (block, mask) = Self::position(counter);
        if self.bitmap[block] & mask != 0 {
            Err(ReplayError::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Marks `counter` as seen. Call only after the message authenticated.
    ///
    /// # Errors
    ///
    /// As [`ReplayWindow::check`]; the state is unchanged on error.
    pub fn accept(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        if counter >= self.next {
            self.slide_to(counter);
        }
        let (block, mask) = Self::position(counter);
        self.bitmap[block] |= mask;
        Ok(())
    }

    /// One past the highest counter accepted so far (0 if none).
    #[must_use]
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    /// Advances the window so that `counter` (>= `next`, < `u64::MAX`) is the
    /// highest, clearing the ring blocks that now represent new counters.
    fn slide_to(&mut self, counter: u64) {
        if let Some(highest) = self.next.checked_sub(1) {
            let current_block = highest / BLOCK_BITS;
            let target_block = counter / BLOCK_BITS;
            // Blocks after the current one hold stale bits from counters a
            // whole ring ago; clear them, but never more than the ring holds.
            let to_clear = (target_block - current_block).min(RING_BLOCKS as u64);
            for step in 1..=to_clear {
                let block = ((current_block + step) % RING_BLOCKS as u64) as usize;
                self.bitmap[block] = 0;
            }
            // Bits above `highest` in its own block are still zero: they were
            // cleared when the window entered that block and only counters
            // <= highest have been set since.
        }
        // Before the first accepted counter the bitmap is all zero.
        // `counter + 1` cannot overflow: u64::MAX was refused by `check`.
        self.next = counter + 1;
    }

    /// Ring block index and bit mask of `counter`.
    fn position(counter: u64) -> (usize, u64) {
        let block = ((counter / BLOCK_BITS) % RING_BLOCKS as u64) as usize;
        let mask = 1u64 << (counter % BLOCK_BITS);
        (block, mask)
    }
}
