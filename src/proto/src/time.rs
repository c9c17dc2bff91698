//! Protocol time: a monotonic instant in nanoseconds from an arbitrary epoch.
//!
//! Owns the only notion of "now" the core knows. It must never read a clock:
//! the driver reads one (once per batch) and hands the value in, and tests
//! build timestamps from plain numbers to run whole networks on a virtual clock.

use core::ops::{Add, AddAssign};
use core::time::Duration;

/// A point in time, in nanoseconds since an epoch chosen by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The driver's epoch.
    pub const ZERO: Timestamp = Timestamp(0);
    /// Far enough in the future to mean "never" while still comparing sanely.
    pub const NEVER: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `nanos` after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// A timestamp `micros` after the epoch (saturating).
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros.saturating_mul(1_000))
    }

    /// A timestamp `millis` after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::from_nanos(u64::MAX - 1);
        assert_eq!(t + Duration::from_secs(1), Timestamp::NEVER);
        assert_eq!(
            Timestamp::from_millis(1).saturating_since(Timestamp::from_millis(2)),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp::from_millis(5).saturating_since(Timestamp::from_millis(2)),
            Duration::from_millis(3)
        );
    }
}
