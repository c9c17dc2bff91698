//! Timers: handshake retransmission and expiry, keepalives, idle and key expiry, rekeys,
//! Reliable retransmissions and delayed ACKs, the expiry of replaced keys, and cookie-secret rotation.
//!
//! Each peer keeps its deadlines in a `TimerTable` indexed by `Timer`; its next wake-up is the
//! table's minimum, which the table updates with every change to its deadlines and nothing
//! else writes. The endpoint keeps one min-heap of wake-ups
//! (peers and responder handshakes), so `handle_timeout` touches only what is due. Entries
//! are invalidated lazily: a peer's entry counts only while it equals the earliest wake-up
//! the peer has in the heap (`Peer::scheduled`); anything else is discarded when popped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use super::control::PendingTx;
use super::handshake::{PendingResponder, Phase, FINISH_RESENDS_BEFORE_RESTART};
use super::peers::{peer_in, PeerEntry};
use super::Endpoint;
use crate::cookie::COOKIE_SECRET_LIFETIME;
use crate::event::PeerId;
use crate::keyset::REKEY_AFTER_MESSAGES;
use crate::stats::CloseReason;
use crate::time::Timestamp;
use crate::wire::SessionIndex;

/// One per-peer deadline, named for what happens when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Resend HandshakeInit or HandshakeFinish.
    HandshakeRetry,
    /// Give up on the handshake in flight.
    HandshakeExpiry,
    /// Nothing authenticated arrived for the idle timeout: close.
    Idle,
    /// The current keys reached their hard age: close.
    KeyExpiry,
    /// The session's initiator renegotiates keys.
    Rekey,
    /// Forget the keys a rekey replaced.
    PreviousKeys,
    /// Send a keepalive after a quiet spell.
    Keepalive,
    /// Resend unacknowledged Reliable segments.
    Retransmit,
    /// Send the delayed ACK of received Reliable segments.
    Ack,
}

impl Timer {
    const COUNT: usize = 9;
}

/// A peer's deadlines, one slot per `Timer`; `Timestamp::NEVER` is a stopped timer (no
/// deadline can be later, so a minimum needs no case for it). 8 bytes a slot, not the 16 of
/// an `Option`: 80 bytes in all. Timer visits read it, and a packet only when it arms a
/// timer (a Realtime message never does), so it lies outside the lines every packet reads.
///
/// Arming goes through `Peer::arm_timer`, which notes it in the peer's hot fields
/// (`timers_armed`, cleared by `Endpoint::schedule`); a path that may have armed a timer asks
/// for the wake-up only when the note is set: the table is otherwise as the last `schedule`
/// saw it. A visit rebuilds the table and calls `schedule` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimerTable {
    /// The minimum of `at`, updated with it: what `schedule` asks for.
    earliest: Timestamp,
    at: [Timestamp; Timer::COUNT],
}

impl Default for TimerTable {
    fn default() -> Self {
        TimerTable {
            earliest: Timestamp::NEVER,
            at: [Timestamp::NEVER; Timer::COUNT],
        }
    }
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Timestamp) {
        self.at[timer as usize] = at;
        // A later deadline may replace the earliest one: only a scan knows the new minimum
        // (timer visits, not the per-packet path, set deadlines).
        self.earliest = self.at.iter().copied().min().unwrap_or(Timestamp::NEVER);
    }

    /// Makes the timer fire no later than `at`: state changed so that the concern must be
    /// looked at by then (the next visit recomputes every deadline from the peer's state).
    pub(super) fn arm(&mut self, timer: Timer, at: Timestamp) {
        let slot = &mut self.at[timer as usize];
        *slot = (*slot).min(at);
        // Only this slot moved, and never later: the minimum is the old one or this.
        self.earliest = self.earliest.min(at);
    }

    /// The earliest running deadline: when the peer next needs `handle_timeout`.
    pub(super) fn next(&self) -> Option<Timestamp> {
        (self.earliest != Timestamp::NEVER).then_some(self.earliest)
    }
}

/// Whose deadline a heap entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Owner {
    Peer {
        slot: u32,
        generation: u32,
    },
    Responder {
        position: usize,
        local_index: SessionIndex,
    },
}

/// A wake-up in the endpoint's heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Wake {
    at: Timestamp,
    owner: Owner,
}

/// The endpoint's wake-ups, earliest first, allocated once at its working size.
pub(super) struct WakeHeap {
    heap: BinaryHeap<Reverse<Wake>>,
}

impl WakeHeap {
    /// Room for one live entry per peer and responder plus as many stale ones, so that
    /// compaction is rare and the steady state never grows the heap.
    pub(super) fn with_capacity(owners: usize) -> WakeHeap {
        WakeHeap {
            heap: BinaryHeap::with_capacity(owners.saturating_mul(2).saturating_add(16)),
        }
    }

    pub(super) fn peek(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse(w)| w.at)
    }

    fn pop_due(&mut self, now: Timestamp) -> Option<Wake> {
        if self.peek()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(w)| w)
    }

    /// Adds a wake-up; a full heap first drops its stale entries instead of growing.
    fn push(&mut self, wake: Wake, peers: &[PeerEntry], responders: &[Option<PendingResponder>]) {
        if self.heap.len() == self.heap.capacity() {
            self.heap.retain(|Reverse(w)| is_live(w, peers, responders));
        }
        self.heap.push(Reverse(wake));
    }
}

/// Whether a heap entry still stands for a deadline of a live peer or responder.
fn is_live(wake: &Wake, peers: &[PeerEntry], responders: &[Option<PendingResponder>]) -> bool {
    match wake.owner {
        Owner::Peer { slot, generation } => peers
            .get(slot as usize)
            .filter(|e| e.generation == generation)
            .and_then(|e| e.peer.as_ref())
            .is_some_and(|p| p.scheduled == wake.at),
        Owner::Responder {
            position,
            local_index,
        } => responders
            .get(position)
            .and_then(Option::as_ref)
            .is_some_and(|r| r.local_index == local_index),
    }
}

impl Endpoint {
    /// Runs every timer that is due: handshake retransmissions and timeouts, keepalives,
    /// idle timeouts, Reliable retransmissions, rekeys and the expiry of replaced keys.
    /// Only peers and responders with a due deadline are visited.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let due = self.cookie_rotation <= now || self.wakes.peek().is_some_and(|at| at <= now);
        if !due {
            return;
        }
        if self.cookies.needs_rotation(now) {
            let fresh = self.draw_seed();
            self.cookies.rotate(fresh, now);
        }
        self.cookie_rotation = now + COOKIE_SECRET_LIFETIME;
        // A deadline that comes due again at once waits for the next call, so one call does
        // bounded work whatever the configuration.
        self.timer_floor = now + Duration::from_nanos(1);
        while let Some(wake) = self.wakes.pop_due(now) {
            if !is_live(&wake, &self.peers, &self.responders) {
                continue;
            }
            match wake.owner {
                Owner::Responder {
                    position,
                    local_index,
                } => {
                    self.responders[position] = None;
                    self.free_index(local_index);
                }
                Owner::Peer { slot, generation } => {
                    let id = PeerId { slot, generation };
                    if let Some(peer) = self.peer_mut(id) {
                        peer.scheduled = Timestamp::NEVER;
                    }
                    self.peer_timers(now, id);
                }
            }
        }
        self.timer_floor = Timestamp::ZERO;
    }

    /// Arms one of a peer's timers and makes sure the heap wakes the peer in time.
    pub(super) fn arm(&mut self, id: PeerId, timer: Timer, at: Timestamp) {
        if let Some(peer) = peer_in(&mut self.peers, id) {
            peer.arm_timer(timer, at);
        }
        self.schedule(id);
    }

    /// Pushes the peer's next deadline if it is earlier than any wake-up it already has;
    /// a later one is found when the earlier entry pops and the peer is looked at.
    pub(super) fn schedule(&mut self, id: PeerId) {
        let floor = self.timer_floor;
        let Some(peer) = peer_in(&mut self.peers, id) else {
            return;
        };
        peer.timers_armed = false;
        let Some(at) = peer.timers.next().map(|at| at.max(floor)) else {
            return;
        };
        if at >= peer.scheduled {
            return;
        }
        peer.scheduled = at;
        let wake = Wake {
            at,
            owner: Owner::Peer {
                slot: id.slot,
                generation: id.generation,
            },
        };
        self.wakes.push(wake, &self.peers, &self.responders);
    }

    /// Wakes the endpoint when the responder handshake at `position` expires.
    pub(super) fn schedule_responder(
        &mut self,
        position: usize,
        local_index: SessionIndex,
        at: Timestamp,
    ) {
        let wake = Wake {
            at,
            owner: Owner::Responder {
                position,
                local_index,
            },
        };
        self.wakes.push(wake, &self.peers, &self.responders);
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
        #[cfg(test)]
        {
            self.timer_visits += 1;
        }
        let mut table = TimerTable::default();
        let mut to_queue: [Option<PendingTx>; 4] = [None; 4];
        let mut close = None;
        // A failed rekey's handshake and next keys, and expired previous keys: all three
        // can retire in one visit, and each index must be freed.
        let mut retire = [None; 3];
        let mut start_rekey = false;
        let mut restart = false;

        if let Some(handshake) = peer.handshake.as_mut() {
            let expires = handshake.started + handshake_timeout;
            if expires <= now {
                if peer.current.is_some() && peer.current.as_ref().is_some_and(|k| k.received_any) {
                    // A failed rekey: keep the working keys, forget the attempt, try again later.
                    retire[0] = Some(handshake.local_index);
                    retire[1] = peer.retire_next(&mut self.pools);
                    peer.handshake = None;
                } else {
                    close = Some(CloseReason::HandshakeTimeout);
                }
            } else if handshake.next_retry <= now {
                to_queue[0] = Some(match handshake.phase {
                    Phase::AwaitResponse(_) => {
                        handshake.cookie_resent = false;
                        PendingTx::Init(id)
                    }
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
                table.set(Timer::HandshakeRetry, handshake.next_retry);
                table.set(Timer::HandshakeExpiry, expires);
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
                    table.set(Timer::Idle, idle_at);
                    table.set(Timer::KeyExpiry, expire_at);
                    // A rekey in progress has its own timers; a due one starts below.
                    if peer.we_initiated && peer.handshake.is_none() && rekey_at > now {
                        table.set(Timer::Rekey, rekey_at);
                    }
                }
            }
            if peer.previous_keys().is_some() {
                if peer.previous_expires <= now {
                    retire[2] = peer.retire_previous(&mut self.pools);
                } else {
                    table.set(Timer::PreviousKeys, peer.previous_expires);
                }
            }
            let keepalive_at = peer.last_sent + keepalive;
            if keepalive_at <= now {
                if !peer.keepalive_queued {
                    peer.keepalive_queued = true;
                    to_queue[1] = Some(PendingTx::Keepalive(id));
                }
                table.set(Timer::Keepalive, now + keepalive);
            } else {
                table.set(Timer::Keepalive, keepalive_at);
            }
            if let Some(at) = peer.sender.as_deref().and_then(|s| s.next_timeout()) {
                if at <= now {
                    if !peer.retransmit_queued {
                        peer.retransmit_queued = true;
                        to_queue[2] = Some(PendingTx::Retransmit(id));
                    }
                } else {
                    table.set(Timer::Retransmit, at);
                }
            }
            if let Some(due) = peer.receiver.as_deref().and_then(|r| r.ack_deadline()) {
                if due > now {
                    table.set(Timer::Ack, due);
                } else if !peer.ack_queued {
                    peer.ack_queued = true;
                    to_queue[3] = Some(PendingTx::Ack(id));
                }
            }
        }
        peer.timers = table;
        self.schedule(id);
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
                        PendingTx::Ack(_) => peer.ack_queued = false,
                        _ => {}
                    }
                }
                if matches!(item, PendingTx::Ack(_)) {
                    // Nothing else would bring the ACK back: retry at the next visit (the
                    // timer floor keeps that out of this call).
                    self.arm(id, Timer::Ack, now);
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::config::EndpointConfig;
    use crate::keys::Keypair;

    #[test]
    fn the_table_derives_the_next_deadline_from_its_running_timers() {
        let mut table = TimerTable::default();
        assert_eq!(table.next(), None);
        table.set(Timer::Keepalive, Timestamp::from_millis(30));
        table.set(Timer::Idle, Timestamp::from_millis(20));
        assert_eq!(table.next(), Some(Timestamp::from_millis(20)));
        table.arm(Timer::Idle, Timestamp::from_millis(40));
        assert_eq!(
            table.next(),
            Some(Timestamp::from_millis(20)),
            "arm never delays"
        );
        table.arm(Timer::Retransmit, Timestamp::from_millis(5));
        assert_eq!(table.next(), Some(Timestamp::from_millis(5)));
        // A later deadline set over the earliest one: the next is found again among the rest.
        table.set(Timer::Retransmit, Timestamp::from_millis(50));
        assert_eq!(table.next(), Some(Timestamp::from_millis(20)));
        // A deadline at the end of time is a stopped timer: with every one stopped, no wake-up.
        for timer in [Timer::Keepalive, Timer::Idle, Timer::Retransmit] {
            table.set(timer, Timestamp::NEVER);
        }
        assert_eq!(table.next(), None);
        table.arm(Timer::Ack, Timestamp::from_millis(7));
        assert_eq!(table.next(), Some(Timestamp::from_millis(7)));
    }

    /// The kept minimum never drifts from the table it summarises, whatever the mix of
    /// `set` (any direction) and `arm` (never later) over every timer.
    #[test]
    fn the_next_deadline_is_always_the_minimum_of_the_running_timers() {
        use rand_chacha::rand_core::RngCore;
        const TIMERS: [Timer; Timer::COUNT] = [
            Timer::HandshakeRetry,
            Timer::HandshakeExpiry,
            Timer::Idle,
            Timer::KeyExpiry,
            Timer::Rekey,
            Timer::PreviousKeys,
            Timer::Keepalive,
            Timer::Retransmit,
            Timer::Ack,
        ];
        let mut rng = ChaCha20Rng::seed_from_u64(29);
        for _ in 0..200 {
            let mut table = TimerTable::default();
            let mut model: [Option<Timestamp>; Timer::COUNT] = [None; Timer::COUNT];
            for _ in 0..40 {
                let timer = TIMERS[rng.next_u32() as usize % TIMERS.len()];
                let at = Timestamp::from_millis(u64::from(rng.next_u32() % 1_000));
                let slot = &mut model[timer as usize];
                if rng.next_u32() % 2 == 0 {
                    table.set(timer, at);
                    *slot = Some(at);
                } else {
                    table.arm(timer, at);
                    *slot = Some(slot.map_or(at, |t| t.min(at)));
                }
                assert_eq!(table.next(), model.iter().flatten().min().copied());
                let stored = model.map(|slot| slot.unwrap_or(Timestamp::NEVER));
                assert_eq!(table.at, stored);
            }
        }
    }

    #[test]
    fn handle_timeout_visits_only_the_peers_that_are_due() {
        const PEERS: u64 = 1_000;
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let config = EndpointConfig::new(Keypair::generate(&mut rng));
        let retry = config.handshake_retry;
        let start = Timestamp::from_millis(1_000);
        let mut hub = Endpoint::new(config, start, ChaCha20Rng::seed_from_u64(6));
        // One handshake a millisecond, so their first retransmissions are spread out too.
        for i in 0..PEERS {
            let key = Keypair::generate(&mut rng).public;
            let addr = SocketAddr::from((Ipv4Addr::new(10, 0, (i / 250) as u8, 1), 7000));
            let now = start + Duration::from_millis(i);
            hub.connect(now, addr, key).unwrap();
        }
        let mut buf = [0u8; crate::wire::MAX_DATAGRAM_LEN];
        while hub.poll_transmit(start, &mut buf).is_some() {}

        let first_due = start + retry;
        assert_eq!(hub.poll_timeout(), Some(first_due));
        let visits = hub.timer_visits;
        hub.handle_timeout(first_due + Duration::from_millis(9));
        assert_eq!(
            hub.timer_visits - visits,
            10,
            "peers 0..=9 are due, the rest are not"
        );
        assert_eq!(hub.stats().handshake_retransmits, 10);
        assert_eq!(
            hub.poll_timeout(),
            Some(first_due + Duration::from_millis(10))
        );

        // Nothing due: no peer is looked at.
        let visits = hub.timer_visits;
        hub.handle_timeout(first_due + Duration::from_millis(9));
        assert_eq!(hub.timer_visits, visits);
    }

    #[test]
    fn the_wake_heap_stays_within_its_preallocated_capacity() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut config = EndpointConfig::new(Keypair::generate(&mut rng));
        config.max_peers = 4;
        let start = Timestamp::from_millis(1_000);
        let mut hub = Endpoint::new(config, start, ChaCha20Rng::seed_from_u64(8));
        let capacity = hub.wakes.heap.capacity();
        let mut now = start;
        let mut buf = [0u8; crate::wire::MAX_DATAGRAM_LEN];
        // Peers come and go; each leaves stale entries behind that compaction reclaims.
        for round in 0..200u64 {
            let key = Keypair::generate(&mut rng).public;
            let addr = SocketAddr::from((Ipv4Addr::new(10, 1, 0, 1), 7000));
            let id = hub.connect(now, addr, key).unwrap();
            now += Duration::from_millis(1 + round % 7);
            hub.handle_timeout(now);
            hub.close(now, id);
            while hub.poll_transmit(now, &mut buf).is_some() {}
        }
        assert_eq!(hub.wakes.heap.capacity(), capacity);
    }

    #[test]
    fn a_long_reliable_stream_keeps_the_wake_heap_within_its_capacity() {
        // Delayed ACKs re-arm a peer's wake-up every few milliseconds (here every 16
        // segments) while its later deadlines (keepalive, idle) stay put: entries for those
        // deadlines must not pile up.
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let config_a = EndpointConfig::new(Keypair::generate(&mut rng));
        let config_b = EndpointConfig::new(Keypair::generate(&mut rng));
        let key_b = config_b.keypair.public;
        let mut now = Timestamp::from_millis(1_000);
        let mut a = Endpoint::new(config_a, now, ChaCha20Rng::seed_from_u64(10));
        let mut b = Endpoint::new(config_b, now, ChaCha20Rng::seed_from_u64(11));
        let (addr_a, addr_b) = (
            SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 2)),
        );
        let peer = a.connect(now, addr_b, key_b).unwrap();
        let mut buf = [0u8; crate::wire::MAX_DATAGRAM_LEN];
        let shuttle = |now: Timestamp, a: &mut Endpoint, b: &mut Endpoint, buf: &mut [u8]| {
            for _ in 0..100 {
                let mut moved = false;
                while let Some(t) = a.poll_transmit(now, buf) {
                    b.handle_datagram(now, addr_a, &mut buf[..t.len]);
                    moved = true;
                }
                while let Some(t) = b.poll_transmit(now, buf) {
                    a.handle_datagram(now, addr_b, &mut buf[..t.len]);
                    moved = true;
                }
                while a.poll_event().is_some() {}
                while b.poll_event().is_some() {}
                if !moved {
                    break;
                }
            }
        };
        shuttle(now, &mut a, &mut b, &mut buf);
        let capacity = (a.wakes.heap.capacity(), b.wakes.heap.capacity());
        // Nine seconds of a few segments per 0.3 ms: ACKs wait for their delay, keepalives
        // come due, nothing else changes.
        for step in 0..30_000u32 {
            now += Duration::from_micros(300);
            for _ in 0..(step % 3) {
                if let Ok(crate::event::Sent::Now(t)) =
                    a.send(now, peer, crate::event::Mode::Reliable, b"x", &mut buf)
                {
                    b.handle_datagram(now, addr_a, &mut buf[..t.len]);
                }
            }
            a.handle_timeout(now);
            b.handle_timeout(now);
            shuttle(now, &mut a, &mut b, &mut buf);
        }
        assert!(a.peer_info(peer).unwrap().established);
        assert_eq!(b.stats().dropped_total(), 0);
        assert_eq!((a.wakes.heap.capacity(), b.wakes.heap.capacity()), capacity);
    }
}
