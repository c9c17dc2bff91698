//! Control packets: the queue `poll_transmit` drains (handshake messages, cookie replies, ACKs,
//! keepalives, Reliable retransmissions, closes) and how each is written.

use std::net::SocketAddr;

use super::handshake::{InitiatorHandshake, Phase};
use super::timers::Timer;
use super::{Endpoint, QueuedEvent};
use crate::event::{PeerId, Transmit};
use crate::stats::CloseReason;
use crate::time::Timestamp;
use crate::wire::{
    cookie_reply, SessionIndex, TransportKind, MAC_LEN, RELIABLE_SEQ_LEN, TRANSPORT_HEADER_LEN,
};

/// A control packet waiting to be written by `poll_transmit`.
#[derive(Debug, Clone, Copy)]
pub(super) enum PendingTx {
    Init(PeerId),
    Finish(PeerId),
    Response {
        responder: usize,
        local_index: SessionIndex,
    },
    CookieReply {
        dst: SocketAddr,
        receiver: SessionIndex,
        mac1: [u8; MAC_LEN],
    },
    Ack(PeerId),
    Keepalive(PeerId),
    Retransmit(PeerId),
    Close(PeerId),
}

impl Endpoint {
    /// Writes the next control packet (handshake, cookie reply, ACK, keepalive, Reliable
    /// retransmission, close) into `buf`, which must hold `wire::MAX_DATAGRAM_LEN` bytes.
    pub fn poll_transmit(&mut self, now: Timestamp, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(item) = self.pending_tx.pop_front() {
            if let Some(transmit) = self.build(now, item, buf) {
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += transmit.len as u64;
                return Some(transmit);
            }
        }
        None
    }

    pub(super) fn build(
        &mut self,
        now: Timestamp,
        item: PendingTx,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        match item {
            PendingTx::Init(id) => {
                let peer = self.peer_mut(id)?;
                let cookie = peer
                    .cookie
                    .filter(|(_, until)| now < *until)
                    .map(|(c, _)| c);
                let dst = peer.addr;
                let Some(InitiatorHandshake {
                    phase: Phase::AwaitResponse(initiator),
                    ..
                }) = peer.handshake.as_deref_mut()
                else {
                    return None;
                };
                let packet = initiator.init_packet(cookie.as_ref());
                copy_out(buf, packet, dst)
            }
            PendingTx::Finish(id) => {
                let peer = self.peer(id)?;
                let Some(InitiatorHandshake {
                    phase: Phase::AwaitConfirm { finish, .. },
                    ..
                }) = peer.handshake.as_deref()
                else {
                    return None;
                };
                copy_out(buf, finish, peer.addr)
            }
            PendingTx::Response {
                responder,
                local_index,
            } => {
                let pending = self.responders.get(responder)?.as_ref()?;
                if pending.local_index != local_index {
                    return None;
                }
                copy_out(buf, pending.responder.response_packet(), pending.src)
            }
            PendingTx::CookieReply {
                dst,
                receiver,
                mac1,
            } => {
                let out: &mut [u8; cookie_reply::LEN] =
                    buf.get_mut(..cookie_reply::LEN)?.try_into().ok()?;
                let mut nonce = [0u8; cookie_reply::NONCE_LEN];
                self.rng.fill_bytes(&mut nonce);
                let cookie = self.cookies.cookie_for(dst);
                self.cookie_reply_key
                    .seal_cookie_reply(out, receiver, nonce, &cookie, &mac1);
                self.stats.cookie_replies_sent += 1;
                Some(Transmit {
                    dst,
                    len: cookie_reply::LEN,
                })
            }
            PendingTx::Ack(id) => {
                let peer = self.peer_mut(id)?;
                peer.ack_queued = false;
                // Queued only for segments received, so the receiver exists.
                let receiver = peer.receiver.as_deref_mut()?;
                let encoded = receiver.ack().encode();
                let ack = encoded.as_bytes();
                buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + ack.len())?
                    .copy_from_slice(ack);
                receiver.ack_sent();
                self.seal_control(now, id, TransportKind::Ack, buf, ack.len())
            }
            PendingTx::Keepalive(id) => {
                self.peer_mut(id)?.keepalive_queued = false;
                self.seal_control(now, id, TransportKind::Keepalive, buf, 0)
            }
            PendingTx::Retransmit(id) => {
                let peer = self.peer_mut(id)?;
                let Some(segment) = peer
                    .sender
                    .as_deref_mut()
                    .and_then(|s| s.poll_retransmit(now))
                else {
                    peer.retransmit_queued = false;
                    if let Some(at) = peer.sender.as_deref().and_then(|s| s.next_timeout()) {
                        peer.arm_timer(Timer::Retransmit, at);
                    }
                    self.schedule(id);
                    return None;
                };
                let body_at = TRANSPORT_HEADER_LEN + RELIABLE_SEQ_LEN;
                let plaintext_len = RELIABLE_SEQ_LEN + segment.payload.len();
                let out = buf.get_mut(TRANSPORT_HEADER_LEN..body_at + segment.payload.len())?;
                out[..RELIABLE_SEQ_LEN].copy_from_slice(&segment.seq.to_le_bytes());
                out[RELIABLE_SEQ_LEN..].copy_from_slice(segment.payload);
                // The same path sends a queued message's first transmission once the peer's
                // window admits it: that is no retransmission.
                if segment.retransmission {
                    self.stats.reliable_retransmits += 1;
                }
                // Come back for the next due segment after other control traffic had its turn.
                self.queue(PendingTx::Retransmit(id));
                self.seal_control(now, id, TransportKind::Reliable, buf, plaintext_len)
            }
            PendingTx::Close(id) => {
                let reason = self.peer(id)?.closing.unwrap_or(CloseReason::Local);
                *buf.get_mut(TRANSPORT_HEADER_LEN)? = reason.wire_code();
                let transmit = self.seal_control(now, id, TransportKind::Close, buf, 1);
                self.remove_peer(id);
                transmit
            }
        }
    }

    pub(super) fn seal_control(
        &mut self,
        now: Timestamp,
        id: PeerId,
        kind: TransportKind,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Option<Transmit> {
        let peer = self.peer_mut(id)?;
        let keys = peer.current.as_mut()?;
        let len = keys.seal(kind, buf, plaintext_len).ok()?;
        peer.last_sent = now;
        peer.packets_sent += 1;
        let dst = peer.addr;
        self.stats.aead_seals += 1;
        Some(Transmit { dst, len })
    }

    pub(super) fn queue(&mut self, item: PendingTx) -> bool {
        if self.pending_tx.len() >= self.config.control_queue {
            return false;
        }
        self.pending_tx.push_back(item);
        true
    }

    pub(super) fn queue_keepalive(&mut self, id: PeerId) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        if peer.keepalive_queued {
            return;
        }
        peer.keepalive_queued = true;
        if !self.queue(PendingTx::Keepalive(id)) {
            if let Some(peer) = self.peer_mut(id) {
                peer.keepalive_queued = false;
            }
        }
    }

    pub(super) fn close_peer(
        &mut self,
        _now: Timestamp,
        id: PeerId,
        reason: CloseReason,
        notify: bool,
    ) {
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        if peer.closing.is_some() {
            return;
        }
        let can_notify = notify && peer.current.is_some();
        peer.closing = Some(reason);
        let public_key = peer.public_key;
        let peer_reason = peer.peer_reason;
        self.stats.record_close(reason);
        self.abandon_reliable(id);
        self.events.push_back(QueuedEvent::Down {
            peer: id,
            public_key,
            reason,
            peer_reason,
        });
        // The close is sealed with the peer's keys, so the peer stays (inert) until it is out.
        if !(can_notify && self.queue(PendingTx::Close(id))) {
            self.remove_peer(id);
        }
    }
}

pub(super) fn copy_out(buf: &mut [u8], packet: &[u8], dst: SocketAddr) -> Option<Transmit> {
    buf.get_mut(..packet.len())?.copy_from_slice(packet);
    Some(Transmit {
        dst,
        len: packet.len(),
    })
}
