//! Endpoint counters: every accepted, delivered and rejected packet is counted here.
//!
//! Owns `DropReason` and `CloseReason`, whose `label()` strings are also the
//! Prometheus label values, and the plain-integer `Stats` one endpoint keeps.
//! It must never hold a lock or an atomic: each endpoint (one per worker) owns
//! its `Stats`, and exporters read copies and sum them at the edge.

/// Why a received datagram was rejected. Also the `reason` label of the drop metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// Too short, too long, unknown version or type, non-zero reserved bits.
    Malformed,
    /// The peer's token bucket was empty; no cryptography was attempted.
    RateLimit,
    /// AEAD authentication failed (data, ACK, keepalive, close, cookie reply).
    Crypto,
    /// The packet counter was already seen or is older than the replay window.
    Replay,
    /// The receiver index names no session or handshake of ours.
    UnknownSession,
    /// A handshake was refused because the in-flight budget (total or per source IP) is spent.
    HandshakeBudget,
    /// A handshake needed a cookie and carried none, or a wrong or expired one.
    BadCookie,
    /// The handshake's mac1 did not prove knowledge of our public key.
    BadMac,
    /// The Noise handshake itself failed (bad ephemeral, decryption, unexpected peer key).
    HandshakeFailed,
    /// The peer's static key is not on the allow-list.
    NotAllowed,
    /// The datagram was longer than the receive buffer (MSG_TRUNC); counted by drivers.
    Truncated,
    /// A reliable segment arrived while the reorder buffer was full; the sender will retransmit.
    ReorderBufferFull,
}

impl DropReason {
    /// Every reason, in declaration order (the order of its counters).
    pub const ALL: [DropReason; 12] = [
        DropReason::Malformed,
        DropReason::RateLimit,
        DropReason::Crypto,
        DropReason::Replay,
        DropReason::UnknownSession,
        DropReason::HandshakeBudget,
        DropReason::BadCookie,
        DropReason::BadMac,
        DropReason::HandshakeFailed,
        DropReason::NotAllowed,
        DropReason::Truncated,
        DropReason::ReorderBufferFull,
    ];
    /// How many reasons there are.
    pub const COUNT: usize = Self::ALL.len();

    /// The `reason` label of the drop metric.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::RateLimit => "rate_limit",
            DropReason::Crypto => "crypto",
            DropReason::Replay => "replay",
            DropReason::UnknownSession => "unknown_session",
            DropReason::HandshakeBudget => "handshake_budget",
            DropReason::BadCookie => "bad_cookie",
            DropReason::BadMac => "bad_mac",
            DropReason::HandshakeFailed => "handshake_failed",
            DropReason::NotAllowed => "not_allowed",
            DropReason::Truncated => "truncated",
            DropReason::ReorderBufferFull => "reorder_buffer_full",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Why a session ended. Also the `reason` label of the close metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side asked to close the peer.
    Local,
    /// The peer sent an authenticated close.
    Remote,
    /// Nothing authenticated arrived for the idle timeout.
    IdleTimeout,
    /// The handshake was not completed in time.
    HandshakeTimeout,
    /// Protocol violations reached the strike threshold.
    Strikes,
    /// The keys reached their hard age or counter limit without a successful rekey.
    KeyExpired,
    /// The peer's key was removed from the allow-list.
    NotAllowed,
    /// The endpoint is shutting down.
    Shutdown,
    /// A new session with the same peer replaced this one (the peer restarted, or started
    /// over after its handshake went unconfirmed). Never sent in a close packet: the peer
    /// already has the new session.
    Replaced,
}

impl CloseReason {
    /// Every reason, in declaration order (the order of its counters).
    pub const ALL: [CloseReason; 9] = [
        CloseReason::Local,
        CloseReason::Remote,
        CloseReason::IdleTimeout,
        CloseReason::HandshakeTimeout,
        CloseReason::Strikes,
        CloseReason::KeyExpired,
        CloseReason::NotAllowed,
        CloseReason::Shutdown,
        CloseReason::Replaced,
    ];
    /// How many reasons there are.
    pub const COUNT: usize = Self::ALL.len();

    /// The `reason` label of the close metric.
    pub const fn label(self) -> &'static str {
        match self {
            CloseReason::Local => "local",
            CloseReason::Remote => "remote",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::Strikes => "strikes",
            CloseReason::KeyExpired => "key_expired",
            CloseReason::NotAllowed => "not_allowed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Replaced => "replaced",
        }
    }

    /// The byte carried in a close packet (PROTOCOL.md, "Close").
    pub const fn wire_code(self) -> u8 {
        self as u8
    }

    /// Decodes a close packet's reason byte; unknown codes read as `Remote`.
    pub fn from_wire_code(code: u8) -> CloseReason {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(CloseReason::Remote)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one endpoint. Plain integers: the endpoint is single-threaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to `handle_datagram`.
    pub packets_received: u64,
    /// Bytes handed to `handle_datagram`.
    pub bytes_received: u64,
    /// Datagrams written by `send` and `poll_transmit`.
    pub packets_sent: u64,
    /// Bytes written by `send` and `poll_transmit`.
    pub bytes_sent: u64,
    /// Messages handed to the application.
    pub messages_delivered: u64,
    /// Payload bytes handed to the application.
    pub bytes_delivered: u64,
    dropped: [u64; DropReason::COUNT],
    closes: [u64; CloseReason::COUNT],
    /// Handshakes this side started (first sessions and rekeys).
    pub handshakes_initiated: u64,
    /// Handshakes completed, either side: a responder counts one when it reads the
    /// HandshakeFinish, an initiator when it reads the HandshakeResponse (its keys are then
    /// derived; the responder's confirmation comes after, and an attempt restarted for
    /// want of it (PROTOCOL.md 11.1 step 5) counts again).
    pub handshakes_completed: u64,
    /// HandshakeInit and HandshakeFinish retransmissions.
    pub handshake_retransmits: u64,
    /// Cookie replies sent to initiators under load.
    pub cookie_replies_sent: u64,
    /// HandshakeFinishes set aside because both sides opened at once and ours wins.
    pub simultaneous_opens: u64,
    /// Responder handshakes from unproven sources given up for a cookie-proven one.
    pub handshakes_displaced: u64,
    /// Reliable messages accepted by `send` and never acknowledged when their session ended
    /// or was replaced (each reported through `Event::ReliableAbandoned`).
    pub reliable_abandoned: u64,
    /// Sessions that switched to new keys.
    pub rekeys: u64,
    /// Protocol violations counted against peers.
    pub strike_events: u64,
    /// Reliable segments sent again.
    pub reliable_retransmits: u64,
    /// `send` calls refused with `WouldBlock`.
    pub send_would_block: u64,
    /// Datagrams the I/O driver dropped on send (EAGAIN past its wait, ENOBUFS, errors).
    pub packets_send_dropped: u64,
    /// AEAD open attempts on transport packets: lets tests prove the rate limit runs first.
    pub aead_opens: u64,
    /// AEAD seal operations.
    pub aead_seals: u64,
    /// Gauges, filled in when a snapshot is taken, never updated per packet.
    pub handshakes_in_flight: u64,
    /// Established sessions (a gauge, computed by `Endpoint::stats`).
    pub sessions_active: u64,
    /// Bytes held in reorder buffers (a gauge).
    pub reorder_buffer_bytes: u64,
    /// Bytes held for Reliable retransmission (a gauge).
    pub retransmit_queue_bytes: u64,
}

impl Stats {
    /// Counts one rejected datagram.
    pub fn record_drop(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }

    /// Counts one ended session.
    pub fn record_close(&mut self, reason: CloseReason) {
        self.closes[reason.index()] += 1;
    }

    /// Datagrams rejected for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Datagrams rejected for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Sessions ended for `reason`.
    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.closes[reason.index()]
    }

    /// Sessions ended for any reason.
    pub fn closes_total(&self) -> u64 {
        self.closes.iter().sum()
    }

    /// Adds another endpoint's counters and gauges into this one (workers are summed when read).
    pub fn accumulate(&mut self, other: &Stats) {
        let Stats {
            packets_received,
            bytes_received,
            packets_sent,
            bytes_sent,
            messages_delivered,
            bytes_delivered,
            dropped,
            closes,
            handshakes_initiated,
            handshakes_completed,
            handshake_retransmits,
            cookie_replies_sent,
            simultaneous_opens,
            handshakes_displaced,
            reliable_abandoned,
            rekeys,
            strike_events,
            reliable_retransmits,
            send_would_block,
            packets_send_dropped,
            aead_opens,
            aead_seals,
            handshakes_in_flight,
            sessions_active,
            reorder_buffer_bytes,
            retransmit_queue_bytes,
        } = other;
        self.packets_received += packets_received;
        self.bytes_received += bytes_received;
        self.packets_sent += packets_sent;
        self.bytes_sent += bytes_sent;
        self.messages_delivered += messages_delivered;
        self.bytes_delivered += bytes_delivered;
        for (mine, theirs) in self.dropped.iter_mut().zip(dropped) {
            *mine += theirs;
        }
        for (mine, theirs) in self.closes.iter_mut().zip(closes) {
            *mine += theirs;
        }
        self.handshakes_initiated += handshakes_initiated;
        self.handshakes_completed += handshakes_completed;
        self.handshake_retransmits += handshake_retransmits;
        self.cookie_replies_sent += cookie_replies_sent;
        self.handshakes_displaced += handshakes_displaced;
        self.simultaneous_opens += simultaneous_opens;
        self.reliable_abandoned += reliable_abandoned;
        self.rekeys += rekeys;
        self.strike_events += strike_events;
        self.reliable_retransmits += reliable_retransmits;
        self.send_would_block += send_would_block;
        self.packets_send_dropped += packets_send_dropped;
        self.aead_opens += aead_opens;
        self.aead_seals += aead_seals;
        self.handshakes_in_flight += handshakes_in_flight;
        self.sessions_active += sessions_active;
        self.reorder_buffer_bytes += reorder_buffer_bytes;
        self.retransmit_queue_bytes += retransmit_queue_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_indexes_match_all() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(CloseReason::from_wire_code(r.wire_code()), *r);
        }
        let mut labels: Vec<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DropReason::COUNT);
    }

    #[test]
    fn accumulate_sums_every_field() {
        let mut a = Stats::default();
        a.record_drop(DropReason::Replay);
        a.packets_received = 3;
        a.record_close(CloseReason::Strikes);
        let mut total = Stats::default();
        total.accumulate(&a);
        total.accumulate(&a);
        assert_eq!(total.dropped(DropReason::Replay), 2);
        assert_eq!(total.packets_received, 6);
        assert_eq!(total.closes(CloseReason::Strikes), 2);
        assert_eq!(total.dropped_total(), 2);
    }
}
