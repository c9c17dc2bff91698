//! A fuzz body for the Reliable state machines alone: a sender and a receiver joined
//! by a network the input controls byte by byte.
//!
//! Owns nothing but the harness: every decision (message sizes, which segment or ACK
//! is delivered, dropped or duplicated, in which order, when time advances, when the
//! application pops) comes from the input, so any failing input replays exactly.
//! It asserts what Reliable promises: messages come out in order, exactly once, byte
//! for byte; no bound is exceeded; a genuine ACK is never refused; and once the
//! network stops losing, everything sent is delivered and acknowledged.

use core::time::Duration;

use super::{
    PushError, Pushed, Receive, ReliableConfig, ReliableReceiver, ReliableSender, MAX_IN_FLIGHT,
};
use crate::time::Timestamp;
use crate::wire::{Ack, MAX_RELIABLE_PAYLOAD};

/// Byte bounds the input picks from: degenerate, tiny, the constrained 512, the
/// default, and above the cap.
const BOUNDS: [usize; 8] = [0, 16, 100, 512, 1_412, 4_096, 64 * 1024, 1 << 30];

/// Reads the input one byte at a time; zeros once it runs out.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The bytes of message `seq`, so content is checked without storing every message.
fn content(seq: u64, index: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(index as u8)
}

fn message(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|index| content(seq, index)).collect()
}

struct Harness {
    sender: ReliableSender,
    receiver: ReliableReceiver,
    sender_bound: usize,
    peer_window: usize,
    /// The application pops after every delivery, before any ACK is taken.
    eager_pop: bool,
    now: Timestamp,
    /// Length of every message pushed, by sequence number.
    lens: Vec<usize>,
    delivered: u64,
    data_wire: Vec<(u64, Vec<u8>)>,
    ack_wire: Vec<Ack>,
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Self {
        let pick = |byte: u8| BOUNDS[usize::from(byte) % BOUNDS.len()];
        let (sender_bound, receiver_bound) = (pick(input.byte()), pick(input.byte()));
        let flags = input.byte();
        let config = |bound| ReliableConfig {
            max_queued_bytes: bound,
            ack_delay: Duration::from_millis(u64::from(flags >> 4)),
            ..ReliableConfig::default()
        };
        let sender_config = config(sender_bound);
        let mut sender = ReliableSender::new(sender_config);
        let receiver = ReliableReceiver::new(config(receiver_bound));
        let mut peer_window = sender_config.queue_bound();
        if flags & 1 != 0 {
            peer_window = receiver.receive_window();
            sender.set_peer_window(peer_window);
        }
        Harness {
            sender,
            receiver,
            sender_bound: sender_config.queue_bound(),
            peer_window,
            eager_pop: flags & 2 != 0,
            now: Timestamp::ZERO,
            lens: Vec::new(),
            delivered: 0,
            data_wire: Vec::new(),
            ack_wire: Vec::new(),
        }
    }

    fn push(&mut self, len: usize) {
        let payload = message(self.lens.len() as u64, len);
        match self.sender.push(self.now, &payload) {
            Ok(Pushed { seq, send_now }) => {
                assert_eq!(seq, self.lens.len() as u64, "sequence numbers are dense");
                self.lens.push(len);
                if send_now {
                    self.data_wire.push((seq, payload));
                }
            }
            Err(PushError::ExceedsBound { bound }) => {
                assert!(len > bound && bound == self.sender_bound)
            }
            Err(PushError::WouldBlock) => assert!(len <= self.sender_bound),
        }
    }

    fn check_delivery(&mut self, payload: &[u8]) {
        let seq = self.delivered;
        let len = *self
            .lens
            .get(seq as usize)
            .expect("delivered more messages than were sent");
        assert_eq!(payload.len(), len, "message {seq} has its length");
        assert!(
            payload
                .iter()
                .enumerate()
                .all(|(index, &byte)| byte == content(seq, index)),
            "message {seq} is delivered in order, byte for byte"
        );
        self.delivered += 1;
    }

    fn pop_all(&mut self) {
        while self.receiver.has_ready() {
            let Some(payload) = self.receiver.pop_ready() else {
                panic!("has_ready but nothing to pop");
            };
            let payload = payload.to_vec();
            self.check_delivery(&payload);
        }
    }

    fn deliver_segment(&mut self, index: usize) {
        if self.data_wire.is_empty() {
            return;
        }
        let (seq, payload) = self.data_wire.swap_remove(index % self.data_wire.len());
        let expected = self.receiver.next_expected();
        match self.receiver.on_segment(self.now, seq, &payload) {
            Receive::Deliver => {
                assert_eq!(seq, expected);
                self.check_delivery(&payload);
            }
            Receive::NoRoom => {
                // A sender told the receiver's window, with an application that pops
                // before any ACK goes out, is never refused for room, as long as every
                // message fits the window: one larger goes alone, beyond the window, and
                // may then find no room out of order (its retransmission recovers it).
                let kept_to_window = self.lens.iter().all(|&len| len <= self.peer_window);
                assert!(
                    !(self.eager_pop
                        && kept_to_window
                        && self.peer_window == self.receiver.receive_window()),
                    "segment {seq} refused although the sender kept to the window"
                );
            }
            Receive::Buffered | Receive::Duplicate => {}
        }
        if self.eager_pop {
            self.pop_all();
        }
    }

    fn take_ack(&mut self) {
        if self.eager_pop {
            self.pop_all();
        }
        if let Some(ack) = self.receiver.take_ack() {
            self.ack_wire.push(ack);
        }
    }

    fn deliver_ack(&mut self, index: usize) {
        if self.ack_wire.is_empty() {
            return;
        }
        let ack = self.ack_wire.swap_remove(index % self.ack_wire.len());
        assert!(
            self.sender.on_ack(self.now, ack).is_ok(),
            "a genuine ACK is never Invalid: {ack:?}"
        );
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let mut polled = 0;
        while let Some(segment) = self.sender.poll_retransmit(self.now) {
            self.data_wire.push((segment.seq, segment.payload.to_vec()));
            polled += 1;
            assert!(polled <= MAX_IN_FLIGHT, "poll_retransmit terminates");
        }
    }

    fn check_bounds(&self) {
        let (sender, receiver) = (&self.sender, &self.receiver);
        assert!(sender.queued_bytes() <= self.sender_bound);
        assert!(sender.unacked_bytes() <= sender.queued_bytes());
        assert!(sender.in_flight() <= MAX_IN_FLIGHT);
        let lone = self.lens.iter().copied().max().unwrap_or(0);
        assert!(sender.window_bytes() <= self.peer_window.max(lone));
        assert!(sender.allocated_bytes() <= self.sender_bound + self.sender_bound / 2);
        let window = receiver.receive_window();
        assert!(receiver.reorder_bytes() <= window);
        assert!(receiver.buffered_bytes() <= 2 * window);
        assert!(receiver.allocated_bytes() <= 3 * window);
        assert!(receiver.next_delivery() <= receiver.next_expected());
        assert!(self.delivered <= receiver.next_delivery());
        assert!(receiver.next_expected() <= self.lens.len() as u64);
    }

    /// The network stops losing: everything must get through within a bounded time.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            while !self.data_wire.is_empty() {
                self.deliver_segment(0);
            }
            self.pop_all();
            self.take_ack();
            while !self.ack_wire.is_empty() {
                self.deliver_ack(0);
            }
            self.check_bounds();
            if self.sender.in_flight() == 0 {
                break;
            }
            let next = self.sender.next_timeout().unwrap_or(self.now);
            self.advance(next.saturating_since(self.now).max(Duration::from_nanos(1)));
        }
        assert_eq!(self.sender.in_flight(), 0, "everything acknowledged");
        assert_eq!(self.sender.queued_bytes(), 0);
        assert_eq!(
            self.delivered,
            self.lens.len() as u64,
            "everything delivered"
        );
        assert_eq!(self.sender.next_timeout(), None);
    }
}

/// Runs the operations `data` spells out against a fresh sender and receiver; panics
/// if Reliable breaks a promise. Never panics otherwise, whatever the bytes.
///
/// Layout: sender bound, receiver bound (each an index into a fixed table), a flags
/// byte (bit 0: advertise the receiver's window; bit 1: pop eagerly; high nibble:
/// ACK delay in ms), then operations of one opcode byte and their arguments.
pub fn fuzz_reliable(data: &[u8]) {
    let mut input = Input { data };
    let mut harness = Harness::new(&mut input);
    while !input.is_empty() {
        match input.byte() % 10 {
            0 | 1 => {
                let len = usize::from(input.u16()) % (MAX_RELIABLE_PAYLOAD + 1);
                harness.push(len);
            }
            2 => {
                let index = usize::from(input.byte());
                harness.deliver_segment(index);
            }
            3 => {
                let index = usize::from(input.byte());
                if !harness.data_wire.is_empty() {
                    let len = harness.data_wire.len();
                    harness.data_wire.swap_remove(index % len);
                }
            }
            4 => {
                let index = usize::from(input.byte());
                if let Some(copy) = harness
                    .data_wire
                    .get(index % harness.data_wire.len().max(1))
                {
                    let copy = copy.clone();
                    harness.data_wire.push(copy);
                }
            }
            5 => harness.pop_all(),
            6 => harness.take_ack(),
            7 => {
                let index = usize::from(input.byte());
                harness.deliver_ack(index);
            }
            8 => {
                let index = usize::from(input.byte());
                if !harness.ack_wire.is_empty() {
                    let len = harness.ack_wire.len();
                    harness.ack_wire.swap_remove(index % len);
                }
            }
            _ => {
                let ms = u64::from(input.byte());
                harness.advance(Duration::from_micros(ms * 250));
            }
        }
        harness.check_bounds();
    }
    harness.settle();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_tiny_inputs_are_fine() {
        fuzz_reliable(&[]);
        fuzz_reliable(&[0]);
        fuzz_reliable(&[3, 3, 3, 0, 100, 0, 2, 0]);
    }

    /// Found by the proptest driver: a 0-byte receive window, so every message goes alone
    /// beyond it and an out-of-order one finds no room. Refusing it is correct.
    #[test]
    fn a_window_smaller_than_a_message_may_refuse_out_of_order_segments() {
        fuzz_reliable(&[
            1, 152, 91, 2, 0, 90, 200, 220, 0, 0, 0, 25, 107, 0, 83, 0, 0, 0, 0, 0, 0, 1, 25, 42,
            0, 12, 0, 147, 0, 27, 0, 109, 109, 0, 0, 1, 2, 0, 149, 91, 0, 0, 0, 7, 0, 25, 0, 0, 1,
            15, 152, 12, 185, 130, 164, 38, 32, 5, 9, 157, 70, 0, 1, 46, 7, 0, 15, 114, 46, 14, 91,
            67, 0, 163, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
    }

    #[test]
    fn a_lossy_scripted_run_delivers_everything() {
        // Default bounds, window advertised, lazy pops: push 20, lose every third,
        // deliver the rest backwards, then let the harness settle.
        let mut data = vec![6, 6, 0b1];
        for _ in 0..20 {
            data.extend([0, 200, 0]);
        }
        for i in 0..20u8 {
            data.extend(if i % 3 == 0 { [3, 19 - i] } else { [2, 19 - i] });
        }
        data.extend([6, 7, 0, 9, 255, 9, 255]);
        fuzz_reliable(&data);
    }
}
