//! The per-peer token bucket, checked before any cryptography is spent on a packet.
//!
//! Owns exact integer rate limiting: tokens are kept in nanotokens (1e-9 of a
//! token), and a rate of `r` tokens per second refills exactly `r` nanotokens
//! per nanosecond, so no remainder is ever rounded away and there is no drift.
//! It must never read a clock (time is passed in), never use floats and never
//! panic for any timestamp: time that goes backwards refills nothing.

use super::time::Timestamp;

/// Nanotokens in one token; equal to nanoseconds per second, which is what makes
/// the refill exact.
const UNITS_PER_TOKEN: u64 = 1_000_000_000;

/// A token bucket: `rate_per_sec` tokens per second, at most `burst` stored.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Stored nanotokens, `<= capacity`.
    units: u64,
    /// `burst * UNITS_PER_TOKEN`; at most u32::MAX * 1e9 < u64::MAX.
    capacity: u64,
    /// Tokens per second, which is also nanotokens per nanosecond.
    rate: u32,
    /// The latest time the bucket has been refilled up to. Never moves backwards,
    /// so time that jumps back and forth cannot be credited twice.
    refilled_to: Timestamp,
}

impl TokenBucket {
    /// `rate_per_sec` tokens per second refilled continuously, at most `burst` stored.
    /// Starts full. A rate of 0 grants the burst and then nothing.
    pub fn new(rate_per_sec: u32, burst: u32, now: Timestamp) -> Self {
        let capacity = capacity(burst);
        TokenBucket {
            units: capacity,
            capacity,
            rate: rate_per_sec,
            refilled_to: now,
        }
    }

    /// Takes one token if one is available.
    pub fn try_take(&mut self, now: Timestamp) -> bool {
        self.refill(now);
        if self.units >= UNITS_PER_TOKEN {
            self.units -= UNITS_PER_TOKEN;
            true
        } else {
            false
        }
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Timestamp) -> u32 {
        self.refill(now);
        // units <= burst * UNITS_PER_TOKEN, so the quotient fits a u32.
        u32::try_from(self.units / UNITS_PER_TOKEN).unwrap_or(u32::MAX)
    }

    /// Changes the rate from `now` on. Time before `now` is credited at the old
    /// rate; stored tokens are kept but cut to the new `burst` (a larger burst
    /// does not fill the bucket).
    pub fn set_rate(&mut self, rate_per_sec: u32, burst: u32, now: Timestamp) {
        self.refill(now);
        self.rate = rate_per_sec;
        self.capacity = capacity(burst);
        self.units = self.units.min(self.capacity);
    }

    fn refill(&mut self, now: Timestamp) {
        let Some(elapsed) = now.as_nanos().checked_sub(self.refilled_to.as_nanos()) else {
            // Time went backwards: nothing to credit, and keep the later mark.
            return;
        };
        // Widened: elapsed (< 2^64) * rate (< 2^32) < 2^96 cannot overflow a u128.
        let added = u128::from(elapsed) * u128::from(self.rate);
        let room = u128::from(self.capacity - self.units);
        // added.min(room) <= room, which fits a u64 because capacity does.
        self.units += u64::try_from(added.min(room)).unwrap_or(0);
        self.refilled_to = now;
    }
}

fn capacity(burst: u32) -> u64 {
    u64::from(burst) * UNITS_PER_TOKEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(nanos: u64) -> Timestamp {
        Timestamp::from_nanos(nanos)
    }

    #[test]
    fn burst_then_refill() {
        let start = Timestamp::from_millis(1_000);
        let mut b = TokenBucket::new(100, 5, start);
        assert_eq!(b.available(start), 5);
        for _ in 0..5 {
            assert!(b.try_take(start));
        }
        assert!(!b.try_take(start));
        // One token per 10 ms at 100/s: not a nanosecond early.
        let almost = Timestamp::from_nanos(start.as_nanos() + 10_000_000 - 1);
        assert!(!b.try_take(almost));
        assert!(b.try_take(Timestamp::from_millis(1_010)));
        assert!(!b.try_take(Timestamp::from_millis(1_010)));
        // Long idle refills only up to the burst.
        assert_eq!(b.available(Timestamp::from_millis(100_000)), 5);
    }

    #[test]
    fn no_drift_over_a_million_microsecond_steps() {
        let mut b = TokenBucket::new(10_000, 10, Timestamp::ZERO);
        let mut burst = 0;
        while b.try_take(Timestamp::ZERO) {
            burst += 1;
        }
        assert_eq!(burst, 10);
        for second in 1..=3u64 {
            let mut granted = 0u32;
            for step in 1..=1_000_000u64 {
                let now = Timestamp::from_micros((second - 1) * 1_000_000 + step);
                while b.try_take(now) {
                    granted += 1;
                }
            }
            assert_eq!(granted, 10_000, "second {second}");
        }
    }

    #[test]
    fn time_going_backwards_refills_nothing_and_is_not_credited_twice() {
        let mut b = TokenBucket::new(100, 1, Timestamp::from_millis(500));
        assert!(b.try_take(Timestamp::from_millis(500)));
        assert!(!b.try_take(Timestamp::ZERO));
        assert!(!b.try_take(Timestamp::from_millis(505)));
        assert!(!b.try_take(Timestamp::from_millis(1)));
        // 10 ms after the latest time seen: exactly one token, not two.
        assert!(b.try_take(Timestamp::from_millis(510)));
        assert!(!b.try_take(Timestamp::from_millis(510)));
    }

    #[test]
    fn zero_rate_and_extreme_values() {
        let mut b = TokenBucket::new(0, 2, Timestamp::ZERO);
        assert!(b.try_take(Timestamp::ZERO));
        assert!(b.try_take(Timestamp::NEVER));
        assert!(!b.try_take(Timestamp::NEVER));
        let mut b = TokenBucket::new(u32::MAX, u32::MAX, Timestamp::NEVER);
        assert_eq!(b.available(Timestamp::ZERO), u32::MAX);
        let mut b = TokenBucket::new(u32::MAX, u32::MAX, Timestamp::ZERO);
        for _ in 0..1000 {
            assert!(b.try_take(Timestamp::ZERO));
        }
        assert_eq!(b.available(Timestamp::NEVER), u32::MAX);
        let mut b = TokenBucket::new(5, 0, Timestamp::ZERO);
        assert!(!b.try_take(Timestamp::NEVER));
    }

    #[test]
    fn set_rate_credits_the_past_at_the_old_rate_and_clamps() {
        let mut b = TokenBucket::new(1_000, 10, t(0));
        for _ in 0..10 {
            assert!(b.try_take(t(0)));
        }
        // 5 ms at 1000/s = 5 tokens, then 1/s from there.
        b.set_rate(1, 3, t(5_000_000));
        assert_eq!(b.available(t(5_000_000)), 3);
        assert_eq!(b.available(t(999_999_999)), 3);
        b.set_rate(1, 100, t(1_000_000_000));
        assert_eq!(b.available(t(1_000_000_000)), 3);
        assert_eq!(b.available(t(3_000_000_000)), 5);
    }

    /// A non-negative rational, always reduced; the model's idea of stored tokens.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Ratio {
        num: u128,
        den: u128,
    }

    fn gcd(mut a: u128, mut b: u128) -> u128 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }

    impl Ratio {
        fn new(num: u128, den: u128) -> Ratio {
            let g = gcd(num, den).max(1);
            Ratio {
                num: num / g,
                den: den / g,
            }
        }
        fn whole(n: u128) -> Ratio {
            Ratio::new(n, 1)
        }
        fn add(self, o: Ratio) -> Ratio {
            Ratio::new(self.num * o.den + o.num * self.den, self.den * o.den)
        }
        fn sub(self, o: Ratio) -> Ratio {
            Ratio::new(self.num * o.den - o.num * self.den, self.den * o.den)
        }
        fn le(self, o: Ratio) -> bool {
            self.num * o.den <= o.num * self.den
        }
        fn floor(self) -> u128 {
            self.num / self.den
        }
    }

    /// The specification, in exact rational seconds rather than nanotokens.
    struct Model {
        tokens: Ratio,
        burst: u128,
        rate: u128,
        clock: u64,
    }

    impl Model {
        fn advance(&mut self, now: u64) {
            if now <= self.clock {
                return;
            }
            let gained = Ratio::new(
                u128::from(now - self.clock) * self.rate,
                u128::from(UNITS_PER_TOKEN),
            );
            let sum = self.tokens.add(gained);
            let cap = Ratio::whole(self.burst);
            self.tokens = if sum.le(cap) { sum } else { cap };
            self.clock = now;
        }
        fn take(&mut self, now: u64) -> bool {
            self.advance(now);
            if Ratio::whole(1).le(self.tokens) {
                self.tokens = self.tokens.sub(Ratio::whole(1));
                true
            } else {
                false
            }
        }
        fn set_rate(&mut self, rate: u32, burst: u32, now: u64) {
            self.advance(now);
            self.rate = rate.into();
            self.burst = burst.into();
            if !self.tokens.le(Ratio::whole(self.burst)) {
                self.tokens = Ratio::whole(self.burst);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Forward(u64),
        Back(u64),
        Take,
        Available,
        SetRate(u32, u32),
    }

    fn rate() -> impl Strategy<Value = u32> {
        prop_oneof![8 => 0u32..20_000, 1 => Just(0u32), 1 => any::<u32>()]
    }

    fn burst() -> impl Strategy<Value = u32> {
        prop_oneof![8 => 0u32..64, 1 => any::<u32>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u64..2_000_000).prop_map(Op::Forward),
            2 => (0u64..5_000_000_000).prop_map(Op::Forward),
            1 => any::<u64>().prop_map(Op::Forward),
            1 => (0u64..10_000_000).prop_map(Op::Back),
            10 => Just(Op::Take),
            2 => Just(Op::Available),
            1 => (rate(), burst()).prop_map(|(r, b)| Op::SetRate(r, b)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn grants_exactly_what_the_rational_model_grants(
            start in prop_oneof![4 => 0u64..1_000_000_000_000, 1 => any::<u64>()],
            rate in rate(),
            burst in burst(),
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let mut bucket = TokenBucket::new(rate, burst, t(start));
            let mut model = Model {
                tokens: Ratio::whole(burst.into()),
                burst: burst.into(),
                rate: rate.into(),
                clock: start,
            };
            let mut now = start;
            for op in ops {
                match op {
                    Op::Forward(d) => now = now.saturating_add(d),
                    Op::Back(d) => now = now.saturating_sub(d),
                    Op::Take => prop_assert_eq!(bucket.try_take(t(now)), model.take(now)),
                    Op::Available => {
                        let got = u128::from(bucket.available(t(now)));
                        model.advance(now);
                        prop_assert_eq!(got, model.tokens.floor());
                    }
                    Op::SetRate(r, b) => {
                        bucket.set_rate(r, b, t(now));
                        model.set_rate(r, b, now);
                    }
                }
            }
        }
    }
}
