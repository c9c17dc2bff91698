//! A counting global allocator proves the protocol core's per-packet path allocates nothing
//! in steady state: sealing, opening, replay checks, Reliable queues, ACKs and keepalives.

use std::net::SocketAddr;
use std::time::Duration;

use intentra_proto::wire::MAX_DATAGRAM_LEN;
use intentra_proto::Endpoint;
use intentra_proto::EndpointConfig;
use intentra_proto::Keypair;
use intentra_proto::Timestamp;
use intentra_proto::{Bundled, Event, Mode, PeerId};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[path = "../../udp/tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations_on_this_thread as allocations;

/// Each test counts its own thread's allocations (the harness prints other tests' results
/// meanwhile), and the tests still take turns, so neither's setup overlaps the other's
/// measured loop.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Pair {
    a: Endpoint,
    b: Endpoint,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    now: Timestamp,
    buf: Vec<u8>,
    delivered: u64,
}

impl Pair {
    /// Two endpoints with a session between them (rate limits out of the way), their RNGs
    /// seeded from `seed`; returns a's handle for b.
    fn established(seed: u64) -> (Pair, PeerId) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut config_a = EndpointConfig::new(Keypair::generate(&mut rng));
        let mut config_b = EndpointConfig::new(Keypair::generate(&mut rng));
        for c in [&mut config_a, &mut config_b] {
            c.rate_pps = 10_000_000;
            c.rate_burst = 10_000_000;
        }
        let key_b = config_b.keypair.public;
        let now = Timestamp::from_millis(1);
        let mut pair = Pair {
            a: Endpoint::new(config_a, now, ChaCha20Rng::seed_from_u64(seed + 1)),
            b: Endpoint::new(config_b, now, ChaCha20Rng::seed_from_u64(seed + 2)),
            a_addr: "127.0.0.1:1000".parse().unwrap(),
            b_addr: "127.0.0.1:2000".parse().unwrap(),
            now,
            buf: vec![0u8; MAX_DATAGRAM_LEN],
            delivered: 0,
        };
        let peer = pair.a.connect(now, pair.b_addr, key_b).unwrap();
        pair.settle();
        while pair.a.poll_event().is_some() {}
        while pair.b.poll_event().is_some() {}
        (pair, peer)
    }

    /// Delivers everything each side wants to send, until both are quiet.
    fn settle(&mut self) {
        for _ in 0..16 {
            let mut moved = false;
            for from_a in [true, false] {
                loop {
                    let (src, dst) = if from_a {
                        (&mut self.a, &mut self.b)
                    } else {
                        (&mut self.b, &mut self.a)
                    };
                    let src_addr = if from_a { self.a_addr } else { self.b_addr };
                    let Some(t) = src.poll_transmit(self.now, &mut self.buf) else {
                        break;
                    };
                    moved = true;
                    for _ in dst.handle_datagram(self.now, src_addr, &mut self.buf[..t.len]) {
                        self.delivered += 1;
                    }
                    while let Some(event) = dst.poll_event() {
                        if matches!(event, Event::Message(_)) {
                            self.delivered += 1;
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn send(&mut self, mode: Mode, peer: PeerId, payload: &[u8]) {
        let t = self
            .a
            .send(self.now, peer, mode, payload, &mut self.buf)
            .unwrap()
            .transmit()
            .expect("the window is open");
        for _ in self
            .b
            .handle_datagram(self.now, self.a_addr, &mut self.buf[..t.len])
        {
            self.delivered += 1;
        }
        self.settle();
    }

    /// Sends `count` messages of each mode, interleaved, as bundles (as many as fit each).
    fn send_bundled(&mut self, peer: PeerId, payload: &[u8], count: usize) {
        let mut queued = (0..count)
            .flat_map(|_| [Mode::Realtime, Mode::Reliable])
            .peekable();
        while queued.peek().is_some() {
            let mut bundle = self.a.bundle(self.now, peer, &mut self.buf).unwrap();
            while let Some(&mode) = queued.peek() {
                match bundle.push(mode, payload).unwrap() {
                    Bundled::Added => {
                        queued.next();
                    }
                    Bundled::Full => break,
                    Bundled::Queued => panic!("the window is open"),
                }
            }
            let t = bundle.finish().unwrap().expect("a bundle to send");
            for _ in self
                .b
                .handle_datagram(self.now, self.a_addr, &mut self.buf[..t.len])
            {
                self.delivered += 1;
            }
            self.settle();
        }
    }

    fn tick(&mut self, step: Duration) {
        self.now += step;
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.settle();
    }
}

#[test]
fn the_steady_state_packet_path_allocates_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut pair, peer) = Pair::established(1);
    let payload = [0x42u8; 128];
    // Warm up: every queue reaches its working size, every timer has fired once.
    for i in 0..2_000u32 {
        pair.send(Mode::Realtime, peer, &payload);
        pair.send(Mode::Reliable, peer, &payload);
        if i % 100 == 0 {
            pair.tick(Duration::from_millis(5));
        }
    }
    let before = allocations();
    let delivered_before = pair.delivered;
    for i in 0..50_000u32 {
        pair.send(Mode::Realtime, peer, &payload);
        pair.send(Mode::Reliable, peer, &payload);
        if i % 100 == 0 {
            pair.tick(Duration::from_millis(5));
        }
    }
    let allocations = allocations() - before;
    assert_eq!(pair.delivered - delivered_before, 100_000);
    assert_eq!(
        allocations, 0,
        "the per-packet path allocated {allocations} times"
    );
}

#[test]
fn bundling_allocates_nothing_in_steady_state() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut pair, peer) = Pair::established(11);
    let payload = [0x24u8; 64];
    for i in 0..500u32 {
        pair.send_bundled(peer, &payload, 8);
        if i % 50 == 0 {
            pair.tick(Duration::from_millis(5));
        }
    }
    let before = allocations();
    let delivered_before = pair.delivered;
    for i in 0..10_000u32 {
        pair.send_bundled(peer, &payload, 8);
        if i % 50 == 0 {
            pair.tick(Duration::from_millis(5));
        }
    }
    let allocations = allocations() - before;
    assert_eq!(pair.delivered - delivered_before, 160_000);
    assert_eq!(
        allocations, 0,
        "the bundling path allocated {allocations} times"
    );
}
