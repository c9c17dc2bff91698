//! What the endpoint tells its caller: events, deliveries, transmits, and the errors of its API.
//!
//! Owns plain data types only. Deliveries borrow the caller's receive buffer or
//! the peer's reorder buffer, so delivering a message never copies or allocates.

use core::fmt;
use std::net::SocketAddr;

use super::keys::PublicKey;
use super::stats::CloseReason;

/// A handle to a peer of one endpoint. Stale handles (of a removed peer) are refused, never
/// confused with a newer peer in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}.{}", self.slot, self.generation)
    }
}

/// How a message travels, chosen per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Delivered at once, never retransmitted, never waits on anything.
    Realtime,
    /// In order, exactly once, retransmitted until acknowledged; bounded, so it can refuse.
    Reliable,
}

impl Mode {
    /// The `mode` label of metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Mode::Realtime => "realtime",
            Mode::Reliable => "reliable",
        }
    }
}

/// A delivered message; `payload` lives in the receive buffer or the peer's reorder buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// Who sent it.
    pub peer: PeerId,
    /// How it travelled.
    pub mode: Mode,
    /// The plaintext.
    pub payload: &'a [u8],
}

/// The messages one datagram delivered, in order: none, one, or several from a bundle
/// (PROTOCOL.md 7.5). It borrows only the datagram, never the endpoint, so a caller can use
/// the endpoint (poll its events, send) between two messages. Every message must be taken:
/// a Reliable one here is already counted as received (the endpoint acknowledges it), so one
/// left untaken is lost to the application.
#[derive(Debug, Clone)]
pub struct Deliveries<'b> {
    peer: PeerId,
    source: Source<'b>,
}

#[derive(Debug, Clone)]
enum Source<'b> {
    Empty,
    One(Mode, &'b [u8]),
    /// A well-formed bundle's plaintext; bit `i` of `deliver` marks frame `i` as one to hand
    /// out (a Realtime frame, or a Reliable one that arrived in order with nothing waiting).
    Bundle {
        plaintext: &'b [u8],
        at: usize,
        frame: u32,
        deliver: u64,
    },
}

impl<'b> Deliveries<'b> {
    /// Nothing to deliver.
    pub const fn none() -> Deliveries<'b> {
        Deliveries {
            peer: PeerId {
                slot: 0,
                generation: 0,
            },
            source: Source::Empty,
        }
    }

    pub(crate) fn one(peer: PeerId, mode: Mode, payload: &'b [u8]) -> Deliveries<'b> {
        Deliveries {
            peer,
            source: Source::One(mode, payload),
        }
    }

    /// `plaintext` must have passed `wire::check_bundle`.
    pub(crate) fn bundle(peer: PeerId, plaintext: &'b [u8], deliver: u64) -> Deliveries<'b> {
        Deliveries {
            peer,
            source: Source::Bundle {
                plaintext,
                at: 0,
                frame: 0,
                deliver,
            },
        }
    }

    /// Whether no message is left to take.
    pub fn is_empty(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::One(..) => false,
            Source::Bundle { frame, deliver, .. } => deliver.checked_shr(*frame).unwrap_or(0) == 0,
        }
    }
}

impl<'b> Iterator for Deliveries<'b> {
    type Item = Message<'b>;

    fn next(&mut self) -> Option<Message<'b>> {
        let peer = self.peer;
        match &mut self.source {
            Source::Empty => None,
            Source::One(mode, payload) => {
                let message = Message {
                    peer,
                    mode: *mode,
                    payload,
                };
                self.source = Source::Empty;
                Some(message)
            }
            Source::Bundle {
                plaintext,
                at,
                frame,
                deliver,
            } => {
                let plaintext: &'b [u8] = plaintext;
                while deliver.checked_shr(*frame).unwrap_or(0) != 0 {
                    let this = crate::wire::bundle_frames(plaintext.get(*at..)?).next()?;
                    let marked = *deliver & (1u64 << *frame) != 0;
                    *at += this.offset + this.body.len();
                    *frame += 1;
                    if marked {
                        let (mode, payload) = match this.kind {
                            crate::wire::FrameKind::Realtime => (Mode::Realtime, this.body),
                            crate::wire::FrameKind::Reliable => (
                                Mode::Reliable,
                                this.body.get(crate::wire::RELIABLE_SEQ_LEN..)?,
                            ),
                        };
                        return Some(Message {
                            peer,
                            mode,
                            payload,
                        });
                    }
                }
                self.source = Source::Empty;
                None
            }
        }
    }
}

/// What `poll_event` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A session is established (or re-established after the peer restarted).
    PeerUp {
        /// The peer's handle.
        peer: PeerId,
        /// The peer's static key, authenticated by the handshake.
        public_key: PublicKey,
        /// Where the peer's packets come from.
        addr: SocketAddr,
    },
    /// The peer is gone; its handle is no longer valid. When the peer closed the session
    /// itself (`reason` is `Remote`), `peer_reason` is the reason its close packet gave.
    PeerDown {
        /// The handle, now stale.
        peer: PeerId,
        /// The peer's static key.
        public_key: PublicKey,
        /// Why this side ended the session.
        reason: CloseReason,
        /// The reason the peer's own close packet gave.
        peer_reason: Option<CloseReason>,
    },
    /// A Reliable message released from the reorder buffer once its gap filled.
    Message(Message<'a>),
    /// Reliable messages `send` accepted for `peer` that were never acknowledged when its
    /// session ended or was replaced by a new one: each may or may not have been delivered,
    /// and none will be sent again. Comes before the `PeerDown` of that session. Within one
    /// session Reliable delivery is exactly once; across sessions it is at most once, and
    /// this says what was at stake.
    ReliableAbandoned {
        /// The peer.
        peer: PeerId,
        /// Messages without an acknowledgement.
        messages: u64,
        /// Their payload bytes.
        bytes: u64,
    },
}

/// A datagram the endpoint wrote into the caller's buffer: send `buf[..len]` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// Bytes written at the start of the caller's buffer.
    pub len: usize,
}

/// What `Endpoint::send` did with an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a `Sent::Now` datagram must be sent by the caller"]
pub enum Sent {
    /// Sealed into the caller's buffer: send `buf[..len]` to `dst` now.
    Now(Transmit),
    /// A Reliable message accepted but held beyond the peer's receive window: the
    /// endpoint sends it itself (from `poll_transmit`) once ACKs open the window. The
    /// caller's buffer holds nothing to send, and the message must not be sent again.
    Queued,
}

impl Sent {
    /// The datagram to send now, if the message went out at once.
    pub fn transmit(self) -> Option<Transmit> {
        match self {
            Sent::Now(transmit) => Some(transmit),
            Sent::Queued => None,
        }
    }
}

/// Why `Endpoint::send` refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No such peer (never was, or already removed).
    UnknownPeer,
    /// The handshake has not completed yet.
    NotEstablished,
    /// Larger than a datagram can carry in this mode.
    TooLarge,
    /// A Reliable message larger than the configured queue bound
    /// (`ReliableConfig::max_queued_bytes`): it can never fit, unlike `WouldBlock`.
    ExceedsQueueBound,
    /// The peer's Reliable buffer is full: try again once ACKs free it. Nothing was sent.
    WouldBlock,
    /// The caller's buffer cannot hold the packet.
    BufferTooSmall,
    /// The session's keys are spent and no rekey succeeded.
    KeysExhausted,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::UnknownPeer => "unknown peer",
            SendError::NotEstablished => "session not established",
            SendError::TooLarge => "message too large",
            SendError::ExceedsQueueBound => {
                "reliable message larger than the configured queue bound: it can never be sent"
            }
            SendError::WouldBlock => "reliable queue full, would block",
            SendError::BufferTooSmall => "send buffer too small",
            SendError::KeysExhausted => "session keys exhausted",
        })
    }
}

impl std::error::Error for SendError {}

/// Why `Endpoint::connect` refused a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// `max_peers` are already in use.
    TooManyPeers,
    /// Every session index is in use.
    NoFreeIndex,
    /// Connecting to our own key.
    SelfConnect,
    /// The key is not on our allow-list.
    NotAllowed,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectError::TooManyPeers => "too many peers",
            ConnectError::NoFreeIndex => "no free session index",
            ConnectError::SelfConnect => "cannot connect to our own key",
            ConnectError::NotAllowed => "peer key is not on the allow-list",
        })
    }
}

impl std::error::Error for ConnectError {}

/// A peer as the caller may inspect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's static key.
    pub public_key: PublicKey,
    /// Its current (authenticated) address.
    pub addr: SocketAddr,
    /// Whether messages can be sent to it.
    pub established: bool,
    /// Smoothed round-trip time from Reliable ACKs, once measured.
    pub srtt: Option<core::time::Duration>,
    /// Authenticated packets received from it.
    pub packets_received: u64,
    /// Packets sealed for it.
    pub packets_sent: u64,
    /// Its packets rejected after the index lookup.
    pub drops: u64,
    /// Reliable payload bytes waiting for acknowledgement.
    pub reliable_queued_bytes: usize,
    /// Reliable payload bytes transmitted and not yet cumulatively acknowledged: never
    /// more than `peer_receive_window`, except for a lone segment.
    pub reliable_in_flight_bytes: usize,
    /// The Reliable receive window the peer advertised in its handshake, in bytes.
    pub peer_receive_window: usize,
}
