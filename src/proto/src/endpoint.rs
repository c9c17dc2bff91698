//! The endpoint: one deterministic state machine for every peer of one socket (or worker).
//!
//! Owns session indexes, peers, handshakes in flight, the control-packet queue
//! and the counters. Inputs are `handle_datagram`, `handle_timeout`, `connect`,
//! `send` and `close`; outputs are `poll_transmit`, `poll_event` and
//! `poll_timeout`. After every input, drain `poll_event` and `poll_transmit`.
//!
//! It must never read a clock, touch a socket, or draw randomness except from the
//! RNG it was given; it never panics on a datagram, and a datagram's per-packet
//! path (parse, index lookup, token bucket, replay check, AEAD open, deliver)
//! allocates nothing. Cheap checks run before expensive ones: no AEAD is
//! attempted for a peer whose token bucket is empty, and no handshake state
//! exists for a source that has not passed mac1, the cookie check under load,
//! and the in-flight budgets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand_core::CryptoRngCore;

use super::config::EndpointConfig;
use super::cookie::{self, CookieReplyKey, CookieSecrets, COOKIE_SECRET_LIFETIME};
use super::event::{ConnectError, Event, Message, Mode, PeerId, PeerInfo, SendError, Transmit};
use super::handshake::{FinishIntent, Initiator, Responder};
use super::keys::PublicKey;
use super::ratelimit::TokenBucket;
use super::reliable::{PushError, Receive, ReliableReceiver, ReliableSender};
use super::replay::ReplayError;
use super::session::{KeySet, OpenError, SealError, REKEY_AFTER_MESSAGES};
use super::stats::{CloseReason, DropReason, Stats};
use super::strikes::{StrikeOutcome, Strikes};
use super::time::Timestamp;
use super::wire::{
    self, cookie_reply, finish, init, Ack, Counter, Header, SessionIndex, TransportKind,
    COOKIE_LEN, MAC_LEN, MAX_REALTIME_PAYLOAD, MAX_RELIABLE_PAYLOAD, RELIABLE_SEQ_LEN,
    TRANSPORT_HEADER_LEN,
};

/// Session indexes are `generation << 16 | slot`, so at most this many slots.
const MAX_SLOTS: usize = u16::MAX as usize;
/// A cookie is used for a little less than the secret behind it lives.
const COOKIE_USE_FOR: Duration = Duration::from_secs(COOKIE_SECRET_LIFETIME.as_secs() - 10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotTarget {
    Free,
    /// Our HandshakeInit is out; the response will name this index.
    Initiator(PeerId),
    /// A responder handshake in flight, by position in `responders`.
    Responder(usize),
    /// One of the peer's key sets.
    Keys(PeerId),
}

#[derive(Clone, Copy)]
struct Slot {
    index: u32,
    target: SlotTarget,
}

struct PendingResponder {
    responder: Box<Responder>,
    src: SocketAddr,
    initiator_index: SessionIndex,
    /// The initiator's ephemeral key: a retransmission repeats it, a new attempt does not.
    ephemeral: [u8; 32],
    local_index: SessionIndex,
    created: Timestamp,
}

enum Phase {
    AwaitResponse(Box<Initiator>),
    /// Keys are derived; HandshakeFinish is resent until the responder's first packet confirms it.
    AwaitConfirm {
        finish: [u8; finish::LEN],
    },
}

struct InitiatorHandshake {
    phase: Phase,
    local_index: SessionIndex,
    started: Timestamp,
    next_retry: Timestamp,
    retry_interval: Duration,
    /// HandshakeFinish retransmissions without a confirmation.
    finish_resends: u32,
}

/// After this many unanswered HandshakeFinish retransmissions the responder has most likely
/// lost the handshake (a forged HandshakeFinish consumes its state): start over.
const FINISH_RESENDS_BEFORE_RESTART: u32 = 3;

/// A control packet waiting to be written by `poll_transmit`.
#[derive(Debug, Clone, Copy)]
enum PendingTx {
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

enum QueuedEvent {
    Up {
        peer: PeerId,
        public_key: PublicKey,
        addr: SocketAddr,
    },
    Down {
        peer: PeerId,
        public_key: PublicKey,
        reason: CloseReason,
        peer_reason: Option<CloseReason>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyRole {
    Current,
    Previous,
    Next,
}

struct Peer {
    public_key: PublicKey,
    addr: SocketAddr,
    established: bool,
    /// Whether we initiated the current session: its initiator is the side that rekeys.
    we_initiated: bool,
    current: Option<KeySet>,
    previous: Option<KeySet>,
    /// Rekeyed keys we derived as initiator and send on only once the peer confirms them.
    next: Option<KeySet>,
    previous_expires: Timestamp,
    handshake: Option<InitiatorHandshake>,
    cookie: Option<([u8; COOKIE_LEN], Timestamp)>,
    bucket: TokenBucket,
    strikes: Strikes,
    sender: ReliableSender,
    receiver: ReliableReceiver,
    last_received: Timestamp,
    last_sent: Timestamp,
    ack_queued: bool,
    keepalive_queued: bool,
    retransmit_queued: bool,
    closing: Option<CloseReason>,
    /// The reason given in the peer's own close packet.
    peer_reason: Option<CloseReason>,
    packets_received: u64,
    packets_sent: u64,
    drops: u64,
}

impl Peer {
    fn keys_for(&mut self, index: SessionIndex) -> Option<(&mut KeySet, KeyRole)> {
        if let Some(keys) = self.current.as_mut().filter(|k| k.local_index == index) {
            return Some((keys, KeyRole::Current));
        }
        if let Some(keys) = self.next.as_mut().filter(|k| k.local_index == index) {
            return Some((keys, KeyRole::Next));
        }
        if let Some(keys) = self.previous.as_mut().filter(|k| k.local_index == index) {
            return Some((keys, KeyRole::Previous));
        }
        None
    }

    fn session_indexes(&self) -> impl Iterator<Item = SessionIndex> + '_ {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|k| k.local_index)
            .chain(self.handshake.as_ref().map(|h| h.local_index))
    }
}

struct PeerEntry {
    generation: u32,
    peer: Option<Box<Peer>>,
}

/// The sans-IO protocol endpoint. See the module docs for the drive loop.
pub struct Endpoint {
    config: EndpointConfig,
    rng: Box<dyn CryptoRngCore + Send>,
    mac1_key: [u8; 32],
    cookie_reply_key: CookieReplyKey,
    cookies: CookieSecrets,
    slots: Vec<Slot>,
    free_slots: Vec<u16>,
    peers: Vec<PeerEntry>,
    free_peers: Vec<u32>,
    by_key: HashMap<PublicKey, PeerId>,
    responders: Vec<Option<PendingResponder>>,
    pending_tx: VecDeque<PendingTx>,
    events: VecDeque<QueuedEvent>,
    /// Peers whose reorder buffer holds in-order messages not yet handed out.
    ready: VecDeque<PeerId>,
    stats: Stats,
    next_deadline: Timestamp,
    /// Durations of recently completed handshakes, for a histogram the caller drains.
    handshake_durations: [Duration; HANDSHAKE_LOG],
    handshake_log_len: usize,
}

/// Completed handshakes remembered between two drains; older ones are dropped.
const HANDSHAKE_LOG: usize = 256;

impl Endpoint {
    /// Creates an endpoint. `rng` is its only source of randomness (ephemeral keys, session
    /// indexes, cookie secrets and nonces); `now` starts the clock of its timers.
    pub fn new<R>(config: EndpointConfig, now: Timestamp, rng: R) -> Endpoint
    where
        R: CryptoRngCore + Send + 'static,
    {
        Endpoint::with_boxed_rng(config, now, Box::new(rng))
    }

    /// As `new`, for a caller that chooses its RNG at run time.
    pub fn with_boxed_rng(
        config: EndpointConfig,
        now: Timestamp,
        mut rng: Box<dyn CryptoRngCore + Send>,
    ) -> Endpoint {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let slot_count = (config.max_peers.saturating_mul(3))
            .saturating_add(config.handshakes_in_flight)
            .saturating_add(16)
            .min(MAX_SLOTS);
        let slots = vec![
            Slot {
                index: 0,
                target: SlotTarget::Free
            };
            slot_count
        ];
        let free_slots = (0..slot_count as u16).rev().collect();
        let own_key = config.keypair.public;
        Endpoint {
            mac1_key: cookie::mac1_key(&own_key),
            cookie_reply_key: CookieReplyKey::new(&own_key),
            cookies: CookieSecrets::new(secret, now),
            slots,
            free_slots,
            peers: Vec::new(),
            free_peers: Vec::new(),
            by_key: HashMap::new(),
            responders: (0..config.handshakes_in_flight).map(|_| None).collect(),
            pending_tx: VecDeque::with_capacity(config.control_queue),
            events: VecDeque::new(),
            ready: VecDeque::new(),
            stats: Stats::default(),
            next_deadline: Timestamp::NEVER,
            handshake_durations: [Duration::ZERO; HANDSHAKE_LOG],
            handshake_log_len: 0,
            rng,
            config,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.config.keypair.public
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Starts a handshake with the peer `remote` at `addr`, or returns the existing peer.
    pub fn connect(
        &mut self,
        now: Timestamp,
        addr: SocketAddr,
        remote: PublicKey,
    ) -> Result<PeerId, ConnectError> {
        if remote == self.config.keypair.public {
            return Err(ConnectError::SelfConnect);
        }
        if !self.allowed(&remote) {
            return Err(ConnectError::NotAllowed);
        }
        if let Some(&existing) = self.by_key.get(&remote) {
            if let Some(peer) = self.peer_mut(existing) {
                if peer.closing.is_none() {
                    peer.addr = addr;
                    return Ok(existing);
                }
            }
        }
        let id = self
            .insert_peer(now, remote, addr)
            .ok_or(ConnectError::TooManyPeers)?;
        if !self.start_handshake(now, id) {
            self.remove_peer(id);
            return Err(ConnectError::NoFreeIndex);
        }
        Ok(id)
    }

    /// Closes a peer: an authenticated close is sent and `PeerDown(Local)` is reported.
    pub fn close(&mut self, now: Timestamp, peer: PeerId) {
        self.close_peer(now, peer, CloseReason::Local, true);
    }

    /// Closes every peer with `reason` (for example `Shutdown`); the closes come out of
    /// `poll_transmit`.
    pub fn close_all(&mut self, now: Timestamp, reason: CloseReason) {
        for id in self.peer_ids() {
            self.close_peer(now, id, reason, true);
        }
    }

    /// Replaces the allow-list; established peers no longer on it are closed (`NotAllowed`),
    /// the others keep their sessions.
    pub fn set_allow_list(&mut self, now: Timestamp, allow_list: Option<HashSet<PublicKey>>) {
        self.config.allow_list = allow_list;
        for id in self.peer_ids() {
            let key = self.peer(id).map(|p| p.public_key);
            if let Some(key) = key {
                if !self.allowed(&key) {
                    self.close_peer(now, id, CloseReason::NotAllowed, true);
                }
            }
        }
    }

    /// Processes one received datagram, opened in place. A Realtime message, or a Reliable one
    /// that arrived in order, is returned as a slice of `datagram`; everything else is reported
    /// through `poll_event` and `poll_transmit`.
    pub fn handle_datagram<'b>(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        datagram: &'b mut [u8],
    ) -> Option<Message<'b>> {
        self.stats.packets_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let header = match wire::parse_header(datagram) {
            Ok(header) => header,
            Err(_) => {
                self.stats.record_drop(DropReason::Malformed);
                return None;
            }
        };
        match header {
            Header::Transport {
                kind,
                receiver,
                counter,
            } => self.on_transport(now, src, kind, receiver, counter, datagram),
            Header::HandshakeInit { sender } => {
                self.on_init(now, src, sender, datagram);
                None
            }
            Header::HandshakeResponse { sender, receiver } => {
                self.on_response(now, src, sender, receiver, datagram);
                None
            }
            Header::HandshakeFinish { receiver } => {
                self.on_finish(now, src, receiver, datagram);
                None
            }
            Header::CookieReply { receiver } => {
                self.on_cookie_reply(now, receiver, datagram);
                None
            }
        }
    }

    /// Seals `payload` for `peer` straight into `buf` and returns what to send. Reliable
    /// messages are also kept for retransmission; when the peer's bound is reached the
    /// answer is `WouldBlock` and nothing is sent.
    pub fn send(
        &mut self,
        now: Timestamp,
        peer_id: PeerId,
        mode: Mode,
        payload: &[u8],
        buf: &mut [u8],
    ) -> Result<Transmit, SendError> {
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
        if buf.len() < super::session::sealed_len(plaintext_len) {
            return Err(SendError::BufferTooSmall);
        }
        if mode == Mode::Reliable {
            let seq = match peer.sender.push(now, payload) {
                Ok(seq) => seq,
                Err(PushError::WouldBlock) => {
                    self.stats.send_would_block += 1;
                    return Err(SendError::WouldBlock);
                }
                Err(PushError::TooLarge) => return Err(SendError::TooLarge),
            };
            buf[TRANSPORT_HEADER_LEN..body_at].copy_from_slice(&seq.to_le_bytes());
            if let Some(at) = peer.sender.next_timeout() {
                self.next_deadline = self.next_deadline.min(at);
            }
        }
        buf[body_at..body_at + payload.len()].copy_from_slice(payload);
        let keys = peer.current.as_mut().ok_or(SendError::NotEstablished)?;
        let len = keys.seal(kind, buf, plaintext_len).map_err(|e| match e {
            SealError::BufferTooSmall => SendError::BufferTooSmall,
            SealError::CounterExhausted => SendError::KeysExhausted,
        })?;
        if keys.messages_sent() >= REKEY_AFTER_MESSAGES {
            self.next_deadline = now;
        }
        peer.last_sent = now;
        peer.packets_sent += 1;
        let dst = peer.addr;
        self.stats.aead_seals += 1;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len as u64;
        Ok(Transmit { dst, len })
    }

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

    // ----- outputs ------------------------------------------------------------------------

    /// The next event: peers up and down, and Reliable messages released in order.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        if let Some(event) = self.events.pop_front() {
            return Some(match event {
                QueuedEvent::Up {
                    peer,
                    public_key,
                    addr,
                } => Event::PeerUp {
                    peer,
                    public_key,
                    addr,
                },
                QueuedEvent::Down {
                    peer,
                    public_key,
                    reason,
                    peer_reason,
                } => Event::PeerDown {
                    peer,
                    public_key,
                    reason,
                    peer_reason,
                },
            });
        }
        while let Some(&id) = self.ready.front() {
            let has_ready = self
                .peer(id)
                .is_some_and(|p| p.closing.is_none() && p.receiver.has_ready());
            if !has_ready {
                self.ready.pop_front();
                continue;
            }
            self.stats.messages_delivered += 1;
            let entry = self.peers.get_mut(id.slot as usize)?;
            let peer = entry.peer.as_deref_mut()?;
            let payload = peer.receiver.pop_ready()?;
            self.stats.bytes_delivered += payload.len() as u64;
            return Some(Event::Message(Message {
                peer: id,
                mode: Mode::Reliable,
                payload,
            }));
        }
        None
    }

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

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (self.next_deadline != Timestamp::NEVER).then_some(self.next_deadline)
    }

    /// Whether control packets are waiting for `poll_transmit`.
    pub fn has_transmit(&self) -> bool {
        !self.pending_tx.is_empty()
    }

    // ----- inspection ---------------------------------------------------------------------

    /// Established peers, for fan-out (`publish`). Allocation-free.
    pub fn established_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.iter().enumerate().filter_map(|(slot, entry)| {
            let peer = entry.peer.as_deref()?;
            (peer.established && peer.closing.is_none()).then_some(PeerId {
                slot: slot as u32,
                generation: entry.generation,
            })
        })
    }

    /// The established peer after `after` in table order (`None` starts at the beginning):
    /// lets a caller walk every peer while sending to each, without collecting them.
    pub fn next_established(&self, after: Option<PeerId>) -> Option<PeerId> {
        let start = after.map_or(0, |p| p.slot as usize + 1);
        self.peers
            .iter()
            .enumerate()
            .skip(start)
            .find_map(|(slot, entry)| {
                let peer = entry.peer.as_deref()?;
                (peer.established && peer.closing.is_none()).then_some(PeerId {
                    slot: slot as u32,
                    generation: entry.generation,
                })
            })
    }

    pub fn peer_info(&self, id: PeerId) -> Option<PeerInfo> {
        let peer = self.peer(id)?;
        Some(PeerInfo {
            public_key: peer.public_key,
            addr: peer.addr,
            established: peer.established && peer.closing.is_none(),
            srtt: peer.sender.srtt(),
            packets_received: peer.packets_received,
            packets_sent: peer.packets_sent,
            drops: peer.drops,
            reliable_queued_bytes: peer.sender.queued_bytes(),
        })
    }

    /// Room in `id`'s Reliable send window, in payload bytes: a Reliable `send` of at most
    /// this many bytes will not answer `WouldBlock`, except while selectively acknowledged
    /// segments still hold sequence numbers (then it is a hint and the send may refuse).
    /// `None` for an unknown peer.
    pub fn reliable_room(&self, id: PeerId) -> Option<usize> {
        let peer = self.peer(id)?;
        if peer.sender.in_flight() >= super::reliable::MAX_IN_FLIGHT {
            return Some(0);
        }
        Some(
            self.config
                .reliable
                .max_queued_bytes
                .saturating_sub(peer.sender.queued_bytes()),
        )
    }

    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// Counters plus gauges computed now (O(peers): call it per scrape, not per packet).
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.handshakes_in_flight = self.responders.iter().flatten().count() as u64;
        for peer in self.peers.iter().filter_map(|e| e.peer.as_deref()) {
            if peer.established && peer.closing.is_none() {
                stats.sessions_active += 1;
            }
            if peer.handshake.is_some() {
                stats.handshakes_in_flight += 1;
            }
            stats.reorder_buffer_bytes += peer.receiver.buffered_bytes() as u64;
            stats.retransmit_queue_bytes += peer.sender.queued_bytes() as u64;
        }
        stats
    }

    /// Hands every handshake duration recorded since the last call to `observe`, oldest first.
    pub fn drain_handshake_durations(&mut self, mut observe: impl FnMut(Duration)) {
        for duration in &self.handshake_durations[..self.handshake_log_len] {
            observe(*duration);
        }
        self.handshake_log_len = 0;
    }

    fn record_handshake(&mut self, took: Duration) {
        self.stats.handshakes_completed += 1;
        if let Some(slot) = self.handshake_durations.get_mut(self.handshake_log_len) {
            *slot = took;
            self.handshake_log_len += 1;
        }
    }

    /// Counts datagrams the driver failed to send.
    pub fn record_send_drops(&mut self, count: u64) {
        self.stats.packets_send_dropped += count;
    }

    /// Counts a drop that happened outside the endpoint (a driver's truncated datagram).
    pub fn record_external_drop(&mut self, reason: DropReason) {
        self.stats.record_drop(reason);
    }

    // ----- transport packets ----------------------------------------------------------------

    fn on_transport<'b>(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        kind: TransportKind,
        receiver: SessionIndex,
        counter: Counter,
        datagram: &'b mut [u8],
    ) -> Option<Message<'b>> {
        let Some(SlotTarget::Keys(id)) = self.lookup(receiver) else {
            self.stats.record_drop(DropReason::UnknownSession);
            return None;
        };
        let Some(peer) = peer_in(&mut self.peers, id).filter(|p| p.closing.is_none()) else {
            self.stats.record_drop(DropReason::UnknownSession);
            return None;
        };
        // The token bucket comes before any cryptography: a flood costs us one integer check.
        if !peer.bucket.try_take(now) {
            peer.drops += 1;
            self.stats.record_drop(DropReason::RateLimit);
            return None;
        }
        let from_peer = src == peer.addr;
        let Some((keys, role)) = peer.keys_for(receiver) else {
            self.stats.record_drop(DropReason::UnknownSession);
            return None;
        };
        let opened = keys.open(counter, datagram);
        let plaintext_len = match opened {
            Ok(len) => {
                self.stats.aead_opens += 1;
                len
            }
            Err(failure) => {
                let (reason, violation) = match failure {
                    // Networks duplicate packets: an exact duplicate inside the window is
                    // dropped and counted, but only a packet older than the window (which no
                    // network produces, but a replaying attacker does) is a violation.
                    OpenError::Replay(ReplayError::Duplicate) => (DropReason::Replay, false),
                    OpenError::Replay(ReplayError::TooOld) => (DropReason::Replay, true),
                    OpenError::Crypto => {
                        self.stats.aead_opens += 1;
                        (DropReason::Crypto, true)
                    }
                };
                peer.drops += 1;
                self.stats.record_drop(reason);
                // Strikes only from the session's authenticated address, so that a spoofer
                // elsewhere cannot close an honest session by sending garbage at its index.
                if from_peer && violation {
                    self.strike(now, id);
                }
                return None;
            }
        };
        peer.last_received = now;
        peer.packets_received += 1;
        if !from_peer {
            // Roaming: the endpoint moves only after a packet from the new address authenticated.
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
                self.next_deadline = self.next_deadline.min(peer.previous_expires);
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
        let mut delivered = None;
        match kind {
            TransportKind::Realtime => {
                delivered = Some((Mode::Realtime, TRANSPORT_HEADER_LEN));
            }
            TransportKind::Reliable => {
                let seq = wire::read_u64(datagram, TRANSPORT_HEADER_LEN);
                let body = &datagram[TRANSPORT_HEADER_LEN + RELIABLE_SEQ_LEN..body_end];
                match peer.receiver.on_segment(seq, body) {
                    Receive::Deliver => {
                        delivered = Some((Mode::Reliable, TRANSPORT_HEADER_LEN + RELIABLE_SEQ_LEN));
                        if peer.receiver.has_ready() {
                            self.ready.push_back(id);
                        }
                    }
                    Receive::Buffered | Receive::Duplicate => {}
                    Receive::NoRoom => {
                        peer.drops += 1;
                        self.stats.record_drop(DropReason::ReorderBufferFull);
                    }
                }
                if !peer.ack_queued && self.pending_tx.len() < self.config.control_queue {
                    peer.ack_queued = true;
                    self.pending_tx.push_back(PendingTx::Ack(id));
                }
            }
            TransportKind::Ack => {
                let ack = Ack::decode(&datagram[TRANSPORT_HEADER_LEN..body_end]);
                match ack.map(|ack| peer.sender.on_ack(now, ack)) {
                    Some(Ok(_)) => {
                        if let Some(at) = peer.sender.next_timeout() {
                            self.next_deadline = self.next_deadline.min(at);
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
                return None;
            }
        }
        if let Some(index) = retired {
            self.free_index(index);
        }
        if violation {
            self.stats.record_drop(DropReason::Malformed);
            self.strike(now, id);
            return None;
        }
        let (mode, start) = delivered?;
        self.stats.messages_delivered += 1;
        self.stats.bytes_delivered += (body_end - start) as u64;
        Some(Message {
            peer: id,
            mode,
            payload: &datagram[start..body_end],
        })
    }

    fn strike(&mut self, now: Timestamp, id: PeerId) {
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

    // ----- handshake packets ----------------------------------------------------------------

    fn on_init(&mut self, now: Timestamp, src: SocketAddr, sender: SessionIndex, datagram: &[u8]) {
        // mac1 first: it costs one HMAC and proves the sender knows our public key.
        if !cookie::verify_mac(
            &self.mac1_key,
            &datagram[..init::MAC1],
            &datagram[init::MAC1..init::MAC2],
        ) {
            self.stats.record_drop(DropReason::BadMac);
            return;
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
                return;
            };
            let local_index = pending.local_index;
            if pending.ephemeral == ephemeral {
                self.queue(PendingTx::Response {
                    responder: position,
                    local_index,
                });
                return;
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
                self.stats.record_drop(DropReason::BadCookie);
                let mut mac1 = [0u8; MAC_LEN];
                mac1.copy_from_slice(&datagram[init::MAC1..init::MAC2]);
                self.queue(PendingTx::CookieReply {
                    dst: src,
                    receiver: sender,
                    mac1,
                });
                return;
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
            self.stats.record_drop(DropReason::HandshakeBudget);
            return;
        }
        let Some(position) = self.responders.iter().position(Option::is_none) else {
            self.stats.record_drop(DropReason::HandshakeBudget);
            return;
        };
        let Some(local_index) = self.alloc_index(SlotTarget::Responder(position)) else {
            self.stats.record_drop(DropReason::HandshakeBudget);
            return;
        };
        let seed = self.draw_seed();
        match Responder::accept(&self.config.keypair, datagram, sender, local_index, seed) {
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
                self.next_deadline = self.next_deadline.min(now + self.config.handshake_timeout);
            }
            Err(_) => {
                self.free_index(local_index);
                self.stats.record_drop(DropReason::HandshakeFailed);
            }
        }
    }

    fn on_response(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        sender: SessionIndex,
        receiver: SessionIndex,
        datagram: &[u8],
    ) {
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
                if awaiting {
                    self.queue(PendingTx::Finish(id));
                } else {
                    self.stats.record_drop(DropReason::Replay);
                }
                return;
            }
            _ => {
                self.stats.record_drop(DropReason::UnknownSession);
                return;
            }
        };
        let seed = self.draw_seed();
        let retry = self.config.handshake_retry;
        let keypair = self.config.keypair.clone();
        let Some(peer) = self.peer_mut(id) else {
            self.stats.record_drop(DropReason::UnknownSession);
            return;
        };
        let Some(handshake) = peer.handshake.as_mut() else {
            self.stats.record_drop(DropReason::UnknownSession);
            return;
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
            Err(_) => {
                self.stats.record_drop(DropReason::HandshakeFailed);
                return;
            }
        };
        let Phase::AwaitResponse(initiator) = phase else {
            handshake.phase = phase;
            self.stats.record_drop(DropReason::Replay);
            return;
        };
        let (finish_packet, keys) = match initiator.finish(datagram, sender, intent) {
            Ok(done) => done,
            Err(_) => {
                self.stats.record_drop(DropReason::HandshakeFailed);
                return;
            }
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
        peer.addr = src;
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
        self.record_handshake(took);
        self.queue(PendingTx::Finish(id));
        self.next_deadline = self
            .next_deadline
            .min(next_retry)
            .min(now + self.config.keepalive_interval);
    }

    fn on_finish(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        receiver: SessionIndex,
        datagram: &[u8],
    ) {
        let position = match self.lookup(receiver) {
            Some(SlotTarget::Responder(position)) => position,
            Some(SlotTarget::Keys(id)) => {
                // A repeated HandshakeFinish: our confirmation was lost. Confirm again, to the
                // peer's authenticated address (never to `src`), while the initiator has not
                // yet used the keys.
                let unconfirmed = self
                    .peer_mut(id)
                    .and_then(|p| p.keys_for(receiver).map(|(k, _)| !k.received_any));
                if unconfirmed == Some(true) {
                    self.queue_keepalive(id);
                } else {
                    self.stats.record_drop(DropReason::Replay);
                }
                return;
            }
            _ => {
                self.stats.record_drop(DropReason::UnknownSession);
                return;
            }
        };
        let Some(pending) = self.responders.get_mut(position).and_then(Option::take) else {
            self.stats.record_drop(DropReason::UnknownSession);
            return;
        };
        let finished = pending.responder.finish(datagram);
        let (public_key, keys, intent) = match finished {
            Ok(done) => done,
            Err(_) => {
                self.free_index(receiver);
                self.stats.record_drop(DropReason::HandshakeFailed);
                return;
            }
        };
        if !self.allowed(&public_key) || public_key == self.config.keypair.public {
            self.free_index(receiver);
            self.stats.record_drop(DropReason::NotAllowed);
            return;
        }
        let keyset = KeySet::new(&keys, receiver, pending.initiator_index, now);
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
                    return;
                };
                let retired = peer.previous.take().map(|k| k.local_index);
                peer.previous = peer.current.replace(keyset);
                peer.previous_expires = linger;
                peer.addr = src;
                if let Some(index) = retired {
                    self.free_index(index);
                }
                self.stats.rekeys += 1;
                self.next_deadline = self.next_deadline.min(linger);
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
                    self.stats.record_drop(DropReason::HandshakeBudget);
                    return;
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
                self.stats.record_drop(DropReason::HandshakeFailed);
                return;
            }
        };
        if let Some(slot) = self.slot_mut(receiver) {
            slot.target = SlotTarget::Keys(id);
        }
        self.record_handshake(now.saturating_since(pending.created));
        self.queue_keepalive(id);
        self.next_deadline = self.next_deadline.min(now + self.config.keepalive_interval);
    }

    fn on_cookie_reply(&mut self, now: Timestamp, receiver: SessionIndex, datagram: &[u8]) {
        let Some(SlotTarget::Initiator(id)) = self.lookup(receiver) else {
            self.stats.record_drop(DropReason::UnknownSession);
            return;
        };
        let Some(peer) = self.peer_mut(id) else {
            self.stats.record_drop(DropReason::UnknownSession);
            return;
        };
        let Some(InitiatorHandshake {
            phase: Phase::AwaitResponse(initiator),
            ..
        }) = peer.handshake.as_ref()
        else {
            self.stats.record_drop(DropReason::UnknownSession);
            return;
        };
        let key = CookieReplyKey::new(&peer.public_key);
        match key.open_cookie_reply(datagram, &initiator.mac1()) {
            Some(cookie) => {
                peer.cookie = Some((cookie, now + COOKIE_USE_FOR));
                self.queue(PendingTx::Init(id));
            }
            None => self.stats.record_drop(DropReason::Crypto),
        }
    }

    // ----- timers -------------------------------------------------------------------------

    fn peer_timers(&mut self, now: Timestamp, id: PeerId) {
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

    fn start_handshake(&mut self, now: Timestamp, id: PeerId) -> bool {
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
        self.next_deadline = self.next_deadline.min(now + retry);
        true
    }

    /// Starts over after HandshakeFinish went unconfirmed: unconfirmed rekey keys are dropped,
    /// unconfirmed first-session keys stay until the new handshake replaces them.
    fn restart_handshake(&mut self, now: Timestamp, id: PeerId) {
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

    // ----- building control packets -------------------------------------------------------

    fn build(&mut self, now: Timestamp, item: PendingTx, buf: &mut [u8]) -> Option<Transmit> {
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
                }) = peer.handshake.as_mut()
                else {
                    return None;
                };
                let packet = initiator.init_packet(cookie.as_ref());
                copy_out(buf, packet, dst)
            }
            PendingTx::Finish(id) => {
                let peer = self.peer(id)?;
                let Some(InitiatorHandshake {
                    phase: Phase::AwaitConfirm { finish },
                    ..
                }) = peer.handshake.as_ref()
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
                let ack = peer.receiver.ack().encode();
                buf.get_mut(TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + ack.len())?
                    .copy_from_slice(&ack);
                peer.receiver.ack_sent();
                self.seal_control(now, id, TransportKind::Ack, buf, ack.len())
            }
            PendingTx::Keepalive(id) => {
                self.peer_mut(id)?.keepalive_queued = false;
                self.seal_control(now, id, TransportKind::Keepalive, buf, 0)
            }
            PendingTx::Retransmit(id) => {
                let peer = self.peer_mut(id)?;
                let Some(segment) = peer.sender.poll_retransmit(now) else {
                    peer.retransmit_queued = false;
                    if let Some(at) = peer.sender.next_timeout() {
                        self.next_deadline = self.next_deadline.min(at);
                    }
                    return None;
                };
                let body_at = TRANSPORT_HEADER_LEN + RELIABLE_SEQ_LEN;
                let plaintext_len = RELIABLE_SEQ_LEN + segment.payload.len();
                let out = buf.get_mut(TRANSPORT_HEADER_LEN..body_at + segment.payload.len())?;
                out[..RELIABLE_SEQ_LEN].copy_from_slice(&segment.seq.to_le_bytes());
                out[RELIABLE_SEQ_LEN..].copy_from_slice(segment.payload);
                self.stats.reliable_retransmits += 1;
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

    fn seal_control(
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

    fn queue(&mut self, item: PendingTx) -> bool {
        if self.pending_tx.len() >= self.config.control_queue {
            return false;
        }
        self.pending_tx.push_back(item);
        true
    }

    fn queue_keepalive(&mut self, id: PeerId) {
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

    // ----- peers and indexes --------------------------------------------------------------

    fn allowed(&self, key: &PublicKey) -> bool {
        self.config
            .allow_list
            .as_ref()
            .is_none_or(|list| list.contains(key))
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers
            .get(id.slot as usize)
            .filter(|e| e.generation == id.generation)
            .and_then(|e| e.peer.as_deref())
    }

    fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        peer_in(&mut self.peers, id)
    }

    fn peer_id_at(&self, slot: usize) -> Option<PeerId> {
        let entry = self.peers.get(slot)?;
        entry.peer.as_ref()?;
        Some(PeerId {
            slot: slot as u32,
            generation: entry.generation,
        })
    }

    /// Handles of all live peers. Allocates: only for rare, whole-endpoint operations.
    fn peer_ids(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, e)| e.peer.is_some())
            .map(|(slot, e)| PeerId {
                slot: slot as u32,
                generation: e.generation,
            })
            .collect()
    }

    fn live_peers(&self) -> usize {
        self.peers.len() - self.free_peers.len()
    }

    fn insert_peer(
        &mut self,
        now: Timestamp,
        public_key: PublicKey,
        addr: SocketAddr,
    ) -> Option<PeerId> {
        if self.live_peers() >= self.config.max_peers {
            return None;
        }
        let peer = Box::new(Peer {
            public_key,
            addr,
            established: false,
            we_initiated: false,
            current: None,
            previous: None,
            next: None,
            previous_expires: now,
            handshake: None,
            cookie: None,
            bucket: TokenBucket::new(self.config.rate_pps, self.config.rate_burst, now),
            strikes: Strikes::new(),
            sender: ReliableSender::new(self.config.reliable),
            receiver: ReliableReceiver::new(self.config.reliable),
            last_received: now,
            last_sent: now,
            ack_queued: false,
            keepalive_queued: false,
            retransmit_queued: false,
            closing: None,
            peer_reason: None,
            packets_received: 0,
            packets_sent: 0,
            drops: 0,
        });
        let id = match self.free_peers.pop() {
            Some(slot) => {
                let entry = self.peers.get_mut(slot as usize)?;
                entry.peer = Some(peer);
                PeerId {
                    slot,
                    generation: entry.generation,
                }
            }
            None => {
                let slot = u32::try_from(self.peers.len()).ok()?;
                self.peers.push(PeerEntry {
                    generation: 1,
                    peer: Some(peer),
                });
                PeerId {
                    slot,
                    generation: 1,
                }
            }
        };
        self.by_key.insert(public_key, id);
        self.next_deadline = self.next_deadline.min(now + self.config.keepalive_interval);
        Some(id)
    }

    /// Replaces a peer's session after it started a new one: fresh streams, fresh strikes.
    fn reset_peer(&mut self, now: Timestamp, id: PeerId, keyset: KeySet, src: SocketAddr) {
        let reliable = self.config.reliable;
        let Some(peer) = self.peer_mut(id) else {
            return;
        };
        let old: Vec<SessionIndex> = peer.session_indexes().collect();
        let public_key = peer.public_key;
        peer.current = Some(keyset);
        peer.previous = None;
        peer.next = None;
        peer.handshake = None;
        peer.established = true;
        peer.we_initiated = false;
        peer.addr = src;
        peer.sender = ReliableSender::new(reliable);
        peer.receiver = ReliableReceiver::new(reliable);
        peer.strikes = Strikes::new();
        peer.last_received = now;
        peer.ack_queued = false;
        peer.retransmit_queued = false;
        for index in old {
            self.free_index(index);
        }
        self.stats.record_close(CloseReason::Remote);
        self.events.push_back(QueuedEvent::Down {
            peer: id,
            public_key,
            reason: CloseReason::Remote,
            peer_reason: None,
        });
        self.events.push_back(QueuedEvent::Up {
            peer: id,
            public_key,
            addr: src,
        });
    }

    fn close_peer(&mut self, _now: Timestamp, id: PeerId, reason: CloseReason, notify: bool) {
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

    fn remove_peer(&mut self, id: PeerId) {
        let Some(entry) = self
            .peers
            .get_mut(id.slot as usize)
            .filter(|e| e.generation == id.generation)
        else {
            return;
        };
        let Some(peer) = entry.peer.take() else {
            return;
        };
        entry.generation = entry.generation.wrapping_add(1).max(1);
        self.free_peers.push(id.slot);
        if self.by_key.get(&peer.public_key) == Some(&id) {
            self.by_key.remove(&peer.public_key);
        }
        for index in peer.session_indexes() {
            self.free_index(index);
        }
    }

    fn lookup(&self, index: SessionIndex) -> Option<SlotTarget> {
        let slot = self.slots.get((index.get() & 0xffff) as usize)?;
        (slot.index == index.get()).then_some(slot.target)
    }

    fn slot_mut(&mut self, index: SessionIndex) -> Option<&mut Slot> {
        self.slots
            .get_mut((index.get() & 0xffff) as usize)
            .filter(|s| s.index == index.get())
    }

    fn alloc_index(&mut self, target: SlotTarget) -> Option<SessionIndex> {
        let slot = self.free_slots.pop()?;
        // The upper half is random so that an index is not guessable from the last one.
        let generation = loop {
            let candidate = (self.rng.next_u32() >> 16) as u16;
            if candidate != 0 {
                break candidate;
            }
        };
        let raw = (u32::from(generation) << 16) | u32::from(slot);
        let index = SessionIndex::new(raw)?;
        self.slots[usize::from(slot)] = Slot { index: raw, target };
        Some(index)
    }

    fn free_index(&mut self, index: SessionIndex) {
        let slot = (index.get() & 0xffff) as usize;
        if let Some(entry) = self.slots.get_mut(slot) {
            if entry.index == index.get() && entry.target != SlotTarget::Free {
                *entry = Slot {
                    index: 0,
                    target: SlotTarget::Free,
                };
                self.free_slots.push(slot as u16);
            }
        }
    }

    fn draw_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }
}

/// A peer by handle, borrowing only the peer table so other fields stay usable.
fn peer_in(peers: &mut [PeerEntry], id: PeerId) -> Option<&mut Peer> {
    peers
        .get_mut(id.slot as usize)
        .filter(|e| e.generation == id.generation)
        .and_then(|e| e.peer.as_deref_mut())
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

fn copy_out(buf: &mut [u8], packet: &[u8], dst: SocketAddr) -> Option<Transmit> {
    buf.get_mut(..packet.len())?.copy_from_slice(packet);
    Some(Transmit {
        dst,
        len: packet.len(),
    })
}
