//! Two endpoints after a real handshake, joined by a network the input controls packet by
//! packet: valid traffic in both modes from either side, drops, duplicates, reorderings, bit
//! flips and truncations of real packets, junk carrying real session indexes (from the real
//! peer's address and from others), replays of old packets, genuine packets relayed from
//! other addresses, and time jumps on a healthy or a dead network (across the rekey interval).
//!
//! It asserts what an attacker without keys must never achieve:
//! - nothing forged is delivered: every payload is one the other side sent, byte for byte
//!   (each carries a unique id from which its content is derived);
//! - Reliable delivery is in order and exactly once, a Realtime message at most once;
//! - no session closes (or restarts) because of unauthenticated input. The harness decides
//!   conservatively when a close is legitimate: an idle timeout only when genuine traffic
//!   was impaired (dropped, delayed past `DELAY_OK`, rate-limited, or sent to an address the
//!   harness does not deliver) within the idle timeout, a key expiry or handshake timeout
//!   only when genuine traffic was impaired within the key lifetime, a remote close only
//!   after the other side closed (or under the same impairment, for a restart). Strikes are
//!   never legitimate here: both peers are honest;
//! - a peer's address only ever moves to an address a genuine packet of that peer came from;
//! - on a run in which no genuine packet was impaired, both sessions are alive at the end
//!   and everything sent Reliable has been delivered.
//!
//! The first legitimate close ends the run: what follows it is a new session, outside the
//! promises checked here.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::Input;
use crate::config::EndpointConfig;
use crate::endpoint::{Bundled, Endpoint};
use crate::event::{Event, Mode, PeerId, Sent};
use crate::keys::Keypair;
use crate::stats::{CloseReason, DropReason};
use crate::time::Timestamp;
use crate::wire::{
    self, Counter, PacketType, SessionIndex, TransportKind, MAX_DATAGRAM_LEN, TRANSPORT_HEADER_LEN,
};

/// A genuine packet delivered later than this after it was sent counts as impaired traffic.
const DELAY_OK: Duration = Duration::from_millis(200);
/// Packets in flight at once; past this the oldest is lost (and that is an impairment).
const POOL_MAX: usize = 64;
/// Genuine packets remembered for replays and mutations.
const HISTORY_MAX: usize = 64;
/// Deliveries one flush may make (ACKs answer segments, so a flush is not one pass).
const FLUSH_MAX: usize = 4_096;
/// Timer rounds one time step may run; a step cut short counts as an impairment.
const TIMER_ROUNDS_MAX: usize = 20_000;
/// Session indexes remembered per side, for junk that carries them.
const INDEXES_MAX: usize = 8;
/// Slack on the legitimacy windows, for timers that fire a little after their deadline.
const SLACK: Duration = Duration::from_secs(2);

/// A datagram between the two endpoints, as the harness holds it.
#[derive(Clone)]
struct Packet {
    /// The side it is addressed to.
    to: usize,
    src: SocketAddr,
    bytes: Vec<u8>,
    sent_at: Timestamp,
}

/// A delivery or an event, owned, so the harness can act on it after the endpoint's borrow.
enum Outcome {
    Up,
    /// Reliable messages lost with a session: always followed by that session's close.
    Abandoned,
    Down(CloseReason),
    Message(PeerId, Mode, Vec<u8>),
}

struct Side {
    endpoint: Endpoint,
    addr: SocketAddr,
    /// This side's handle for the other side.
    peer: PeerId,
    /// Addresses other than the other side's own from which a genuine packet of the other
    /// side was delivered here: the only places this side may roam the peer to.
    genuine_sources: Vec<SocketAddr>,
    /// How many of the other side's Reliable messages were delivered here, in order.
    reliable_delivered: usize,
    realtime_seen: HashSet<u64>,
    ups: u32,
    down: Option<CloseReason>,
    /// Receiver indexes of genuine packets addressed to this side.
    indexes: Vec<u32>,
    /// Recent counters of genuine transport packets to this side.
    counters: Vec<u64>,
}

struct Harness {
    sides: [Side; 2],
    now: Timestamp,
    pool: Vec<Packet>,
    history: Vec<Packet>,
    history_next: usize,
    /// Every payload id sent: by whom, in which mode, how long.
    sent: HashMap<u64, (usize, Mode, usize)>,
    /// Ids of the Reliable messages each side's `send` accepted, in order.
    reliable_sent: [Vec<u64>; 2],
    next_id: u64,
    last_impairment: Option<Timestamp>,
    idle_timeout: Duration,
    key_lifetime: Duration,
    /// Set by the first legitimate close: the run ends there.
    done: bool,
    setup: bool,
}

fn side_addr(side: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1 + side as u8], 7000))
}

/// Addresses from which only the attacker sends: another host, the peers' own hosts on other
/// ports, IPv6 and IPv4-mapped IPv6.
fn attacker_addr(choice: u8) -> SocketAddr {
    let ip = match choice % 5 {
        0 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, 66)),
        1 | 2 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, choice % 2 + 1)),
        3 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped()),
    };
    let port = if choice % 5 == 1 || choice % 5 == 2 {
        7001
    } else {
        7000
    };
    SocketAddr::new(ip, port)
}

/// The content of byte `index` of the payload with `id`.
fn content(id: u64, index: usize) -> u8 {
    (id as u8).wrapping_mul(31).wrapping_add(index as u8) ^ (id >> 8) as u8
}

fn payload(id: u64, len: usize) -> Vec<u8> {
    let mut bytes = id.to_le_bytes().to_vec();
    bytes.extend((8..len).map(|index| content(id, index)));
    bytes
}

/// Drives an established pair through the interleaving `data` describes.
pub fn fuzz_pair(data: &[u8]) {
    run(data);
}

fn run(data: &[u8]) -> Option<Harness> {
    let mut input = Input::new(data);
    let mut harness = Harness::new(&mut input)?;
    while !input.is_empty() && !harness.done {
        harness.step(&mut input);
        if !harness.done {
            harness.check_addresses();
        }
    }
    harness.finish();
    Some(harness)
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Option<Harness> {
        let flags = input.byte();
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(flags >> 2));
        let keys = [Keypair::generate(&mut rng), Keypair::generate(&mut rng)];
        let public = [keys[0].public, keys[1].public];
        let now = Timestamp::from_millis(1_000);
        let mut endpoints = keys.map(|keypair| {
            let mut config = EndpointConfig::new(keypair);
            if flags & 1 != 0 {
                // Short key lifetimes, so that a few steps cross the rekey interval.
                config.rekey_after = Duration::from_secs(10);
                config.reject_after = Duration::from_secs(20);
            }
            config
        });
        let idle_timeout = endpoints[0].idle_timeout;
        let key_lifetime = endpoints[0].reject_after;
        if flags & 2 != 0 {
            for config in &mut endpoints {
                config.reliable.max_queued_bytes = 512;
            }
        }
        let [config_a, config_b] = endpoints;
        let a = Endpoint::new(config_a, now, ChaCha20Rng::seed_from_u64(11));
        let b = Endpoint::new(config_b, now, ChaCha20Rng::seed_from_u64(12));
        let side = |endpoint, n: usize| Side {
            endpoint,
            addr: side_addr(n),
            peer: PeerId {
                slot: u32::MAX,
                generation: 0,
            },
            genuine_sources: Vec::new(),
            reliable_delivered: 0,
            realtime_seen: HashSet::new(),
            ups: 0,
            down: None,
            indexes: Vec::new(),
            counters: Vec::new(),
        };
        let mut harness = Harness {
            sides: [side(a, 0), side(b, 1)],
            now,
            pool: Vec::with_capacity(POOL_MAX),
            history: Vec::with_capacity(HISTORY_MAX),
            history_next: 0,
            sent: HashMap::new(),
            reliable_sent: [Vec::new(), Vec::new()],
            next_id: 0,
            last_impairment: None,
            idle_timeout,
            key_lifetime,
            done: false,
            setup: false,
        };
        let peer = harness.sides[0]
            .endpoint
            .connect(now, side_addr(1), public[1])
            .ok()?;
        harness.sides[0].peer = peer;
        harness.drain(0);
        harness.flush();
        let peer = harness.sides[1].endpoint.peer_by_key(&public[0]);
        harness.sides[1].peer =
            peer.expect("the responder knows the initiator after the handshake");
        for side in &harness.sides {
            assert_eq!(side.ups, 1, "both sides come up on a clean network");
            assert!(side.down.is_none());
        }
        harness.setup = true;
        Some(harness)
    }

    fn step(&mut self, input: &mut Input<'_>) {
        match input.byte() % 16 {
            0 | 1 => {
                let how = input.byte();
                let len = 8 + usize::from(input.byte() % 64);
                let mode = if how & 2 == 0 {
                    Mode::Reliable
                } else {
                    Mode::Realtime
                };
                if how & 4 == 0 {
                    self.send(usize::from(how & 1), mode, len);
                } else {
                    // Several messages queued together: bundles (PROTOCOL.md 7.5), their
                    // modes chosen by the bits of one byte.
                    let count = 2 + usize::from(how >> 3);
                    let modes = input.byte();
                    self.send_bundle(usize::from(how & 1), count, modes, len);
                }
            }
            2 | 3 => {
                if let Some(at) = self.pick(input.byte()) {
                    let packet = self.pool.remove(at);
                    self.deliver_genuine(packet);
                }
            }
            4 => {
                if let Some(at) = self.pick(input.byte()) {
                    let packet = self.pool[at].clone();
                    self.deliver_genuine(packet);
                }
            }
            5 => {
                if let Some(at) = self.pick(input.byte()) {
                    self.pool.remove(at);
                    self.impair();
                }
            }
            6 => self.flush(),
            7 => {
                // A bit flip in a copy of a real packet.
                let choice = input.byte();
                let at = usize::from(input.u16());
                let bit = input.byte() % 8;
                let src = input.byte();
                if let Some(mut packet) = self.real_packet(choice) {
                    let len = packet.bytes.len();
                    if len > 0 {
                        packet.bytes[at % len] ^= 1 << bit;
                    }
                    self.deliver_junk(packet, src);
                }
            }
            8 => {
                // A truncated or extended copy of a real packet.
                let choice = input.byte();
                let cut = usize::from(input.byte());
                let extra_len = usize::from(input.byte() % 32);
                let extra = input.bytes(extra_len).to_vec();
                let src = input.byte();
                if let Some(mut packet) = self.real_packet(choice) {
                    let keep = packet.bytes.len().saturating_sub(cut % 48);
                    packet.bytes.truncate(keep);
                    packet.bytes.extend_from_slice(&extra);
                    self.deliver_junk(packet, src);
                }
            }
            9 => self.junk_transport(input),
            10 => {
                // A replay of an old genuine packet, from the peer's address or elsewhere.
                let choice = usize::from(input.byte());
                let src = input.byte();
                if !self.history.is_empty() {
                    let packet = self.history[choice % self.history.len()].clone();
                    self.deliver_junk(packet, src);
                }
            }
            11 => {
                // An on-path relay: a genuine packet in flight delivered from another address.
                let choice = input.byte();
                let src = attacker_addr(input.byte());
                if let Some(at) = self.pick(choice) {
                    let mut packet = self.pool.remove(at);
                    packet.src = src;
                    self.deliver_genuine(packet);
                }
            }
            12 => {
                let (x, y) = (input.byte(), input.byte());
                if let (Some(x), Some(y)) = (self.pick(x), self.pick(y)) {
                    self.pool.swap(x, y);
                }
            }
            13 => {
                let millis = u64::from(input.u16() % 4_000);
                let healthy = input.byte() & 1 == 0;
                self.advance(Duration::from_millis(millis), healthy);
            }
            14 => {
                let secs = u64::from(input.byte());
                let healthy = input.byte() & 3 != 0;
                self.advance(Duration::from_secs(secs), healthy);
            }
            _ => self.junk_handshake(input),
        }
    }

    fn pick(&self, choice: u8) -> Option<usize> {
        (!self.pool.is_empty()).then(|| usize::from(choice) % self.pool.len())
    }

    /// A copy of a packet in flight or of an old one, for mutation.
    fn real_packet(&self, choice: u8) -> Option<Packet> {
        if choice & 1 == 0 {
            if let Some(at) = self.pick(choice >> 1) {
                return Some(self.pool[at].clone());
            }
        }
        (!self.history.is_empty())
            .then(|| self.history[usize::from(choice >> 1) % self.history.len()].clone())
    }

    fn impair(&mut self) {
        self.last_impairment = Some(self.now);
    }

    fn send(&mut self, from: usize, mode: Mode, len: usize) {
        if self.sides[from].down.is_some() {
            return;
        }
        let id = self.next_id << 1 | from as u64;
        let bytes = payload(id, len);
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let side = &mut self.sides[from];
        let result = side
            .endpoint
            .send(self.now, side.peer, mode, &bytes, &mut buf);
        let accepted = match result {
            Ok(Sent::Now(transmit)) => {
                self.route(from, transmit.dst, buf[..transmit.len].to_vec());
                true
            }
            Ok(Sent::Queued) => true,
            Err(_) => false,
        };
        if accepted {
            self.next_id += 1;
            self.sent.insert(id, (from, mode, len));
            if mode == Mode::Reliable {
                self.reliable_sent[from].push(id);
            }
        }
        self.drain(from);
    }

    /// Sends `count` messages of `len` bytes from `from` as bundles, as many to a datagram as
    /// fit; bit `i % 8` of `modes` makes message `i` Reliable.
    fn send_bundle(&mut self, from: usize, count: usize, modes: u8, len: usize) {
        if self.sides[from].down.is_some() {
            return;
        }
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let mut next = 0;
        while next < count {
            let mut accepted = Vec::new();
            let side = &mut self.sides[from];
            let Ok(mut bundle) = side.endpoint.bundle(self.now, side.peer, &mut buf) else {
                break;
            };
            let mut full = false;
            while next < count && !full {
                let mode = if modes >> (next % 8) & 1 == 1 {
                    Mode::Reliable
                } else {
                    Mode::Realtime
                };
                let id = (self.next_id + accepted.len() as u64) << 1 | from as u64;
                match bundle.push(mode, &payload(id, len)) {
                    Ok(Bundled::Full) => full = true,
                    Ok(Bundled::Added | Bundled::Queued) => {
                        accepted.push((id, mode));
                        next += 1;
                    }
                    Err(_) => next += 1,
                }
            }
            let transmit = bundle.finish();
            for &(id, mode) in &accepted {
                self.next_id += 1;
                self.sent.insert(id, (from, mode, len));
                if mode == Mode::Reliable {
                    self.reliable_sent[from].push(id);
                }
            }
            if let Ok(Some(transmit)) = transmit {
                self.route(from, transmit.dst, buf[..transmit.len].to_vec());
            }
        }
        self.drain(from);
    }

    /// Puts a datagram `from` sent on the wire: to the other side if addressed to it, else
    /// (the endpoint roamed to an attacker's address) it is lost.
    fn route(&mut self, from: usize, dst: SocketAddr, bytes: Vec<u8>) {
        let to = 1 - from;
        if dst != self.sides[to].addr {
            self.impair();
            return;
        }
        if self.pool.len() >= POOL_MAX {
            self.pool.remove(0);
            self.impair();
        }
        self.harvest(to, &bytes);
        self.pool.push(Packet {
            to,
            src: self.sides[from].addr,
            bytes,
            sent_at: self.now,
        });
    }

    /// Remembers the session indexes and counters a genuine packet to `to` shows.
    fn harvest(&mut self, to: usize, bytes: &[u8]) {
        let mut found = Vec::new();
        let mut counter = None;
        match wire::parse_header(bytes) {
            Ok(wire::Header::Transport {
                receiver,
                counter: c,
                ..
            }) => {
                found.push((to, receiver.get()));
                counter = Some(c.0);
            }
            Ok(wire::Header::HandshakeResponse { sender, receiver }) => {
                found.push((to, receiver.get()));
                found.push((1 - to, sender.get()));
            }
            Ok(wire::Header::HandshakeInit { sender }) => found.push((1 - to, sender.get())),
            Ok(wire::Header::HandshakeFinish { receiver }) => found.push((to, receiver.get())),
            Ok(wire::Header::CookieReply { receiver }) => found.push((to, receiver.get())),
            Err(_) => {}
        }
        for (side, index) in found {
            let indexes = &mut self.sides[side].indexes;
            if !indexes.contains(&index) {
                if indexes.len() >= INDEXES_MAX {
                    indexes.remove(0);
                }
                indexes.push(index);
            }
        }
        if let Some(counter) = counter {
            let counters = &mut self.sides[to].counters;
            if counters.len() >= INDEXES_MAX {
                counters.remove(0);
            }
            counters.push(counter);
        }
    }

    /// Delivers a genuine packet (possibly from another address than its sender's).
    fn deliver_genuine(&mut self, packet: Packet) {
        if self.now.saturating_since(packet.sent_at) > DELAY_OK {
            self.impair();
        }
        let to = packet.to;
        if packet.src != self.sides[1 - to].addr
            && !self.sides[to].genuine_sources.contains(&packet.src)
        {
            self.sides[to].genuine_sources.push(packet.src);
        }
        let rate_limited = self.sides[to]
            .endpoint
            .stats()
            .dropped(DropReason::RateLimit);
        self.remember(packet.clone());
        self.deliver(to, packet.src, packet.bytes);
        if self.sides[to]
            .endpoint
            .stats()
            .dropped(DropReason::RateLimit)
            > rate_limited
        {
            // Junk emptied the token bucket this genuine packet needed.
            self.impair();
        }
    }

    /// Delivers a forged, mutated or replayed datagram from the address `src` picks: mostly
    /// the real sender's own address.
    fn deliver_junk(&mut self, packet: Packet, src: u8) {
        let to = packet.to;
        let src = if src & 3 != 0 {
            self.sides[1 - to].addr
        } else {
            attacker_addr(src >> 2)
        };
        // A "mutation" that changed nothing (a cut of zero bytes) or a replay is the genuine
        // packet relayed from `src`: if it is the newest, the peer may legitimately move there.
        let genuine = self
            .pool
            .iter()
            .chain(&self.history)
            .any(|p| p.bytes == packet.bytes);
        if genuine
            && src != self.sides[1 - to].addr
            && !self.sides[to].genuine_sources.contains(&src)
        {
            self.sides[to].genuine_sources.push(src);
        }
        self.deliver(to, src, packet.bytes);
    }

    fn remember(&mut self, packet: Packet) {
        if self.history.len() < HISTORY_MAX {
            self.history.push(packet);
        } else {
            self.history[self.history_next] = packet;
            self.history_next = (self.history_next + 1) % HISTORY_MAX;
        }
    }

    fn deliver(&mut self, to: usize, src: SocketAddr, mut bytes: Vec<u8>) {
        if self.sides[to].down.is_some() {
            return;
        }
        // The receive loop's cache hints see every datagram first, junk included: they must
        // never panic, and they change nothing (the invariants checked below would notice).
        let _ = self.sides[to].endpoint.index_hint(&bytes);
        let _ = self.sides[to].endpoint.hot_state(&bytes);
        let messages = self.sides[to]
            .endpoint
            .handle_datagram(self.now, src, &mut bytes)
            .map(|m| (m.peer, m.mode, m.payload.to_vec()))
            .collect::<Vec<_>>();
        for (peer, mode, payload) in messages {
            self.check_message(to, peer, mode, &payload);
        }
        self.drain(to);
    }

    /// A transport packet carrying a real session index of `to`, with a counter near a real
    /// one or arbitrary, and a body of random bytes.
    fn junk_transport(&mut self, input: &mut Input<'_>) {
        let to = usize::from(input.byte() & 1);
        let kind = match input.byte() % 6 {
            0 => TransportKind::Realtime,
            1 => TransportKind::Reliable,
            2 => TransportKind::Ack,
            3 => TransportKind::Keepalive,
            4 => TransportKind::Close,
            _ => TransportKind::Bundle,
        };
        let index_choice = usize::from(input.byte());
        let counter_choice = input.byte();
        let delta = u64::from(input.u16());
        let len = match kind {
            TransportKind::Ack => 16,
            TransportKind::Keepalive => 0,
            TransportKind::Close => 1,
            TransportKind::Reliable => 8 + usize::from(input.byte() % 64),
            TransportKind::Realtime => usize::from(input.byte() % 72),
            TransportKind::Bundle => 3 + usize::from(input.byte() % 72),
        };
        let body = input.bytes(len + wire::TAG_LEN).to_vec();
        let src = input.byte();
        let side = &self.sides[to];
        let Some(&index) = side.indexes.get(index_choice % side.indexes.len().max(1)) else {
            return;
        };
        let Some(receiver) = SessionIndex::new(index) else {
            return;
        };
        let base = side
            .counters
            .get(usize::from(counter_choice) % side.counters.len().max(1))
            .copied()
            .unwrap_or(0);
        let counter = match counter_choice % 4 {
            0 => base.wrapping_add(delta),
            1 => base.wrapping_sub(delta),
            2 => delta << 16 | u64::from(counter_choice),
            _ => u64::MAX - delta,
        };
        let mut header = [0u8; TRANSPORT_HEADER_LEN];
        wire::write_transport_header(&mut header, kind, receiver, Counter(counter));
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&body);
        bytes.resize(TRANSPORT_HEADER_LEN + len + wire::TAG_LEN, 0);
        let packet = Packet {
            to,
            src: self.sides[1 - to].addr,
            bytes,
            sent_at: self.now,
        };
        self.deliver_junk(packet, src);
    }

    /// A handshake-phase packet with real indexes and random Noise bytes.
    fn junk_handshake(&mut self, input: &mut Input<'_>) {
        let to = usize::from(input.byte() & 1);
        let ty = match input.byte() % 4 {
            0 => PacketType::HandshakeInit,
            1 => PacketType::HandshakeResponse,
            2 => PacketType::HandshakeFinish,
            _ => PacketType::CookieReply,
        };
        let len = match ty {
            PacketType::HandshakeInit => wire::init::LEN,
            PacketType::HandshakeResponse => wire::response::LEN,
            PacketType::HandshakeFinish => wire::finish::LEN,
            _ => wire::cookie_reply::LEN,
        };
        let (i, j) = (usize::from(input.byte()), usize::from(input.byte()));
        let fill = input.bytes(len).to_vec();
        let src = input.byte();
        let own = &self.sides[to].indexes;
        let theirs = &self.sides[1 - to].indexes;
        let first = own.get(i % own.len().max(1)).copied().unwrap_or(1);
        let second = theirs.get(j % theirs.len().max(1)).copied().unwrap_or(1);
        let mut bytes = vec![0u8; len];
        bytes[..fill.len()].copy_from_slice(&fill);
        wire::write_prefix(&mut bytes, ty);
        // The index the receiver looks up sits at offset 4, except in a response (8).
        match ty {
            PacketType::HandshakeResponse => {
                bytes[4..8].copy_from_slice(&second.to_le_bytes());
                bytes[8..12].copy_from_slice(&first.to_le_bytes());
            }
            PacketType::HandshakeInit => bytes[4..8].copy_from_slice(&second.to_le_bytes()),
            _ => bytes[4..8].copy_from_slice(&first.to_le_bytes()),
        }
        let packet = Packet {
            to,
            src: self.sides[1 - to].addr,
            bytes,
            sent_at: self.now,
        };
        self.deliver_junk(packet, src);
    }

    /// Delivers everything in flight, oldest first, until both sides are quiet.
    fn flush(&mut self) {
        for _ in 0..FLUSH_MAX {
            if self.pool.is_empty() || self.done {
                return;
            }
            let packet = self.pool.remove(0);
            self.deliver_genuine(packet);
        }
    }

    /// Moves time on by `by`, running each side's timers as they fall due; on a healthy
    /// network everything sent is delivered at once, on a dead one it waits in flight.
    fn advance(&mut self, by: Duration, healthy: bool) {
        let until = self.now + by;
        for _ in 0..TIMER_ROUNDS_MAX {
            if healthy {
                self.flush();
            }
            if self.done {
                return;
            }
            let next = self
                .sides
                .iter()
                .filter(|s| s.down.is_none())
                .filter_map(|s| s.endpoint.poll_timeout())
                .min();
            match next {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    for side in 0..2 {
                        let due = self.sides[side]
                            .endpoint
                            .poll_timeout()
                            .is_some_and(|t| t <= self.now);
                        if due && self.sides[side].down.is_none() {
                            self.sides[side].endpoint.handle_timeout(self.now);
                            self.drain(side);
                        }
                    }
                }
                _ => {
                    self.now = self.now.max(until);
                    if healthy {
                        self.flush();
                    }
                    return;
                }
            }
        }
        // Timers that fire without end are themselves a bug the step cap hides: treat the
        // rest of the step as a dead network rather than fail on it.
        self.impair();
        self.now = self.now.max(until);
    }

    /// Collects `side`'s events and transmits after an input, as a driver must.
    fn drain(&mut self, side: usize) {
        let mut outcomes = Vec::new();
        while let Some(event) = self.sides[side].endpoint.poll_event() {
            outcomes.push(match event {
                Event::PeerUp { .. } => Outcome::Up,
                Event::PeerDown { reason, .. } => Outcome::Down(reason),
                Event::Message(m) => Outcome::Message(m.peer, m.mode, m.payload.to_vec()),
                Event::ReliableAbandoned { .. } => Outcome::Abandoned,
            });
        }
        for outcome in outcomes {
            match outcome {
                Outcome::Up => {
                    self.sides[side].ups += 1;
                    if self.setup {
                        // A second PeerUp is a new session: judged like the close before it.
                        self.judge(side, None);
                    }
                }
                Outcome::Down(reason) => {
                    self.sides[side].down = Some(reason);
                    self.judge(side, Some(reason));
                }
                Outcome::Message(peer, mode, payload) => {
                    self.check_message(side, peer, mode, &payload)
                }
                Outcome::Abandoned => {}
            }
        }
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        while let Some(transmit) = self.sides[side].endpoint.poll_transmit(self.now, &mut buf) {
            self.route(side, transmit.dst, buf[..transmit.len].to_vec());
        }
    }

    /// Whether genuine traffic was impaired within `window` of now, including packets still
    /// in flight that are already late.
    fn impaired_within(&self, window: Duration) -> bool {
        let late = self
            .pool
            .iter()
            .any(|p| self.now.saturating_since(p.sent_at) > DELAY_OK);
        late || self
            .last_impairment
            .is_some_and(|at| self.now.saturating_since(at) <= window + SLACK)
    }

    /// Decides whether a close (or, for `None`, a new session) on `side` is legitimate; ends
    /// the run if it is, fails if unauthenticated input caused it.
    fn judge(&mut self, side: usize, reason: Option<CloseReason>) {
        if !self.setup {
            panic!("side {side} closed during the handshake on a clean network: {reason:?}");
        }
        let other_closed = self.sides[1 - side].down.is_some();
        let legit = match reason {
            Some(CloseReason::Remote | CloseReason::Replaced) | None => {
                other_closed || self.impaired_within(self.key_lifetime)
            }
            Some(CloseReason::IdleTimeout) => self.impaired_within(self.idle_timeout),
            Some(CloseReason::KeyExpired | CloseReason::HandshakeTimeout) => {
                self.impaired_within(self.key_lifetime)
            }
            Some(_) => false,
        };
        assert!(
            legit,
            "side {side}'s session {} at {:?}, which no genuine impairment explains \
             (last impairment {:?}): unauthenticated input ended it",
            reason.map_or("restarted".to_owned(), |r| format!(
                "closed ({})",
                r.label()
            )),
            self.now,
            self.last_impairment,
        );
        self.done = true;
    }

    fn check_message(&mut self, to: usize, peer: PeerId, mode: Mode, bytes: &[u8]) {
        assert_eq!(
            peer, self.sides[to].peer,
            "delivered under the peer's handle"
        );
        let id_bytes: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_else(|| {
                panic!("forged {mode:?} message of {} bytes delivered", bytes.len())
            });
        let id = u64::from_le_bytes(id_bytes);
        let Some(&(from, sent_mode, len)) = self.sent.get(&id) else {
            panic!("forged {mode:?} message delivered: id {id:#x} was never sent");
        };
        assert_eq!(from, 1 - to, "message {id:#x} delivered back to its sender");
        assert_eq!(mode, sent_mode, "message {id:#x} delivered in another mode");
        assert_eq!(
            bytes.len(),
            len,
            "message {id:#x} delivered with another length"
        );
        assert!(
            bytes
                .iter()
                .enumerate()
                .skip(8)
                .all(|(i, &b)| b == content(id, i)),
            "message {id:#x} delivered with other bytes"
        );
        match mode {
            Mode::Realtime => assert!(
                self.sides[to].realtime_seen.insert(id),
                "Realtime message {id:#x} delivered twice"
            ),
            Mode::Reliable => {
                let position = self.sides[to].reliable_delivered;
                let expected = self.reliable_sent[from].get(position).copied();
                assert_eq!(
                    Some(id),
                    expected,
                    "Reliable delivery out of order or repeated: got {id:#x}, message #{position} \
                     was {expected:?}"
                );
                self.sides[to].reliable_delivered += 1;
            }
        }
    }

    /// A side's peer stays at its real address or at one a genuine packet came from.
    fn check_addresses(&self) {
        for (n, side) in self.sides.iter().enumerate() {
            if side.down.is_some() {
                continue;
            }
            let info = side
                .endpoint
                .peer_info(side.peer)
                .expect("a peer that did not go down still exists");
            let real = self.sides[1 - n].addr;
            assert!(
                info.addr == real || side.genuine_sources.contains(&info.addr),
                "side {n} moved its peer to {} from which only junk came",
                info.addr
            );
        }
    }

    /// After the input: a healthy network for a while, then, on a run that impaired nothing,
    /// both sessions must be up and every Reliable message delivered.
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.flush();
        self.advance(Duration::from_secs(3), true);
        if self.done || self.last_impairment.is_some() {
            return;
        }
        for side in 0..2 {
            let len = 8 + side;
            self.send(side, Mode::Reliable, len);
        }
        self.advance(Duration::from_secs(3), true);
        if self.done || self.last_impairment.is_some() {
            return;
        }
        for (n, side) in self.sides.iter().enumerate() {
            let info = side.endpoint.peer_info(side.peer);
            assert!(
                info.is_some_and(|i| i.established),
                "side {n}'s session is not established after a run that impaired nothing"
            );
            assert_eq!(
                side.reliable_delivered,
                self.reliable_sent[1 - n].len(),
                "side {n} is missing Reliable messages after a run that impaired nothing"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/pair/");
        std::fs::read(format!("{path}{name}")).expect("a committed seed")
    }

    /// The seeds reach what they are named after, so the corpus test checks something.
    #[test]
    fn seeds_reach_rekeys_and_deliveries() {
        for name in ["rekey_short_timers", "rekey_default_timers"] {
            let harness = run(&seed(name)).expect("the handshake completes");
            assert!(!harness.done, "{name}: no close");
            let rekeys: u64 = harness
                .sides
                .iter()
                .map(|s| s.endpoint.stats().rekeys)
                .sum();
            assert!(rekeys >= 2, "{name}: {rekeys} rekeys");
        }
        let harness = run(&seed("clean_traffic")).expect("the handshake completes");
        assert!(harness.last_impairment.is_none() && !harness.done);
        assert!(harness
            .sides
            .iter()
            .all(|s| s.reliable_delivered >= 4 && s.realtime_seen.len() >= 3));
        let harness = run(&seed("dead_network")).expect("the handshake completes");
        assert!(
            harness.done,
            "30 s without delivery end the session, legitimately"
        );
    }
}
