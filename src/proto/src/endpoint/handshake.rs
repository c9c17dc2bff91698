//! Handshake packets, as initiator (HandshakeInit out, HandshakeResponse in, HandshakeFinish out)
//! and as responder (mac1, cookie under load, budgets, then Noise), plus cookie replies.

use std::net::SocketAddr;
use std::time::Duration;

use super::control::PendingTx;
use super::peers::{peer_in, SlotTarget};
use super::timers::Timer;
use super::{Endpoint, QueuedEvent};
use crate::cookie::{self, CookieReplyKey, COOKIE_SECRET_LIFETIME};
use crate::event::PeerId;
use crate::handshake_load::{Admission, SourcePrefix};
use crate::keys::PublicKey;
use crate::keyset::{KeySet, SessionSecrets};
use crate::noise::{FinishIntent, Initiator, Responder};
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::wire::{finish, init, SessionIndex, MAC_LEN, TAG_LEN};

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
    /// When it is forgotten without its HandshakeFinish: `handshake_timeout` after the first
    /// init from this source and index. A replacement inherits it, so re-sending inits with
    /// new ephemeral keys cannot hold a place in the budget for longer.
    pub(super) expires: Timestamp,
    /// Its init carried a valid cookie: the source address is real.
    pub(super) proven: bool,
}

/// Where an initiator handshake stands.
pub(super) enum Phase {
    AwaitResponse(Box<Initiator>),
    /// Keys are derived; HandshakeFinish is resent until the responder's first packet confirms it.
    AwaitConfirm {
        finish: [u8; finish::LEN],
        /// The tag of the HandshakeResponse these keys came from: a responder repeats that
        /// response byte for byte (11.2), so only it is a reason to resend the Finish.
        response_tag: [u8; TAG_LEN],
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
    /// A CookieReply already had its HandshakeInit resent at once in this retransmission
    /// interval: further ones only store their cookie for the next scheduled send, so
    /// forged replies cannot make us send Inits faster than the retry timer does.
    pub(super) cookie_resent: bool,
}

/// The last `TAG_LEN` bytes of a handshake packet: its Noise tag, which tells one handshake
/// message from every other (the parser has checked the packet's length).
fn last_tag(datagram: &[u8]) -> [u8; TAG_LEN] {
    let mut tag = [0u8; TAG_LEN];
    if let Some(last) = datagram
        .len()
        .checked_sub(TAG_LEN)
        .and_then(|at| datagram.get(at..))
    {
        tag.copy_from_slice(last);
    }
    tag
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

    // Never inlined (nor are the other handshake handlers): inlined into `dispatch`, their
    // kilobytes of Noise state made every transport datagram pay a stack-probed frame.
    #[inline(never)]
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
        // A retransmitted HandshakeInit (same source, index and ephemeral) gets the answer we
        // already computed, at no Diffie-Hellman cost. The same source and index with another
        // ephemeral is a new attempt: it must pass every check below like any new init, and
        // only then replaces the stale one.
        let replacing = self.responders.iter().position(|r| {
            r.as_ref()
                .is_some_and(|r| r.src == src && r.initiator_index == sender)
        });
        if let Some(at) = replacing {
            if let Some(pending) = self.responders[at].as_ref() {
                if pending.ephemeral == ephemeral {
                    let local_index = pending.local_index;
                    self.queue(PendingTx::Response {
                        responder: at,
                        local_index,
                    });
                    return Ok(());
                }
            }
        }
        // A valid mac2 proves the sender receives at `src`; only then may it displace
        // handshakes from sources that proved nothing.
        let proven = self.carries_valid_cookie(now, src, datagram);
        let admission = if self.config.always_cookie && !proven {
            Admission::DemandCookie
        } else {
            self.handshake_load.admit(now, src.ip(), proven)
        };
        match admission {
            Admission::Admit => {}
            Admission::DemandCookie => return Err(self.demand_cookie(src, sender, datagram)),
            Admission::Refuse => return Err(DropReason::HandshakeBudget),
        }
        let position = match replacing {
            Some(position) => position,
            None => match self.free_responder(src, proven) {
                Ok(position) => position,
                // Over its in-flight budget without proof: ask for proof, do not refuse, so
                // that spoofed inits from a peer's address cannot lock the peer out.
                Err(()) if !proven => return Err(self.demand_cookie(src, sender, datagram)),
                Err(()) => return Err(DropReason::HandshakeBudget),
            },
        };
        let mut expires = now + self.config.handshake_timeout;
        if let Some(stale) = self.responders[position].take() {
            self.free_index(stale.local_index);
            if replacing.is_some() {
                expires = expires.min(stale.expires);
            }
        }
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
                    expires,
                    proven,
                });
                self.queue(PendingTx::Response {
                    responder: position,
                    local_index,
                });
                self.schedule_responder(position, local_index, expires);
                Ok(())
            }
            Err(_) => {
                self.free_index(local_index);
                Err(DropReason::HandshakeFailed)
            }
        }
    }

    /// Whether the init carries a mac2 made with a current cookie for `src`. An all-zero
    /// mac2 (no cookie) is not checked.
    fn carries_valid_cookie(&mut self, now: Timestamp, src: SocketAddr, datagram: &[u8]) -> bool {
        if datagram[init::MAC2..].iter().all(|&b| b == 0) {
            return false;
        }
        if self.cookies.needs_rotation(now) {
            let fresh = self.draw_seed();
            self.cookies.rotate(fresh, now);
        }
        self.cookies
            .verify_mac2(src, &datagram[..init::MAC2], &datagram[init::MAC2..])
    }

    /// Queues a CookieReply for an init that must prove its source first; the drop reason.
    fn demand_cookie(
        &mut self,
        src: SocketAddr,
        sender: SessionIndex,
        datagram: &[u8],
    ) -> DropReason {
        let mut mac1 = [0u8; MAC_LEN];
        mac1.copy_from_slice(&datagram[init::MAC1..init::MAC2]);
        self.queue(PendingTx::CookieReply {
            dst: src,
            receiver: sender,
            mac1,
        });
        DropReason::BadCookie
    }

    /// A responder position for a new handshake from `src` within the in-flight budgets
    /// (in total, and per source prefix). When a budget is spent, a proven init takes the
    /// place of the oldest unproven one that holds it (from its own prefix when that budget is
    /// the one spent); with nothing unproven to displace and only the total spent, it takes
    /// the place of a proven one from a prefix holding at least two more than its own
    /// (`fair_share_victim`). An unproven init, or a proven one with neither, gets `Err`.
    fn free_responder(&mut self, src: SocketAddr, proven: bool) -> Result<usize, ()> {
        let prefix = SourcePrefix::of(src.ip());
        let same_prefix = |r: &PendingResponder| SourcePrefix::of(r.src.ip()) == prefix;
        let in_flight = self.responders.iter().flatten().count();
        let from_prefix = self
            .responders
            .iter()
            .flatten()
            .filter(|r| same_prefix(r))
            .count();
        let prefix_full = from_prefix >= self.config.handshakes_per_ip;
        if in_flight < self.config.handshakes_in_flight && !prefix_full {
            return self.responders.iter().position(Option::is_none).ok_or(());
        }
        if !proven {
            return Err(());
        }
        let victim = self
            .responders
            .iter()
            .enumerate()
            .filter_map(|(at, r)| r.as_ref().map(|r| (at, r)))
            .filter(|(_, r)| !r.proven && (!prefix_full || same_prefix(r)))
            .min_by_key(|(_, r)| r.created)
            .map(|(at, _)| at);
        let victim = match victim {
            Some(at) => at,
            None if !prefix_full => self.fair_share_victim(from_prefix).ok_or(())?,
            None => return Err(()),
        };
        self.stats.handshakes_displaced += 1;
        Ok(victim)
    }

    /// The oldest handshake of the source prefix holding the most in flight (the oldest such
    /// prefix on a tie), if it holds at least `own + 2`: then after the displacement it still
    /// holds at least as many as the newcomer's prefix. So sources that proved their address
    /// share the total budget: a few dozen that keep their own budgets full cannot lock out
    /// a source that holds none, and two sources never take a place back and forth.
    fn fair_share_victim(&mut self, own: usize) -> Option<usize> {
        let mut held = std::mem::take(&mut self.prefix_scratch);
        held.clear();
        held.extend(self.responders.iter().enumerate().filter_map(|(at, r)| {
            r.as_ref()
                .map(|r| (SourcePrefix::of(r.src.ip()), r.created, at))
        }));
        // By prefix, then age: each prefix's run starts with its oldest handshake.
        held.sort_unstable();
        let mut most: Option<(usize, Timestamp, usize)> = None;
        for run in held.chunk_by(|a, b| a.0 == b.0) {
            let (_, oldest, at) = run[0];
            let wins = most.is_none_or(|(count, age, _)| {
                run.len() > count || (run.len() == count && oldest < age)
            });
            if wins {
                most = Some((run.len(), oldest, at));
            }
        }
        self.prefix_scratch = held;
        most.filter(|&(count, _, _)| count >= own + 2)
            .map(|(_, _, at)| at)
    }

    #[inline(never)]
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
                // HandshakeInit again, with the same response: resend the finish. Anything
                // else at that index proves nothing and is answered with nothing.
                let awaiting = self.peer(id).and_then(|p| match p.handshake.as_deref() {
                    Some(InitiatorHandshake {
                        local_index,
                        phase: Phase::AwaitConfirm { response_tag, .. },
                        ..
                    }) if *local_index == receiver => Some(*response_tag),
                    _ => None,
                });
                match awaiting {
                    None => return Err(DropReason::Replay),
                    Some(tag) if tag != last_tag(datagram) => {
                        return Err(DropReason::HandshakeFailed)
                    }
                    Some(_) => {}
                }
                self.queue(PendingTx::Finish(id));
                return Ok(());
            }
            _ => return Err(DropReason::UnknownSession),
        };
        let retry = self.config.handshake_retry;
        // A failed read leaves snow's state unusable, so the same handshake (same ephemeral
        // key, same HandshakeInit) is rebuilt first: what we retransmit does not change.
        let again = match self
            .peer(id)
            .and_then(|p| p.handshake.as_ref())
            .map(|h| &h.phase)
        {
            Some(Phase::AwaitResponse(initiator)) => initiator
                .again(&self.config.keypair)
                .map_err(|_| DropReason::HandshakeFailed)?,
            Some(Phase::AwaitConfirm { .. }) => return Err(DropReason::Replay),
            None => return Err(DropReason::UnknownSession),
        };
        let window = self.config.reliable.queue_bound();
        let Some(peer) = peer_in(&mut self.peers, id) else {
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
        let phase = std::mem::replace(&mut handshake.phase, Phase::AwaitResponse(Box::new(again)));
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
            response_tag: last_tag(datagram),
        };
        let took = now.saturating_since(handshake.started);
        handshake.next_retry = now + retry;
        handshake.retry_interval = retry;
        handshake.finish_resends = 0;
        let next_retry = handshake.next_retry;
        let keyset = KeySet::new(&keys, receiver, sender, now);
        let peer_key = peer.public_key;
        peer.addr = src;
        peer.set_peer_window(peer_window);
        let mut came_up = None;
        // A first-session handshake for a peer that already had a session (ours went
        // unconfirmed, or it restarted): the new session replaces the old one, streams and all.
        let mut replacement = None;
        let retired = if rekey {
            peer.spare_keys(&mut self.pools)
                .next
                .replace(keyset)
                .map(|k| k.local_index)
        } else if peer.established {
            replacement = Some(keyset);
            None
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
        self.indexes.retarget(receiver, SlotTarget::Keys(id));
        if let Some(index) = retired {
            self.free_index(index);
        }
        if let Some(keyset) = replacement {
            self.replace_session(now, id, keyset, src, true);
            // The restarted streams' sender honours the window this handshake advertised.
            if let Some(peer) = self.peer_mut(id) {
                peer.set_peer_window(peer_window);
            }
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

    #[inline(never)]
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
                // yet used the keys, and only for the very Finish that made them: junk at the
                // index is no repeat, and must not make us send.
                let unconfirmed = self.peer_mut(id).and_then(|p| {
                    let finish_tag = p.finish_tag;
                    p.keys_for(receiver)
                        .map(|(k, _)| (!k.received_any).then_some(finish_tag))
                });
                match unconfirmed.flatten() {
                    None => return Err(DropReason::Replay),
                    Some(tag) if tag != last_tag(datagram) => {
                        return Err(DropReason::HandshakeFailed)
                    }
                    Some(_) => {}
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
        // A Rekey renews a session: an entry that only dials the key (no session yet) has
        // none to renew, and taking it there would leave the dial neither up nor timed out.
        let has_session = |id: PeerId| {
            self.peer(id)
                .is_some_and(|p| p.established && p.current.is_some())
        };
        let existing = match intent {
            FinishIntent::Rekey => existing.filter(|&id| has_session(id)),
            FinishIntent::NewSession => existing,
        };
        let id = match (existing, intent) {
            (Some(id), FinishIntent::Rekey) => {
                let linger = now + self.config.previous_keys_linger;
                let Some(peer) = peer_in(&mut self.peers, id) else {
                    self.free_index(receiver);
                    return Err(DropReason::UnknownSession);
                };
                let current = &mut peer.current;
                let spare = peer
                    .spare
                    .get_or_insert_with(|| self.pools.take_spare_keys());
                let retired = spare.previous.take().map(|k| k.local_index);
                spare.previous = current.replace(keyset);
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
                match self.simultaneous_open(id, &public_key) {
                    // Both sides opened at once and ours wins: the peer adopts our session
                    // when our HandshakeFinish reaches it, so this one is set aside.
                    Some(true) => {
                        self.free_index(receiver);
                        self.stats.simultaneous_opens += 1;
                        return Ok(());
                    }
                    Some(false) => self.adopt_session(now, id, keyset, src),
                    // The peer started over (it restarted, or lost our session): so do we,
                    // and say so, since Reliable streams start from zero again.
                    None => self.replace_session(now, id, keyset, src, false),
                }
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
                // A rekey of a session we do not have (or only dial): the initiator will time
                // out and start over.
                self.free_index(receiver);
                return Err(DropReason::HandshakeFailed);
            }
        };
        if let Some(peer) = self.peer_mut(id) {
            peer.set_peer_window(peer_window);
            peer.finish_tag = last_tag(datagram);
        }
        self.indexes.retarget(receiver, SlotTarget::Keys(id));
        self.export_keys(|| exported);
        self.record_handshake(now.saturating_since(pending.created));
        self.queue_keepalive(id);
        self.arm(id, Timer::Keepalive, now + self.config.keepalive_interval);
        Ok(())
    }

    /// Whether a first-session HandshakeFinish from the peer `id` (whose key is `theirs`)
    /// meets a handshake of ours to it that is still unconfirmed: a simultaneous open. Then
    /// `Some(true)` when ours wins, which is when our static public key is the smaller as
    /// bytes (PROTOCOL.md 11.4); `None` when it is no simultaneous open.
    fn simultaneous_open(&self, id: PeerId, theirs: &PublicKey) -> Option<bool> {
        let peer = self.peer(id)?;
        let confirmed = peer.current.as_ref().is_some_and(|k| k.received_any);
        (peer.handshake.is_some() && !confirmed).then(|| self.config.keypair.public.0 < theirs.0)
    }

    /// PROTOCOL.md 5.6. Only the address the HandshakeInit went to can answer it: a reply
    /// from anywhere else answers no Init we sent there (`unknown_session`), so an off-path
    /// forger cannot make us send Inits to it. One reply per retransmission interval resends
    /// the Init at once; later ones in the same interval only refresh the cookie.
    #[inline(never)]
    pub(super) fn on_cookie_reply(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        receiver: SessionIndex,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let Some(SlotTarget::Initiator(id)) = self.lookup(receiver) else {
            return Err(DropReason::UnknownSession);
        };
        let Some(peer) = self.peer_mut(id) else {
            return Err(DropReason::UnknownSession);
        };
        if peer.addr != src {
            return Err(DropReason::UnknownSession);
        }
        let Some(InitiatorHandshake {
            phase: Phase::AwaitResponse(initiator),
            cookie_resent,
            ..
        }) = peer.handshake.as_deref_mut()
        else {
            return Err(DropReason::UnknownSession);
        };
        let key = CookieReplyKey::new(&peer.public_key);
        let cookie = key
            .open_cookie_reply(datagram, &initiator.mac1())
            .ok_or(DropReason::Crypto)?;
        let resend = !std::mem::replace(cookie_resent, true);
        peer.cookie = Some((cookie, now + COOKIE_USE_FOR));
        if resend {
            self.queue(PendingTx::Init(id));
        }
        Ok(())
    }

    pub(super) fn start_handshake(&mut self, now: Timestamp, id: PeerId) -> bool {
        let Some(local_index) = self.alloc_index(SlotTarget::Initiator(id)) else {
            return false;
        };
        let seed = self.draw_seed();
        let retry = self.config.handshake_retry;
        let started = self.peer(id).map(|peer| {
            Initiator::start(&self.config.keypair, &peer.public_key, local_index, seed)
        });
        let (Some(Ok(initiator)), Some(peer)) = (started, peer_in(&mut self.peers, id)) else {
            self.free_index(local_index);
            return false;
        };
        let stale = peer.handshake.replace(Box::new(InitiatorHandshake {
            phase: Phase::AwaitResponse(Box::new(initiator)),
            local_index,
            started: now,
            next_retry: now + retry,
            retry_interval: retry,
            finish_resends: 0,
            cookie_resent: false,
        }));
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
    /// unconfirmed first-session keys stay until the new handshake replaces them. The new
    /// attempt keeps the first one's start, so `handshake_timeout` bounds the whole exchange
    /// (PROTOCOL.md 11.1): a responder that swallows every Finish cannot keep us restarting.
    pub(super) fn restart_handshake(&mut self, now: Timestamp, id: PeerId) {
        let pools = &mut self.pools;
        let (retired, first_started) = match peer_in(&mut self.peers, id) {
            Some(peer) => (
                peer.retire_next(pools),
                peer.handshake.as_ref().map(|h| h.started),
            ),
            None => (None, None),
        };
        if let Some(index) = retired {
            self.free_index(index);
        }
        self.stats.handshake_retransmits += 1;
        if self.start_handshake(now, id) {
            let handshake = self.peer_mut(id).and_then(|p| p.handshake.as_mut());
            if let (Some(handshake), Some(started)) = (handshake, first_started) {
                handshake.started = started;
            }
        }
    }
}
