//! Reliable delivery: in order, exactly once, retransmitted with selective ACKs, bounded.
//!
//! Owns one peer's Reliable sender (sequence numbers, the retransmission queue,
//! RTT estimation, RTO and fast retransmit) and receiver (the reorder buffer and
//! the ACK it owes). Storage is allocated once, in `new`: 64 segment slots and a
//! byte arena, compacted in place when fragmented. It must never read a clock
//! (time is an argument), never allocate after `new`, never block (a full queue
//! answers `WouldBlock`), and never panic on an ACK or a segment, which come
//! from the network. Sealing and the ACK's timing are the endpoint's business.

use core::time::Duration;

use super::time::Timestamp;
use super::wire::Ack;

/// At most this many segments unacknowledged: the selective bitmap spans 64 beyond the
/// cumulative point, and the receiver's reorder window matches it.
pub const MAX_IN_FLIGHT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableConfig {
    /// Bytes of unacknowledged payload a sender may hold, and bytes of out-of-order payload a
    /// receiver may buffer. The original design's bound of 512 is the default.
    pub max_queued_bytes: usize,
    pub initial_rto: Duration,
    pub min_rto: Duration,
    pub max_rto: Duration,
}

impl Default for ReliableConfig {
    fn default() -> Self {
        ReliableConfig {
            max_queued_bytes: 512,
            initial_rto: Duration::from_millis(50),
            min_rto: Duration::from_millis(5),
            max_rto: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is full now; try again after ACKs arrive.
    WouldBlock,
    /// Larger than `max_queued_bytes`: can never be sent.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// Acknowledges a sequence number that was never sent: a forged or broken peer.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    pub newly_acked: u32,
    pub bytes_freed: usize,
    pub rtt_sample: Option<Duration>,
}

/// A segment due for retransmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}

/// Where a stored payload lives in an arena.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    offset: usize,
    len: usize,
}

/// A fixed byte arena with bump allocation; compaction moves live spans to the front.
struct Arena {
    bytes: Vec<u8>,
    top: usize,
}

impl Arena {
    fn new(capacity: usize) -> Arena {
        Arena {
            bytes: vec![0u8; capacity],
            top: 0,
        }
    }

    /// Stores `data`, compacting the `live` spans first if the free tail is too short.
    /// The caller has checked that the live bytes plus `data` fit the capacity.
    fn store(
        &mut self,
        data: &[u8],
        live: &mut [Option<&mut Span>; MAX_IN_FLIGHT],
    ) -> Option<Span> {
        if self.top + data.len() > self.bytes.len() {
            self.compact(live);
        }
        let offset = self.top;
        self.bytes
            .get_mut(offset..offset + data.len())?
            .copy_from_slice(data);
        self.top += data.len();
        Some(Span {
            offset,
            len: data.len(),
        })
    }

    fn compact(&mut self, live: &mut [Option<&mut Span>; MAX_IN_FLIGHT]) {
        // Move spans down in offset order: each move goes to a lower or equal address, so no
        // span is overwritten before it has moved.
        let mut order = [usize::MAX; MAX_IN_FLIGHT];
        let mut count = 0;
        for (i, span) in live.iter().enumerate() {
            if span.is_some() {
                order[count] = i;
                count += 1;
            }
        }
        let offset_of = |live: &[Option<&mut Span>; MAX_IN_FLIGHT], i: usize| {
            live[i].as_ref().map_or(usize::MAX, |s| s.offset)
        };
        for i in 1..count {
            let mut j = i;
            while j > 0 && offset_of(live, order[j - 1]) > offset_of(live, order[j]) {
                order.swap(j - 1, j);
                j -= 1;
            }
        }
        let mut write = 0;
        for &i in &order[..count] {
            if let Some(span) = live[i].as_deref_mut() {
                self.bytes
                    .copy_within(span.offset..span.offset + span.len, write);
                span.offset = write;
                write += span.len;
            }
        }
        self.top = write;
    }

    fn get(&self, span: Span) -> &[u8] {
        self.bytes
            .get(span.offset..span.offset + span.len)
            .unwrap_or(&[])
    }

    fn reset_if_empty(&mut self, live_bytes: usize) {
        if live_bytes == 0 {
            self.top = 0;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    seq: u64,
    span: Span,
    first_sent: Timestamp,
    deadline: Timestamp,
    retransmissions: u32,
    acked: bool,
    fast_due: bool,
    last_fast: Option<Timestamp>,
}

/// The sending half of one peer's Reliable stream.
pub struct ReliableSender {
    config: ReliableConfig,
    slots: [Option<Outstanding>; MAX_IN_FLIGHT],
    arena: Arena,
    /// Oldest sequence number still held.
    base: u64,
    next_seq: u64,
    queued_bytes: usize,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
}

impl ReliableSender {
    pub fn new(config: ReliableConfig) -> Self {
        ReliableSender {
            // Twice the bound, so that fragmentation rarely forces a compaction.
            arena: Arena::new(config.max_queued_bytes.saturating_mul(2)),
            slots: [None; MAX_IN_FLIGHT],
            base: 0,
            next_seq: 0,
            queued_bytes: 0,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: config.initial_rto.clamp(config.min_rto, config.max_rto),
            config,
        }
    }

    /// Stores a copy of `payload` for retransmission and returns its sequence number. The
    /// caller transmits the first copy itself, right away.
    pub fn push(&mut self, now: Timestamp, payload: &[u8]) -> Result<u64, PushError> {
        if payload.len() > self.config.max_queued_bytes {
            return Err(PushError::TooLarge);
        }
        if self.in_flight() >= MAX_IN_FLIGHT
            || self.queued_bytes + payload.len() > self.config.max_queued_bytes
        {
            return Err(PushError::WouldBlock);
        }
        let seq = self.next_seq;
        let mut live = live_spans(&mut self.slots);
        let span = self
            .arena
            .store(payload, &mut live)
            .ok_or(PushError::WouldBlock)?;
        self.slots[slot_of(seq)] = Some(Outstanding {
            seq,
            span,
            first_sent: now,
            deadline: now + self.rto,
            retransmissions: 0,
            acked: false,
            fast_due: false,
            last_fast: None,
        });
        self.next_seq += 1;
        self.queued_bytes += payload.len();
        Ok(seq)
    }

    /// Applies an authenticated ACK. An ACK that covers anything never sent is `Invalid` and
    /// changes nothing; stale and duplicate ACKs are fine.
    pub fn on_ack(&mut self, now: Timestamp, ack: Ack) -> Result<AckOutcome, AckError> {
        if ack.next_expected > self.next_seq {
            return Err(AckError::Invalid);
        }
        // Bit i of the bitmap names next_expected + 1 + i: none may reach next_seq.
        let highest_bit = 64 - u64::from(ack.selective.leading_zeros());
        if highest_bit > 0 && ack.next_expected.saturating_add(highest_bit) >= self.next_seq {
            return Err(AckError::Invalid);
        }
        let mut outcome = AckOutcome::default();
        let mut newest_sample: Option<(u64, Duration)> = None;
        for seq in self.base..self.next_seq {
            let Some(segment) = self.slots[slot_of(seq)].as_mut() else {
                continue;
            };
            if segment.acked || !ack.covers(seq) {
                continue;
            }
            segment.acked = true;
            outcome.newly_acked += 1;
            // Karn: a retransmitted segment's ACK could answer either copy, so no sample.
            if segment.retransmissions == 0 {
                let sample = now.saturating_since(segment.first_sent);
                if newest_sample.is_none_or(|(s, _)| seq > s) {
                    newest_sample = Some((seq, sample));
                }
            }
        }
        if let Some((_, sample)) = newest_sample {
            self.update_rtt(sample);
            outcome.rtt_sample = Some(sample);
        }
        outcome.bytes_freed = self.release_acked_prefix();
        self.flag_fast_retransmits(now);
        Ok(outcome)
    }

    /// The oldest unacknowledged segment that is due, rescheduled with exponential backoff.
    pub fn poll_retransmit(&mut self, now: Timestamp) -> Option<Segment<'_>> {
        let rto = self.rto;
        let max_rto = self.config.max_rto;
        let mut due = None;
        for seq in self.base..self.next_seq {
            let Some(segment) = self.slots[slot_of(seq)].as_mut() else {
                continue;
            };
            if segment.acked || !(segment.fast_due || segment.deadline <= now) {
                continue;
            }
            if segment.fast_due {
                segment.last_fast = Some(now);
            }
            segment.fast_due = false;
            segment.retransmissions = segment.retransmissions.saturating_add(1);
            let backoff = rto
                .saturating_mul(1u32 << segment.retransmissions.min(16))
                .min(max_rto);
            segment.deadline = now + backoff;
            due = Some((segment.seq, segment.span));
            break;
        }
        let (seq, span) = due?;
        Some(Segment {
            seq,
            payload: self.arena.get(span),
        })
    }

    /// The earliest time a retransmission will be due, if anything is in flight.
    pub fn next_timeout(&self) -> Option<Timestamp> {
        self.outstanding()
            .filter(|s| !s.acked)
            .map(|s| if s.fast_due { s.first_sent } else { s.deadline })
            .min()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Segments held: unacknowledged ones and selectively acknowledged ones behind a gap.
    pub fn in_flight(&self) -> usize {
        (self.next_seq - self.base) as usize
    }

    pub fn rto(&self) -> Duration {
        self.rto
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    fn outstanding(&self) -> impl Iterator<Item = &Outstanding> + '_ {
        (self.base..self.next_seq).filter_map(|seq| self.slots[slot_of(seq)].as_ref())
    }

    /// RFC 6298, in integer nanoseconds.
    fn update_rtt(&mut self, sample: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let deviation = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + deviation) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(sample);
        self.rto = (srtt + (self.rttvar * 4).max(Duration::from_micros(100)))
            .clamp(self.config.min_rto, self.config.max_rto);
    }

    fn release_acked_prefix(&mut self) -> usize {
        let mut freed = 0;
        while self.base < self.next_seq {
            let slot = &mut self.slots[slot_of(self.base)];
            match slot {
                Some(segment) if segment.acked => {
                    freed += segment.span.len;
                    *slot = None;
                    self.base += 1;
                }
                _ => break,
            }
        }
        self.queued_bytes -= freed.min(self.queued_bytes);
        self.arena.reset_if_empty(self.queued_bytes);
        freed
    }

    /// SACK evidence: an unacknowledged segment with three acknowledged ones above it is
    /// lost, not late. Retransmit it now, at most once per RTO.
    fn flag_fast_retransmits(&mut self, now: Timestamp) {
        let mut acked_above = 0u32;
        for seq in (self.base..self.next_seq).rev() {
            let rto = self.rto;
            let Some(segment) = self.slots[slot_of(seq)].as_mut() else {
                continue;
            };
            if segment.acked {
                acked_above += 1;
            } else if acked_above >= 3
                && segment
                    .last_fast
                    .is_none_or(|at| now.saturating_since(at) >= rto)
            {
                segment.fast_due = true;
            }
        }
    }
}

/// What `ReliableReceiver::on_segment` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    /// The next expected: deliver the payload you hold now, in place, then drain `pop_ready`.
    Deliver,
    /// Stored out of order; comes out of `pop_ready` once the gap fills.
    Buffered,
    /// Already delivered or already buffered: drop it (still acknowledge).
    Duplicate,
    /// Beyond the reorder window or no room: dropped; the sender will retransmit.
    NoRoom,
}

#[derive(Debug, Clone, Copy)]
struct Buffered {
    seq: u64,
    span: Span,
}

/// The receiving half of one peer's Reliable stream.
pub struct ReliableReceiver {
    config: ReliableConfig,
    slots: [Option<Buffered>; MAX_IN_FLIGHT],
    arena: Arena,
    next_expected: u64,
    buffered_bytes: usize,
    ack_needed: bool,
}

impl ReliableReceiver {
    pub fn new(config: ReliableConfig) -> Self {
        ReliableReceiver {
            arena: Arena::new(config.max_queued_bytes.saturating_mul(2)),
            slots: [None; MAX_IN_FLIGHT],
            next_expected: 0,
            buffered_bytes: 0,
            ack_needed: false,
            config,
        }
    }

    pub fn on_segment(&mut self, seq: u64, payload: &[u8]) -> Receive {
        self.ack_needed = true;
        if seq < self.next_expected {
            return Receive::Duplicate;
        }
        if seq == self.next_expected {
            self.next_expected += 1;
            return Receive::Deliver;
        }
        if seq - self.next_expected > MAX_IN_FLIGHT as u64 {
            return Receive::NoRoom;
        }
        let index = slot_of(seq);
        if self.slots[index].is_some_and(|b| b.seq == seq) {
            return Receive::Duplicate;
        }
        if self.buffered_bytes + payload.len() > self.config.max_queued_bytes {
            return Receive::NoRoom;
        }
        let mut live = live_buffered(&mut self.slots);
        let Some(span) = self.arena.store(payload, &mut live) else {
            return Receive::NoRoom;
        };
        self.slots[index] = Some(Buffered { seq, span });
        self.buffered_bytes += payload.len();
        Receive::Buffered
    }

    /// Whether `pop_ready` has a message.
    pub fn has_ready(&self) -> bool {
        self.slots[slot_of(self.next_expected)].is_some_and(|b| b.seq == self.next_expected)
    }

    /// The next buffered in-order payload, advancing the stream. The slice stays valid until
    /// the next `&mut` call.
    pub fn pop_ready(&mut self) -> Option<&[u8]> {
        let index = slot_of(self.next_expected);
        let buffered = self.slots[index].filter(|b| b.seq == self.next_expected)?;
        self.slots[index] = None;
        self.next_expected += 1;
        self.buffered_bytes -= buffered.span.len.min(self.buffered_bytes);
        // The bytes stay where they are until the next store, which needs `&mut self`.
        let payload = self.arena.get(buffered.span);
        Some(payload)
    }

    /// What has arrived: everything below `next_expected`, plus buffered segments above it.
    pub fn ack(&self) -> Ack {
        let mut selective = 0u64;
        for bit in 0..MAX_IN_FLIGHT as u64 {
            let seq = self.next_expected + 1 + bit;
            if self.slots[slot_of(seq)].is_some_and(|b| b.seq == seq) {
                selective |= 1 << bit;
            }
        }
        Ack {
            next_expected: self.next_expected,
            selective,
        }
    }

    /// Set by every segment, duplicates too: the sender may have lost our last ACK.
    pub fn ack_needed(&self) -> bool {
        self.ack_needed
    }

    pub fn ack_sent(&mut self) {
        self.ack_needed = false;
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    pub fn next_expected(&self) -> u64 {
        self.next_expected
    }
}

fn slot_of(seq: u64) -> usize {
    (seq % MAX_IN_FLIGHT as u64) as usize
}

fn live_spans(
    slots: &mut [Option<Outstanding>; MAX_IN_FLIGHT],
) -> [Option<&mut Span>; MAX_IN_FLIGHT] {
    let mut iter = slots.iter_mut();
    core::array::from_fn(|_| iter.next().and_then(|s| s.as_mut().map(|o| &mut o.span)))
}

fn live_buffered(
    slots: &mut [Option<Buffered>; MAX_IN_FLIGHT],
) -> [Option<&mut Span>; MAX_IN_FLIGHT] {
    let mut iter = slots.iter_mut();
    core::array::from_fn(|_| iter.next().and_then(|s| s.as_mut().map(|b| &mut b.span)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_millis(n)
    }

    #[test]
    fn would_block_at_the_byte_bound_and_recovers_after_an_ack() {
        let mut sender = ReliableSender::new(ReliableConfig::default());
        for i in 0..4 {
            assert_eq!(sender.push(ms(0), &[i; 128]), Ok(u64::from(i)));
        }
        assert_eq!(sender.push(ms(0), &[9; 1]), Err(PushError::WouldBlock));
        assert_eq!(sender.push(ms(0), &[9; 513]), Err(PushError::TooLarge));
        let ack = Ack {
            next_expected: 1,
            selective: 0,
        };
        let outcome = sender.on_ack(ms(1), ack).unwrap();
        assert_eq!((outcome.newly_acked, outcome.bytes_freed), (1, 128));
        assert_eq!(sender.push(ms(1), &[4; 128]), Ok(4));
    }

    #[test]
    fn would_block_at_max_in_flight() {
        let config = ReliableConfig {
            max_queued_bytes: 10_000,
            ..ReliableConfig::default()
        };
        let mut sender = ReliableSender::new(config);
        for _ in 0..MAX_IN_FLIGHT {
            sender.push(ms(0), &[1]).unwrap();
        }
        assert_eq!(sender.push(ms(0), &[1]), Err(PushError::WouldBlock));
    }

    #[test]
    fn a_forged_ack_is_invalid_and_changes_nothing() {
        let mut sender = ReliableSender::new(ReliableConfig::default());
        sender.push(ms(0), b"a").unwrap();
        sender.push(ms(0), b"b").unwrap();
        for bad in [
            Ack {
                next_expected: 3,
                selective: 0,
            },
            Ack {
                next_expected: 0,
                selective: 0b10,
            },
            Ack {
                next_expected: u64::MAX,
                selective: u64::MAX,
            },
        ] {
            assert_eq!(sender.on_ack(ms(1), bad), Err(AckError::Invalid));
        }
        assert_eq!(sender.queued_bytes(), 2);
        assert_eq!(sender.in_flight(), 2);
    }

    #[test]
    fn karn_no_sample_from_a_retransmitted_segment_and_backoff_caps() {
        let mut sender = ReliableSender::new(ReliableConfig::default());
        sender.push(ms(0), b"x").unwrap();
        let mut now = ms(0);
        let mut gaps = Vec::new();
        for _ in 0..8 {
            now = sender.next_timeout().unwrap();
            let seg = sender.poll_retransmit(now).unwrap();
            assert_eq!(seg.seq, 0);
            gaps.push(sender.next_timeout().unwrap().saturating_since(now));
        }
        assert!(gaps.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*gaps.last().unwrap(), Duration::from_secs(1));
        let outcome = sender
            .on_ack(
                now,
                Ack {
                    next_expected: 1,
                    selective: 0,
                },
            )
            .unwrap();
        assert_eq!(outcome.rtt_sample, None);
        assert_eq!(sender.srtt(), None);
    }

    #[test]
    fn rtt_samples_drive_the_rto() {
        let mut sender = ReliableSender::new(ReliableConfig::default());
        for i in 0..20u64 {
            sender.push(ms(i * 10), b"x").unwrap();
            sender
                .on_ack(
                    ms(i * 10 + 2),
                    Ack {
                        next_expected: i + 1,
                        selective: 0,
                    },
                )
                .unwrap();
        }
        assert_eq!(sender.srtt(), Some(Duration::from_millis(2)));
        assert!(
            sender.rto() >= Duration::from_millis(5) && sender.rto() < Duration::from_millis(10)
        );
    }

    #[test]
    fn sack_evidence_triggers_a_fast_retransmit() {
        let config = ReliableConfig {
            max_queued_bytes: 1000,
            ..ReliableConfig::default()
        };
        let mut sender = ReliableSender::new(config);
        for _ in 0..5 {
            sender.push(ms(0), b"seg").unwrap();
        }
        // 0 lost; 1, 2, 3 arrived.
        sender
            .on_ack(
                ms(1),
                Ack {
                    next_expected: 0,
                    selective: 0b111,
                },
            )
            .unwrap();
        let seg = sender.poll_retransmit(ms(1)).unwrap();
        assert_eq!(seg.seq, 0);
        assert!(
            sender.poll_retransmit(ms(1)).is_none(),
            "only the one with evidence"
        );
    }

    #[test]
    fn receiver_orders_buffers_and_acknowledges() {
        let mut receiver = ReliableReceiver::new(ReliableConfig::default());
        assert_eq!(receiver.on_segment(2, b"two"), Receive::Buffered);
        assert_eq!(receiver.on_segment(1, b"one"), Receive::Buffered);
        assert_eq!(receiver.on_segment(2, b"two"), Receive::Duplicate);
        assert_eq!(
            receiver.ack(),
            Ack {
                next_expected: 0,
                selective: 0b11
            }
        );
        assert!(!receiver.has_ready());
        assert_eq!(receiver.on_segment(0, b"zero"), Receive::Deliver);
        assert_eq!(receiver.pop_ready(), Some(&b"one"[..]));
        assert_eq!(receiver.pop_ready(), Some(&b"two"[..]));
        assert_eq!(receiver.pop_ready(), None);
        assert_eq!(receiver.on_segment(1, b"one"), Receive::Duplicate);
        assert_eq!(receiver.on_segment(3 + 65, b"far"), Receive::NoRoom);
        assert_eq!(receiver.on_segment(4, &[0; 600]), Receive::NoRoom);
        assert_eq!(receiver.next_expected(), 3);
        assert_eq!(receiver.buffered_bytes(), 0);
    }

    /// Sender and receiver through a lossy, duplicating, reordering channel in both directions.
    #[test]
    fn simulation_delivers_everything_once_in_order() {
        for seed in 0..10 {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut sender = ReliableSender::new(ReliableConfig::default());
            let mut receiver = ReliableReceiver::new(ReliableConfig::default());
            let mut to_receiver: Vec<(Timestamp, u64, Vec<u8>)> = Vec::new();
            let mut to_sender: Vec<(Timestamp, Ack)> = Vec::new();
            let mut delivered: Vec<Vec<u8>> = Vec::new();
            let total = 2_000u32;
            let mut pushed = 0u32;
            let mut now = ms(0);
            let chance = |rng: &mut ChaCha20Rng, percent: u32| rng.next_u32() % 100 < percent;
            let mut steps = 0;
            while delivered.len() < total as usize || sender.in_flight() > 0 {
                steps += 1;
                assert!(steps < 2_000_000, "seed {seed}: did not finish");
                now += Duration::from_micros(100);
                while pushed < total {
                    let payload = pushed.to_le_bytes().repeat(1 + (pushed % 7) as usize);
                    match sender.push(now, &payload) {
                        Ok(seq) => {
                            if !chance(&mut rng, 10) {
                                let delay =
                                    Duration::from_micros(500 + u64::from(rng.next_u32() % 3000));
                                to_receiver.push((now + delay, seq, payload.clone()));
                            }
                            pushed += 1;
                        }
                        Err(PushError::WouldBlock) => break,
                        Err(PushError::TooLarge) => unreachable!(),
                    }
                }
                while let Some(seg) = sender.poll_retransmit(now) {
                    if !chance(&mut rng, 10) {
                        let copies = if chance(&mut rng, 5) { 2 } else { 1 };
                        for _ in 0..copies {
                            let delay =
                                Duration::from_micros(500 + u64::from(rng.next_u32() % 3000));
                            to_receiver.push((now + delay, seg.seq, seg.payload.to_vec()));
                        }
                    }
                }
                let (due, later): (Vec<_>, Vec<_>) =
                    to_receiver.drain(..).partition(|(t, _, _)| *t <= now);
                to_receiver = later;
                for (_, seq, payload) in due {
                    if receiver.on_segment(seq, &payload) == Receive::Deliver {
                        delivered.push(payload);
                        while let Some(next) = receiver.pop_ready() {
                            delivered.push(next.to_vec());
                        }
                    }
                }
                if receiver.ack_needed() {
                    receiver.ack_sent();
                    if !chance(&mut rng, 10) {
                        let delay = Duration::from_micros(500 + u64::from(rng.next_u32() % 3000));
                        to_sender.push((now + delay, receiver.ack()));
                    }
                }
                let (due, later): (Vec<_>, Vec<_>) =
                    to_sender.drain(..).partition(|(t, _)| *t <= now);
                to_sender = later;
                for (_, ack) in due {
                    sender.on_ack(now, ack).unwrap();
                }
                if pushed == total && sender.in_flight() == 0 && delivered.len() == total as usize {
                    break;
                }
            }
            for (i, payload) in delivered.iter().enumerate() {
                let i = i as u32;
                assert_eq!(
                    payload,
                    &i.to_le_bytes().repeat(1 + (i % 7) as usize),
                    "seed {seed}"
                );
            }
            assert_eq!(delivered.len(), total as usize);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_acks_and_segments_never_break_invariants(
            ops in proptest::collection::vec((0u8..4, any::<u64>(), any::<u64>(), 0usize..300), 0..300)
        ) {
            let config = ReliableConfig::default();
            let mut sender = ReliableSender::new(config);
            let mut receiver = ReliableReceiver::new(config);
            let mut now = ms(0);
            for (op, a, b, len) in ops {
                now += Duration::from_millis(1);
                match op {
                    0 => { let _ = sender.push(now, &vec![7u8; len]); }
                    1 => { let _ = sender.on_ack(now, Ack { next_expected: a % 80, selective: b }); }
                    2 => { while sender.poll_retransmit(now).is_some() {} }
                    _ => {
                        let _ = receiver.on_segment(a % 100, &vec![1u8; len]);
                        while receiver.pop_ready().is_some() {}
                    }
                }
                prop_assert!(sender.queued_bytes() <= config.max_queued_bytes);
                prop_assert!(sender.in_flight() <= MAX_IN_FLIGHT);
                prop_assert!(receiver.buffered_bytes() <= config.max_queued_bytes);
            }
        }
    }
}
