//! Handshake packets, as initiator (HandshakeInit out, HandshakeResponse in, HandshakeFinish out)
//! and as responder (mac1, cookie under load, budgets, then Noise), plus cookie replies.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::control::PendingTx;
use super::peers::SlotTarget;
use super::timers::Timer;
use super::{Endpoint, QueuedEvent};
use crate::cookie::{self, CookieReplyKey, COOKIE_SECRET_LIFETIME};
use crate::event::PeerId;
use crate::keyset::{KeySet, SessionSecrets};
use crate::noise::{FinishIntent, Initiator, Responder};
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::wire::{finish, init, SessionIndex, MAC_LEN};

/// A cookie is used for a little less than the secret behind it lives.
pub(super) const COOKIE_USE_FOR: Duration =
    Duration::from_secs(COOKIE_SECRET_LIFETIME.as_secs() - 10);

/// A responder handshake between HandshakeResponse and HandshakeFinish.
pub(super) struct PendingResponder {
    pub(super) responder: Box<Responder>,
    pub(super) src: SocketAddr,
    pub(super) initiator_index: SessionIndex,
    /// The initiator's ephemeral key: a retransmission repeats it, a new attempt does not.
    pub(super) ephemeral: [u8; 32],
    pub(super) local_index: SessionIndex,
    pub(super) created: Timestamp,
}

/// Where an initiator handshake stands.
pub(super) enum Phase {
    AwaitResponse(Box<Initiator>),
    /// Keys are derived; HandshakeFinish is resent until the responder's first packet confirms it.
    AwaitConfirm {
        finish: [u8; finish::LEN],
    },
}

/// A handshake this side started, first session or rekey, with its retransmission state.
pub(super) struct InitiatorHandshake {
    pub(super) phase: Phase,
    pub(super) local_index: SessionIndex,
    pub(super) started: Timestamp,
    pub(super) next_retry: Timestamp,
    pub(super) retry_interval: Duration,
    /// HandshakeFinish retransmissions without a confirmation.
    pub(super) finish_resends: u32,
}

/// After this many unanswered HandshakeFinish retransmissions the responder has most likely
/// lost the handshake (a forged HandshakeFinish consumes its state): start over.
pub(super) const FINISH_RESENDS_BEFORE_RESTART: u32 = 3;

impl Endpoint {
    pub(super) fn record_handshake(&mut self, took: Duration) {
        self.stats.handshakes_completed += 1;
        if let Some(slot) = self.handshake_durations.get_mut(self.handshake_log_len) {
            *slot = took;
            self.handshake_log_len += 1;
        }
    }

    pub(super) fn on_init(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        sender: SessionIndex,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        // mac1 first: it costs one HMAC and proves the sender knows our public key.
        if !cookie::verify_mac(
            &self.mac1_key,
            &datagram[..init::MAC1],
            &datagram[init::MAC1..init::MAC2],
        ) {
            return Err(DropReason::BadMac);
        }
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&datagram[init::NOISE..init::PADDING]);
        // A retransmitted HandshakeInit gets the answer we already computed. The same source
        // and index with another ephemeral key is a new attempt (the initiator restarted after
        // a failure): it replaces the stale one instead of being answered with a stale reply.
        if let Some(position) = self.responders.iter().position(|r| {
            r.as_ref()
                .is_some_and(|r| r.src == src && r.initiator_index == sender)
        }) {
            let Some(pending) = &self.responders[position] else {
                return Ok(());
            };
            let local_index = pending.local_index;
            if pending.ephemeral == ephemeral {
                self.queue(PendingTx::Response {
                    responder: position,
                    local_index,
                });
                return Ok(());
            }
            self.responders[position] = None;
            self.free_index(local_index);
        }
        let in_flight = self.responders.iter().flatten().count();
        if self.config.always_cookie || in_flight >= self.config.cookie_threshold {
            if self.cookies.needs_rotation(now) {
                let fresh = self.draw_seed();
                self.cookies.rotate(fresh, now);
            }
            if !self
                .cookies
                .verify_mac2(src, &datagram[..init::MAC2], &datagram[init::MAC2..])
            {
                // Under load, a source earns state only by proving it can receive at its address.
                let mut mac1 = [0u8; MAC_LEN];
                mac1.copy_from_slice(&datagram[init::MAC1..init::MAC2]);
                self.queue(PendingTx::CookieReply {
                    dst: src,
                    receiver: sender,
                    mac1,
                });
                return Err(DropReason::BadCookie);
            }
        }
        let from_ip = self
            .responders
            .iter()
            .flatten()
            .filter(|r| same_ip(r.src.ip(), src.ip()))
            .count();
        if in_flight >= self.config.handshakes_in_flight || from_ip >= self.config.handshakes_per_ip
        {
            return Err(DropReason::HandshakeBudget);
        }
        let Some(position) = self.responders.iter().position(Option::is_none) else {
            return Err(DropReason::HandshakeBudget);
        };
        let Some(local_index) = self.alloc_index(SlotTarget::Responder(position)) else {
            return Err(DropReason::HandshakeBudget);
        };
        let seed = self.draw_seed();
        let window = self.config.reliable.queue_bound();
        match Responder::accept(
            &self.config.keypair,
            datagram,
            sender,
            local_index,
            seed,
            window,
        ) {
            Ok(responder) => {
                self.responders[position] = Some(PendingResponder {
                    responder: Box::new(responder),
                    src,
                    initiator_index: sender,
                    ephemeral,
                    local_index,
                    created: now,
                });
                self.queue(PendingTx::Response {
                    responder: position,
                    local_index,
                });
                self.schedule_responder(position, local_index, now + self.config.handshake_timeout);
                Ok(())
            }
            Err(_) => {
                self.free_index(local_index);
                Err(DropReason::HandshakeFailed)
            }
        }
    }

    pub(super) fn on_response(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        sender: SessionIndex,
        receiver: SessionIndex,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let id = match self.lookup(receiver) {
            Some(SlotTarget::Initiator(id)) => id,
            Some(SlotTarget::Keys(id)) => {
                // Our HandshakeFinish was lost and the responder answered our retransmitted
                // HandshakeInit again: resend the finish.
                let awaiting = self.peer(id).is_some_and(|p| {
                    matches!(
                        p.handshake.as_ref(),
                        Some(h) if h.local_index == receiver
                            && matches!(h.phase, Phase::AwaitConfirm { .. })
                    )
                });
                if !awaiting {
                    return Err(DropReason::Replay);
                }
                self.queue(PendingTx::Finish(id));
                return Ok(());
            }
            _ => return Err(DropReason::UnknownSession),
        };
        let seed = self.draw_seed();
        let retry = self.config.handshake_retry;
        let keypair = self.config.keypair.clone();
        let window = self.config.reliable.queue_bound();
        let Some(peer) = self.peer_mut(id) else {
            return Err(DropReason::UnknownSession);
        };
        let Some(handshake) = peer.handshake.as_mut() else {
            return Err(DropReason::UnknownSession);
        };
        // A rekey continues a session the responder has confirmed; otherwise this is (again)
        // the first handshake, and any unconfirmed keys from an earlier attempt are replaced.
        let rekey = peer.current.as_ref().is_some_and(|k| k.received_any);
        let intent = if rekey {
            FinishIntent::Rekey
        } else {
            FinishIntent::NewSession
        };
        // A failed read leaves snow's state unusable, so the initiator is rebuilt with a
        // fresh ephemeral key under the same index and the retransmission timer goes on.
        let fresh = Initiator::start(&keypair, &peer.public_key, receiver, seed);
        let phase = match fresh {
            Ok(fresh) => {
                std::mem::replace(&mut handshake.phase, Phase::AwaitResponse(Box::new(fresh)))
            }
            Err(_) => return Err(DropReason::HandshakeFailed),
        };
        let Phase::AwaitResponse(initiator) = phase else {
            handshake.phase = phase;
            return Err(DropReason::Replay);
        };
        let (finish_packet, keys, peer_window) =
            match initiator.finish(datagram, sender, intent, window) {
                Ok(done) => done,
                Err(_) => return Err(DropReason::HandshakeFailed),
            };
        handshake.phase = Phase::AwaitConfirm {
            finish: finish_packet,
        };
        let took = now.saturating_since(handshake.started);
        handshake.next_retry = now + retry;
        handshake.retry_interval = retry;
        handshake.finish_resends = 0;
        let next_retry = handshake.next_retry;
        let keyset = KeySet::new(&keys, receiver, sender, now);
        let peer_key = peer.public_key;
        peer.addr = src;
        peer.sender.set_peer_window(peer_window);
        let mut came_up = None;
        let retired = if rekey {
            peer.next.replace(keyset).map(|k| k.local_index)
        } else {
            let retired = peer
                .current
                .replace(keyset)
                .map(|k| k.local_index)
                .filter(|&old| old != receiver);
            if !peer.established {
                came_up = Some((peer.public_key, peer.addr));
            }
            peer.established = true;
            peer.we_initiated = true;
            peer.last_received = now;
            peer.last_sent = now;
            retired
        };
        if let Some(slot) = self.slot_mut(receiver) {
            slot.target = SlotTarget::Keys(id);
        }
        if let Some(index) = retired {
            self.free_index(index);
        }
        if let Some((public_key, addr)) = came_up {
            self.events.push_back(QueuedEvent::Up {
                peer: id,
                public_key,
                addr,
            });
        }
        self.export_keys(|| SessionSecrets {
            local_index: receiver,
            remote_index: sender,
            send: keys.send,
            recv: keys.recv,
            peer: peer_key,
            initiator: true,
            rekey,
            created: now,
        });
        self.record_handshake(took);
        self.queue(PendingTx::Finish(id));
        self.arm(id, Timer::HandshakeRetry, next_retry);
        self.arm(id, Timer::Keepalive, now + self.config.keepalive_interval);
        Ok(())
    }

    pub(super) fn on_finish(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        receiver: SessionIndex,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let position = match self.lookup(receiver) {
            Some(SlotTarget::Responder(position)) => position,
            Some(SlotTarget::Keys(id)) => {
                // A repeated HandshakeFinish: our confirmation was lost. Confirm again, to the
                // peer's authenticated address (never to `src`), while the initiator has not
                // yet used the keys.
                let unconfirmed = self
                    .peer_mut(id)
                    .and_then(|p| p.keys_for(receiver).map(|(k, _)| !k.received_any));
                if unconfirmed != Some(true) {
                    return Err(DropReason::Replay);
                }
                self.queue_keepalive(id);
                return Ok(());
            }
            _ => return Err(DropReason::UnknownSession),
        };
        let Some(pending) = self.responders.get_mut(position).and_then(Option::take) else {
            return Err(DropReason::UnknownSession);
        };
        let finished = pending.responder.finish(datagram);
        let (public_key, keys, intent, peer_window) = match finished {
            Ok(done) => done,
            Err(_) => {
                self.free_index(receiver);
                return Err(DropReason::HandshakeFailed);
            }
        };
        if !self.allowed(&public_key) || public_key == self.config.keypair.public {
            self.free_index(receiver);
            return Err(DropReason::NotAllowed);
        }
        let keyset = KeySet::new(&keys, receiver, pending.initiator_index, now);
        let exported = SessionSecrets {
            local_index: receiver,
            remote_index: pending.initiator_index,
            send: keys.send,
            recv: keys.recv,
            peer: public_key,
            initiator: false,
            rekey: matches!(intent, FinishIntent::Rekey),
            created: now,
        };
        let existing = self
            .by_key
            .get(&public_key)
            .copied()
            .filter(|&id| self.peer(id).is_some_and(|p| p.closing.is_none()));
        let id = match (existing, intent) {
            (Some(id), FinishIntent::Rekey) => {
                let linger = now + self.config.previous_keys_linger;
                let Some(peer) = self.peer_mut(id) else {
                    self.free_index(receiver);
                    return Err(DropReason::UnknownSession);
                };
                let retired = peer.previous.take().map(|k| k.local_index);
                peer.previous = peer.current.replace(keyset);
                peer.previous_expires = linger;
                peer.addr = src;
                if let Some(index) = retired {
                    self.free_index(index);
                }
                self.stats.rekeys += 1;
                self.arm(id, Timer::PreviousKeys, linger);
                id
            }
            (Some(id), FinishIntent::NewSession) => {
                // The peer started over (it restarted, or lost our session): so do we, and
                // say so, since its Reliable streams start from zero again.
                self.reset_peer(now, id, keyset, src);
                id
            }
            (None, FinishIntent::NewSession) => {
                let Some(id) = self.insert_peer(now, public_key, src) else {
                    self.free_index(receiver);
                    return Err(DropReason::HandshakeBudget);
                };
                if let Some(peer) = self.peer_mut(id) {
                    peer.current = Some(keyset);
                    peer.established = true;
                }
                self.events.push_back(QueuedEvent::Up {
                    peer: id,
                    public_key,
                    addr: src,
                });
                id
            }
            (None, FinishIntent::Rekey) => {
                // A rekey of a session we do not have: the initiator will time out and start over.
                self.free_index(receiver);
                return Err(DropReason::HandshakeFailed);
            }
        };
        if let Some(peer) = self.peer_mut(id) {
            peer.sender.set_peer_window(peer_window);
        }
        if let Some(slot) = self.slot_mut(receiver) {
            slot.target = SlotTarget::Keys(id);
        }
        self.export_keys(|| exported);
        self.record_handshake(now.saturating_since(pending.created));
        self.queue_keepalive(id);
        self.arm(id, Timer::Keepalive, now + self.config.keepalive_interval);
        Ok(())
    }

    pub(super) fn on_cookie_reply(
        &mut self,
        now: Timestamp,
        receiver: SessionIndex,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let Some(SlotTarget::Initiator(id)) = self.lookup(receiver) else {
            return Err(DropReason::UnknownSession);
        };
        let Some(peer) = self.peer_mut(id) else {
            return Err(DropReason::UnknownSession);
        };
        let Some(InitiatorHandshake {
            phase: Phase::AwaitResponse(initiator),
            ..
        }) = peer.handshake.as_ref()
        else {
            return Err(DropReason::UnknownSession);
        };
        let key = CookieReplyKey::new(&peer.public_key);
        let cookie = key
            .open_cookie_reply(datagram, &initiator.mac1())
            .ok_or(DropReason::Crypto)?;
        peer.cookie = Some((cookie, now + COOKIE_USE_FOR));
        self.queue(PendingTx::Init(id));
        Ok(())
    }

    pub(super) fn start_handshake(&mut self, now: Timestamp, id: PeerId) -> bool {
        let Some(local_index) = self.alloc_index(SlotTarget::Initiator(id)) else {
            return false;
        };
        let seed = self.draw_seed();
        let retry = self.config.handshake_retry;
        let keypair = self.config.keypair.clone();
        let Some(peer) = self.peer_mut(id) else {
            self.free_index(local_index);
            return false;
        };
        let Ok(initiator) = Initiator::start(&keypair, &peer.public_key, local_index, seed) else {
            self.free_index(local_index);
            return false;
        };
        let stale = peer.handshake.replace(InitiatorHandshake {
            phase: Phase::AwaitResponse(Box::new(initiator)),
            local_index,
            started: now,
            next_retry: now + retry,
            retry_interval: retry,
            finish_resends: 0,
        });
        if let Some(stale) = stale {
            // A handshake still waiting for its response owns its index; one waiting for
            // confirmation shares it with a key set, which its own replacement retires.
            if matches!(stale.phase, Phase::AwaitResponse(_)) {
                self.free_index(stale.local_index);
            }
        }
        self.stats.handshakes_initiated += 1;
        self.queue(PendingTx::Init(id));
        self.arm(id, Timer::HandshakeRetry, now + retry);
        true
    }

    /// Starts over after HandshakeFinish went unconfirmed: unconfirmed rekey keys are dropped,
    /// unconfirmed first-session keys stay until the new handshake replaces them.
    pub(super) fn restart_handshake(&mut self, now: Timestamp, id: PeerId) {
        let retired = self
            .peer_mut(id)
            .and_then(|p| p.next.take())
            .map(|k| k.local_index);
        if let Some(index) = retired {
            self.free_index(index);
        }
        self.stats.handshake_retransmits += 1;
        self.start_handshake(now, id);
    }
}

pub(super) fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}
