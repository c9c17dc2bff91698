//! Whole-stream tests: a sender and a receiver through a lossy, duplicating,
//! reordering link, and random operations against both halves' invariants.

use super::test_util::*;
use super::*;
use crate::time::Timestamp;
use crate::wire::Ack;
use core::time::Duration;
use proptest::prelude::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const MS: u64 = 1_000_000;

/// `percent` in 100 chance.
fn chance(rng: &mut ChaCha20Rng, percent: u32) -> bool {
    rng.next_u32() % 100 < percent
}

/// Uniform-enough in `lo..=hi` for a simulation.
fn between(rng: &mut ChaCha20Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.next_u64() % (hi - lo + 1)
}

/// A one-way lossy network: drops, duplicates and reorders (random delay).
struct Link<T> {
    in_transit: Vec<(Timestamp, T)>,
    loss_percent: u32,
    dup_percent: u32,
}

impl<T: Clone> Link<T> {
    fn new(loss_percent: u32, dup_percent: u32) -> Self {
        Link {
            in_transit: Vec::new(),
            loss_percent,
            dup_percent,
        }
    }

    fn send(&mut self, rng: &mut ChaCha20Rng, now: Timestamp, item: T) {
        if chance(rng, self.loss_percent) {
            return;
        }
        if chance(rng, self.dup_percent) {
            let arrival = after(now, between(rng, 1, 20) * MS);
            self.in_transit.push((arrival, item.clone()));
        }
        let arrival = after(now, between(rng, 1, 20) * MS);
        self.in_transit.push((arrival, item));
    }

    fn arrived(&mut self, now: Timestamp) -> Vec<T> {
        let mut out = Vec::new();
        let mut index = 0;
        while index < self.in_transit.len() {
            if self.in_transit[index].0 <= now {
                // swap_remove shuffles further: same-tick arrivals come in any order.
                out.push(self.in_transit.swap_remove(index).1);
            } else {
                index += 1;
            }
        }
        out
    }
}

#[derive(Debug, Default)]
struct SimReport {
    steps: usize,
    retransmits: usize,
    duplicates: usize,
    buffered: usize,
    no_room: usize,
}

/// Pushes `count` messages as fast as WouldBlock allows through 10% loss,
/// 10% duplication and 1-20 ms reordering in both directions; checks every one
/// comes out exactly once, in order, byte for byte, and that the run ends with
/// everything acknowledged.
fn simulate(
    seed: u64,
    sender_config: ReliableConfig,
    receiver_config: ReliableConfig,
    count: usize,
    max_len: usize,
) -> SimReport {
    simulate_window(seed, sender_config, receiver_config, count, max_len, false)
}

/// As `simulate`; with `advertise`, the sender is told the receiver's window, as the
/// endpoint does from the handshake, and is checked against it throughout.
fn simulate_window(
    seed: u64,
    sender_config: ReliableConfig,
    receiver_config: ReliableConfig,
    count: usize,
    max_len: usize,
    advertise: bool,
) -> SimReport {
    const STEP: u64 = MS / 2;
    const MAX_STEPS: usize = 400_000;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let messages: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let len = between(&mut rng, 0, max_len as u64) as usize;
            (0..len).map(|_| rng.next_u32() as u8).collect()
        })
        .collect();
    let mut sender = ReliableSender::new(sender_config);
    let mut receiver = ReliableReceiver::new(receiver_config);
    if advertise {
        sender.set_peer_window(receiver.receive_window());
    }
    let mut data: Link<(u64, Vec<u8>)> = Link::new(10, 10);
    let mut acks: Link<Ack> = Link::new(10, 10);
    let mut pushed = 0usize;
    let mut delivered = 0usize;
    let mut report = SimReport::default();
    let mut now = Timestamp::ZERO;
    let mut check_delivery = |payload: &[u8]| {
        assert!(delivered < count, "delivered more messages than were sent");
        assert_eq!(payload, &messages[delivered][..], "message {delivered}");
        delivered += 1;
    };
    let mut finished = false;
    for step in 0..MAX_STEPS {
        now += Duration::from_nanos(STEP);
        while pushed < count {
            match sender.push(now, &messages[pushed]) {
                Ok(Pushed { seq, send_now }) => {
                    assert_eq!(seq, pushed as u64);
                    if send_now {
                        data.send(&mut rng, now, (seq, messages[pushed].clone()));
                    }
                    pushed += 1;
                }
                Err(PushError::WouldBlock) => break,
                Err(PushError::ExceedsBound { .. }) => panic!("message {pushed} too large"),
            }
        }
        while let Some(segment) = sender.poll_retransmit(now) {
            report.retransmits += usize::from(segment.retransmission);
            let copy = (segment.seq, segment.payload.to_vec());
            data.send(&mut rng, now, copy);
        }
        for (seq, payload) in data.arrived(now) {
            match receiver.on_segment(now, seq, &payload) {
                Receive::Deliver => {
                    check_delivery(&payload);
                    while let Some(ready) = receiver.pop_ready() {
                        check_delivery(ready);
                    }
                }
                Receive::Buffered => report.buffered += 1,
                Receive::Duplicate => report.duplicates += 1,
                Receive::NoRoom => report.no_room += 1,
            }
            assert!(receiver.reorder_bytes() <= receiver_config.max_queued_bytes);
        }
        if let Some(ack) = receiver.take_ack() {
            acks.send(&mut rng, now, ack);
        }
        for arrived in acks.arrived(now) {
            sender
                .on_ack(now, arrived)
                .expect("a genuine ACK is never Invalid");
        }
        assert!(sender.queued_bytes() <= sender_config.max_queued_bytes);
        if advertise {
            let lone = sender.window_bytes() <= max_len;
            assert!(lone || sender.window_bytes() <= receiver.receive_window());
        }
        assert!(sender.in_flight() <= MAX_IN_FLIGHT);
        if pushed == count && sender.in_flight() == 0 {
            report.steps = step;
            finished = true;
            break;
        }
    }
    assert!(finished, "simulation did not finish: {report:?} {sender:?}");
    assert_eq!(delivered, count);
    assert_eq!(sender.queued_bytes(), 0);
    assert_eq!(sender.next_timeout(), None);
    report
}

#[test]
fn lossy_duplicating_reordering_channel_delivers_everything_once_in_order() {
    for seed in 1..=3 {
        let report = simulate(seed, config(512), config(512), 3_000, 48);
        println!("seed {seed}: {report:?}");
        // The run must actually have exercised recovery.
        assert!(report.retransmits > 0 && report.duplicates > 0 && report.buffered > 0);
        // Equal bounds on both ends: the sender never overruns the reorder buffer.
        assert_eq!(report.no_room, 0);
    }
}

#[test]
fn many_small_messages_hit_the_segment_window_not_the_byte_bound() {
    let report = simulate(7, config(4096), config(4096), 4_000, 8);
    println!("{report:?}");
    assert!(report.retransmits > 0 && report.buffered > 0);
    assert_eq!(report.no_room, 0);
}

#[test]
fn receiver_with_less_room_than_sender_still_gets_everything() {
    let report = simulate(11, config(2048), config(256), 2_000, 200);
    println!("{report:?}");
    assert!(
        report.no_room > 0,
        "the small reorder buffer never filled: {report:?}"
    );
}

#[test]
fn a_sender_told_the_receivers_window_never_overruns_its_reorder_buffer() {
    // The receiver has an eighth of the sender's room; told so, the sender keeps the
    // rest queued and the receiver never refuses a segment for lack of room.
    let report = simulate_window(12, config(2048), config(256), 2_000, 200, true);
    println!("{report:?}");
    assert_eq!(report.no_room, 0, "{report:?}");
    assert!(report.retransmits > 0 && report.buffered > 0);
}

#[test]
fn mismatched_bounds_and_many_seeds_still_deliver_everything() {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    for seed in 100..124 {
        let sender_max = between(&mut rng, 16, 1024) as usize;
        let receiver_max = between(&mut rng, 0, 1024) as usize;
        let max_len = between(&mut rng, 0, sender_max as u64) as usize;
        let report = simulate(seed, config(sender_max), config(receiver_max), 300, max_len);
        if receiver_max >= sender_max {
            assert_eq!(report.no_room, 0, "seed {seed}");
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    Ack(u64, u64),
    AckBehind(u64, u64),
    /// Behind the next sequence number, with selective bits anywhere in the wide bitmap.
    AckWide(u64, Vec<u64>),
    Poll(u64),
    Segment(u64, usize),
    Pop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..300).prop_map(Op::Push),
        // Near the real sequence space and anywhere at all.
        (0u64..100, any::<u64>()).prop_map(|(n, s)| Op::Ack(n, s)),
        (any::<u64>(), any::<u64>()).prop_map(|(n, s)| Op::Ack(n, s)),
        // Plausible: a little behind the next sequence number, few selective bits.
        (0u64..70, any::<u16>()).prop_map(|(b, s)| Op::AckBehind(b, u64::from(s))),
        (0u64..1_100, proptest::collection::vec(0u64..1_100, 0..8))
            .prop_map(|(b, bits)| Op::AckWide(b, bits)),
        (0u64..2_000).prop_map(Op::Poll),
        (0u64..150, 0usize..300).prop_map(|(q, l)| Op::Segment(q, l)),
        (any::<u64>(), 0usize..300).prop_map(|(q, l)| Op::Segment(q, l)),
        Just(Op::Pop),
    ]
}

proptest! {
    #[test]
    fn arbitrary_acks_and_segments_never_break_invariants(
        max in 0usize..700,
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        let cfg = config(max);
        let mut sender = ReliableSender::new(cfg);
        let mut receiver = ReliableReceiver::new(cfg);
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Push(len) => {
                    let before = sender.next_seq();
                    match sender.push(t(now), &vec![0xA5; len]) {
                        Ok(pushed) => prop_assert_eq!(pushed.seq, before),
                        Err(PushError::ExceedsBound { bound }) => prop_assert!(len > bound && bound == max),
                        Err(PushError::WouldBlock) => {}
                    }
                }
                Op::Ack(next_expected, selective) => {
                    let before = sender.clone();
                    if sender.on_ack(t(now), ack(next_expected, selective)).is_err() {
                        prop_assert!(sender == before);
                    }
                }
                Op::AckWide(behind, bits) => {
                    let before = sender.clone();
                    let next_expected = sender.next_seq().saturating_sub(behind);
                    if sender.on_ack(t(now), ack_bits(next_expected, &bits)).is_err() {
                        prop_assert!(sender == before);
                    }
                }
                Op::AckBehind(behind, selective) => {
                    let before = sender.clone();
                    let next_expected = sender.next_seq().saturating_sub(behind);
                    if sender.on_ack(t(now), ack(next_expected, selective)).is_err() {
                        prop_assert!(sender == before);
                    }
                }
                Op::Poll(advance) => {
                    now += advance;
                    let mut polled = 0;
                    while let Some(segment) = sender.poll_retransmit(t(now)) {
                        prop_assert!(segment.payload.iter().all(|&b| b == 0xA5));
                        polled += 1;
                        prop_assert!(polled <= MAX_IN_FLIGHT);
                    }
                }
                Op::Segment(seq, len) => {
                    let expected = receiver.next_expected();
                    let result = receiver.on_segment(t(now), seq, &vec![seq as u8; len]);
                    if result == Receive::Deliver {
                        prop_assert_eq!(seq, expected);
                    }
                }
                Op::Pop => {
                    let expected = receiver.next_delivery();
                    if let Some(payload) = receiver.pop_ready() {
                        prop_assert!(payload.iter().all(|&b| b == expected as u8));
                    }
                }
            }
            prop_assert!(sender.queued_bytes() <= max);
            prop_assert!(sender.in_flight() <= MAX_IN_FLIGHT);
            prop_assert!(receiver.reorder_bytes() <= max);
            prop_assert!(receiver.buffered_bytes() <= 2 * max);
            let live_bytes: usize = sender.slots.iter().map(|s| s.span.len).sum();
            prop_assert_eq!(live_bytes, sender.unacked_bytes());
            prop_assert!(sender.unacked_bytes() <= sender.queued_bytes());
            let window: usize = sender.window_lens.iter().map(|w| w.len).sum();
            prop_assert_eq!(window, sender.queued_bytes());
            prop_assert_eq!(sender.slots.iter().count(), sender.in_flight());
            let held: usize = receiver.slots.iter().map(|h| h.span.len).sum();
            prop_assert_eq!(held, receiver.buffered_bytes());
            let rto = sender.rto();
            prop_assert!(rto >= cfg.min_rto && rto <= cfg.max_rto);
            prop_assert_eq!(sender.next_timeout(), sender.next_timeout_by_scan());
        }
    }
}
