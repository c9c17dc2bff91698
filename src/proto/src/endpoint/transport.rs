//! The data path: sealing outgoing messages and opening, checking and delivering incoming ones.

use std::net::SocketAddr;

use super::control::PendingTx;
use super::handshake::Phase;
use super::peers::{peer_in, KeyRole, SlotTarget};
use super::timers::Timer;
use super::Endpoint;
use crate::event::{Message, Mode, PeerId, SendError, Sent, Transmit};
use crate::keyset::{self, OpenError, SealError, REKEY_AFTER_MESSAGES};
use crate::reliable::{PushError, Pushed, Receive};
use crate::stats::{CloseReason, DropReason};
use crate::strikes::StrikeOutcome;
use crate::time::Timestamp;
use crate::wire::{
    self, Ack, Counter, SessionIndex, TransportKind, MAX_REALTIME_PAYLOAD, MAX_RELIABLE_PAYLOAD,
    RELIABLE_SEQ_LEN, TRANSPORT_HEADER_LEN,
};

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
        let peer = peer_in(&mut self.peers, peer_id).ok_or(SendError::UnknownPeer)?;
        if peer.closing.is_some() {
            return Err(SendError::UnknownPeer);
        }
        if !peer.established {
            return Err(SendError::NotEstablished);
        }
        let (kind, body_at, max) = match mode {
            Mode::Realtime => (
                TransportKind::Realtime,
                TRANSPORT_HEADER_LEN,
                MAX_REALTIME_PAYLOAD,
            ),
            Mode::Reliable => (
                TransportKind::Reliable,
                TRANSPORT_HEADER_LEN + RELIABLE_SEQ_LEN,
                MAX_RELIABLE_PAYLOAD,
            ),
        };
        if payload.len() > max {
            return Err(SendError::TooLarge);
        }
        let plaintext_len = body_at - TRANSPORT_HEADER_LEN + payload.len();
        if buf.len() < keyset::sealed_len(plaintext_len) {
            return Err(SendError::BufferTooSmall);
        }
        if mode == Mode::Reliable {
            let seq = match peer.sender.push(now, payload) {
                Ok(Pushed {
                    seq,
                    send_now: true,
                }) => seq,
                // Stored beyond the peer's receive window: the retransmission path
                // sends it once ACKs open the window.
                Ok(Pushed {
                    send_now: false, ..
                }) => {
                    if let Some(at) = peer.sender.next_timeout() {
                        peer.timers.arm(Timer::Retransmit, at);
                    }
                    self.schedule(peer_id);
                    return Ok(Sent::Queued);
                }
                Err(PushError::WouldBlock) => {
                    self.stats.send_would_block += 1;
                    return Err(SendError::WouldBlock);
                }
                Err(PushError::ExceedsBound { .. }) => return Err(SendError::ExceedsQueueBound),
            };
            buf[TRANSPORT_HEADER_LEN..body_at].copy_from_slice(&seq.to_le_bytes());
            if let Some(at) = peer.sender.next_timeout() {
                peer.timers.arm(Timer::Retransmit, at);
            }
        }
        buf[body_at..body_at + payload.len()].copy_from_slice(payload);
        let keys = peer.current.as_mut().ok_or(SendError::NotEstablished)?;
        let len = keys.seal(kind, buf, plaintext_len).map_err(|e| match e {
            SealError::BufferTooSmall => SendError::BufferTooSmall,
            SealError::CounterExhausted => SendError::KeysExhausted,
        })?;
        if keys.messages_sent() >= REKEY_AFTER_MESSAGES {
            peer.timers.arm(Timer::Rekey, now);
        }
        peer.last_sent = now;
        peer.packets_sent += 1;
        let dst = peer.addr;
        self.stats.aead_seals += 1;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len as u64;
        self.schedule(peer_id);
        Ok(Sent::Now(Transmit { dst, len }))
    }

    pub(super) fn on_transport<'b>(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        kind: TransportKind,
        receiver: SessionIndex,
        counter: Counter,
        datagram: &'b mut [u8],
    ) -> Result<Option<Message<'b>>, DropReason> {
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
                retired = peer.previous.take().map(|k| k.local_index);
                peer.previous = peer.current.take();
                peer.current = peer.next.take();
                peer.previous_expires = now + self.config.previous_keys_linger;
                peer.handshake = None;
                self.stats.rekeys += 1;
                peer.timers.arm(Timer::PreviousKeys, peer.previous_expires);
            }
            KeyRole::Current => {
                if matches!(
                    peer.handshake.as_ref().map(|h| &h.phase),
                    Some(Phase::AwaitConfirm { .. })
                ) && peer.next.is_none()
                {
                    peer.handshake = None;
                }
            }
            KeyRole::Previous => {}
        }
        let body_end = TRANSPORT_HEADER_LEN + plaintext_len;
        let mut violation = false;
        let mut rejected = None;
        let mut delivered = None;
        match kind {
            TransportKind::Realtime => {
                delivered = Some((Mode::Realtime, TRANSPORT_HEADER_LEN));
            }
            TransportKind::Reliable => {
                let seq = wire::read_u64(datagram, TRANSPORT_HEADER_LEN);
                let body = &datagram[TRANSPORT_HEADER_LEN + RELIABLE_SEQ_LEN..body_end];
                match peer.receiver.on_segment(now, seq, body) {
                    Receive::Deliver => {
                        delivered = Some((Mode::Reliable, TRANSPORT_HEADER_LEN + RELIABLE_SEQ_LEN));
                        if peer.receiver.has_ready() {
                            self.ready.push_back(id);
                        }
                    }
                    Receive::Buffered | Receive::Duplicate => {}
                    Receive::NoRoom => {
                        peer.drops += 1;
                        rejected = Some(DropReason::ReorderBufferFull);
                    }
                }
                // The ACK is written by `poll_transmit`, so everything that arrived by then
                // (the rest of the driver's batch) shares it. If it may wait, a timer sends
                // it; if it may not, it is queued now.
                match peer.receiver.ack_deadline() {
                    Some(due) if due > now => peer.timers.arm(Timer::Ack, due),
                    Some(due) if !peer.ack_queued => {
                        if self.pending_tx.len() < self.config.control_queue {
                            peer.ack_queued = true;
                            self.pending_tx.push_back(PendingTx::Ack(id));
                        } else {
                            // No room: the next timer visit retries.
                            peer.timers.arm(Timer::Ack, due);
                        }
                    }
                    Some(_) | None => {}
                }
            }
            TransportKind::Ack => {
                let ack = Ack::decode(&datagram[TRANSPORT_HEADER_LEN..body_end]);
                match ack.map(|ack| peer.sender.on_ack(now, ack)) {
                    Some(Ok(_)) => {
                        if let Some(at) = peer.sender.next_timeout() {
                            peer.timers.arm(Timer::Retransmit, at);
                        }
                    }
                    // Authenticated, yet it acknowledges what we never sent: a broken or
                    // hostile peer. Counted as malformed and struck.
                    Some(Err(_)) | None => violation = true,
                }
            }
            TransportKind::Keepalive => {}
            TransportKind::Close => {
                let code = datagram.get(TRANSPORT_HEADER_LEN).copied().unwrap_or(0);
                peer.peer_reason = Some(CloseReason::from_wire_code(code));
                if let Some(index) = retired {
                    self.free_index(index);
                }
                self.close_peer(now, id, CloseReason::Remote, false);
                return Ok(None);
            }
        }
        self.schedule(id);
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
        let Some((mode, start)) = delivered else {
            return Ok(None);
        };
        self.stats.messages_delivered += 1;
        self.stats.bytes_delivered += (body_end - start) as u64;
        Ok(Some(Message {
            peer: id,
            mode,
            payload: &datagram[start..body_end],
        }))
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
