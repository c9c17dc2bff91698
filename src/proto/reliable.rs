//! INTERIM: replaced by the real module when its branch merges. Not for release.
use super::time::Timestamp;
use super::wire::Ack;
use std::time::Duration;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableConfig {
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
    WouldBlock,
    TooLarge,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    Invalid,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckOutcome {
    pub newly_acked: u32,
    pub bytes_freed: usize,
    pub rtt_sample: Option<Duration>,
}
pub struct Segment<'a> {
    pub seq: u64,
    pub payload: &'a [u8],
}
pub struct ReliableSender {
    next: u64,
}
impl ReliableSender {
    pub fn new(_c: ReliableConfig) -> Self {
        ReliableSender { next: 0 }
    }
    pub fn push(&mut self, _now: Timestamp, _p: &[u8]) -> Result<u64, PushError> {
        self.next += 1;
        Ok(self.next - 1)
    }
    pub fn on_ack(&mut self, _now: Timestamp, a: Ack) -> Result<AckOutcome, AckError> {
        if a.next_expected > self.next {
            Err(AckError::Invalid)
        } else {
            Ok(AckOutcome::default())
        }
    }
    pub fn poll_retransmit(&mut self, _now: Timestamp) -> Option<Segment<'_>> {
        None
    }
    pub fn next_timeout(&self) -> Option<Timestamp> {
        None
    }
    pub fn queued_bytes(&self) -> usize {
        0
    }
    pub fn in_flight(&self) -> usize {
        0
    }
    pub fn srtt(&self) -> Option<Duration> {
        None
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    Deliver,
    Buffered,
    Duplicate,
    NoRoom,
}
pub struct ReliableReceiver {
    next: u64,
}
impl ReliableReceiver {
    pub fn new(_c: ReliableConfig) -> Self {
        ReliableReceiver { next: 0 }
    }
    pub fn on_segment(&mut self, seq: u64, _p: &[u8]) -> Receive {
        if seq == self.next {
            self.next += 1;
            Receive::Deliver
        } else if seq < self.next {
            Receive::Duplicate
        } else {
            Receive::NoRoom
        }
    }
    pub fn pop_ready(&mut self) -> Option<&[u8]> {
        None
    }
    pub fn has_ready(&self) -> bool {
        false
    }
    pub fn ack(&self) -> Ack {
        Ack {
            next_expected: self.next,
            selective: 0,
        }
    }
    pub fn ack_sent(&mut self) {}
    pub fn buffered_bytes(&self) -> usize {
        0
    }
}
