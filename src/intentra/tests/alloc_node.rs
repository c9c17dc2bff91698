//! The whole stack — runtime, driver and protocol core — receives and sends 100,000 steady-state
//! packets per driver without a heap allocation, over real loopback sockets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::Mode;
use intentra::udp::DriverKind;
use intentra::{Node, NodeConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod common;
use common::establish;

#[path = "../../udp/tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

/// The allocation counter is process-wide: the tests of this file take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn node(kind: DriverKind, seed: u64) -> Node {
    let mut config = EndpointConfig::new(Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed)));
    config.rate_pps = 10_000_000;
    config.rate_burst = 10_000_000;
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    node_config.driver = kind;
    Node::bind(node_config).unwrap()
}

/// Sends `count` copies of `payload` from a to b in waves, cycling through `modes`, turning
/// both loops, and returns how much `delivered` grew meanwhile.
fn traffic(
    a: &mut Node,
    b: &mut Node,
    peer: intentra::proto::PeerId,
    (count, modes, payload): (u32, &[Mode], &[u8]),
    delivered: &Arc<Mutex<u64>>,
) -> u64 {
    let start = *delivered.lock().unwrap();
    let mut sent = 0;
    while sent < count {
        for _ in 0..32 {
            let mode = modes[sent as usize % modes.len()];
            if a.send(peer, mode, payload).is_ok() {
                sent += 1;
            }
        }
        for _ in 0..4 {
            b.turn(Duration::ZERO).unwrap();
            a.turn(Duration::ZERO).unwrap();
        }
    }
    for _ in 0..200 {
        b.turn(Duration::from_micros(100)).unwrap();
        a.turn(Duration::ZERO).unwrap();
    }
    *delivered.lock().unwrap() - start
}

/// Half Realtime, half Reliable.
const BOTH: &[Mode] = &[Mode::Realtime, Mode::Reliable];

fn steady_state_allocations(kind: DriverKind) -> (u64, u64) {
    let mut a = node(kind, 1);
    let mut b = node(kind, 2);
    let delivered = Arc::new(Mutex::new(0u64));
    let counter = delivered.clone();
    b.on_message(move |_, _, _| {
        if let Ok(mut n) = counter.lock() {
            *n += 1;
        }
    });
    let peer = establish(&mut a, &mut b);
    for _ in 0..50 {
        b.turn(Duration::from_millis(1)).unwrap();
        a.turn(Duration::ZERO).unwrap();
    }
    traffic(
        &mut a,
        &mut b,
        peer,
        (20_000, BOTH, &[0x42; 128]),
        &delivered,
    );
    let before = allocations();
    let got = traffic(
        &mut a,
        &mut b,
        peer,
        (100_000, BOTH, &[0x42; 128]),
        &delivered,
    );
    (allocations() - before, got)
}

#[test]
fn the_whole_stack_allocates_nothing_per_packet_on_mmsg_and_uring() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut kinds = vec![DriverKind::Mmsg];
    if intentra::udp::best_available() == DriverKind::Uring {
        kinds.push(DriverKind::Uring);
    }
    for kind in kinds {
        let (allocations, delivered) = steady_state_allocations(kind);
        assert!(
            delivered >= 95_000,
            "{kind:?}: only {delivered} of 100000 delivered"
        );
        assert_eq!(
            allocations, 0,
            "{kind:?}: {allocations} allocations over 100,000 packets"
        );
    }
}

/// A producer thread sending through a `Handle` while the node runs allocates nothing per
/// message either: the copy into the command queue, the wake-up, the batch swap, the send.
#[test]
fn a_producer_thread_sending_through_a_handle_allocates_nothing_per_message() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut a = node(DriverKind::Mmsg, 11);
    let mut b = node(DriverKind::Mmsg, 12);
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = delivered.clone();
    b.on_message(move |_, _, _| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let mut events = b.events();
    let peer = establish(&mut a, &mut b);
    let handle = a.handle();
    let (a_stop, b_stop) = (a.shutdown_handle(), b.shutdown_handle());
    let a_thread = std::thread::spawn(move || a.run_for(Duration::from_secs(120)).unwrap());
    let b_thread = std::thread::spawn(move || b.run_for(Duration::from_secs(120)).unwrap());
    // The producer paces itself on deliveries (at most 512 unaccounted for) and a reader
    // thread drains b's event queue with `recv_timeout`.
    let wave = |count: u64| {
        let start = delivered.load(Ordering::Relaxed);
        let payload = [0x42u8; 128];
        let mut sent = 0u64;
        let mut spins = 0u64;
        while sent < count {
            if sent > delivered.load(Ordering::Relaxed) - start + 512 {
                spins += 1;
                if spins > 20_000_000 {
                    break;
                }
                std::thread::yield_now();
                continue;
            }
            let mode = if sent % 2 == 0 {
                Mode::Realtime
            } else {
                Mode::Reliable
            };
            if handle.send(peer, mode, &payload).is_ok() {
                sent += 1;
            }
        }
        sent
    };
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        while let Ok(_) | Err(intentra::RecvError::BufferTooSmall { .. }) =
            events.recv_timeout(&mut buf, Duration::from_secs(2))
        {
            n += 1;
        }
        n
    });
    // Reliable storage grows to the widest window the stream reaches (a burst of drops
    // in the receiver's socket opens a gap hundreds of segments wide) and is kept, so a
    // steady state is reached once every ring and arena has grown: each growth doubles
    // towards a fixed cap, so there are a few dozen at most, in a few waves at most.
    wave(20_000);
    let mut per_wave = Vec::new();
    let (sent, allocated) = loop {
        let before = allocations();
        let sent = wave(100_000);
        let allocated = allocations() - before;
        per_wave.push(allocated);
        if allocated == 0 || sent < 100_000 || per_wave.len() == 12 {
            break (sent, allocated);
        }
    };
    a_stop.shutdown();
    handle.shutdown();
    b_stop.shutdown();
    a_thread.join().unwrap();
    b_thread.join().unwrap();
    let read = reader.join().unwrap();
    assert_eq!(sent, 100_000);
    assert!(read > 0);
    assert_eq!(
        allocated, 0,
        "allocations per wave of 100,000 messages through a Handle: {per_wave:?}"
    );
}

/// A callback that sends from inside the loop (as a hub relays) goes through the outbox that
/// bundles a batch's sends per peer: holding, grouping and sealing them allocate nothing.
#[test]
fn a_callback_sending_through_the_outbox_allocates_nothing_per_message() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = node(DriverKind::Mmsg, 5);
    let mut b = node(DriverKind::Mmsg, 6);
    // b echoes every Realtime message to its sender from its callback; a counts the echoes.
    b.on_event(|ctx, event| {
        if let intentra::proto::Event::Message(m) = event {
            if m.mode == Mode::Realtime {
                let _ = ctx.send(m.peer, Mode::Realtime, m.payload);
            }
        }
    });
    let echoes = Arc::new(Mutex::new(0u64));
    let counter = echoes.clone();
    a.on_message(move |_, _, _| {
        if let Ok(mut n) = counter.lock() {
            *n += 1;
        }
    });
    let peer = establish(&mut a, &mut b);
    let payload = [0x24u8; 64];
    let mut round = |count: u32| {
        traffic(
            &mut a,
            &mut b,
            peer,
            (count, &[Mode::Realtime], &payload),
            &echoes,
        )
    };
    round(20_000);
    let before = allocations();
    let echoed = round(100_000);
    let allocated = allocations() - before;
    assert!(echoed >= 95_000, "only {echoed} of 100000 echoed");
    assert_eq!(allocated, 0, "{allocated} allocations over 100,000 echoes");
    assert!(
        b.stats().packets_sent < 100_000,
        "the echoes were not bundled: {} datagrams",
        b.stats().packets_sent
    );
}
