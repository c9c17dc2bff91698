//! How much handshake work a source may cost us, decided before any Diffie-Hellman.
//!
//! Owns integer token buckets: one for the whole endpoint's *unproven* handshakes (an init
//! without a valid cookie: its source address may be spoofed) and, per source prefix, one for
//! unproven and one for *proven* handshakes (a valid cookie shows the sender receives at that
//! address). A prefix is an IPv4 address or an IPv6 /64, since one host commonly holds a
//! whole /64. Answering a HandshakeInit costs three X25519 operations; a token is taken for
//! every init that would cost them, first attempt or replacement alike, and only a
//! retransmission (answered from what was already computed) is free.
//!
//! When an unproven init finds either of its buckets empty, the endpoint is under load for
//! that source and demands a cookie instead: the answer costs no Diffie-Hellman and is no
//! larger than the request. A proven init never competes with unproven ones: it draws on its
//! prefix's proven bucket alone, so a flood of spoofed inits, however wide, cannot hold back
//! a peer that proves its address.
//!
//! The per-prefix table is a fixed set-associative cache: no allocation after creation, four
//! entries looked at per init. An unproven source that finds no room gets no budget (it is
//! asked for a cookie, which is safe), so a flood from many sources cannot push real sources
//! out; a proven source takes the least recently used entry of its set.
//!
//! It must never read a clock or draw randomness: time and the hash key are passed in.

use std::net::IpAddr;

use super::ratelimit::TokenBucket;
use super::time::Timestamp;

/// Entries looked at per source.
const WAYS: usize = 4;

/// The rates, from `EndpointConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRates {
    /// Unproven handshakes per second answered by the whole endpoint.
    pub total_rate: u32,
    /// Unproven handshakes the whole endpoint answers in a burst.
    pub total_burst: u32,
    /// Handshakes per second answered for one source prefix, unproven and proven each.
    pub per_source_rate: u32,
    /// Handshakes one source prefix gets in a burst, unproven and proven each.
    pub per_source_burst: u32,
}

/// What one HandshakeInit may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Spend the Diffie-Hellman work; a token was taken.
    Admit,
    /// Unproven and over its rate: answer with a cookie reply, nothing else.
    DemandCookie,
    /// Proven, yet over its prefix's rate: refuse (`handshake_budget`).
    Refuse,
}

/// A source address reduced to what the budgets count: an IPv4 address (also when written as
/// an IPv4-mapped IPv6 address) or the /64 of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePrefix(u128);

impl SourcePrefix {
    /// The prefix `addr` belongs to.
    pub fn of(addr: IpAddr) -> SourcePrefix {
        match addr.to_canonical() {
            IpAddr::V4(v4) => SourcePrefix(u128::from(u32::from(v4)) | (0xffff << 32)),
            IpAddr::V6(v6) => SourcePrefix(u128::from(v6) & !u128::from(u64::MAX)),
        }
    }
}

#[derive(Clone)]
struct Entry {
    prefix: Option<SourcePrefix>,
    unproven: TokenBucket,
    proven: TokenBucket,
    last_used: Timestamp,
}

/// The handshake buckets of one endpoint.
pub struct HandshakeLoad {
    rates: HandshakeRates,
    total: TokenBucket,
    entries: Vec<Entry>,
    /// `entries.len() / WAYS - 1`; the number of sets is a power of two.
    set_mask: usize,
    hash_key: [u64; 2],
}

impl HandshakeLoad {
    /// Buckets for about `sources` prefixes at once, with the hash keyed by `hash_key` (which
    /// must be secret, so that no one can aim many prefixes at one set).
    pub fn new(
        rates: HandshakeRates,
        sources: usize,
        hash_key: [u64; 2],
        now: Timestamp,
    ) -> HandshakeLoad {
        let sets = sources.div_ceil(WAYS).max(1).next_power_of_two();
        let empty = Entry {
            prefix: None,
            unproven: TokenBucket::new(rates.per_source_rate, rates.per_source_burst, now),
            proven: TokenBucket::new(rates.per_source_rate, rates.per_source_burst, now),
            last_used: now,
        };
        HandshakeLoad {
            rates,
            total: TokenBucket::new(rates.total_rate, rates.total_burst, now),
            entries: vec![empty; sets * WAYS],
            set_mask: sets - 1,
            hash_key,
        }
    }

    /// Decides whether an init from `source` may cost a Diffie-Hellman now, taking its token
    /// if so. `proven`: it carried a valid cookie for its source address.
    pub fn admit(&mut self, now: Timestamp, source: IpAddr, proven: bool) -> Admission {
        let prefix = SourcePrefix::of(source);
        if proven {
            let Some(entry) = self.entry(now, prefix, true) else {
                return Admission::Refuse;
            };
            return if entry.proven.try_take(now) {
                Admission::Admit
            } else {
                Admission::Refuse
            };
        }
        // Both buckets must hold a token before either is spent, so a refusal costs nothing.
        if self.total.available(now) == 0 {
            return Admission::DemandCookie;
        }
        let Some(entry) = self.entry(now, prefix, false) else {
            return Admission::DemandCookie;
        };
        if !entry.unproven.try_take(now) {
            return Admission::DemandCookie;
        }
        self.total.try_take(now);
        Admission::Admit
    }

    /// Whether an unproven init would be answered without a cookie now (nothing is taken).
    pub fn under_load(&mut self, now: Timestamp, source: IpAddr) -> bool {
        if self.total.available(now) == 0 {
            return true;
        }
        let prefix = SourcePrefix::of(source);
        match self.find(prefix) {
            Some(at) => self.entries[at].unproven.available(now) == 0,
            None => false,
        }
    }

    fn set_of(&self, prefix: SourcePrefix) -> usize {
        (keyed_hash(prefix.0, self.hash_key) as usize) & self.set_mask
    }

    fn find(&self, prefix: SourcePrefix) -> Option<usize> {
        let base = self.set_of(prefix) * WAYS;
        (base..base + WAYS).find(|&at| self.entries[at].prefix == Some(prefix))
    }

    /// The prefix's entry, made if there is room. An unproven source takes only a free entry
    /// or one idle long enough that its buckets are full again (forgetting it loses nothing);
    /// a proven source takes the least recently used one.
    fn entry(&mut self, now: Timestamp, prefix: SourcePrefix, proven: bool) -> Option<&mut Entry> {
        let base = self.set_of(prefix) * WAYS;
        if let Some(at) = self.find(prefix) {
            self.entries[at].last_used = now;
            return Some(&mut self.entries[at]);
        }
        let idle_after = refill_time(self.rates.per_source_rate, self.rates.per_source_burst);
        let oldest = (base..base + WAYS).min_by_key(|&at| {
            let e = &self.entries[at];
            (e.prefix.is_some(), e.last_used)
        })?;
        let victim = &self.entries[oldest];
        let reusable = victim.prefix.is_none()
            || now.saturating_since(victim.last_used) >= idle_after
            || proven;
        if !reusable {
            return None;
        }
        let rates = self.rates;
        self.entries[oldest] = Entry {
            prefix: Some(prefix),
            unproven: TokenBucket::new(rates.per_source_rate, rates.per_source_burst, now),
            proven: TokenBucket::new(rates.per_source_rate, rates.per_source_burst, now),
            last_used: now,
        };
        Some(&mut self.entries[oldest])
    }
}

/// How long an empty bucket of `rate` takes to hold `burst` again (forever for rate 0).
fn refill_time(rate: u32, burst: u32) -> std::time::Duration {
    if rate == 0 {
        return std::time::Duration::MAX;
    }
    std::time::Duration::from_nanos(
        (u64::from(burst.max(1)) * 1_000_000_000).div_ceil(u64::from(rate)),
    )
}

/// SipHash-1-3 of one 128-bit word: a keyed hash, so set positions cannot be predicted
/// without the key.
fn keyed_hash(value: u128, key: [u64; 2]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    // The two message words, then the length word (16 bytes).
    for word in [value as u64, (value >> 64) as u64, 16u64 << 56] {
        v[3] ^= word;
        sip_round(&mut v);
        v[0] ^= word;
    }
    v[2] ^= 0xff;
    for _ in 0..3 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    const RATES: HandshakeRates = HandshakeRates {
        total_rate: 100,
        total_burst: 20,
        per_source_rate: 5,
        per_source_burst: 5,
    };

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_source_over_its_rate_is_asked_for_a_cookie_and_a_proven_one_still_gets_in() {
        let now = Timestamp::ZERO;
        let mut load = HandshakeLoad::new(RATES, 64, [1, 2], now);
        for _ in 0..5 {
            assert_eq!(load.admit(now, v4(1), false), Admission::Admit);
        }
        assert_eq!(load.admit(now, v4(1), false), Admission::DemandCookie);
        assert!(load.under_load(now, v4(1)));
        // The same source, proven, has its own budget.
        assert_eq!(load.admit(now, v4(1), true), Admission::Admit);
        // Another source is not affected.
        assert_eq!(load.admit(now, v4(2), false), Admission::Admit);
        // Time refills at the configured rate: one token per 200 ms.
        let later = now + Duration::from_millis(200);
        assert_eq!(load.admit(later, v4(1), false), Admission::Admit);
        assert_eq!(load.admit(later, v4(1), false), Admission::DemandCookie);
    }

    #[test]
    fn the_total_rate_caps_unproven_work_from_many_sources_but_not_proven_work() {
        let now = Timestamp::ZERO;
        let mut load = HandshakeLoad::new(RATES, 4096, [3, 4], now);
        let admitted = (0..1_000)
            .filter(|&n| load.admit(now, v4(n), false) == Admission::Admit)
            .count();
        assert_eq!(admitted, 20, "the total burst");
        assert_eq!(load.admit(now, v4(5_000), false), Admission::DemandCookie);
        assert_eq!(load.admit(now, v4(5_000), true), Admission::Admit);
        // One second later the total refilled by its rate, capped at its burst.
        let later = now + Duration::from_secs(1);
        let admitted = (2_000..3_000)
            .filter(|&n| load.admit(later, v4(n), false) == Admission::Admit)
            .count();
        assert_eq!(admitted, 20);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let now = Timestamp::ZERO;
        let mut load = HandshakeLoad::new(RATES, 64, [5, 6], now);
        let host = |low: u64| {
            IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_0000_0001u128 << 64) | u128::from(low),
            ))
        };
        for n in 0..5 {
            assert_eq!(load.admit(now, host(n), false), Admission::Admit);
        }
        // A sixth address in the same /64 shares its budget.
        assert_eq!(load.admit(now, host(99), false), Admission::DemandCookie);
        // The next /64 does not.
        let other = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_0000_0002u128 << 64));
        assert_eq!(load.admit(now, other, false), Admission::Admit);
        // An IPv4-mapped address is its IPv4 address.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
        assert_eq!(SourcePrefix::of(mapped), SourcePrefix::of(v4(7)));
    }

    #[test]
    fn a_full_table_asks_new_unproven_sources_for_cookies_and_makes_room_for_proven_ones() {
        let now = Timestamp::ZERO;
        let rates = HandshakeRates {
            total_rate: 1_000_000,
            total_burst: 1_000_000,
            ..RATES
        };
        // One set of four entries.
        let mut load = HandshakeLoad::new(rates, 4, [7, 8], now);
        for n in 0..4 {
            assert_eq!(load.admit(now, v4(n), false), Admission::Admit);
        }
        assert_eq!(load.admit(now, v4(10), false), Admission::DemandCookie);
        assert_eq!(load.admit(now, v4(10), true), Admission::Admit);
        // Once entries are idle for a full refill they are reused.
        let later = now + Duration::from_secs(2);
        assert_eq!(load.admit(later, v4(11), false), Admission::Admit);
    }

    #[test]
    fn the_keyed_hash_depends_on_its_key() {
        assert_ne!(keyed_hash(1, [0, 0]), keyed_hash(1, [0, 1]));
        assert_ne!(keyed_hash(1, [0, 0]), keyed_hash(2, [0, 0]));
    }
}
