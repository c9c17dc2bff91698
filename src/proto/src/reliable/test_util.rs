//! Helpers shared by the unit tests of every Reliable file.

use super::{PushError, Pushed, ReliableConfig};
use crate::time::Timestamp;
use crate::wire::Ack;

pub(super) fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

pub(super) fn ack(next_expected: u64, selective: u64) -> Ack {
    Ack {
        next_expected,
        selective,
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
