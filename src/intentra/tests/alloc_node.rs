//! The whole stack — runtime, driver and protocol core — receives and sends 100,000 steady-state
//! packets per driver without a heap allocation, over real loopback sockets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use intentra::node::{Node, NodeConfig};
use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::Mode;
use intentra::udp::DriverKind;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[path = "../../udp/tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

fn node(kind: DriverKind, seed: u64) -> Node {
    let mut config = EndpointConfig::new(Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed)));
    config.rate_pps = 10_000_000;
    config.rate_burst = 10_000_000;
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    node_config.driver = kind;
    Node::bind(node_config).unwrap()
}

/// Sends `count` messages (half Realtime, half Reliable) from a to b in waves, turning both
/// loops, and returns how many b delivered.
fn traffic(
    a: &mut Node,
    b: &mut Node,
    peer: intentra::proto::PeerId,
    count: u32,
    delivered: &Arc<Mutex<u64>>,
) -> u64 {
    let start = *delivered.lock().unwrap();
    let payload = [0x42u8; 128];
    let mut sent = 0;
    while sent < count {
        for _ in 0..32 {
            let mode = if sent % 2 == 0 {
                Mode::Realtime
            } else {
                Mode::Reliable
            };
            if a.send(peer, mode, &payload).is_ok() {
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
    let peer = a.connect(b.local_addr(), b.public_key()).unwrap();
    for _ in 0..5_000 {
        if a.peer_info(peer).is_some_and(|p| p.established) && !b.peers().is_empty() {
            break;
        }
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
    }
    assert!(
        a.peer_info(peer).is_some_and(|p| p.established),
        "{kind:?}: no session"
    );
    for _ in 0..50 {
        b.turn(Duration::from_millis(1)).unwrap();
        a.turn(Duration::ZERO).unwrap();
    }
    traffic(&mut a, &mut b, peer, 20_000, &delivered);
    let before = allocations();
    let got = traffic(&mut a, &mut b, peer, 100_000, &delivered);
    (allocations() - before, got)
}

#[test]
fn the_whole_stack_allocates_nothing_per_packet_on_mmsg_and_uring() {
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
