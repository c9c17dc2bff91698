//! Helpers shared by the unit tests of every Reliable file.

use super::{PushError, Pushed, ReliableConfig};
use crate::time::Timestamp;
use crate::wire::{Ack, Selective};

pub(super) fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// An ACK whose selective bits 0..64 are `selective` (the others clear).
pub(super) fn ack(next_expected: u64, selective: u64) -> Ack {
    Ack {
        next_expected,
        selective: Selective::from_low_word(selective),
    }
}

pub(super) fn config(max_queued_bytes: usize) -> ReliableConfig {
    ReliableConfig {
        max_queued_bytes,
        ..ReliableConfig::default()
    }
}

/// What `push` answers for a message transmitted at once.
pub(super) fn sent_now(seq: u64) -> Result<Pushed, PushError> {
    Ok(Pushed {
        seq,
        send_now: true,
    })
}

/// An ACK whose selective bits are `bits` (any of 0..1024).
pub(super) fn ack_bits(next_expected: u64, bits: &[u64]) -> Ack {
    let mut ack = Ack::cumulative(next_expected);
    for &bit in bits {
        ack.selective.insert(bit);
    }
    ack
}
