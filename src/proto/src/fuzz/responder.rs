//! A fresh endpoint, as a responder, fed arbitrary datagrams from arbitrary sources while
//! time advances: junk, genuine HandshakeInits (with and without cookies, retransmitted and
//! replaced), genuine HandshakeFinishes from an outsider, and mutations and replays of all
//! of these and of what the endpoint sent.
//!
//! It asserts what holds without any key: nothing authenticates (no `PeerUp`, no message),
//! handshakes in flight stay within the configured budget, no answer to a datagram is larger
//! than the datagram, and the counters agree with what the harness fed and polled.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::{source_addr, Input};
use crate::config::EndpointConfig;
use crate::cookie::CookieReplyKey;
use crate::endpoint::Endpoint;
use crate::event::Event;
use crate::keys::{Keypair, PublicKey};
use crate::noise::{FinishIntent, Initiator};
use crate::stats::Stats;
use crate::time::Timestamp;
use crate::wire::{self, PacketType, SessionIndex, COOKIE_LEN, MAX_DATAGRAM_LEN};

/// Handshakes the harness runs at once as the outsider.
const INITIATORS: usize = 4;
/// Timer calls one time step may make; a step past this is cut short.
const MAX_TIMER_CALLS: usize = 1_000;

/// One of the outsider's handshakes.
struct Attempt {
    initiator: Option<Initiator>,
    index: SessionIndex,
    src: SocketAddr,
    cookie: Option<[u8; COOKIE_LEN]>,
    /// The HandshakeResponse and responder index the endpoint answered with.
    response: Option<(Vec<u8>, SessionIndex)>,
}

struct Harness {
    endpoint: Endpoint,
    now: Timestamp,
    public: PublicKey,
    outsider: Keypair,
    /// Whether genuine HandshakeFinishes may be sent: only when the allow-list refuses the
    /// outsider, so that nothing can legitimately come up.
    finishes: bool,
    attempts: [Option<Attempt>; INITIATORS],
    seeds: u64,
    budget: u64,
    fed: u64,
    fed_bytes: u64,
    polled: u64,
    polled_bytes: u64,
    cookie_replies: u64,
    /// The last datagrams fed and sent, for mutation and replay.
    last_fed: Vec<u8>,
    last_sent: Vec<u8>,
}

/// Feeds a fresh responder the datagrams and time steps `data` describes.
pub fn fuzz_responder(data: &[u8]) {
    let mut input = Input::new(data);
    let mut harness = Harness::new(&mut input);
    while !input.is_empty() {
        match input.byte() % 10 {
            0 | 1 => {
                let src = source_addr(&mut input);
                let type_byte = input.byte();
                let len = usize::from(input.u16()) % (MAX_DATAGRAM_LEN + 2);
                let fill = input.bytes(len);
                let mut datagram = vec![0u8; len];
                for (at, byte) in datagram.iter_mut().enumerate() {
                    *byte = fill.get(at).copied().unwrap_or(0);
                }
                // Mostly a valid prefix, so that the type handlers see the junk.
                if type_byte & 0x80 == 0 && len >= 4 {
                    let ty = PacketType::from_byte(type_byte % 9 + 1)
                        .unwrap_or(PacketType::HandshakeInit);
                    wire::write_prefix(&mut datagram, ty);
                }
                harness.feed(src, &mut datagram);
            }
            2 | 3 => {
                let slot = usize::from(input.byte()) % INITIATORS;
                let src = source_addr(&mut input);
                let fresh = input.byte();
                harness.init(slot, src, fresh);
            }
            4 => {
                let slot = usize::from(input.byte()) % INITIATORS;
                harness.finish(slot);
            }
            5 => {
                let src = source_addr(&mut input);
                let at = usize::from(input.u16());
                let xor = input.byte().max(1);
                let from_sent = input.byte() & 1 == 0;
                let mut datagram = if from_sent {
                    harness.last_sent.clone()
                } else {
                    harness.last_fed.clone()
                };
                if !datagram.is_empty() {
                    let len = datagram.len();
                    datagram[at % len] ^= xor;
                }
                harness.feed(src, &mut datagram);
            }
            6 => {
                let src = source_addr(&mut input);
                let cut = usize::from(input.byte());
                let mut datagram = harness.last_fed.clone();
                datagram.truncate(datagram.len().saturating_sub(cut % 4));
                harness.feed(src, &mut datagram);
            }
            7 => {
                // A burst of genuine inits from one prefix: the budgets' and the cookie's path.
                let count = 1 + usize::from(input.byte() % 32);
                let base = source_addr(&mut input);
                for n in 0..count {
                    let src = SocketAddr::new(base.ip(), base.port().wrapping_add(n as u16));
                    let seed = harness.next_seed();
                    let Some(index) = SessionIndex::new(0x1000 + n as u32) else {
                        continue;
                    };
                    if let Ok(mut initiator) =
                        Initiator::start(&harness.outsider, &harness.public, index, seed)
                    {
                        let mut datagram = initiator.init_packet(None).to_vec();
                        harness.feed(src, &mut datagram);
                    }
                }
            }
            _ => {
                let millis = u64::from(input.u16()) * u64::from(input.byte() % 4 + 1);
                harness.advance(Duration::from_millis(millis));
            }
        }
    }
    harness.advance(Duration::from_secs(60));
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Harness {
        let flags = input.byte();
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(input.byte()));
        let keypair = Keypair::generate(&mut rng);
        let outsider = Keypair::generate(&mut rng);
        let stranger = Keypair::generate(&mut rng);
        let public = keypair.public;
        let mut config = EndpointConfig::new(keypair);
        config.handshakes_in_flight = 1 + usize::from(input.byte() % 16);
        config.handshakes_per_ip = 1 + usize::from(input.byte()) % config.handshakes_in_flight;
        // Small handshake rates, so that cookies are demanded and proven inits displace
        // unproven ones within a few packets (the daemon's validation allows any of these).
        let rates = input.byte();
        config.handshake_rate = 1 + u32::from(rates % 16);
        config.handshake_burst = 1 + u32::from(rates >> 4);
        let per_source = input.byte();
        config.handshake_rate_per_source = 1 + u32::from(per_source % 8);
        config.handshake_burst_per_source = 1 + u32::from(per_source >> 5);
        config.handshake_sources = 4 + usize::from(per_source >> 4 & 7);
        config.always_cookie = flags & 1 != 0;
        config.max_peers = 1 + usize::from(input.byte() % 8);
        config.handshake_timeout = Duration::from_millis(100 + 100 * u64::from(input.byte() % 100));
        let finishes = flags & 2 == 0;
        config.allow_list = finishes.then(|| HashSet::from([stranger.public]));
        let now = Timestamp::from_millis(1_000);
        let endpoint = Endpoint::new(config, now, ChaCha20Rng::seed_from_u64(7));
        Harness {
            endpoint,
            now,
            public,
            outsider,
            finishes,
            attempts: [(); INITIATORS].map(|()| None),
            seeds: 0,
            budget: 0,
            fed: 0,
            fed_bytes: 0,
            polled: 0,
            polled_bytes: 0,
            cookie_replies: 0,
            last_fed: Vec::new(),
            last_sent: Vec::new(),
        }
        .with_budget()
    }

    fn with_budget(mut self) -> Harness {
        self.budget = self.endpoint.config().handshakes_in_flight as u64;
        self
    }

    fn next_seed(&mut self) -> [u8; 32] {
        self.seeds += 1;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seeds.to_le_bytes());
        seed
    }

    /// Sends (or resends) attempt `slot`'s HandshakeInit from `src`; a new attempt, or a
    /// fresh ephemeral under the same index, when `fresh` says so.
    fn init(&mut self, slot: usize, src: SocketAddr, fresh: u8) {
        let restart = fresh & 3 == 0;
        let keep_src = fresh & 4 != 0;
        let needs_new = self.attempts[slot]
            .as_ref()
            .is_none_or(|a| a.initiator.is_none() || restart);
        if needs_new {
            let seed = self.next_seed();
            let old = self.attempts[slot].take();
            let index =
                old.as_ref()
                    .map(|a| a.index)
                    .filter(|_| fresh & 8 != 0)
                    .or(SessionIndex::new(
                        (u32::from(fresh) << 8) | (slot as u32 + 1),
                    ));
            let Some(index) = index else {
                return;
            };
            let src = old.as_ref().filter(|_| keep_src).map_or(src, |a| a.src);
            let cookie = old.and_then(|a| a.cookie);
            let Ok(initiator) = Initiator::start(&self.outsider, &self.public, index, seed) else {
                return;
            };
            self.attempts[slot] = Some(Attempt {
                initiator: Some(initiator),
                index,
                src,
                cookie,
                response: None,
            });
        }
        let Some(attempt) = self.attempts[slot].as_mut() else {
            return;
        };
        let Some(initiator) = attempt.initiator.as_mut() else {
            return;
        };
        let src = attempt.src;
        let mut datagram = initiator.init_packet(attempt.cookie.as_ref()).to_vec();
        self.feed(src, &mut datagram);
    }

    /// Completes attempt `slot` with a genuine HandshakeFinish: authenticated, but from a key
    /// the allow-list refuses.
    fn finish(&mut self, slot: usize) {
        if !self.finishes {
            return;
        }
        let Some(attempt) = self.attempts[slot].as_mut() else {
            return;
        };
        let Some((response, responder_index)) = attempt.response.take() else {
            return;
        };
        let Some(initiator) = attempt.initiator.take() else {
            return;
        };
        let src = attempt.src;
        if let Ok((packet, _keys, _window)) = initiator.finish(
            &response,
            responder_index,
            FinishIntent::NewSession,
            1 << 16,
        ) {
            let mut datagram = packet.to_vec();
            self.feed(src, &mut datagram);
        }
    }

    fn feed(&mut self, src: SocketAddr, datagram: &mut [u8]) {
        self.last_fed = datagram.to_vec();
        self.fed += 1;
        self.fed_bytes += datagram.len() as u64;
        let len = datagram.len();
        // The receive loop's cache hints see every datagram first: never a panic.
        let _ = self.endpoint.index_hint(datagram);
        let _ = self.endpoint.hot_state(datagram);
        let message = self
            .endpoint
            .handle_datagram(self.now, src, datagram)
            .next()
            .is_some();
        assert!(!message, "a datagram without any key delivered a message");
        self.drain(Some(len));
    }

    /// Runs the timers up to `now + by`, one deadline at a time.
    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        for _ in 0..MAX_TIMER_CALLS {
            match self.endpoint.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.endpoint.handle_timeout(self.now);
                    self.drain(None);
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
        self.endpoint.handle_timeout(self.now);
        self.drain(None);
    }

    /// Drains events and transmits after an input; `cause` is the length of the datagram
    /// that caused them, if one did.
    fn drain(&mut self, cause: Option<usize>) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::PeerUp { public_key, .. } => {
                    panic!("a session came up without any allowed key: {public_key:?}")
                }
                Event::Message(m) => panic!("a message was delivered without any key: {m:?}"),
                _ => {}
            }
        }
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let mut answers = 0usize;
        while let Some(transmit) = self.endpoint.poll_transmit(self.now, &mut buf) {
            assert!(transmit.len <= MAX_DATAGRAM_LEN);
            self.polled += 1;
            self.polled_bytes += transmit.len as u64;
            let packet = &buf[..transmit.len];
            self.last_sent = packet.to_vec();
            let header =
                wire::parse_header(packet).expect("the endpoint sends well-formed packets");
            match header {
                wire::Header::CookieReply { receiver } => {
                    self.cookie_replies += 1;
                    answers += 1;
                    let cause = cause.expect("a cookie reply answers a datagram");
                    assert!(
                        transmit.len <= cause,
                        "a {}-byte cookie reply answers a {cause}-byte datagram",
                        transmit.len
                    );
                    self.on_cookie_reply(transmit.dst, receiver, packet);
                }
                wire::Header::HandshakeResponse { sender, receiver } => {
                    answers += 1;
                    if let Some(cause) = cause {
                        assert!(
                            transmit.len <= cause,
                            "a {}-byte response answers a {cause}-byte datagram",
                            transmit.len
                        );
                    }
                    for attempt in self.attempts.iter_mut().flatten() {
                        if attempt.src == transmit.dst && attempt.index == receiver {
                            attempt.response = Some((packet.to_vec(), sender));
                        }
                    }
                }
                _ => {}
            }
        }
        if cause.is_some() {
            assert!(answers <= 1, "one datagram drew {answers} answers");
        }
        self.check_stats();
    }

    fn on_cookie_reply(&mut self, dst: SocketAddr, receiver: SessionIndex, packet: &[u8]) {
        let key = CookieReplyKey::new(&self.public);
        for attempt in self.attempts.iter_mut().flatten() {
            if attempt.src != dst || attempt.index != receiver {
                continue;
            }
            if let Some(initiator) = attempt.initiator.as_ref() {
                if let Some(cookie) = key.open_cookie_reply(packet, &initiator.mac1()) {
                    attempt.cookie = Some(cookie);
                }
            }
        }
    }

    fn check_stats(&self) {
        let stats: Stats = self.endpoint.stats();
        assert!(
            stats.handshakes_in_flight <= self.budget,
            "{} handshakes in flight over a budget of {}",
            stats.handshakes_in_flight,
            self.budget
        );
        assert_eq!(stats.packets_received, self.fed);
        assert_eq!(stats.bytes_received, self.fed_bytes);
        assert_eq!(stats.packets_sent, self.polled);
        assert_eq!(stats.bytes_sent, self.polled_bytes);
        assert_eq!(stats.cookie_replies_sent, self.cookie_replies);
        assert!(stats.dropped_total() <= stats.packets_received);
        assert_eq!(stats.messages_delivered, 0);
        assert_eq!(stats.bytes_delivered, 0);
        assert_eq!(stats.sessions_active, 0);
        assert_eq!(
            stats.handshakes_completed, 0,
            "a handshake completed without an allowed key"
        );
        assert_eq!(stats.handshakes_initiated, 0);
        assert_eq!(stats.rekeys, 0);
        assert_eq!(stats.aead_seals, 0, "nothing is sealed without a session");
        assert_eq!(stats.reorder_buffer_bytes + stats.retransmit_queue_bytes, 0);
        assert_eq!(self.endpoint.established_peers().count(), 0);
    }
}
