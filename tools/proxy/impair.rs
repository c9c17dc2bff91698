//! Deterministic packet impairment: loss, duplication, reordering, delay and jitter.
//!
//! Owns the decision of what happens to each packet of one direction and when its
//! copies are due. It must never read a clock, touch a socket or draw entropy of its
//! own: the caller passes `now` and opaque packet tokens in, and a seed at
//! construction, so the same seed and the same packet sequence always yield the same
//! decisions. That makes it usable both by the `intentra-proxy` binary and by
//! in-memory tests (include it with `#[path = "../tools/proxy/impair.rs"] mod impair;`).
//!
//! Every packet consumes exactly five random draws (loss, duplicate, reorder, and two
//! jitter samples) whatever its fate, so which packets are lost depends only on the
//! seed and the packet's position, not on the other settings or on time.

// Not every embedder uses every accessor.
#![allow(dead_code)]

use core::cmp::{Ordering, Reverse};
use core::fmt;
use core::time::Duration;
use std::collections::{BinaryHeap, VecDeque};

use intentra::proto::Timestamp;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A probability in `[0, 1]`; the constructor rejects anything else (including NaN).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Probability(f64);

impl Probability {
    pub const ZERO: Probability = Probability(0.0);
    pub const ONE: Probability = Probability(1.0);

    pub fn new(p: f64) -> Option<Probability> {
        (0.0..=1.0).contains(&p).then_some(Probability(p))
    }

    pub const fn get(self) -> f64 {
        self.0
    }

    /// Whether a uniform draw `u` in `[0, 1)` falls inside this probability.
    fn hit(self, u: f64) -> bool {
        u < self.0
    }
}

impl fmt::Display for Probability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What to do to one direction of traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairments {
    /// Chance that a packet is dropped.
    pub loss: Probability,
    /// Chance that a surviving packet is sent twice (the copy gets its own delay draw).
    pub duplicate: Probability,
    /// Chance that a surviving packet is held back.
    pub reorder: Probability,
    /// A held packet is released once this many later packets have been forwarded...
    pub reorder_gap: u32,
    /// ...or once it has been held this long, whichever comes first.
    pub reorder_hold: Duration,
    /// Fixed one-way delay added to every copy.
    pub delay: Duration,
    /// Each copy's delay is drawn uniformly from `delay ± jitter` (floored at zero).
    /// Like netem, jitter alone can reorder packets.
    pub jitter: Duration,
}

impl Impairments {
    /// No impairment at all: packets pass through immediately and in order.
    pub const NONE: Impairments = Impairments {
        loss: Probability::ZERO,
        duplicate: Probability::ZERO,
        reorder: Probability::ZERO,
        reorder_gap: 3,
        reorder_hold: Duration::from_millis(10),
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
    };
}

impl Default for Impairments {
    fn default() -> Self {
        Impairments::NONE
    }
}

/// What `Impairer::push` decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Lost: nothing will be emitted for it.
    Dropped,
    /// Refused because `capacity` packets are already pending; nothing will be emitted.
    Overflow,
    /// `copies` (1 or 2) copies will be emitted by `pop_due`; `held` says the original
    /// was held back for reordering.
    Forwarded { copies: u8, held: bool },
}

/// Running totals of the decisions taken so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImpairStats {
    pub packets: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub overflow: u64,
    pub emitted: u64,
}

/// A copy that is waiting for its emission time. Ordered by time, then by the order
/// in which it was scheduled, so equal times keep FIFO order.
struct Due<T> {
    at: Timestamp,
    order: u64,
    token: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Due<T> {}

impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Due<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A packet held back for reordering, with the delay it drew when it arrived.
struct Held<T> {
    token: T,
    delay: Duration,
    gap_left: u32,
    release_at: Timestamp,
}

/// The impairment state machine for one direction.
pub struct Impairer<T> {
    config: Impairments,
    rng: ChaCha8Rng,
    capacity: usize,
    next_order: u64,
    due: BinaryHeap<Reverse<Due<T>>>,
    held: VecDeque<Held<T>>,
    stats: ImpairStats,
}

impl<T: Clone> Impairer<T> {
    /// `capacity` bounds the number of copies pending at once (held plus scheduled);
    /// both queues are preallocated to it so `push` never allocates.
    pub fn new(config: Impairments, seed: u64, capacity: usize) -> Impairer<T> {
        Impairer {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            capacity,
            next_order: 0,
            due: BinaryHeap::with_capacity(capacity),
            held: VecDeque::with_capacity(capacity),
            stats: ImpairStats::default(),
        }
    }

    pub fn config(&self) -> &Impairments {
        &self.config
    }

    pub fn stats(&self) -> ImpairStats {
        self.stats
    }

    /// Copies not yet emitted (held or scheduled).
    pub fn pending(&self) -> usize {
        self.due.len() + self.held.len()
    }

    /// Decides the fate of the next packet, arriving at `now`.
    pub fn push(&mut self, now: Timestamp, token: T) -> Fate {
        // Draw everything up front so the random stream advances identically
        // whatever the outcome.
        let lose = self.config.loss.hit(self.uniform());
        let duplicate = self.config.duplicate.hit(self.uniform());
        let hold = self.config.reorder.hit(self.uniform());
        let delay_original = self.jittered_delay();
        let delay_copy = self.jittered_delay();
        self.stats.packets += 1;

        if lose {
            self.stats.dropped += 1;
            return Fate::Dropped;
        }
        let copies: u8 = if duplicate { 2 } else { 1 };
        if self.pending() + usize::from(copies) > self.capacity {
            self.stats.overflow += 1;
            return Fate::Overflow;
        }
        if duplicate {
            self.stats.duplicated += 1;
        }

        // A packet counts towards the gap of those held before it only if it goes out
        // now; a held packet overtaking another held one would not reorder anything.
        if hold {
            self.stats.reordered += 1;
            self.held.push_back(Held {
                token: token.clone(),
                delay: delay_original,
                gap_left: self.config.reorder_gap.max(1),
                release_at: now + self.config.reorder_hold,
            });
        } else {
            self.schedule(now + delay_original, token.clone());
            self.count_gap(now);
        }
        if duplicate {
            self.schedule(now + delay_copy, token);
        }
        Fate::Forwarded { copies, held: hold }
    }

    /// The next copy whose time has come, if any. Call until it returns `None`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<T> {
        self.release_expired_holds(now);
        let ready = matches!(self.due.peek(), Some(Reverse(next)) if next.at <= now);
        if !ready {
            return None;
        }
        let Reverse(next) = self.due.pop()?;
        self.stats.emitted += 1;
        Some(next.token)
    }

    /// When `pop_due` will next have something to return, if anything is pending.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let scheduled = self.due.peek().map(|Reverse(next)| next.at);
        let held = self.held.iter().map(|h| h.release_at).min();
        match (scheduled, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets everything pending (e.g. at shutdown) and returns the tokens.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        let held = self.held.drain(..).map(|h| h.token);
        let due = self.due.drain().map(|Reverse(d)| d.token);
        held.chain(due)
    }

    fn schedule(&mut self, at: Timestamp, token: T) {
        let order = self.next_order;
        self.next_order += 1;
        self.due.push(Reverse(Due { at, order, token }));
    }

    /// One packet went out at `now`: held packets whose gap is used up follow it.
    fn count_gap(&mut self, now: Timestamp) {
        for held in self.held.iter_mut() {
            held.gap_left = held.gap_left.saturating_sub(1);
        }
        while let Some(index) = self.held.iter().position(|h| h.gap_left == 0) {
            if let Some(held) = self.held.remove(index) {
                self.schedule(now + held.delay, held.token);
            }
        }
    }

    fn release_expired_holds(&mut self, now: Timestamp) {
        while let Some(index) = self.held.iter().position(|h| h.release_at <= now) {
            if let Some(held) = self.held.remove(index) {
                self.schedule(held.release_at + held.delay, held.token);
            }
        }
    }

    /// A uniform draw in `[0, 1)` with 53 bits of precision.
    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn jittered_delay(&mut self) -> Duration {
        let u = self.uniform();
        let jitter = self.config.jitter.as_secs_f64();
        if jitter == 0.0 {
            return self.config.delay;
        }
        let secs = self.config.delay.as_secs_f64() + jitter * (2.0 * u - 1.0);
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: u64 = 100_000;

    fn p(x: f64) -> Probability {
        Probability::new(x).unwrap()
    }

    /// Pushes `n` packets one microsecond apart, popping everything due after each, and
    /// returns (token, emission time) in emission order, then whatever is left at the end.
    fn run(config: Impairments, seed: u64, n: u64) -> (Vec<(u64, Timestamp)>, Vec<Fate>) {
        let mut imp = Impairer::new(config, seed, 1 << 20);
        let mut out = Vec::new();
        let mut fates = Vec::new();
        let mut now = Timestamp::ZERO;
        for seq in 0..n {
            fates.push(imp.push(now, seq));
            while let Some(token) = imp.pop_due(now) {
                out.push((token, now));
            }
            now += Duration::from_micros(1);
        }
        while let Some(deadline) = imp.next_deadline() {
            now = now.max(deadline);
            while let Some(token) = imp.pop_due(now) {
                out.push((token, now));
            }
        }
        assert_eq!(imp.pending(), 0);
        (out, fates)
    }

    /// Packets emitted after a packet with a higher sequence number was emitted.
    fn late_count(out: &[(u64, Timestamp)]) -> u64 {
        let mut highest = None;
        let mut late = 0;
        for &(seq, _) in out {
            match highest {
                Some(h) if seq < h => late += 1,
                _ => highest = Some(seq),
            }
        }
        late
    }

    fn close_to(measured: f64, expected: f64) -> bool {
        (measured - expected).abs() < 0.006
    }

    #[test]
    fn probability_rejects_out_of_range() {
        assert!(Probability::new(-0.1).is_none());
        assert!(Probability::new(1.01).is_none());
        assert!(Probability::new(f64::NAN).is_none());
        assert_eq!(Probability::new(0.25).map(Probability::get), Some(0.25));
    }

    #[test]
    fn no_impairment_is_identity() {
        let (out, fates) = run(Impairments::NONE, 1, 1000);
        assert!(fates.iter().all(|f| *f
            == Fate::Forwarded {
                copies: 1,
                held: false
            }));
        let seqs: Vec<u64> = out.iter().map(|&(s, _)| s).collect();
        assert_eq!(seqs, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_decisions() {
        let config = Impairments {
            loss: p(0.2),
            duplicate: p(0.1),
            reorder: p(0.1),
            jitter: Duration::from_micros(30),
            delay: Duration::from_micros(50),
            ..Impairments::NONE
        };
        assert_eq!(run(config, 42, 20_000), run(config, 42, 20_000));
    }

    #[test]
    fn different_seeds_differ() {
        let config = Impairments {
            loss: p(0.3),
            ..Impairments::NONE
        };
        let (a, _) = run(config, 1, 2_000);
        let (b, _) = run(config, 2, 2_000);
        assert_ne!(a, b);
    }

    #[test]
    fn loss_depends_only_on_seed_and_position() {
        let lossy = Impairments {
            loss: p(0.3),
            ..Impairments::NONE
        };
        let everything = Impairments {
            duplicate: p(0.5),
            reorder: p(0.5),
            jitter: Duration::from_micros(5),
            ..lossy
        };
        let dropped = |fates: Vec<Fate>| -> Vec<usize> {
            fates
                .iter()
                .enumerate()
                .filter(|(_, f)| **f == Fate::Dropped)
                .map(|(i, _)| i)
                .collect()
        };
        assert_eq!(
            dropped(run(lossy, 9, 5_000).1),
            dropped(run(everything, 9, 5_000).1)
        );
    }

    #[test]
    fn loss_fraction_matches() {
        for (seed, loss) in [(1, 0.3), (2, 0.01), (3, 0.5)] {
            let config = Impairments {
                loss: p(loss),
                ..Impairments::NONE
            };
            let (out, _) = run(config, seed, N);
            let measured = 1.0 - out.len() as f64 / N as f64;
            assert!(close_to(measured, loss), "loss {loss}: measured {measured}");
            assert_eq!(late_count(&out), 0);
        }
    }

    #[test]
    fn duplicate_fraction_matches() {
        let config = Impairments {
            duplicate: p(0.1),
            ..Impairments::NONE
        };
        let (out, _) = run(config, 5, N);
        let measured = (out.len() as f64 - N as f64) / N as f64;
        assert!(close_to(measured, 0.1), "measured {measured}");
        // Every packet shows up once or twice, never zero or three times.
        let mut seen = vec![0u8; N as usize];
        for &(seq, _) in &out {
            seen[seq as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c == 1 || c == 2));
    }

    #[test]
    fn reorder_fraction_matches_and_gap_is_exact() {
        let config = Impairments {
            reorder: p(0.05),
            reorder_gap: 3,
            reorder_hold: Duration::from_secs(3600),
            ..Impairments::NONE
        };
        let (out, fates) = run(config, 7, N);
        assert_eq!(out.len() as u64, N);
        let measured = late_count(&out) as f64 / N as f64;
        assert!(close_to(measured, 0.05), "measured {measured}");
        // A held packet comes out right after the third later packet that was not
        // itself held.
        let position: Vec<usize> = {
            let mut pos = vec![0; N as usize];
            for (i, &(seq, _)) in out.iter().enumerate() {
                pos[seq as usize] = i;
            }
            pos
        };
        for (seq, fate) in fates.iter().enumerate() {
            if let Fate::Forwarded { held: true, .. } = fate {
                let third_later = fates
                    .iter()
                    .enumerate()
                    .skip(seq + 1)
                    .filter(|(_, f)| matches!(f, Fate::Forwarded { held: false, .. }))
                    .nth(2)
                    .map(|(i, _)| i);
                if let Some(after) = third_later {
                    assert!(position[seq] > position[after], "held {seq} too early");
                    // Only other held packets released at the same moment may sit
                    // between the releasing packet and this one.
                    for &(between, _) in &out[position[after] + 1..position[seq]] {
                        assert!(
                            matches!(fates[between as usize], Fate::Forwarded { held: true, .. }),
                            "held {seq} too late"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn combined_fractions_match() {
        let config = Impairments {
            loss: p(0.2),
            duplicate: p(0.05),
            reorder: p(0.05),
            reorder_hold: Duration::from_secs(3600),
            ..Impairments::NONE
        };
        let (_, fates) = run(config, 11, N);
        let dropped = fates.iter().filter(|f| **f == Fate::Dropped).count() as f64;
        let survivors: Vec<_> = fates.iter().filter(|f| **f != Fate::Dropped).collect();
        let n = survivors.len() as f64;
        let dups = survivors
            .iter()
            .filter(|f| matches!(f, Fate::Forwarded { copies: 2, .. }))
            .count() as f64;
        let held = survivors
            .iter()
            .filter(|f| matches!(f, Fate::Forwarded { held: true, .. }))
            .count() as f64;
        assert!(close_to(dropped / N as f64, 0.2));
        assert!(close_to(dups / n, 0.05));
        assert!(close_to(held / n, 0.05));
    }

    #[test]
    fn delay_and_jitter_bound_emission_time() {
        let delay = Duration::from_millis(5);
        let exact = Impairments {
            delay,
            ..Impairments::NONE
        };
        let mut imp = Impairer::new(exact, 3, 16);
        let t0 = Timestamp::from_millis(100);
        imp.push(t0, 1u32);
        assert_eq!(imp.pop_due(t0 + (delay - Duration::from_nanos(1))), None);
        assert_eq!(imp.next_deadline(), Some(t0 + delay));
        assert_eq!(imp.pop_due(t0 + delay), Some(1));

        let jitter = Duration::from_millis(2);
        let jittery = Impairments { jitter, ..exact };
        let mut imp = Impairer::new(jittery, 3, 16);
        let mut lows = 0;
        for i in 0..2_000u32 {
            imp.push(t0, i);
            let at = imp.next_deadline().unwrap();
            let offset = at.saturating_since(t0);
            assert!(offset >= delay - jitter && offset <= delay + jitter);
            if offset < delay {
                lows += 1;
            }
            assert_eq!(imp.pop_due(at), Some(i));
        }
        assert!((800..1200).contains(&lows), "jitter not centred: {lows}");
    }

    #[test]
    fn held_packet_is_released_by_timeout_without_traffic() {
        let config = Impairments {
            reorder: Probability::ONE,
            reorder_hold: Duration::from_millis(10),
            ..Impairments::NONE
        };
        let mut imp = Impairer::new(config, 3, 16);
        let t0 = Timestamp::from_millis(1);
        assert_eq!(
            imp.push(t0, 7u32),
            Fate::Forwarded {
                copies: 1,
                held: true
            }
        );
        assert_eq!(imp.pop_due(t0 + Duration::from_millis(9)), None);
        assert_eq!(imp.next_deadline(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(imp.pop_due(t0 + Duration::from_millis(10)), Some(7));
        assert_eq!(imp.next_deadline(), None);
    }

    #[test]
    fn capacity_bounds_pending_copies() {
        let config = Impairments {
            delay: Duration::from_secs(1),
            ..Impairments::NONE
        };
        let mut imp = Impairer::new(config, 3, 4);
        for i in 0..4u32 {
            assert!(matches!(
                imp.push(Timestamp::ZERO, i),
                Fate::Forwarded { .. }
            ));
        }
        assert_eq!(imp.push(Timestamp::ZERO, 4), Fate::Overflow);
        assert_eq!(imp.stats().overflow, 1);
        assert_eq!(imp.drain().count(), 4);
        assert_eq!(imp.pending(), 0);
    }
}
