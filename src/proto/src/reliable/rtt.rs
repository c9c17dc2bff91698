//! Round-trip time estimation and the retransmission timeout (RFC 6298).
//!
//! Owns SRTT, RTTVAR and the RTO in integer nanoseconds, and the clamp every
//! timer interval goes through. It knows nothing about segments: the sender
//! decides which samples are clean (Karn) and when to back off.

use core::time::Duration;

use super::{nanos, ReliableConfig, MAX_ACK_DELAY};

/// RFC 6298's K: RTO = max(min_rto, SRTT + K * RTTVAR) + the peer's ACK delay allowance.
const RTTVAR_MULTIPLIER: u128 = 4;

/// The RTO clamp in nanoseconds, normalised so that `1 <= min <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RtoBounds {
    min: u64,
    max: u64,
}

impl RtoBounds {
    fn from_config(config: &ReliableConfig) -> Self {
        let min = nanos(config.min_rto).max(1);
        RtoBounds {
            min,
            max: nanos(config.max_rto).max(min),
        }
    }

    fn clamp(self, value: u64) -> u64 {
        value.clamp(self.min, self.max)
    }

    /// One step of exponential backoff, capped.
    pub(super) fn backoff(self, value: u64) -> u64 {
        self.clamp(value.saturating_mul(2))
    }
}

fn narrow(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// SRTT, RTTVAR and the current RTO of one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RttEstimator {
    bounds: RtoBounds,
    srtt: Option<u64>,
    rttvar: u64,
    /// Always within `bounds`.
    rto: u64,
}

impl RttEstimator {
    pub(super) fn new(config: &ReliableConfig) -> Self {
        let bounds = RtoBounds::from_config(config);
        RttEstimator {
            bounds,
            srtt: None,
            rttvar: 0,
            rto: bounds.clamp(nanos(config.initial_rto)),
        }
    }

    pub(super) fn bounds(&self) -> RtoBounds {
        self.bounds
    }

    /// The current RTO in nanoseconds.
    pub(super) fn rto_nanos(&self) -> u64 {
        self.rto
    }

    pub(super) fn rto(&self) -> Duration {
        Duration::from_nanos(self.rto)
    }

    pub(super) fn srtt(&self) -> Option<Duration> {
        self.srtt.map(Duration::from_nanos)
    }

    /// RFC 6298 5.5: the timer of the oldest segment expired.
    pub(super) fn back_off(&mut self) {
        self.rto = self.bounds.backoff(self.rto);
    }

    /// RFC 6298 2.2/2.3 in integer nanoseconds (alpha 1/8, beta 1/4, K 4, G 0:
    /// the clock has nanosecond granularity and `min_rto` is the real floor), plus
    /// `MAX_ACK_DELAY` as RFC 9002's PTO adds `max_ack_delay`: a sample is taken from
    /// the segment an ACK delayed least, while the oldest one it covers may have
    /// waited the whole delay, so the RTO must outlast RTT plus that delay. The delay
    /// is added after the `min_rto` floor, so that floor stays the margin for timer and
    /// scheduling jitter above RTT plus delay (a sample of a fast path makes RTTVAR,
    /// the only other margin, almost nothing).
    pub(super) fn on_sample(&mut self, rtt: Duration) {
        let rtt = nanos(rtt);
        let (srtt, rttvar) = match self.srtt {
            None => (rtt, rtt / 2),
            Some(srtt) => {
                let deviation = u128::from(srtt.abs_diff(rtt));
                let rttvar = (3 * u128::from(self.rttvar) + deviation) / 4;
                let srtt = (7 * u128::from(srtt) + u128::from(rtt)) / 8;
                (narrow(srtt), narrow(rttvar))
            }
        };
        self.srtt = Some(srtt);
        self.rttvar = rttvar;
        let path = self.bounds.clamp(narrow(
            u128::from(srtt) + RTTVAR_MULTIPLIER * u128::from(rttvar),
        ));
        self.rto = self.bounds.clamp(path.saturating_add(nanos(MAX_ACK_DELAY)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn first_sample_sets_srtt_and_half_of_it_as_rttvar() {
        let mut rtt = RttEstimator::new(&ReliableConfig::default());
        assert_eq!((rtt.srtt(), rtt.rto()), (None, ms(50)));
        rtt.on_sample(ms(20));
        // RTO = SRTT + 4 RTTVAR + MAX_ACK_DELAY (10 ms).
        assert_eq!((rtt.srtt(), rtt.rto()), (Some(ms(20)), ms(70)));
        rtt.on_sample(ms(12));
        // RTTVAR = 3/4 * 10 + 1/4 * 8 = 9.5; SRTT = 7/8 * 20 + 1/8 * 12 = 19.
        assert_eq!((rtt.srtt(), rtt.rto()), (Some(ms(19)), ms(67)));
    }

    #[test]
    fn rto_and_backoff_stay_within_the_clamp() {
        let config = ReliableConfig {
            min_rto: Duration::ZERO,
            max_rto: Duration::ZERO,
            ..ReliableConfig::default()
        };
        let mut rtt = RttEstimator::new(&config);
        // Both clamps are at least 1 ns, so a timer is never due at the instant it was set.
        assert_eq!(rtt.rto_nanos(), 1);
        rtt.back_off();
        rtt.on_sample(Duration::from_secs(3_600));
        assert_eq!(rtt.rto_nanos(), 1);
        let mut rtt = RttEstimator::new(&ReliableConfig::default());
        for _ in 0..100 {
            rtt.back_off();
        }
        assert_eq!(rtt.rto(), Duration::from_secs(1));
        rtt.on_sample(Duration::MAX);
        assert_eq!(rtt.rto(), Duration::from_secs(1));
    }
}
