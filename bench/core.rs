//! Criterion micro-benchmarks of the protocol core's hot and warm paths: header parse, replay
//! window, token bucket, the whole receive path of one 128-byte Realtime packet through
//! `Endpoint::handle_datagram`, `Endpoint::send` of 128 bytes, and a whole Noise XX handshake.
//!
//! Owns measurement only, in memory, with no sockets and no clock inside the core (times are
//! made-up `Timestamp`s). It must never duplicate the AEAD seal/open benches (bench/aead.rs).
//! Short settings (0.5 s warm-up, 2 s measurement, 30 samples) keep the run near a minute.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use intentra_proto::internals::ReplayWindow;
use intentra_proto::internals::TokenBucket;
use intentra_proto::internals::{FinishIntent, Initiator, Responder};
use intentra_proto::wire::{self, Counter, SessionIndex, MAX_DATAGRAM_LEN};
use intentra_proto::Endpoint;
use intentra_proto::EndpointConfig;
use intentra_proto::Keypair;
use intentra_proto::Timestamp;
use intentra_proto::{Mode, PeerId};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const PAYLOAD: usize = 128;
/// Pre-sealed packets per refill: each is opened in place, so each can be received once.
const RING: u64 = 16_384;

/// Two endpoints in memory with an established session from `a` to `b`.
struct Pair {
    a: Endpoint,
    b: Endpoint,
    a_addr: SocketAddr,
    peer: PeerId,
    now: Timestamp,
}

fn pair() -> Pair {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut config_a = EndpointConfig::new(Keypair::generate(&mut rng));
    let mut config_b = EndpointConfig::new(Keypair::generate(&mut rng));
    for c in [&mut config_a, &mut config_b] {
        // The bench feeds far more than any real peer's rate at one instant.
        c.rate_pps = u32::MAX;
        c.rate_burst = u32::MAX;
    }
    let key_b = config_b.keypair.public;
    let now = Timestamp::from_millis(1);
    let a_addr: SocketAddr = "127.0.0.1:1000".parse().expect("literal address");
    let b_addr: SocketAddr = "127.0.0.1:2000".parse().expect("literal address");
    let mut a = Endpoint::new(config_a, now, ChaCha20Rng::seed_from_u64(8));
    let mut b = Endpoint::new(config_b, now, ChaCha20Rng::seed_from_u64(9));
    let peer = a.connect(now, b_addr, key_b).expect("connect");
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    // Shuttle control packets until both sides are quiet: the XX handshake and its confirmation.
    for _ in 0..16 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            moved = true;
            b.handle_datagram(now, a_addr, &mut buf[..t.len]);
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            moved = true;
            a.handle_datagram(now, b_addr, &mut buf[..t.len]);
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
    assert!(
        a.established_peers().next().is_some() && b.established_peers().next().is_some(),
        "the in-memory handshake did not complete"
    );
    Pair {
        a,
        b,
        a_addr,
        peer,
        now,
    }
}

fn header_parse(c: &mut Criterion) {
    let mut p = pair();
    let mut packet = vec![0u8; MAX_DATAGRAM_LEN];
    let t =
        p.a.send(p.now, p.peer, Mode::Realtime, &[0x42; PAYLOAD], &mut packet)
            .expect("send")
            .transmit()
            .expect("Realtime goes out at once");
    packet.truncate(t.len);
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_header/realtime_128B", |b| {
        b.iter(|| wire::parse_header(black_box(&packet)))
    });
    group.finish();
}

fn replay_window(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(1));
    group.bench_function("check_and_mark/in_order", |b| {
        let mut window = ReplayWindow::new();
        let mut counter = 0u64;
        b.iter(|| {
            counter += 1;
            let c = Counter(black_box(counter));
            window.check(c).and_then(|()| window.mark(c))
        })
    });
    group.bench_function("check_and_mark/reordered_within_window", |b| {
        let mut window = ReplayWindow::new();
        let mut counter = 0u64;
        b.iter(|| {
            counter += 1;
            // Pairs swapped (2, 1, 4, 3, ...): every other counter is below the highest.
            let c = Counter(black_box(counter ^ 1));
            window.check(c).and_then(|()| window.mark(c))
        })
    });
    group.finish();
}

fn token_bucket(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("try_take", |b| {
        let mut now = Timestamp::from_millis(1);
        let mut bucket = TokenBucket::new(1_000_000, 1_000, now);
        b.iter(|| {
            now += Duration::from_nanos(900);
            bucket.try_take(black_box(now))
        })
    });
    group.finish();
}

fn endpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("endpoint");
    group.throughput(Throughput::Elements(1));

    let mut p = pair();
    let payload = [0x42u8; PAYLOAD];
    let mut out = vec![0u8; MAX_DATAGRAM_LEN];
    group.bench_function("send/realtime_128B", |b| {
        b.iter(|| {
            p.a.send(p.now, p.peer, Mode::Realtime, black_box(&payload), &mut out)
                .map(|sent| sent.transmit().map(|t| t.len))
        })
    });

    // Receive: packets are sealed (untimed) with rising counters, then opened once each (timed).
    let mut p = pair();
    let sealed_len =
        p.a.send(p.now, p.peer, Mode::Realtime, &payload, &mut out)
            .expect("send")
            .transmit()
            .expect("Realtime goes out at once")
            .len;
    let mut ring = vec![0u8; RING as usize * sealed_len];
    let mut delivered = 0u64;
    let mut offered = 0u64;
    group.bench_function("handle_datagram/realtime_128B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(RING) as usize;
                for slot in ring.chunks_exact_mut(sealed_len).take(n) {
                    // Sealed in place into the ring slot: nothing else to send.
                    let _ =
                        p.a.send(p.now, p.peer, Mode::Realtime, &payload, slot)
                            .expect("send");
                }
                let start = Instant::now();
                for slot in ring.chunks_exact_mut(sealed_len).take(n) {
                    if !p.b.handle_datagram(p.now, p.a_addr, slot).is_empty() {
                        delivered += 1;
                    }
                }
                total += start.elapsed();
                offered += n as u64;
                left -= n as u64;
            }
            total
        })
    });
    // A bench that measured rejections would be worthless: every packet must have been delivered.
    assert_eq!(
        delivered, offered,
        "handle_datagram rejected pre-sealed packets"
    );
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let initiator_keys = Keypair::generate(&mut rng);
    let responder_keys = Keypair::generate(&mut rng);
    let i_index = SessionIndex::new(0x0001_0001).expect("non-zero");
    let r_index = SessionIndex::new(0x0002_0002).expect("non-zero");
    let mut seed = 0u64;
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("noise_xx/full", |b| {
        b.iter_batched(
            || {
                seed += 1;
                let mut a = [0u8; 32];
                let mut r = [0u8; 32];
                a[..8].copy_from_slice(&seed.to_le_bytes());
                r[..8].copy_from_slice(&(!seed).to_le_bytes());
                (a, r)
            },
            |(seed_i, seed_r)| {
                let mut initiator =
                    Initiator::start(&initiator_keys, &responder_keys.public, i_index, seed_i)
                        .expect("start");
                let init = *initiator.init_packet(None);
                let window = intentra_proto::DEFAULT_QUEUE_BYTES;
                let responder =
                    Responder::accept(&responder_keys, &init, i_index, r_index, seed_r, window)
                        .expect("accept");
                let response = *responder.response_packet();
                let (finish, _keys, _) = initiator
                    .finish(&response, r_index, FinishIntent::NewSession, window)
                    .expect("finish");
                let (remote, _, _, _) = responder.finish(&finish).expect("responder finish");
                assert_eq!(remote, initiator_keys.public);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = header_parse, replay_window, token_bucket, endpoint, handshake
}
criterion_main!(benches);
