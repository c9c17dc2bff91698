//! Decaying strikes against an established session for protocol violations.
//!
//! Owns the count of recent violations by an authenticated peer (for example a
//! well-formed packet that fails to open) and when they are forgiven. It must
//! never read a clock, never use floats and never decide what to do about a
//! peer: it only says whether the threshold was reached.
//!
//! Decay is exact integer arithmetic: one strike is forgiven per full
//! `decay_interval` since the decay clock started, and the unspent part of an
//! interval is carried over, so strikes spread out evenly at exactly the decay
//! rate never accumulate.

use core::time::Duration;

use super::time::Timestamp;

/// When strikes add up to a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrikePolicy {
    /// `add` reports `Exceeded` once the count reaches this (count >= threshold).
    pub threshold: u32,
    /// One strike is forgiven per interval. Zero means strikes never decay.
    pub decay_interval: Duration,
}

impl Default for StrikePolicy {
    fn default() -> Self {
        StrikePolicy {
            threshold: 10,
            decay_interval: Duration::from_secs(10),
        }
    }
}

/// What `add` concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrikeOutcome {
    /// The count after this strike, still below the threshold.
    Below(u32),
    /// The count reached the threshold: the session is closed.
    Exceeded,
}

/// The strike count of one session.
#[derive(Debug, Clone, Default)]
pub struct Strikes {
    count: u32,
    /// Where the current decay interval started. Only meaningful while count > 0.
    decay_from: Timestamp,
}

impl Strikes {
    /// No strikes yet.
    pub fn new() -> Self {
        Strikes::default()
    }

    /// Applies decay up to `now`, adds one strike and reports whether the threshold
    /// is reached (count >= threshold; a zero threshold is always exceeded).
    pub fn add(&mut self, now: Timestamp, policy: &StrikePolicy) -> StrikeOutcome {
        self.decay(now, policy);
        if self.count == 0 {
            // The first strike starts a fresh interval: it is forgiven one whole
            // interval after it happened, not sooner.
            self.decay_from = now;
        }
        self.count = self.count.saturating_add(1);
        if self.count >= policy.threshold {
            StrikeOutcome::Exceeded
        } else {
            StrikeOutcome::Below(self.count)
        }
    }

    /// The count at `now` after decay. Does not change the state.
    pub fn current(&self, now: Timestamp, policy: &StrikePolicy) -> u32 {
        let (forgiven, _) = self.forgiven(now, policy);
        self.count.saturating_sub(forgiven)
    }

    fn decay(&mut self, now: Timestamp, policy: &StrikePolicy) {
        let (forgiven, spent) = self.forgiven(now, policy);
        if forgiven >= self.count {
            self.count = 0;
        } else {
            self.count -= forgiven;
            // Keep the remainder of the interval in progress.
            self.decay_from += spent;
        }
    }

    /// How many strikes have decayed by `now` (saturated to u32), and the time those
    /// whole intervals took. Time before `decay_from` (a clock that went backwards)
    /// forgives nothing.
    fn forgiven(&self, now: Timestamp, policy: &StrikePolicy) -> (u32, Duration) {
        let interval = duration_nanos(policy.decay_interval);
        if interval == 0 || self.count == 0 {
            return (0, Duration::ZERO);
        }
        let elapsed = now.as_nanos().saturating_sub(self.decay_from.as_nanos());
        let intervals = elapsed / interval;
        // intervals * interval <= elapsed, so this cannot overflow.
        let spent = Duration::from_nanos(intervals * interval);
        (u32::try_from(intervals).unwrap_or(u32::MAX), spent)
    }
}

/// Nanoseconds of `d`, saturated to u64 (about 584 years).
fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(millis: u64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    #[test]
    fn ten_quick_strikes_exceed_the_default() {
        let policy = StrikePolicy::default();
        let mut s = Strikes::new();
        for i in 1..10 {
            assert_eq!(s.add(ms(i * 10), &policy), StrikeOutcome::Below(i as u32));
        }
        assert_eq!(s.add(ms(100), &policy), StrikeOutcome::Exceeded);
        assert_eq!(s.current(ms(100), &policy), 10);
    }

    #[test]
    fn strikes_slower_than_the_decay_never_exceed() {
        let policy = StrikePolicy::default();
        let mut s = Strikes::new();
        // One strike every decay interval, forever: each is forgiven just in time.
        for i in 0..10_000u64 {
            assert_eq!(s.add(ms(i * 10_000), &policy), StrikeOutcome::Below(1));
        }
        // Two per interval climb by one per interval and must eventually exceed.
        let mut s = Strikes::new();
        let mut exceeded_at = None;
        for i in 0..100u64 {
            if s.add(ms(i * 5_000), &policy) == StrikeOutcome::Exceeded {
                exceeded_at = Some(i);
                break;
            }
        }
        assert_eq!(exceeded_at, Some(17));
    }

    #[test]
    fn decay_is_exact_and_keeps_the_remainder() {
        let policy = StrikePolicy {
            threshold: 100,
            decay_interval: Duration::from_secs(10),
        };
        let mut s = Strikes::new();
        for _ in 0..5 {
            s.add(ms(0), &policy);
        }
        assert_eq!(s.current(ms(9_999), &policy), 5);
        assert_eq!(s.current(Timestamp::from_nanos(9_999_999_999), &policy), 5);
        assert_eq!(s.current(ms(10_000), &policy), 4);
        assert_eq!(s.current(ms(39_999), &policy), 2);
        assert_eq!(s.current(ms(50_000), &policy), 0);
        // A strike at 15 s: decay to 5 - 1 = 4 at 10 s, then +1 = 5, and the 5 s
        // already spent in the current interval still count.
        assert_eq!(s.add(ms(15_000), &policy), StrikeOutcome::Below(5));
        assert_eq!(s.current(ms(19_999), &policy), 5);
        assert_eq!(s.current(ms(20_000), &policy), 4);
        // Fully decayed, a new strike starts a fresh interval from its own time.
        let mut s = Strikes::new();
        s.add(ms(0), &policy);
        assert_eq!(s.add(ms(25_000), &policy), StrikeOutcome::Below(1));
        assert_eq!(s.current(ms(34_999), &policy), 1);
        assert_eq!(s.current(ms(35_000), &policy), 0);
    }

    #[test]
    fn zero_interval_never_decays_and_odd_inputs_are_safe() {
        let policy = StrikePolicy {
            threshold: 3,
            decay_interval: Duration::ZERO,
        };
        let mut s = Strikes::new();
        assert_eq!(s.add(ms(0), &policy), StrikeOutcome::Below(1));
        assert_eq!(s.add(Timestamp::NEVER, &policy), StrikeOutcome::Below(2));
        assert_eq!(s.current(Timestamp::NEVER, &policy), 2);
        assert_eq!(s.add(ms(0), &policy), StrikeOutcome::Exceeded);

        let zero_threshold = StrikePolicy {
            threshold: 0,
            ..StrikePolicy::default()
        };
        assert_eq!(
            Strikes::new().add(ms(0), &zero_threshold),
            StrikeOutcome::Exceeded
        );

        // Time going backwards forgives nothing; a huge interval never overflows.
        let policy = StrikePolicy::default();
        let mut s = Strikes::new();
        s.add(ms(100_000), &policy);
        assert_eq!(s.current(ms(0), &policy), 1);
        assert_eq!(s.add(ms(0), &policy), StrikeOutcome::Below(2));
        assert_eq!(s.current(Timestamp::NEVER, &policy), 0);
        let forever = StrikePolicy {
            threshold: 10,
            decay_interval: Duration::MAX,
        };
        let mut s = Strikes::new();
        s.add(ms(1), &forever);
        assert_eq!(s.current(Timestamp::NEVER, &forever), 1);
    }

    proptest! {
        /// Against a model that replays every strike time: the count at `now` is
        /// the number of strikes minus the whole intervals that fit, applied
        /// interval by interval.
        #[test]
        fn matches_a_step_by_step_model(
            gaps in proptest::collection::vec(0u64..30_000, 1..200),
            interval_ms in 1u64..20_000,
            threshold in 1u32..20,
        ) {
            let policy = StrikePolicy { threshold, decay_interval: Duration::from_millis(interval_ms) };
            let mut s = Strikes::new();
            // Model: count and the start of the running interval, decayed by
            // stepping one interval at a time.
            let mut count = 0u32;
            let mut from = 0u64;
            let mut now = 0u64;
            for gap in gaps {
                now += gap;
                while count > 0 && now - from >= interval_ms {
                    count -= 1;
                    from += interval_ms;
                }
                if count == 0 {
                    from = now;
                }
                count += 1;
                let expected = if count >= threshold {
                    StrikeOutcome::Exceeded
                } else {
                    StrikeOutcome::Below(count)
                };
                prop_assert_eq!(s.add(ms(now), &policy), expected);
                prop_assert_eq!(s.current(ms(now), &policy), count);
            }
        }
    }
}
