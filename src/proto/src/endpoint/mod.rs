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
//!
//! One `impl Endpoint`, split by concern: `peers` (the peer slab and the session-index
//! table), `pools` (the free lists of the parts a peer holds only while it uses them:
//! spare key sets and Reliable streams), `handshake` (initiator and responder), `transport` (the data path), `timers`
//! (per-peer timer tables and the wake-up heap) and `control` (the packets `poll_transmit`
//! writes). Every packet handler returns `Result<_, DropReason>`, and `handle_datagram` is
//! the one place a rejection is counted, so no refused datagram goes uncounted.

mod control;
mod handshake;
mod indexes;
mod peers;
mod pools;
mod timers;
mod transport;

pub use self::peers::{HotState, SendState, TableMemory};
pub use self::transport::{Bundle, Bundled};

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand_core::CryptoRngCore;

use self::control::PendingTx;
use self::handshake::PendingResponder;
use self::indexes::IndexTable;
use self::peers::PeerEntry;
use self::pools::ColdPools;
use self::timers::WakeHeap;
use super::config::EndpointConfig;
use super::cookie::{self, CookieReplyKey, CookieSecrets};
use super::event::{ConnectError, Deliveries, Event, Message, Mode, PeerId, PeerInfo};
use super::handshake_load::{HandshakeLoad, HandshakeRates};
use super::keys::PublicKey;
use super::keyset::SessionSecrets;
use super::stats::{CloseReason, DropReason, Stats};
use super::time::Timestamp;
use super::wire::{self, Header};

/// An event waiting for `poll_event`, owned (a `Message` is produced on the way out).
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
    Abandoned {
        peer: PeerId,
        messages: u64,
        bytes: u64,
    },
}

/// The sans-IO protocol endpoint. See the module docs for the drive loop.
pub struct Endpoint {
    config: EndpointConfig,
    rng: Box<dyn CryptoRngCore + Send>,
    mac1_key: [u8; 32],
    cookie_reply_key: CookieReplyKey,
    cookies: CookieSecrets,
    /// Handshake work by rate, per source and in total, checked before any Diffie-Hellman.
    handshake_load: HandshakeLoad,
    indexes: IndexTable,
    peers: Vec<PeerEntry>,
    free_peers: Vec<u32>,
    /// The boxes peers hold only while they use them (spare key sets, Reliable streams).
    pools: ColdPools,
    by_key: HashMap<PublicKey, PeerId>,
    responders: Vec<Option<PendingResponder>>,
    /// Reused by `fair_share_victim` (grown once, to the handshakes in flight).
    prefix_scratch: Vec<(crate::handshake_load::SourcePrefix, Timestamp, usize)>,
    pending_tx: VecDeque<PendingTx>,
    events: VecDeque<QueuedEvent>,
    /// Peers whose reorder buffer holds in-order messages not yet handed out.
    ready: VecDeque<PeerId>,
    stats: Stats,
    /// Wake-ups of peers and responder handshakes, earliest first.
    wakes: WakeHeap,
    /// When the cookie secrets are next looked at; armed by the first `handle_timeout`.
    cookie_rotation: Timestamp,
    /// While timers run, the earliest a new wake-up may be (see `handle_timeout`).
    timer_floor: Timestamp,
    /// Peer visits by `handle_timeout`, so tests can check timer work stays proportional.
    #[cfg(test)]
    timer_visits: u64,
    /// Durations of recently completed handshakes, for a histogram the caller drains.
    handshake_durations: [Duration; HANDSHAKE_LOG],
    handshake_log_len: usize,
    /// Keys of sessions installed since the last `poll_session_keys`, when exporting them.
    exported_keys: VecDeque<SessionSecrets>,
    /// Recently refused handshakes with their source, for the caller's logs; bounded,
    /// preallocated, the oldest dropped first.
    refusals: VecDeque<(SocketAddr, DropReason)>,
}

/// Completed handshakes remembered between two drains; older ones are dropped.
const HANDSHAKE_LOG: usize = 256;
/// Exported session keys held for the caller; past this the oldest are dropped.
const EXPORTED_KEYS_MAX: usize = 1024;
/// Refused handshakes remembered between two drains.
const REFUSALS_MAX: usize = 64;

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
        // Three key sets and a rekey per peer, plus the responder handshakes in flight.
        let slot_count = (config.max_peers.saturating_mul(3))
            .saturating_add(config.handshakes_in_flight)
            .saturating_add(16);
        let indexes = IndexTable::new(slot_count, &mut *rng);
        let handshake_load = HandshakeLoad::new(
            HandshakeRates {
                total_rate: config.handshake_rate,
                total_burst: config.handshake_burst,
                per_source_rate: config.handshake_rate_per_source,
                per_source_burst: config.handshake_burst_per_source,
            },
            config.handshake_sources,
            [rng.next_u64(), rng.next_u64()],
            now,
        );
        let own_key = config.keypair.public;
        Endpoint {
            mac1_key: cookie::mac1_key(&own_key),
            cookie_reply_key: CookieReplyKey::new(&own_key),
            cookies: CookieSecrets::new(secret, now),
            handshake_load,
            indexes,
            // Never more slots than `max_peers` (freed ones are reused), so this table never
            // moves: a reallocation would copy every peer in the middle of a handshake.
            // Reserved, not touched: the pages are resident once peers use them.
            peers: Vec::with_capacity(config.max_peers),
            free_peers: Vec::new(),
            pools: ColdPools::new(config.reliable, config.max_peers),
            by_key: HashMap::new(),
            responders: (0..config.handshakes_in_flight).map(|_| None).collect(),
            prefix_scratch: Vec::new(),
            pending_tx: VecDeque::with_capacity(config.control_queue),
            // Preallocated so that a delivery or a peer event never grows them mid-stream.
            events: VecDeque::with_capacity(64),
            ready: VecDeque::with_capacity(config.max_peers.min(slot_count)),
            stats: Stats::default(),
            wakes: WakeHeap::with_capacity(
                config
                    .max_peers
                    .min(slot_count)
                    .saturating_add(config.handshakes_in_flight),
            ),
            cookie_rotation: Timestamp::NEVER,
            timer_floor: Timestamp::ZERO,
            #[cfg(test)]
            timer_visits: 0,
            handshake_durations: [Duration::ZERO; HANDSHAKE_LOG],
            handshake_log_len: 0,
            exported_keys: VecDeque::new(),
            refusals: VecDeque::with_capacity(REFUSALS_MAX),
            rng,
            config,
        }
    }

    /// This endpoint's static public key.
    pub fn public_key(&self) -> PublicKey {
        self.config.keypair.public
    }

    /// The configuration in force (the allow-list as last set).
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

    /// Processes one received datagram, opened in place. Realtime messages, and Reliable ones
    /// that arrived in order with nothing of their peer waiting before them, are returned as
    /// slices of `datagram` (several when it was a bundle, in order); everything else is
    /// reported through `poll_event` and `poll_transmit`. Take every returned message before
    /// polling the endpoint's released Reliable messages (`poll_event`): they come after it.
    pub fn handle_datagram<'b>(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        datagram: &'b mut [u8],
    ) -> Deliveries<'b> {
        self.stats.packets_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        // The one place a rejected datagram is counted: every handler says why it refused.
        match self.dispatch(now, src, datagram) {
            Ok(delivered) => delivered,
            Err(reason) => {
                self.stats.record_drop(reason);
                if matches!(
                    reason,
                    DropReason::NotAllowed | DropReason::HandshakeBudget | DropReason::BadCookie
                ) {
                    if self.refusals.len() == REFUSALS_MAX {
                        self.refusals.pop_front();
                    }
                    self.refusals.push_back((src, reason));
                }
                Deliveries::none()
            }
        }
    }

    /// Hands every handshake refused since the last call (not on the allow-list, over the
    /// handshake budget, missing or bad cookie) to `refused` with its source address, oldest
    /// first; at most the last 64. The address is what the datagram claimed: a refused
    /// handshake is unauthenticated, so it may be spoofed.
    pub fn drain_refusals(&mut self, mut refused: impl FnMut(SocketAddr, DropReason)) {
        while let Some((addr, reason)) = self.refusals.pop_front() {
            refused(addr, reason);
        }
    }

    /// Parses the header and hands the datagram to the handler of its type.
    fn dispatch<'b>(
        &mut self,
        now: Timestamp,
        src: SocketAddr,
        datagram: &'b mut [u8],
    ) -> Result<Deliveries<'b>, DropReason> {
        let header = wire::parse_header(datagram).map_err(|_| DropReason::Malformed)?;
        match header {
            Header::Transport {
                kind,
                receiver,
                counter,
            } => self.on_transport(now, src, kind, receiver, counter, datagram),
            Header::HandshakeInit { sender } => self
                .on_init(now, src, sender, datagram)
                .map(|()| Deliveries::none()),
            Header::HandshakeResponse { sender, receiver } => self
                .on_response(now, src, sender, receiver, datagram)
                .map(|()| Deliveries::none()),
            Header::HandshakeFinish { receiver } => self
                .on_finish(now, src, receiver, datagram)
                .map(|()| Deliveries::none()),
            Header::CookieReply { receiver } => self
                .on_cookie_reply(now, src, receiver, datagram)
                .map(|()| Deliveries::none()),
        }
    }

    // ----- outputs ------------------------------------------------------------------------

    /// The next event: peers up and down, and Reliable messages released in order.
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        if let Some(event) = self.poll_peer_event() {
            return Some(event);
        }
        self.poll_released()
    }

    /// The next event about a peer (up, down, abandoned Reliable messages), never a released
    /// Reliable message. A caller that hands out the message `handle_datagram` returned calls
    /// this first: a PeerUp queued by an earlier datagram must come before that peer's
    /// message, while released Reliable messages (of this or another peer) must not jump
    /// ahead of it, since the endpoint returns an in-order message directly only when
    /// nothing of that peer waits before it.
    pub fn poll_peer_event(&mut self) -> Option<Event<'static>> {
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
                QueuedEvent::Abandoned {
                    peer,
                    messages,
                    bytes,
                } => Event::ReliableAbandoned {
                    peer,
                    messages,
                    bytes,
                },
            });
        }
        None
    }

    fn poll_released(&mut self) -> Option<Event<'_>> {
        while let Some(&id) = self.ready.front() {
            let has_ready = self.peer(id).is_some_and(|p| {
                p.closing.is_none() && p.receiver.as_deref().is_some_and(|r| r.has_ready())
            });
            if !has_ready {
                self.ready.pop_front();
                continue;
            }
            self.stats.messages_delivered += 1;
            let entry = self.peers.get_mut(id.slot as usize)?;
            let peer = entry.peer.as_mut()?;
            let payload = peer.receiver.as_deref_mut()?.pop_ready()?;
            self.stats.bytes_delivered += payload.len() as u64;
            return Some(Event::Message(Message {
                peer: id,
                mode: Mode::Reliable,
                payload,
            }));
        }
        None
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let next = self
            .wakes
            .peek()
            .map_or(self.cookie_rotation, |at| at.min(self.cookie_rotation));
        (next != Timestamp::NEVER).then_some(next)
    }

    /// Whether control packets are waiting for `poll_transmit`.
    pub fn has_transmit(&self) -> bool {
        !self.pending_tx.is_empty()
    }

    // ----- inspection ---------------------------------------------------------------------

    /// Established peers, for fan-out (`publish`). Allocation-free.
    pub fn established_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.iter().enumerate().filter_map(|(slot, entry)| {
            let peer = entry.peer.as_ref()?;
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
                let peer = entry.peer.as_ref()?;
                (peer.established && peer.closing.is_none()).then_some(PeerId {
                    slot: slot as u32,
                    generation: entry.generation,
                })
            })
    }

    /// A snapshot of one peer, or `None` for a stale handle.
    pub fn peer_info(&self, id: PeerId) -> Option<PeerInfo> {
        let peer = self.peer(id)?;
        // A peer that never sent Reliable has no sender: what a new one would report.
        let sender = peer.sender.as_deref();
        Some(PeerInfo {
            public_key: peer.public_key,
            addr: peer.addr,
            established: peer.established && peer.closing.is_none(),
            srtt: sender.and_then(|s| s.srtt()),
            packets_received: peer.packets_received,
            packets_sent: peer.packets_sent,
            drops: peer.drops,
            reliable_queued_bytes: sender.map_or(0, |s| s.queued_bytes()),
            reliable_in_flight_bytes: sender.map_or(0, |s| s.window_bytes()),
            peer_receive_window: sender.map_or(peer.peer_window, |s| s.peer_window()),
        })
    }

    /// Room in `id`'s Reliable send window, in payload bytes: a Reliable `send` of at most
    /// this many bytes will not answer `WouldBlock`, except while selectively acknowledged
    /// segments still hold sequence numbers (then it is a hint and the send may refuse).
    /// `None` for an unknown peer.
    pub fn reliable_room(&self, id: PeerId) -> Option<usize> {
        let peer = self.peer(id)?;
        let (in_flight, queued) = peer
            .sender
            .as_deref()
            .map_or((0, 0), |s| (s.in_flight(), s.queued_bytes()));
        if in_flight >= crate::reliable::MAX_IN_FLIGHT {
            return Some(0);
        }
        let bound = self
            .config
            .reliable
            .max_queued_bytes
            .min(crate::reliable::MAX_QUEUE_BYTES);
        Some(bound.saturating_sub(queued))
    }

    /// The handle of the peer with this static key, if there is one.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// Counters plus gauges computed now (O(peers): call it per scrape, not per packet).
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.handshakes_in_flight = self.responders.iter().flatten().count() as u64;
        for peer in self.peers.iter().filter_map(|e| e.peer.as_ref()) {
            if peer.established && peer.closing.is_none() {
                stats.sessions_active += 1;
            }
            if peer.handshake.is_some() {
                stats.handshakes_in_flight += 1;
            }
            if let Some(receiver) = peer.receiver.as_deref() {
                stats.reorder_buffer_bytes += receiver.buffered_bytes() as u64;
            }
            if let Some(sender) = peer.sender.as_deref() {
                stats.retransmit_queue_bytes += sender.queued_bytes() as u64;
            }
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

    /// The keys of the next session (or rekey) installed since the last call, oldest first;
    /// always `None` unless `EndpointConfig::export_session_keys` is on.
    pub fn poll_session_keys(&mut self) -> Option<SessionSecrets> {
        self.exported_keys.pop_front()
    }

    /// Called wherever a key set is installed (as initiator and as responder, rekeys too).
    fn export_keys(&mut self, secrets: impl FnOnce() -> SessionSecrets) {
        if !self.config.export_session_keys {
            return;
        }
        if self.exported_keys.len() >= EXPORTED_KEYS_MAX {
            self.exported_keys.pop_front();
        }
        self.exported_keys.push_back(secrets());
    }

    /// Counts datagrams the driver failed to send.
    pub fn record_send_drops(&mut self, count: u64) {
        self.stats.packets_send_dropped += count;
    }

    /// Counts a drop that happened outside the endpoint (a driver's truncated datagram).
    pub fn record_external_drop(&mut self, reason: DropReason) {
        self.stats.record_drop(reason);
    }

    fn allowed(&self, key: &PublicKey) -> bool {
        self.config
            .allow_list
            .as_ref()
            .is_none_or(|list| list.contains(key))
    }

    fn draw_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }
}
