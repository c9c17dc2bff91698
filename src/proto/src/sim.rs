//! An in-memory network of endpoints on a virtual clock, with seeded loss, duplication,
//! reordering and latency.
//!
//! Owns nothing but simulated links: it drives real `Endpoint`s through their public
//! inputs and outputs, so every scenario test exercises the same code a driver does.
//! It must never read a clock or touch a socket; all randomness comes from its seed.

use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::config::EndpointConfig;
use super::endpoint::{Bundled, Endpoint};
use super::event::{Event, Mode, PeerId, SendError, Sent};
use super::keys::{Keypair, PublicKey};
use super::stats::CloseReason;
use super::time::Timestamp;
use super::wire::MAX_DATAGRAM_LEN;

/// How the simulated network treats every datagram.
#[derive(Debug, Clone, Copy)]
pub struct LinkConfig {
    /// Probability in parts per million that a datagram is lost.
    pub loss_ppm: u32,
    /// Probability in parts per million that a datagram arrives twice.
    pub duplicate_ppm: u32,
    /// Probability that a datagram gets an extra delay of up to `reorder_delay`.
    pub reorder_ppm: u32,
    /// Upper bound of the extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// One-way delay of every datagram.
    pub latency: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            loss_ppm: 0,
            duplicate_ppm: 0,
            reorder_ppm: 0,
            reorder_delay: Duration::from_millis(3),
            latency: Duration::from_micros(500),
        }
    }
}

/// An event, owned, as a test records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A session came up.
    Up(PeerId, PublicKey),
    /// A session went down, with this side's reason.
    Down(PeerId, PublicKey, CloseReason),
    /// A message was delivered.
    Message(PeerId, Mode, Vec<u8>),
    /// Reliable messages were abandoned when a session ended or was replaced.
    Abandoned(PeerId, u64),
}

/// One endpoint on the simulated network, with what it reported.
pub struct SimNode {
    /// The endpoint under test.
    pub endpoint: Endpoint,
    /// Its address on the simulated network.
    pub addr: SocketAddr,
    /// Its events and deliveries, in order.
    pub records: Vec<Record>,
}

impl SimNode {
    /// The payloads delivered in `mode`, in order.
    pub fn messages(&self, mode: Mode) -> impl Iterator<Item = &[u8]> + '_ {
        self.records.iter().filter_map(move |r| match r {
            Record::Message(_, m, bytes) if *m == mode => Some(bytes.as_slice()),
            _ => None,
        })
    }

    /// How many sessions came up.
    pub fn ups(&self) -> usize {
        self.records
            .iter()
            .filter(|r| matches!(r, Record::Up(..)))
            .count()
    }

    /// The reasons of every session that went down, in order.
    pub fn downs(&self) -> Vec<CloseReason> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::Down(_, _, reason) => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

#[derive(PartialEq, Eq)]
struct InFlight {
    at: Timestamp,
    order: u64,
    src: SocketAddr,
    dst: SocketAddr,
    bytes: Vec<u8>,
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // A min-heap on (time, order of sending).
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A simulated network of endpoints.
pub struct Network {
    /// The virtual clock.
    pub now: Timestamp,
    /// The endpoints, by node number.
    pub nodes: Vec<SimNode>,
    /// How the links treat datagrams.
    pub link: LinkConfig,
    in_flight: BinaryHeap<InFlight>,
    rng: ChaCha20Rng,
    order: u64,
    /// Every datagram put on the wire, for tests that replay or tamper with captured traffic.
    pub capture: Option<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>,
    /// Datagrams the link dropped.
    pub lost: u64,
    /// Datagrams for which this returns true are dropped (selective black holes).
    pub blackhole: Option<fn(&[u8]) -> bool>,
}

impl Network {
    /// An empty network whose randomness all comes from `seed`.
    pub fn new(seed: u64) -> Network {
        Network {
            now: Timestamp::from_millis(1_000),
            nodes: Vec::new(),
            link: LinkConfig::default(),
            in_flight: BinaryHeap::new(),
            rng: ChaCha20Rng::seed_from_u64(seed),
            order: 0,
            capture: None,
            lost: 0,
            blackhole: None,
        }
    }

    /// Two connected nodes: 0 (the initiator) and 1, each configured by `tweak`, with their
    /// handles for each other, once both saw the session come up.
    pub fn connected_pair(
        seed: u64,
        tweak: impl Fn(&mut EndpointConfig),
    ) -> (Network, PeerId, PeerId) {
        let mut net = Network::new(seed);
        let mut first = EndpointConfig::new(net.keypair());
        let mut second = EndpointConfig::new(net.keypair());
        tweak(&mut first);
        tweak(&mut second);
        let (a, b) = (net.add(first), net.add(second));
        let pa = net.connect(a, b);
        net.run_until(10_000, |n| n.nodes[a].ups() == 1 && n.nodes[b].ups() == 1);
        net.run_for(Duration::from_millis(20), 1_000);
        let pb = net
            .peer_of(b, a)
            .expect("node 1 knows node 0 once the session is up");
        (net, pa, pb)
    }

    /// A fresh key pair drawn from the network's seed.
    pub fn keypair(&mut self) -> Keypair {
        Keypair::generate(&mut self.rng)
    }

    /// Adds an endpoint at 127.0.0.(n+1):7000 with its own seeded RNG; returns its node number.
    pub fn add(&mut self, config: EndpointConfig) -> usize {
        let n = self.nodes.len();
        let addr = SocketAddr::from((
            Ipv4Addr::new(127, 0, (n / 250) as u8, (n % 250) as u8 + 1),
            7000,
        ));
        let rng = ChaCha20Rng::seed_from_u64(self.rng.next_u64());
        self.nodes.push(SimNode {
            endpoint: Endpoint::new(config, self.now, rng),
            addr,
            records: Vec::new(),
        });
        n
    }

    /// A node with default configuration and a fresh key.
    pub fn add_default(&mut self) -> usize {
        let keys = self.keypair();
        self.add(EndpointConfig::new(keys))
    }

    /// The static public key of `node`.
    pub fn public_key(&self, node: usize) -> PublicKey {
        self.nodes[node].endpoint.public_key()
    }

    /// `from` connects to `to`.
    pub fn connect(&mut self, from: usize, to: usize) -> PeerId {
        let (addr, key) = (self.nodes[to].addr, self.public_key(to));
        let now = self.now;
        let id = self.nodes[from]
            .endpoint
            .connect(now, addr, key)
            .expect("connect");
        self.drain(from);
        id
    }

    /// The handle `node` uses for the peer `other`, if it has one.
    pub fn peer_of(&self, node: usize, other: usize) -> Option<PeerId> {
        self.nodes[node]
            .endpoint
            .peer_by_key(&self.public_key(other))
    }

    /// `node` sends `payload` to `peer` and the datagram enters the link.
    pub fn send(
        &mut self,
        node: usize,
        peer: PeerId,
        mode: Mode,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let now = self.now;
        let sent = self.nodes[node]
            .endpoint
            .send(now, peer, mode, payload, &mut buf)?;
        if let Sent::Now(transmit) = sent {
            let src = self.nodes[node].addr;
            self.put_on_wire(src, transmit.dst, &buf[..transmit.len]);
        }
        self.drain(node);
        Ok(())
    }

    /// `node` sends `messages` to `peer` as bundles (PROTOCOL.md 7.5), as a smart-batching
    /// sender would: as many as fit in each datagram, in order; returns the datagrams sent.
    /// Stops at the first refusal, after sending what was bundled before it.
    pub fn send_bundle(
        &mut self,
        node: usize,
        peer: PeerId,
        messages: &[(Mode, &[u8])],
    ) -> Result<usize, SendError> {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let now = self.now;
        let src = self.nodes[node].addr;
        let mut datagrams = 0;
        let mut next = 0;
        let mut refused = None;
        while next < messages.len() && refused.is_none() {
            let mut bundle = self.nodes[node].endpoint.bundle(now, peer, &mut buf)?;
            while let Some(&(mode, payload)) = messages.get(next) {
                match bundle.push(mode, payload) {
                    Ok(Bundled::Full) => break,
                    Ok(Bundled::Added | Bundled::Queued) => next += 1,
                    Err(error) => {
                        refused = Some(error);
                        break;
                    }
                }
            }
            if let Some(transmit) = bundle.finish()? {
                datagrams += 1;
                self.put_on_wire(src, transmit.dst, &buf[..transmit.len]);
            }
        }
        self.drain(node);
        match refused {
            Some(error) => Err(error),
            None => Ok(datagrams),
        }
    }

    /// Hands `bytes` to `node` as if they came from `src`, right now, bypassing the link.
    pub fn inject(&mut self, node: usize, src: SocketAddr, bytes: &[u8]) {
        let mut copy = bytes.to_vec();
        let now = self.now;
        let message = self.nodes[node]
            .endpoint
            .handle_datagram(now, src, &mut copy)
            .map(|m| Record::Message(m.peer, m.mode, m.payload.to_vec()));
        self.nodes[node].records.extend(message);
        self.drain(node);
    }

    /// Advances to the next datagram arrival or timer and processes it. False when idle.
    pub fn step(&mut self) -> bool {
        let next_packet = self.in_flight.peek().map(|p| p.at);
        let next_timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.endpoint.poll_timeout().map(|t| (t, i)))
            .min();
        match (next_packet, next_timer) {
            (Some(at), timer) if timer.is_none_or(|(t, _)| at <= t) => {
                let Some(packet) = self.in_flight.pop() else {
                    return false;
                };
                self.now = self.now.max(packet.at);
                self.deliver(packet);
                true
            }
            (_, Some((at, node))) => {
                self.now = self.now.max(at);
                let now = self.now;
                self.nodes[node].endpoint.handle_timeout(now);
                self.drain(node);
                true
            }
            _ => false,
        }
    }

    /// Steps until `until` (virtual time) or `max_steps`, whichever first.
    pub fn run_for(&mut self, duration: Duration, max_steps: usize) {
        let until = self.now + duration;
        for _ in 0..max_steps {
            let next_packet = self.in_flight.peek().map(|p| p.at);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.endpoint.poll_timeout())
                .min();
            let next = match (next_packet, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Steps until `done` holds; panics after `max_steps` so a stuck scenario fails loudly.
    pub fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&Network) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            if !self.step() {
                break;
            }
        }
        assert!(
            done(self),
            "scenario did not finish within {max_steps} steps"
        );
    }

    /// Whether no datagram is in flight.
    pub fn idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    fn deliver(&mut self, packet: InFlight) {
        let Some(node) = self.nodes.iter().position(|n| n.addr == packet.dst) else {
            return;
        };
        let mut bytes = packet.bytes;
        let now = self.now;
        let message = self.nodes[node]
            .endpoint
            .handle_datagram(now, packet.src, &mut bytes)
            .map(|m| Record::Message(m.peer, m.mode, m.payload.to_vec()));
        self.nodes[node].records.extend(message);
        self.drain(node);
    }

    /// Collects events and transmits after an input, as a driver must.
    pub fn drain(&mut self, node: usize) {
        loop {
            let record = match self.nodes[node].endpoint.poll_event() {
                Some(Event::PeerUp {
                    peer, public_key, ..
                }) => Record::Up(peer, public_key),
                Some(Event::PeerDown {
                    peer,
                    public_key,
                    reason,
                    ..
                }) => Record::Down(peer, public_key, reason),
                Some(Event::Message(m)) => Record::Message(m.peer, m.mode, m.payload.to_vec()),
                Some(Event::ReliableAbandoned { peer, messages, .. }) => {
                    Record::Abandoned(peer, messages)
                }
                None => break,
            };
            self.nodes[node].records.push(record);
        }
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let src = self.nodes[node].addr;
        let now = self.now;
        while let Some(transmit) = self.nodes[node].endpoint.poll_transmit(now, &mut buf) {
            self.put_on_wire(src, transmit.dst, &buf[..transmit.len]);
        }
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.rng.next_u32() % 1_000_000 < ppm
    }

    fn put_on_wire(&mut self, src: SocketAddr, dst: SocketAddr, bytes: &[u8]) {
        if let Some(capture) = self.capture.as_mut() {
            capture.push((src, dst, bytes.to_vec()));
        }
        if self.chance(self.link.loss_ppm) || self.blackhole.is_some_and(|drop| drop(bytes)) {
            self.lost += 1;
            return;
        }
        let copies = if self.chance(self.link.duplicate_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = self.now + self.link.latency;
            if self.chance(self.link.reorder_ppm) {
                let extra = self.link.reorder_delay.as_nanos() as u64;
                at += Duration::from_nanos(self.rng.next_u64() % extra.max(1));
            }
            self.order += 1;
            self.in_flight.push(InFlight {
                at,
                order: self.order,
                src,
                dst,
                bytes: bytes.to_vec(),
            });
        }
    }
}
