//! Criterion micro-benchmarks of the protocol core's hot and warm paths: header parse, replay
//! window, token bucket, the whole receive path of one 128-byte Realtime packet through
//! `Endpoint::handle_datagram` (from one peer, and from one of 10,000 at random), `Endpoint::send`
//! of 128 bytes, and a whole Noise XX handshake.
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
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const PAYLOAD: usize = 128;
/// Smallest pool of pre-sealed packets: each is opened in place, so each can be received once.
const RING: u64 = 16_384;

/// A config whose token bucket and handshake defences never refuse: the bench feeds far more
/// than any real peer's rate at one instant, and sets up thousands of sessions at once.
fn bench_config(keypair: Keypair) -> EndpointConfig {
    let mut config = EndpointConfig::new(keypair);
    config.rate_pps = u32::MAX;
    config.rate_burst = u32::MAX;
    config.handshake_rate = u32::MAX / 2;
    config.handshake_burst = u32::MAX / 2;
    config.handshake_rate_per_source = u32::MAX / 2;
    config.handshake_burst_per_source = u32::MAX / 2;
    config
}

/// Shuttles packets between `a` (which has called `connect`) and `b` until both are quiet:
/// the XX handshake and its confirmation.
fn establish(
    a: &mut Endpoint,
    a_addr: SocketAddr,
    b: &mut Endpoint,
    b_addr: SocketAddr,
    now: Timestamp,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
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
        a.established_peers().next().is_some(),
        "the in-memory handshake did not complete"
    );
}

/// One receiver with `count` established sessions, each from its own sender endpoint at its
/// own address: the receive path then finds a different peer's state for every packet, as a
/// hub does, instead of one peer's state that never leaves the cache.
struct Crowd {
    receiver: Endpoint,
    senders: Vec<(Endpoint, SocketAddr, PeerId)>,
    now: Timestamp,
}

fn crowd(count: usize, huge_pages: bool) -> Crowd {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let now = Timestamp::from_millis(1);
    let mut config = bench_config(Keypair::generate(&mut rng));
    config.max_peers = count;
    let receiver_key = config.keypair.public;
    let receiver_addr: SocketAddr = "127.0.0.1:2000".parse().expect("literal address");
    let mut receiver = Endpoint::new(config, now, ChaCha20Rng::seed_from_u64(18));
    if huge_pages {
        // What `intentra::Node` does when it binds, before any peer touches the slab.
        let table = receiver.peer_table_memory();
        intentra_udp::advise_huge_pages(table.start, table.len).expect("madvise");
    }
    let senders = (0..count)
        .map(|i| {
            let mut config = bench_config(Keypair::generate(&mut rng));
            // Small tables: the senders only seal, and their footprint would otherwise crowd
            // the receiver's state out of the cache between timed passes.
            config.max_peers = 1;
            config.handshakes_in_flight = 1;
            config.handshake_sources = 1;
            let [_, b, c, d] = (i as u32).to_be_bytes();
            let addr = SocketAddr::from(([10, b, c, d], 40_000));
            let mut sender = Endpoint::new(config, now, ChaCha20Rng::seed_from_u64(i as u64));
            let peer = sender
                .connect(now, receiver_addr, receiver_key)
                .expect("connect");
            establish(&mut sender, addr, &mut receiver, receiver_addr, now);
            (sender, addr, peer)
        })
        .collect();
    assert_eq!(receiver.established_peers().count(), count);
    Crowd {
        receiver,
        senders,
        now,
    }
}

fn header_parse(c: &mut Criterion) {
    let mut crowd = crowd(1, false);
    let (sender, _, peer) = &mut crowd.senders[0];
    let mut packet = vec![0u8; MAX_DATAGRAM_LEN];
    let t = sender
        .send(
            crowd.now,
            *peer,
            Mode::Realtime,
            &[0x42; PAYLOAD],
            &mut packet,
        )
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

    let mut crowd = crowd(1, false);
    let now = crowd.now;
    let (sender, _, peer) = &mut crowd.senders[0];
    let payload = [0x42u8; PAYLOAD];
    let mut out = vec![0u8; MAX_DATAGRAM_LEN];
    group.bench_function("send/realtime_128B", |b| {
        b.iter(|| {
            sender
                .send(now, *peer, Mode::Realtime, black_box(&payload), &mut out)
                .map(|sent| sent.transmit().map(|t| t.len))
        })
    });

    // Smart batching's sealing side, per message: as many 64-byte messages as one datagram
    // holds, pushed and sealed together (what a node does with a full command queue).
    let small = [0x42u8; 64];
    let per_bundle = bundle_capacity(sender, now, *peer, &small, &mut out);
    group.throughput(Throughput::Elements(per_bundle as u64));
    group.bench_function("bundle/realtime_64B_full", |b| {
        b.iter(|| {
            let Ok(mut bundle) = sender.bundle(now, *peer, &mut out) else {
                return 0;
            };
            for _ in 0..per_bundle {
                let _ = bundle.push(Mode::Realtime, black_box(&small));
            }
            bundle.finish().ok().flatten().map_or(0, |t| t.len)
        })
    });

    group.finish();
}

/// How many copies of `message` one bundle takes.
fn bundle_capacity(
    sender: &mut Endpoint,
    now: Timestamp,
    peer: PeerId,
    message: &[u8],
    out: &mut [u8],
) -> usize {
    let Ok(mut bundle) = sender.bundle(now, peer, out) else {
        return 1;
    };
    while let Ok(intentra_proto::Bundled::Added) = bundle.push(Mode::Realtime, message) {}
    bundle.len()
}

/// Packets sealed ahead per active peer. The pool is sealed in one untimed pass and then
/// opened in order across many timed passes, so the senders' own state (10,000 endpoints)
/// does not sweep the receiver's out of the cache before every pass: what is measured is a
/// receiver whose peers' state competes only with its own traffic, as on a real hub.
const SEALED_PER_PEER: usize = 64;

/// Packets sealed by senders picked at random (seeded) among the first `active`, with each
/// packet's source address beside it, opened in order.
struct Pool {
    packets: Vec<u8>,
    sources: Vec<SocketAddr>,
    len: usize,
    opened: usize,
}

impl Pool {
    fn new(crowd: &mut Crowd, active: usize, payload: &[u8]) -> Pool {
        let (sender, _, peer) = &mut crowd.senders[0];
        let mut probe = vec![0u8; MAX_DATAGRAM_LEN];
        let len = sender
            .send(crowd.now, *peer, Mode::Realtime, payload, &mut probe)
            .expect("send")
            .transmit()
            .expect("Realtime goes out at once")
            .len;
        let count = (active * SEALED_PER_PEER).max(RING as usize);
        let mut pool = Pool {
            packets: vec![0u8; count * len],
            sources: vec![crowd.senders[0].1; count],
            len,
            opened: count,
        };
        pool.refill(crowd, active, payload, &mut ChaCha20Rng::seed_from_u64(19));
        pool
    }

    /// Seals a fresh packet into every slot (with rising counters per sender).
    fn refill(&mut self, crowd: &mut Crowd, active: usize, payload: &[u8], pick: &mut ChaCha20Rng) {
        for (slot, source) in self
            .packets
            .chunks_exact_mut(self.len)
            .zip(&mut self.sources)
        {
            let (sender, addr, peer) = &mut crowd.senders[(pick.next_u32() as usize) % active];
            // Sealed in place into the slot: nothing else to send.
            let _ = sender
                .send(crowd.now, *peer, Mode::Realtime, payload, slot)
                .expect("send");
            *source = *addr;
        }
        self.opened = 0;
    }

    fn remaining(&self) -> usize {
        self.sources.len() - self.opened
    }

    /// Opens the next `n` packets (at most `remaining`) and returns how many were delivered,
    /// first hinting the cache as `hint` says, as a receive loop that knows its batch does.
    fn open(&mut self, receiver: &mut Endpoint, now: Timestamp, n: usize, hint: Hint) -> u64 {
        let mut delivered = 0;
        let end = (self.opened + n).min(self.sources.len());
        for at in self.opened..end {
            let (current, later) = self.packets.split_at_mut((at + 1) * self.len);
            // The header of the packet `ahead` after this one (none past the pool's end).
            let header = |ahead: usize| later.get((ahead - 1) * self.len..).unwrap_or_default();
            if let Some(ahead) = hint.index_ahead {
                if let Some(lines) = receiver.index_hint(header(ahead)) {
                    lines.lines().for_each(intentra_udp::prefetch);
                }
            }
            if let Some(ahead) = hint.slot_ahead {
                if let Some(state) = receiver.hot_state(header(ahead)) {
                    state.lines().for_each(intentra_udp::prefetch);
                }
            }
            let slot = &mut current[at * self.len..];
            if !receiver
                .handle_datagram(now, self.sources[at], slot)
                .is_empty()
            {
                delivered += 1;
            }
        }
        self.opened = end;
        delivered
    }
}

/// Which cache hints the receive loop gives before each packet: the index-table lines of the
/// packet `index_ahead` further on (`Endpoint::index_hint`, no table read) and the peer slot
/// of the packet `slot_ahead` further on (`Endpoint::hot_state`, which reads the table).
#[derive(Clone, Copy)]
struct Hint {
    index_ahead: Option<usize>,
    slot_ahead: Option<usize>,
}

impl Hint {
    const NONE: Hint = Hint {
        index_ahead: None,
        slot_ahead: None,
    };

    /// The one-stage hint: the slot of the packet `ahead` on, its table entry read cold.
    fn slot(ahead: usize) -> Hint {
        Hint {
            index_ahead: None,
            slot_ahead: Some(ahead),
        }
    }

    /// The two-stage hint: the table entry `index` packets on, the slot `slot` packets on,
    /// so `hot_state` reads an entry fetched one or more packets earlier.
    fn two_stage(index: usize, slot: usize) -> Hint {
        Hint {
            index_ahead: Some(index),
            slot_ahead: Some(slot),
        }
    }

    /// The bench name's suffix: empty without hints, so earlier results stay comparable.
    fn suffix(self) -> String {
        match (self.index_ahead, self.slot_ahead) {
            (None, None) => String::new(),
            (None, Some(slot)) => format!("_prefetch_{slot}"),
            (Some(index), Some(slot)) => format!("_index_{index}_slot_{slot}"),
            (Some(index), None) => format!("_index_{index}"),
        }
    }
}

/// The receive path of 128-byte Realtime packets, each opened once (timed) from a pool sealed
/// ahead (untimed). With one peer its state stays in cache; with 10,000 peers' state in
/// memory, packets from 100 of them show what the table's size costs, and packets from all
/// of them at random what a hub pays when each packet needs a different peer's state; that
/// last also with the cache hints of a receive loop that sees its batch ahead (`Hint`): the
/// peer slot alone a few packets ahead, and the two-stage table line then slot; and with the
/// receiver's peer slab on huge pages (`_huge_pages`), as `intentra::Node` has it.
fn receive(c: &mut Criterion) {
    let mut group = c.benchmark_group("endpoint");
    group.throughput(Throughput::Elements(1));
    // (peers, slab on huge pages, crowd): the node advises huge pages; the 4 KiB crowd keeps
    // the earlier results comparable and shows what the advice is worth.
    let mut crowds = [
        (1, false, crowd(1, false)),
        (10_000, false, crowd(10_000, false)),
        (10_000, true, crowd(10_000, true)),
    ];
    let payload = [0x42u8; PAYLOAD];
    for (peers, huge_pages, active, hint) in [
        (1, false, 1, Hint::NONE),
        (1, false, 1, Hint::slot(1)),
        (10_000, false, 100, Hint::NONE),
        (10_000, false, 10_000, Hint::NONE),
        (10_000, false, 10_000, Hint::slot(1)),
        (10_000, false, 10_000, Hint::slot(2)),
        (10_000, false, 10_000, Hint::slot(4)),
        (10_000, false, 10_000, Hint::two_stage(2, 1)),
        (10_000, false, 10_000, Hint::two_stage(4, 2)),
        (10_000, true, 10_000, Hint::NONE),
        (10_000, true, 10_000, Hint::two_stage(2, 1)),
    ] {
        let Some(crowd) = crowd_in(crowds.as_mut_slice(), peers, huge_pages) else {
            continue;
        };
        let mut pick = ChaCha20Rng::seed_from_u64(20);
        let mut pool = Pool::new(crowd, active, &payload);
        let mut delivered = 0u64;
        let mut offered = 0u64;
        let suffix = hint.suffix();
        let name = if peers == 1 {
            format!("handle_datagram/realtime_128B{suffix}")
        } else {
            let pages = if huge_pages { "_huge_pages" } else { "" };
            format!("handle_datagram/realtime_128B_{peers}_peers_{active}_active{pages}{suffix}")
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if pool.remaining() == 0 {
                        pool.refill(crowd, active, &payload, &mut pick);
                    }
                    let n = left.min(pool.remaining() as u64) as usize;
                    let start = Instant::now();
                    delivered += pool.open(&mut crowd.receiver, crowd.now, n, hint);
                    total += start.elapsed();
                    offered += n as u64;
                    left -= n as u64;
                }
                total
            })
        });
        // A bench that measured rejections would be worthless: every packet must be delivered.
        assert_eq!(
            delivered, offered,
            "handle_datagram rejected pre-sealed packets"
        );
    }
    fan_out(&mut group, &mut crowds);
    group.finish();
}

/// The crowd of `peers` senders whose receiver's slab is (or is not) on huge pages.
fn crowd_in(
    crowds: &mut [(usize, bool, Crowd)],
    peers: usize,
    huge_pages: bool,
) -> Option<&mut Crowd> {
    crowds
        .iter_mut()
        .find(|(count, huge, _)| *count == peers && *huge == huge_pages)
        .map(|(_, _, crowd)| crowd)
}

/// The sending side of a publish: one 128-byte Realtime message sealed for each established
/// peer in turn, from the endpoint that holds them all (the crowds' receiver), as
/// `Node::publish` walks them. One peer's state stays in cache; 10,000 peers' (slab on huge
/// pages, as the node has it) are each met cold, with and without the next peer's
/// `Endpoint::send_state` prefetched while the current one is sealed.
fn fan_out(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    crowds: &mut [(usize, bool, Crowd)],
) {
    let payload = [0x42u8; PAYLOAD];
    let mut out = vec![0u8; MAX_DATAGRAM_LEN];
    for (peers, prefetch) in [(1, false), (10_000, false), (10_000, true)] {
        let Some(crowd) = crowd_in(crowds, peers, peers > 1) else {
            continue;
        };
        let now = crowd.now;
        let hub = &mut crowd.receiver;
        let (mut tried, mut sent) = (0u64, 0u64);
        let mut next = hub.next_established(None);
        let suffix = if prefetch { "_prefetch_1" } else { "" };
        group.bench_function(
            format!("fan_out/realtime_128B_{peers}_peers{suffix}"),
            |b| {
                b.iter(|| {
                    let peer = next.or_else(|| hub.next_established(None))?;
                    next = hub.next_established(Some(peer));
                    if prefetch {
                        if let Some(state) = next.and_then(|next| hub.send_state(next)) {
                            state.lines().for_each(intentra_udp::prefetch);
                        }
                    }
                    let len = hub
                        .send(now, peer, Mode::Realtime, black_box(&payload), &mut out)
                        .ok()
                        .and_then(|sent| sent.transmit().map(|t| t.len));
                    tried += 1;
                    sent += u64::from(len.is_some());
                    len
                })
            },
        );
        // Sealing that failed would measure nothing: every send must produce a packet.
        assert_eq!(sent, tried, "a send sealed no packet");
        while hub.poll_transmit(now, &mut out).is_some() {}
    }
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
    targets = header_parse, replay_window, token_bucket, endpoint, receive, handshake
}
criterion_main!(benches);
