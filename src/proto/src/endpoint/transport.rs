//! The data path: sealing outgoing messages and opening, checking and delivering incoming ones.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::control::PendingTx;
use super::handshake::Phase;
use super::peers::{peer_in, KeyRole, Peer, SlotTarget};
use super::pools::ColdPools;
use super::timers::Timer;
use super::Endpoint;
use crate::event::{Deliveries, Mode, PeerId, SendError, Sent, Transmit};
use crate::keyset::{OpenError, SealError, REKEY_AFTER_MESSAGES};
use crate::reliable::{AckError, PushError, Pushed, Receive};
use crate::stats::{CloseReason, DropReason};
use crate::strikes::StrikeOutcome;
use crate::time::Timestamp;
use crate::wire::{
    self, Ack, Counter, FrameKind, SessionIndex, TransportKind, BUNDLE_FRAME_HEADER_LEN,
    MAX_BUNDLE_FRAMES, MAX_REALTIME_PAYLOAD, MAX_RELIABLE_PAYLOAD, RELIABLE_SEQ_LEN,
    TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD,
};

/// Several messages for one peer sealed into one datagram (PROTOCOL.md 7.5), made by
/// `Endpoint::bundle`: `push` each message, then `finish`. Nothing waits to fill it: the
/// caller pushes what is queued now and finishes. A bundle of one message is sent as that
/// message's own packet, so a caller can always go through a bundle at no cost.
pub struct Bundle<'e, 'b> {
    endpoint: &'e mut Endpoint,
    now: Timestamp,
    peer: PeerId,
    buf: &'b mut [u8],
    /// Plaintext bytes written after the transport header.
    written: usize,
    /// The largest plaintext this datagram may carry (the protocol's, or less for a small
    /// caller buffer).
    limit: usize,
    /// The kind of the first message, written unframed at the lone-packet position until a
    /// second one arrives; `None` once the plaintext is framed (or while empty).
    lone: Option<FrameKind>,
    frames: usize,
}

/// What `Bundle::push` did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a `Full` message was not taken: finish this bundle and push it into the next"]
pub enum Bundled {
    /// Written into the bundle.
    Added,
    /// A Reliable message accepted but held beyond the peer's receive window, as
    /// `Sent::Queued`: the endpoint sends it itself once ACKs open the window.
    Queued,
    /// It does not fit beside what the bundle holds; nothing was done with it.
    Full,
}

impl Bundle<'_, '_> {
    /// Adds a message, in the order the peer should receive it. Refusals are those of
    /// `Endpoint::send`; a message that does not fit beside the others is `Full`, untouched.
    pub fn push(&mut self, mode: Mode, payload: &[u8]) -> Result<Bundled, SendError> {
        let (kind, seq_len, max) = match mode {
            Mode::Realtime => (FrameKind::Realtime, 0, MAX_REALTIME_PAYLOAD),
            Mode::Reliable => (FrameKind::Reliable, RELIABLE_SEQ_LEN, MAX_RELIABLE_PAYLOAD),
        };
        if payload.len() > max {
            return Err(SendError::TooLarge);
        }
        let body_len = seq_len + payload.len();
        // The first message sits where a lone packet's plaintext would; from the second on,
        // every message takes a frame header too (the first one's included).
        let (body_at, needed) = match (self.frames, self.lone) {
            (0, _) => (0, body_len),
            (_, Some(_)) => (
                self.written + 2 * BUNDLE_FRAME_HEADER_LEN,
                self.written + 2 * BUNDLE_FRAME_HEADER_LEN + body_len,
            ),
            (_, None) => (
                self.written + BUNDLE_FRAME_HEADER_LEN,
                self.written + BUNDLE_FRAME_HEADER_LEN + body_len,
            ),
        };
        if needed > self.limit || self.frames == MAX_BUNDLE_FRAMES {
            return if self.frames == 0 {
                Err(SendError::BufferTooSmall)
            } else {
                Ok(Bundled::Full)
            };
        }
        let seq = match mode {
            // The peer was checked when the bundle began, and the bundle's borrow of the
            // endpoint keeps it: a Realtime message needs nothing more from it.
            Mode::Realtime => None,
            Mode::Reliable => match self.store_reliable(payload)? {
                Some(seq) => Some(seq),
                None => return Ok(Bundled::Queued),
            },
        };
        let plaintext = &mut self.buf[TRANSPORT_HEADER_LEN..];
        if let Some(first) = self.lone.take() {
            // The second message: frame the first one where it lies.
            plaintext.copy_within(..self.written, BUNDLE_FRAME_HEADER_LEN);
            write_frame_header(
                &mut plaintext[..BUNDLE_FRAME_HEADER_LEN],
                first,
                self.written,
            );
            self.written += BUNDLE_FRAME_HEADER_LEN;
        }
        if self.frames == 0 {
            self.lone = Some(kind);
        } else {
            write_frame_header(&mut plaintext[self.written..body_at], kind, body_len);
        }
        let body = &mut plaintext[body_at..body_at + body_len];
        if let Some(seq) = seq {
            body[..RELIABLE_SEQ_LEN].copy_from_slice(&seq.to_le_bytes());
        }
        body[seq_len..].copy_from_slice(payload);
        self.written = body_at + body_len;
        self.frames += 1;
        Ok(Bundled::Added)
    }

    /// Hands a Reliable message to the peer's sender, which keeps it for retransmission:
    /// its sequence number when it goes out in this bundle, `None` when it is held beyond
    /// the peer's receive window (the retransmission path sends it once ACKs open it).
    fn store_reliable(&mut self, payload: &[u8]) -> Result<Option<u64>, SendError> {
        let endpoint = &mut *self.endpoint;
        let peer = peer_in(&mut endpoint.peers, self.peer).ok_or(SendError::UnknownPeer)?;
        match peer.sender_mut(&mut endpoint.pools).push(self.now, payload) {
            Ok(Pushed { seq, send_now }) => {
                // The wake-up is asked for now, not left to the datagram's seal: a message
                // held beyond the window has no seal, and a bundle may be dropped unfinished.
                if let Some(at) = peer.sender.as_deref().and_then(|s| s.next_timeout()) {
                    peer.arm_timer(Timer::Retransmit, at);
                    endpoint.schedule(self.peer);
                }
                Ok(send_now.then_some(seq))
            }
            Err(PushError::WouldBlock) => {
                endpoint.stats.send_would_block += 1;
                Err(SendError::WouldBlock)
            }
            Err(PushError::ExceedsBound { .. }) => Err(SendError::ExceedsQueueBound),
        }
    }

    /// How many messages the bundle holds.
    pub fn len(&self) -> usize {
        self.frames
    }

    /// Whether the bundle holds no message.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Seals what was pushed and returns the datagram to send, `None` if nothing was.
    pub fn finish(self) -> Result<Option<Transmit>, SendError> {
        let kind = match (self.frames, self.lone) {
            (0, _) => return Ok(None),
            (_, Some(FrameKind::Realtime)) => TransportKind::Realtime,
            (_, Some(FrameKind::Reliable)) => TransportKind::Reliable,
            (_, None) => TransportKind::Bundle,
        };
        self.endpoint
            .seal_data(self.now, self.peer, kind, self.buf, self.written)
            .map(Some)
    }
}

/// Writes a frame header for a body of `len` bytes (at most a datagram, so it fits a u16).
fn write_frame_header(out: &mut [u8], kind: FrameKind, len: usize) {
    if let Ok(header) = <&mut [u8; BUNDLE_FRAME_HEADER_LEN]>::try_from(out) {
        wire::write_frame_header(header, kind, len as u16);
    }
}

impl Endpoint {
    /// Seals `payload` for `peer` straight into `buf` and returns what to send
    /// (`Sent::Now`). Reliable messages are also kept for retransmission; one beyond the
    /// peer's receive window is accepted and held (`Sent::Queued`: `poll_transmit` sends
    /// it once ACKs open the window); when the local bound is reached the answer is
    /// `WouldBlock` and nothing is kept.
    pub fn send(
        &mut self,
        now: Timestamp,
        peer_id: PeerId,
        mode: Mode,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Sent, SendError> {
        let mut bundle = self.bundle(now, peer_id, buf)?;
        match bundle.push(mode, payload)? {
            Bundled::Added => {}
            Bundled::Queued => return Ok(Sent::Queued),
            // The first message of a bundle is never `Full` (too big is an error).
            Bundled::Full => return Err(SendError::BufferTooSmall),
        }
        match bundle.finish()? {
            Some(transmit) => Ok(Sent::Now(transmit)),
            None => Err(SendError::BufferTooSmall),
        }
    }

    /// Starts a bundle of messages for `peer` in `buf` (PROTOCOL.md 7.5): smart batching,
    /// several small messages in one sealed datagram. See `Bundle`.
    pub fn bundle<'e, 'b>(
        &'e mut self,
        now: Timestamp,
        peer_id: PeerId,
        buf: &'b mut [u8],
    ) -> Result<Bundle<'e, 'b>, SendError> {
        self.sendable(peer_id)?;
        let limit = buf
            .len()
            .saturating_sub(TRANSPORT_OVERHEAD)
            .min(MAX_REALTIME_PAYLOAD);
        Ok(Bundle {
            endpoint: self,
            now,
            peer: peer_id,
            buf,
            written: 0,
            limit,
            lone: None,
            frames: 0,
        })
    }

    /// Whether a Realtime message of `len` bytes to `peer` would be sealed now: the same
    /// refusals `send` and `Bundle::push` give (unknown or closing peer, no session yet, too
    /// large), checked without sealing. For a caller that holds messages back to bundle them
    /// and must answer its own caller at once.
    pub fn check_realtime(&self, peer_id: PeerId, len: usize) -> Result<(), SendError> {
        self.sendable(peer_id)?;
        if len > MAX_REALTIME_PAYLOAD {
            return Err(SendError::TooLarge);
        }
        Ok(())
    }

    /// The refusals shared by every data send: an unknown or closing peer, no session yet.
    fn sendable(&self, peer_id: PeerId) -> Result<(), SendError> {
        let peer = self.peer(peer_id).ok_or(SendError::UnknownPeer)?;
        if peer.closing.is_some() {
            return Err(SendError::UnknownPeer);
        }
        if !peer.established {
            return Err(SendError::NotEstablished);
        }
        Ok(())
    }

    /// Seals a data packet (a message or a bundle) whose plaintext is written, and does the
    /// bookkeeping of a sent packet.
    fn seal_data(
        &mut self,
        now: Timestamp,
        peer_id: PeerId,
        kind: TransportKind,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<Transmit, SendError> {
        let peer = peer_in(&mut self.peers, peer_id).ok_or(SendError::UnknownPeer)?;
        let keys = peer.current.as_mut().ok_or(SendError::NotEstablished)?;
        let len = keys.seal(kind, buf, plaintext_len).map_err(|e| match e {
            SealError::BufferTooSmall => SendError::BufferTooSmall,
            SealError::CounterExhausted => SendError::KeysExhausted,
        })?;
        if keys.messages_sent() >= REKEY_AFTER_MESSAGES {
            peer.arm_timer(Timer::Rekey, now);
        }
        peer.last_sent = now;
        peer.packets_sent += 1;
        let dst = peer.addr;
        let armed = peer.timers_armed;
        self.stats.aead_seals += 1;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len as u64;
        if armed {
            self.schedule(peer_id);
        }
        Ok(Transmit { dst, len })
    }

    pub(super) fn on_transport<'b>(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        kind: TransportKind,
        receiver: SessionIndex,
        counter: Counter,
        datagram: &'b mut [u8],
    ) -> Result<Deliveries<'b>, DropReason> {
        let Some(SlotTarget::Keys(id)) = self.lookup(receiver) else {
            return Err(DropReason::UnknownSession);
        };
        let Some(peer) = peer_in(&mut self.peers, id).filter(|p| p.closing.is_none()) else {
            return Err(DropReason::UnknownSession);
        };
        // Replays are refused first, by the window alone: they cost no token, so replaying
        // captured packets cannot drain the bucket the genuine ones need.
        let stray = match peer.keys_for(receiver) {
            None => return Err(DropReason::UnknownSession),
            Some((keys, _)) => match keys.precheck(counter) {
                Ok(()) => keys.is_stray(counter),
                Err(_) => {
                    peer.drops += 1;
                    return Err(DropReason::Replay);
                }
            },
        };
        // A token bucket comes before any cryptography: a flood costs us one integer check.
        // A counter far ahead of anything accepted draws on a small budget of its own, so
        // junk with made-up counters at a real index cannot starve the genuine packets.
        let bucket = if stray {
            &mut peer.stray
        } else {
            &mut peer.bucket
        };
        if !bucket.try_take(now) {
            peer.drops += 1;
            return Err(DropReason::RateLimit);
        }
        let Some((keys, role)) = peer.keys_for(receiver) else {
            return Err(DropReason::UnknownSession);
        };
        let opened = match keys.open(counter, datagram) {
            Ok(opened) => {
                self.stats.aead_opens += 1;
                opened
            }
            Err(failure) => {
                // Unauthenticated, whatever its source: counted and dropped, and nothing
                // more. It is no strike, no step towards closing the session and no reason
                // to move it, or junk and replays carrying a real index could end sessions.
                let reason = match failure {
                    OpenError::Replay(_) | OpenError::CounterLimit => DropReason::Replay,
                    OpenError::Crypto => {
                        self.stats.aead_opens += 1;
                        DropReason::Crypto
                    }
                };
                peer.drops += 1;
                return Err(reason);
            }
        };
        let plaintext_len = opened.len;
        peer.last_received = now;
        peer.packets_received += 1;
        // Roaming: only a packet that authenticated and is newer than every packet before it
        // under the session's live keys moves the session. A replay, or a genuine packet an
        // observer relays late from its own address, cannot.
        if src != peer.addr && opened.newest && role != KeyRole::Previous {
            peer.addr = src;
        }
        let mut retired = None;
        match role {
            KeyRole::Next => {
                // The responder confirmed our rekey: switch to the new keys and keep the old
                // ones briefly for packets still in flight.
                // Swapped through the spare box the next keys are in: no allocation.
                let pools = &mut self.pools;
                let spare = peer.spare.get_or_insert_with(|| pools.take_spare_keys());
                retired = spare.previous.take().map(|k| k.local_index);
                let confirmed = spare.next.take();
                spare.previous = std::mem::replace(&mut peer.current, confirmed);
                peer.release_spare_if_empty(&mut self.pools);
                peer.previous_expires = now + self.config.previous_keys_linger;
                peer.handshake = None;
                self.stats.rekeys += 1;
                peer.arm_timer(Timer::PreviousKeys, peer.previous_expires);
            }
            KeyRole::Current => {
                if matches!(
                    peer.handshake.as_ref().map(|h| &h.phase),
                    Some(Phase::AwaitConfirm { .. })
                ) && peer.next_keys().is_none()
                {
                    peer.handshake = None;
                }
            }
            KeyRole::Previous => {}
        }
        let body_end = TRANSPORT_HEADER_LEN + plaintext_len;
        let datagram: &'b [u8] = datagram;
        let plaintext = &datagram[TRANSPORT_HEADER_LEN..body_end];
        let mut violation = false;
        let mut rejected = None;
        let mut delivered = Deliveries::none();
        // Messages handed out and their bytes, counted as they are found: no second walk.
        let mut delivered_count = (0u64, 0u64);
        let mut count = |message: &[u8]| {
            delivered_count.0 += 1;
            delivered_count.1 += message.len() as u64;
        };
        let mut reliable_arrived = false;
        match kind {
            TransportKind::Realtime => {
                count(plaintext);
                delivered = Deliveries::one(id, Mode::Realtime, plaintext);
            }
            TransportKind::Reliable => {
                reliable_arrived = true;
                match accept_segment(now, id, peer, &mut self.pools, &mut self.ready, plaintext) {
                    Ok(Some(message)) => {
                        count(message);
                        delivered = Deliveries::one(id, Mode::Reliable, message);
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        peer.drops += 1;
                        rejected = Some(reason);
                    }
                }
            }
            TransportKind::Bundle => match wire::check_bundle(plaintext) {
                // Authenticated, yet its framing lies: a broken or hostile peer. Dropped
                // whole (nothing of it delivered), counted as malformed and struck.
                Err(_) => violation = true,
                Ok(_) => {
                    let mut deliver = 0u64;
                    for (i, frame) in wire::bundle_frames(plaintext).enumerate() {
                        let bit = 1u64 << i;
                        match frame.kind {
                            FrameKind::Realtime => {
                                count(frame.body);
                                deliver |= bit;
                            }
                            FrameKind::Reliable => {
                                reliable_arrived = true;
                                let pools = &mut self.pools;
                                match accept_segment(
                                    now,
                                    id,
                                    peer,
                                    pools,
                                    &mut self.ready,
                                    frame.body,
                                ) {
                                    Ok(Some(message)) => {
                                        count(message);
                                        deliver |= bit;
                                    }
                                    Ok(None) => {}
                                    Err(reason) => {
                                        // One frame refused, the others unaffected.
                                        peer.drops += 1;
                                        self.stats.record_drop(reason);
                                    }
                                }
                            }
                        }
                    }
                    delivered = Deliveries::bundle(id, plaintext, deliver);
                }
            },
            TransportKind::Ack => {
                let ack = Ack::decode(plaintext);
                let outcome = ack.map(|ack| match peer.sender.as_deref_mut() {
                    Some(sender) => sender.on_ack(now, ack).map(|_| ()),
                    // No sender: nothing was ever sent, so only an ACK of nothing is
                    // valid, as it would be for a new sender.
                    None if ack == Ack::default() => Ok(()),
                    None => Err(AckError::Invalid),
                });
                match outcome {
                    Some(Ok(())) => {
                        if let Some(at) = peer.sender.as_deref().and_then(|s| s.next_timeout()) {
                            peer.arm_timer(Timer::Retransmit, at);
                        }
                    }
                    // Authenticated, yet it acknowledges what we never sent: a broken or
                    // hostile peer. Counted as malformed and struck.
                    Some(Err(_)) | None => violation = true,
                }
            }
            TransportKind::Keepalive => {}
            TransportKind::Close => {
                let code = plaintext.first().copied().unwrap_or(0);
                peer.peer_reason = Some(CloseReason::from_wire_code(code));
                if let Some(index) = retired {
                    self.free_index(index);
                }
                self.close_peer(now, id, CloseReason::Remote, false);
                return Ok(Deliveries::none());
            }
        }
        if reliable_arrived {
            // The ACK is written by `poll_transmit`, so everything that arrived by then (the
            // rest of the driver's batch) shares it. If it may wait, a timer sends it; if it
            // may not, it is queued now.
            match peer.receiver.as_deref().and_then(|r| r.ack_deadline()) {
                Some(due) if due > now => peer.arm_timer(Timer::Ack, due),
                Some(due) if !peer.ack_queued => {
                    if self.pending_tx.len() < self.config.control_queue {
                        peer.ack_queued = true;
                        self.pending_tx.push_back(PendingTx::Ack(id));
                    } else {
                        // No room: the next timer visit retries.
                        peer.arm_timer(Timer::Ack, due);
                    }
                }
                Some(_) | None => {}
            }
        }
        // A Realtime packet arms no timer, so this reads one flag and not the timer table.
        if peer.timers_armed {
            self.schedule(id);
        }
        if let Some(index) = retired {
            self.free_index(index);
        }
        if violation {
            self.strike(now, id);
            return Err(DropReason::Malformed);
        }
        if let Some(reason) = rejected {
            return Err(reason);
        }
        let (messages, bytes) = delivered_count;
        self.stats.messages_delivered += messages;
        self.stats.bytes_delivered += bytes;
        Ok(delivered)
    }

    pub(super) fn strike(&mut self, now: Timestamp, id: PeerId) {
        let policy = self.config.strikes;
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        let outcome = peer.strikes.add(now, &policy);
        self.stats.strike_events += 1;
        if outcome == StrikeOutcome::Exceeded {
            self.close_peer(now, id, CloseReason::Strikes, true);
        }
    }
}

/// Hands one Reliable segment (`seq` then the message) to the peer's reorder buffer. Returns
/// the message when it is to be delivered straight from the datagram (in order, nothing
/// waiting before it); queues the peer for `poll_event` when buffered messages became ready.
fn accept_segment<'b>(
    now: Timestamp,
    id: PeerId,
    peer: &mut Peer,
    pools: &mut ColdPools,
    ready: &mut VecDeque<PeerId>,
    segment: &'b [u8],
) -> Result<Option<&'b [u8]>, DropReason> {
    let (Some(seq), Some(message)) = (
        segment.get(..RELIABLE_SEQ_LEN),
        segment.get(RELIABLE_SEQ_LEN..),
    ) else {
        return Err(DropReason::Malformed);
    };
    let seq = wire::read_u64(seq, 0);
    let receiver = peer.receiver_mut(pools);
    match receiver.on_segment(now, seq, message) {
        Receive::Deliver => {
            if receiver.has_ready() {
                ready.push_back(id);
            }
            Ok(Some(message))
        }
        Receive::Buffered | Receive::Duplicate => Ok(None),
        Receive::NoRoom => Err(DropReason::ReorderBufferFull),
    }
}
