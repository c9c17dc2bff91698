//! The anti-replay window: which transport counters a session may still accept.
//!
//! Owns an RFC 6479-style sliding bitmap, a fixed ring of `u64` blocks with no
//! heap, no clock and no cryptography. It must never record a counter whose
//! packet has not been authenticated: callers `check` before the AEAD open
//! (cheap rejection of replays without spending crypto) and `mark` only after
//! the open succeeded, so a forged packet can never move the window.
//!
//! Acceptance rule (normative, PROTOCOL.md quotes it): with `highest` the largest
//! counter marked so far, a counter `c` is accepted iff nothing has been marked
//! yet, or `c > highest`, or `highest - c < REPLAY_WINDOW` and `c` was not
//! marked before. So `highest - (REPLAY_WINDOW - 1)` is the oldest counter still
//! accepted and `highest - REPLAY_WINDOW` is `TooOld`. A counter that is both
//! too old and a duplicate reports `TooOld`.

use super::wire::Counter;

/// Packets: counters this far or further below the highest are too old.
pub const REPLAY_WINDOW: u64 = 2048;

const BLOCK_BITS: u64 = u64::BITS as u64;
const LOG_BLOCK_BITS: u32 = BLOCK_BITS.trailing_zeros();
/// The 2048-bit window plus one spare block, as RFC 6479 section 3 does: the
/// block holding `highest` is only partly used, so a window of exactly
/// `REPLAY_WINDOW` counters behind `highest` spans up to 33 distinct blocks.
/// Without the spare block the oldest few counters would alias newer ones.
const BLOCKS: u64 = REPLAY_WINDOW / BLOCK_BITS + 1;

// The rule above relies on the window being a whole number of blocks.
const _: () = assert!(REPLAY_WINDOW % BLOCK_BITS == 0 && REPLAY_WINDOW > 0);

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// This counter was already marked.
    Duplicate,
    /// `REPLAY_WINDOW` or more below the highest marked counter: we can no longer tell.
    TooOld,
}

/// The set of counters seen recently, per direction of one session.
/// `repr(C)`: `highest`, read for every packet, leads, beside the key set's index.
///
/// `highest` is a bare `u64`, 0 while nothing is marked: a fresh window then answers as
/// one holding only an unmarked counter 0 would, which is the same rule (every counter
/// acceptable, 0 included), so no case needs the difference but [`Self::highest`], which
/// tells it from the bit of counter 0. Eight bytes, not an `Option`'s sixteen: the key set
/// is laid out to the byte so that what a packet reads fits in as few cache lines as it can.
#[derive(Debug, Clone)]
#[repr(C)]
pub struct ReplayWindow {
    highest: u64,
    /// Bit `c % 64` of block `(c / 64) % BLOCKS` says whether counter `c` was marked,
    /// for every `c` within the window below `highest`.
    bitmap: [u64; BLOCKS as usize],
}

impl ReplayWindow {
    /// Nothing seen yet: every counter, including 0, is acceptable.
    pub fn new() -> Self {
        ReplayWindow {
            bitmap: [0; BLOCKS as usize],
            highest: 0,
        }
    }

    /// Step 1, before the AEAD open: would `counter` be accepted? Mutates nothing.
    pub fn check(&self, counter: Counter) -> Result<(), ReplayError> {
        let c = counter.0;
        let highest = self.highest;
        if c > highest {
            return Ok(());
        }
        // c <= highest, so the subtraction cannot wrap.
        if highest - c >= REPLAY_WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (block, bit) = locate(c);
        if self.bitmap[block] & bit != 0 {
            Err(ReplayError::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Step 2, after the AEAD open succeeded: records `counter`, sliding the window
    /// forward if it is the new highest. Re-checks first and returns the same errors,
    /// leaving the window untouched on error.
    pub fn mark(&mut self, counter: Counter) -> Result<(), ReplayError> {
        self.check(counter)?;
        let c = counter.0;
        if c > self.highest {
            // From a fresh window (0, nothing marked) this clears blocks that are clear.
            self.slide(self.highest, c);
            self.highest = c;
        }
        let (block, bit) = locate(c);
        self.bitmap[block] |= bit;
        Ok(())
    }

    /// Bytes from the start of a window to the end of what every check reads (`highest`);
    /// the bitmap follows, of which a check reads one word ([`Self::word_offset`]).
    pub const HEAD: usize = core::mem::offset_of!(ReplayWindow, bitmap);

    /// Where, from the start of a window, the bitmap word lies that checking and marking
    /// `counter` read: for a cache hint, which then need not name the whole bitmap.
    pub fn word_offset(counter: Counter) -> usize {
        let (block, _) = locate(counter.0);
        Self::HEAD + block * core::mem::size_of::<u64>()
    }

    /// The largest counter marked so far. The bit of counter 0 tells a fresh window from one
    /// that marked only 0: the highest counter's own bit is always set, since marking sets
    /// it and sliding clears only blocks above the old highest's.
    pub fn highest(&self) -> Option<Counter> {
        let (block, bit) = locate(0);
        let nothing_marked = self.highest == 0 && self.bitmap[block] & bit == 0;
        (!nothing_marked).then_some(Counter(self.highest))
    }

    /// Zeroes the blocks that enter the ring when the highest block moves from
    /// `old`'s to `new`'s. A jump of a whole ring or more clears everything, so the
    /// cost is bounded by `BLOCKS` whatever the jump.
    fn slide(&mut self, old: u64, new: u64) {
        let old_block = old >> LOG_BLOCK_BITS;
        let new_block = new >> LOG_BLOCK_BITS;
        // old <= new, and both block numbers are at most u64::MAX / 64, so adding
        // up to BLOCKS to old_block below cannot overflow.
        let entering = (new_block - old_block).min(BLOCKS);
        for step in 1..=entering {
            self.bitmap[ring_slot(old_block + step)] = 0;
        }
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

/// The ring slot of block number `block`; always `< BLOCKS`.
fn ring_slot(block: u64) -> usize {
    // BLOCKS is a small constant, so the remainder always fits a usize.
    (block % BLOCKS) as usize
}

/// The ring slot and bit mask that record counter `c`.
fn locate(c: u64) -> (usize, u64) {
    (
        ring_slot(c >> LOG_BLOCK_BITS),
        1u64 << (c & (BLOCK_BITS - 1)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn marked(counters: &[u64]) -> ReplayWindow {
        let mut w = ReplayWindow::new();
        for &c in counters {
            assert_eq!(w.mark(Counter(c)), Ok(()), "marking {c}");
        }
        w
    }

    #[test]
    fn fresh_window_accepts_zero_and_anything() {
        let w = ReplayWindow::new();
        assert_eq!(w.highest(), None);
        assert_eq!(w.check(Counter(0)), Ok(()));
        assert_eq!(w.check(Counter(u64::MAX)), Ok(()));
        let mut w = ReplayWindow::default();
        assert_eq!(w.mark(Counter(0)), Ok(()));
        assert_eq!(w.highest(), Some(Counter(0)));
        assert_eq!(w.check(Counter(0)), Err(ReplayError::Duplicate));
    }

    /// The head is a bare `u64` (0 when nothing is marked): a fresh window and one that marked
    /// only 0 differ in `highest` and in whether 0 is a replay, and in nothing else; the
    /// first counter above 0 after either is the new highest.
    #[test]
    fn a_fresh_window_and_one_that_marked_only_zero_differ_only_in_zero() {
        let fresh = ReplayWindow::new();
        let zero = marked(&[0]);
        assert_eq!(fresh.highest(), None);
        assert_eq!(zero.highest(), Some(Counter(0)));
        assert_eq!(fresh.check(Counter(0)), Ok(()));
        assert_eq!(zero.check(Counter(0)), Err(ReplayError::Duplicate));
        for c in [1, 63, 64, 2047, 2048, 2049, 1 << 40, u64::MAX] {
            assert_eq!(fresh.check(Counter(c)), Ok(()), "{c}");
            assert_eq!(zero.check(Counter(c)), Ok(()), "{c}");
            let (mut a, mut b) = (fresh.clone(), zero.clone());
            a.mark(Counter(c)).unwrap();
            b.mark(Counter(c)).unwrap();
            assert_eq!(a.highest(), Some(Counter(c)));
            assert_eq!(b.highest(), Some(Counter(c)));
            // Zero is still acceptable after the fresh window's first mark, while in range.
            let zero_fresh = if c < REPLAY_WINDOW {
                Ok(())
            } else {
                Err(ReplayError::TooOld)
            };
            assert_eq!(a.check(Counter(0)), zero_fresh, "{c}");
        }
        // Sliding far never loses the highest's own bit, which `highest` relies on.
        let mut w = marked(&[0, 5_000, 1 << 32]);
        assert_eq!(w.highest(), Some(Counter(1 << 32)));
        w.mark(Counter((1 << 32) - 1)).unwrap();
        assert_eq!(w.highest(), Some(Counter(1 << 32)));
    }

    #[test]
    fn in_order_then_duplicates() {
        let mut w = ReplayWindow::new();
        for c in 0..5000 {
            assert_eq!(w.check(Counter(c)), Ok(()));
            assert_eq!(w.mark(Counter(c)), Ok(()));
            assert_eq!(w.mark(Counter(c)), Err(ReplayError::Duplicate));
        }
        assert_eq!(w.highest(), Some(Counter(4999)));
        assert_eq!(w.check(Counter(4999 - 2047)), Err(ReplayError::Duplicate));
        assert_eq!(w.check(Counter(4999 - 2048)), Err(ReplayError::TooOld));
    }

    #[test]
    fn reordered_within_window() {
        let mut w = marked(&[10, 3000]);
        // Nothing in (3000 - 2048, 3000) was marked yet: all of it is fresh, in any order.
        for c in (3000 - 2047..3000).rev() {
            assert_eq!(w.mark(Counter(c)), Ok(()), "{c}");
        }
        for c in 3000 - 2047..=3000 {
            assert_eq!(w.check(Counter(c)), Err(ReplayError::Duplicate), "{c}");
        }
        assert_eq!(w.check(Counter(10)), Err(ReplayError::TooOld));
        assert_eq!(w.highest(), Some(Counter(3000)));
    }

    #[test]
    fn edge_of_the_window_is_exact() {
        // highest - c == WINDOW - 1 is accepted, == WINDOW is too old, for every
        // position of `highest` inside its block (the spare block matters here).
        for h in 10_000..10_000 + 2 * BLOCK_BITS {
            let mut w = marked(&[h]);
            let oldest = h - (REPLAY_WINDOW - 1);
            assert_eq!(w.check(Counter(oldest)), Ok(()), "h={h}");
            assert_eq!(w.check(Counter(oldest - 1)), Err(ReplayError::TooOld));
            assert_eq!(w.mark(Counter(oldest)), Ok(()));
            assert_eq!(w.mark(Counter(oldest)), Err(ReplayError::Duplicate));
            // The oldest block and the newest must not share a ring slot: after
            // moving up inside h's block, h + 1 is still fresh.
            assert_eq!(w.check(Counter(h - 1)), Ok(()));
            assert_eq!(w.mark(Counter(h + 2)), Ok(()));
            assert_eq!(w.check(Counter(h + 1)), Ok(()), "h={h}");
        }
    }

    #[test]
    fn errors_leave_the_window_untouched() {
        let mut w = marked(&[5000, 4000]);
        let before = w.clone();
        assert_eq!(w.mark(Counter(1)), Err(ReplayError::TooOld));
        assert_eq!(w.mark(Counter(4000)), Err(ReplayError::Duplicate));
        assert_eq!(w.bitmap, before.bitmap);
        assert_eq!(w.highest, before.highest);
    }

    #[test]
    fn huge_jump_clears_everything() {
        let mut w = marked(&[0, 1, 2, 63, 64, 100]);
        let far = 1u64 << 40;
        assert_eq!(w.mark(Counter(far)), Ok(()));
        for c in far - 2047..far {
            assert_eq!(w.check(Counter(c)), Ok(()), "{c}");
        }
        assert_eq!(w.check(Counter(100)), Err(ReplayError::TooOld));
        // A jump of exactly one ring's worth of blocks also clears every stale bit.
        let mut w = ReplayWindow::new();
        for c in 0..64 * BLOCKS {
            w.mark(Counter(c)).unwrap();
        }
        let h = 64 * BLOCKS - 1 + 64 * BLOCKS;
        w.mark(Counter(h)).unwrap();
        for c in h - 2047..h {
            assert_eq!(w.check(Counter(c)), Ok(()), "{c}");
        }
    }

    #[test]
    fn counters_near_u64_max_do_not_overflow() {
        let mut w = marked(&[u64::MAX - 5000, u64::MAX - 1]);
        assert_eq!(w.mark(Counter(u64::MAX)), Ok(()));
        assert_eq!(w.highest(), Some(Counter(u64::MAX)));
        assert_eq!(w.check(Counter(u64::MAX)), Err(ReplayError::Duplicate));
        assert_eq!(w.check(Counter(u64::MAX - 1)), Err(ReplayError::Duplicate));
        assert_eq!(w.check(Counter(u64::MAX - 2)), Ok(()));
        assert_eq!(w.check(Counter(u64::MAX - 2047)), Ok(()));
        assert_eq!(w.check(Counter(u64::MAX - 2048)), Err(ReplayError::TooOld));
        assert_eq!(w.check(Counter(0)), Err(ReplayError::TooOld));
        // From zero straight to the top.
        let mut w = marked(&[0]);
        assert_eq!(w.mark(Counter(u64::MAX)), Ok(()));
        assert_eq!(w.check(Counter(u64::MAX - 64)), Ok(()));
    }

    /// The obviously correct model: every marked counter, and the highest.
    #[derive(Default)]
    struct Model {
        seen: HashSet<u64>,
        highest: Option<u64>,
    }

    impl Model {
        fn check(&self, c: u64) -> Result<(), ReplayError> {
            match self.highest {
                Some(h) if c <= h && h - c >= REPLAY_WINDOW => Err(ReplayError::TooOld),
                _ if self.seen.contains(&c) => Err(ReplayError::Duplicate),
                _ => Ok(()),
            }
        }

        fn mark(&mut self, c: u64) -> Result<(), ReplayError> {
            self.check(c)?;
            self.seen.insert(c);
            self.highest = Some(self.highest.map_or(c, |h| h.max(c)));
            Ok(())
        }
    }

    #[derive(Debug, Clone)]
    enum Pick {
        /// Relative to the current highest (or 0), clamped into u64.
        Near(i64),
        Anywhere(u64),
        BelowMax(u64),
    }

    fn pick() -> impl Strategy<Value = (Pick, bool)> {
        let p = prop_oneof![
            8 => (-2200i64..200).prop_map(Pick::Near),
            1 => (-70_000i64..70_000).prop_map(Pick::Near),
            1 => any::<u64>().prop_map(Pick::Anywhere),
            2 => (0u64..5000).prop_map(Pick::BelowMax),
        ];
        // false: the AEAD open "failed", so the caller only checks.
        (p, proptest::bool::weighted(0.85))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_reference_model(ops in proptest::collection::vec(pick(), 1..600)) {
            let mut w = ReplayWindow::new();
            let mut m = Model::default();
            for (p, authentic) in ops {
                let base = m.highest.unwrap_or(0);
                let c = match p {
                    Pick::Near(d) if d < 0 => base.saturating_sub(d.unsigned_abs()),
                    Pick::Near(d) => base.saturating_add(d.unsigned_abs()),
                    Pick::Anywhere(c) => c,
                    Pick::BelowMax(d) => u64::MAX - d,
                };
                prop_assert_eq!(w.check(Counter(c)), m.check(c), "check {}", c);
                if authentic {
                    prop_assert_eq!(w.mark(Counter(c)), m.mark(c), "mark {}", c);
                }
                prop_assert_eq!(w.highest(), m.highest.map(Counter));
            }
            // Finally sweep the whole window and a little beyond against the model.
            if let Some(h) = m.highest {
                for c in h.saturating_sub(REPLAY_WINDOW + 70)..=h {
                    prop_assert_eq!(w.check(Counter(c)), m.check(c), "sweep {}", c);
                }
            }
        }
    }
}
