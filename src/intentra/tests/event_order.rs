//! A peer's PeerUp reaches the application before any message from it, even when the
//! message arrives in the same receive batch as the handshake's last packet (the
//! initiator may send as soon as it sent that packet). Both the callback and the
//! `Events` queue are checked. Every loop is bounded in count and time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use intentra::proto::{EndpointConfig, Event, Keypair, Mode};
use intentra::udp::DriverKind;
use intentra::{Node, NodeConfig, NodeEvent};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn node(seed: u64) -> Node {
    let config = EndpointConfig::new(Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed)));
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    // A batching driver: the handshake's last packet and the first messages are taken in
    // one receive batch.
    node_config.driver = DriverKind::Mmsg;
    Node::bind(node_config).unwrap()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Up,
    Message(Mode, Vec<u8>),
    Down,
}

#[test]
fn peer_up_comes_before_a_message_in_the_same_batch_as_the_last_handshake_packet() {
    let mut a = node(11);
    let mut b = node(12);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    b.on_event(move |_, event| {
        let entry = match event {
            Event::PeerUp { .. } => Seen::Up,
            Event::PeerDown { .. } => Seen::Down,
            Event::Message(m) => Seen::Message(m.mode, m.payload.to_vec()),
            _ => return,
        };
        log.lock().unwrap().push(entry);
    });
    let mut events = b.events();

    let peer = a.connect(b.local_addr(), b.public_key()).unwrap();
    // b answers the init, then does not run again until a's last handshake packet and its
    // messages are all waiting in b's socket.
    for _ in 0..500 {
        if b.stats().packets_received > 0 {
            break;
        }
        b.turn(Duration::from_millis(10)).unwrap();
    }
    assert!(b.stats().packets_received > 0, "b never saw the init");
    for _ in 0..500 {
        if a.peer_info(peer).is_some_and(|p| p.established) {
            break;
        }
        a.turn(Duration::from_millis(10)).unwrap();
    }
    assert!(a.peer_info(peer).is_some_and(|p| p.established));
    a.send(peer, Mode::Realtime, b"first").unwrap();
    a.send(peer, Mode::Reliable, b"second").unwrap();
    std::thread::sleep(Duration::from_millis(50));

    for _ in 0..100 {
        if seen.lock().unwrap().len() >= 3 {
            break;
        }
        b.turn(Duration::from_millis(10)).unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            Seen::Up,
            Seen::Message(Mode::Realtime, b"first".to_vec()),
            Seen::Message(Mode::Reliable, b"second".to_vec()),
        ],
        "callback order"
    );

    let mut buf = [0u8; 2048];
    let mut queued = Vec::new();
    while let Ok(event) = events.try_recv(&mut buf) {
        queued.push(match event {
            NodeEvent::PeerUp { .. } => Seen::Up,
            NodeEvent::PeerDown { .. } => Seen::Down,
            NodeEvent::Message { mode, len, .. } => Seen::Message(mode, buf[..len].to_vec()),
            _ => continue,
        });
    }
    assert_eq!(queued, seen, "Events order");
}
