//! Timers: handshake retransmission and expiry, keepalives, idle and key expiry, rekeys,
//! Reliable retransmissions, the expiry of replaced keys, and cookie-secret rotation.

use super::control::PendingTx;
use super::handshake::{Phase, FINISH_RESENDS_BEFORE_RESTART};
use super::peers::peer_in;
use super::Endpoint;
use crate::cookie::COOKIE_SECRET_LIFETIME;
use crate::event::PeerId;
use crate::keyset::REKEY_AFTER_MESSAGES;
use crate::stats::CloseReason;
use crate::time::Timestamp;

impl Endpoint {
    /// Runs every timer that is due: handshake retransmissions and timeouts, keepalives,
    /// idle timeouts, Reliable retransmissions, rekeys and the expiry of replaced keys.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if now < self.next_deadline {
            return;
        }
        self.next_deadline = Timestamp::NEVER;
        if self.cookies.needs_rotation(now) {
            let fresh = self.draw_seed();
            self.cookies.rotate(fresh, now);
        }
        self.next_deadline = self.next_deadline.min(now + COOKIE_SECRET_LIFETIME);
        for position in 0..self.responders.len() {
            let Some(pending) = &self.responders[position] else {
                continue;
            };
            let expires = pending.created + self.config.handshake_timeout;
            if expires <= now {
                let index = pending.local_index;
                self.responders[position] = None;
                self.free_index(index);
            } else {
                self.next_deadline = self.next_deadline.min(expires);
            }
        }
        for slot in 0..self.peers.len() {
            if let Some(id) = self.peer_id_at(slot) {
                self.peer_timers(now, id);
            }
        }
    }

    pub(super) fn peer_timers(&mut self, now: Timestamp, id: PeerId) {
        let config = &self.config;
        let (handshake_timeout, retry_max) = (config.handshake_timeout, config.handshake_retry_max);
        let (idle_timeout, reject_after) = (config.idle_timeout, config.reject_after);
        let (rekey_after, keepalive) = (config.rekey_after, config.keepalive_interval);
        let Some(peer) = peer_in(&mut self.peers, id) else {
            return;
        };
        if peer.closing.is_some() {
            return;
        }
        let mut deadline = Timestamp::NEVER;
        let mut to_queue: [Option<PendingTx>; 3] = [None; 3];
        let mut close = None;
        let mut retire = [None; 2];
        let mut start_rekey = false;
        let mut restart = false;

        if let Some(handshake) = peer.handshake.as_mut() {
            let expires = handshake.started + handshake_timeout;
            if expires <= now {
                if peer.current.is_some() && peer.current.as_ref().is_some_and(|k| k.received_any) {
                    // A failed rekey: keep the working keys, forget the attempt, try again later.
                    retire[0] = Some(handshake.local_index);
                    retire[1] = peer.next.take().map(|k| k.local_index);
                    peer.handshake = None;
                } else {
                    close = Some(CloseReason::HandshakeTimeout);
                }
            } else if handshake.next_retry <= now {
                to_queue[0] = Some(match handshake.phase {
                    Phase::AwaitResponse(_) => PendingTx::Init(id),
                    Phase::AwaitConfirm { .. } => {
                        handshake.finish_resends += 1;
                        if handshake.finish_resends > FINISH_RESENDS_BEFORE_RESTART {
                            restart = true;
                        }
                        PendingTx::Finish(id)
                    }
                });
                handshake.retry_interval = (handshake.retry_interval * 2).min(retry_max);
                handshake.next_retry = now + handshake.retry_interval;
                self.stats.handshake_retransmits += 1;
            }
            if let Some(handshake) = peer.handshake.as_ref() {
                deadline = deadline.min(handshake.next_retry).min(expires);
            }
        }

        if close.is_none() && peer.established {
            if let Some(current) = peer.current.as_ref() {
                let idle_at = peer.last_received + idle_timeout;
                let expire_at = current.created + reject_after;
                let rekey_at = current.created + rekey_after;
                if idle_at <= now {
                    close = Some(CloseReason::IdleTimeout);
                } else if expire_at <= now {
                    close = Some(CloseReason::KeyExpired);
                } else {
                    let spent = current.messages_sent() >= REKEY_AFTER_MESSAGES;
                    if peer.we_initiated && peer.handshake.is_none() && (rekey_at <= now || spent) {
                        start_rekey = true;
                    }
                    deadline = deadline.min(idle_at).min(expire_at);
                    // A rekey in progress has its own timers; a due one starts below.
                    if peer.we_initiated && peer.handshake.is_none() && rekey_at > now {
                        deadline = deadline.min(rekey_at);
                    }
                }
            }
            if peer.previous.is_some() {
                if peer.previous_expires <= now {
                    retire[0] = retire[0].or(peer.previous.take().map(|k| k.local_index));
                } else {
                    deadline = deadline.min(peer.previous_expires);
                }
            }
            let keepalive_at = peer.last_sent + keepalive;
            if keepalive_at <= now {
                if !peer.keepalive_queued {
                    peer.keepalive_queued = true;
                    to_queue[1] = Some(PendingTx::Keepalive(id));
                }
                deadline = deadline.min(now + keepalive);
            } else {
                deadline = deadline.min(keepalive_at);
            }
            if let Some(at) = peer.sender.next_timeout() {
                if at <= now {
                    if !peer.retransmit_queued {
                        peer.retransmit_queued = true;
                        to_queue[2] = Some(PendingTx::Retransmit(id));
                    }
                } else {
                    deadline = deadline.min(at);
                }
            }
        }
        self.next_deadline = self.next_deadline.min(deadline);
        for index in retire.into_iter().flatten() {
            self.free_index(index);
        }
        for item in to_queue.into_iter().flatten() {
            if !self.queue(item) {
                // The queue is full: clear the flag so a later timer retries.
                if let Some(peer) = self.peer_mut(id) {
                    match item {
                        PendingTx::Keepalive(_) => peer.keepalive_queued = false,
                        PendingTx::Retransmit(_) => peer.retransmit_queued = false,
                        _ => {}
                    }
                }
            }
        }
        if let Some(reason) = close {
            let notify = reason != CloseReason::HandshakeTimeout;
            self.close_peer(now, id, reason, notify);
        } else if restart {
            self.restart_handshake(now, id);
        } else if start_rekey {
            self.start_handshake(now, id);
        }
    }
}
