//! Sends a callback makes while a receive batch is handed out are held in the node's deferred
//! queue (`NodeConfig::send_queue`) until the batch ends. A batch of many messages whose
//! callbacks each send several datagrams asks for far more than that queue holds: the node
//! must pause the batch, send what is held, and go on with the datagrams already read,
//! losing none of them and refusing no send. Checked on every driver this host runs, over
//! 127.0.0.1 only; every loop is bounded in count and time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intentra::proto::{EndpointConfig, Event, Keypair, Mode};
use intentra::udp::DriverKind;
use intentra::{Node, NodeConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The relay's deferred queue: far less than one batch of messages asks for.
const SEND_QUEUE: usize = 16;
/// Datagrams the relay sends back for every message it receives (less than `SEND_QUEUE`).
const PER_MESSAGE: usize = 10;
/// Messages sent to the relay before it runs, so they come in as full receive batches.
const MESSAGES: usize = 64;

fn node(seed: u64, driver: DriverKind, send_queue: usize) -> Node {
    let config = EndpointConfig::new(Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed)));
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    node_config.driver = driver;
    node_config.send_queue = send_queue;
    // Room for every datagram of the test in the socket, so only the node could lose one.
    node_config.socket.recv_buffer = Some(4 << 20);
    node_config.socket.send_buffer = Some(4 << 20);
    Node::bind(node_config).unwrap()
}

fn drivers() -> Vec<DriverKind> {
    let mut kinds = vec![DriverKind::Basic, DriverKind::Mmsg];
    if intentra::udp::probe_uring().is_ok() {
        kinds.push(DriverKind::Uring);
    }
    kinds
}

#[test]
fn a_receive_batch_never_asks_more_sends_than_the_deferred_queue_holds() {
    for (i, kind) in drivers().into_iter().enumerate() {
        let seed = 40 + 2 * i as u64;
        let mut relay = node(seed, kind, SEND_QUEUE);
        assert_eq!(relay.driver_name(), kind.name());
        let mut source = node(seed + 1, DriverKind::Mmsg, 256);

        let sent_ok = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let (ok, bad) = (sent_ok.clone(), refused.clone());
        relay.on_event(move |ctx, event| {
            if let Event::Message(m) = event {
                for k in 0..PER_MESSAGE {
                    let mut reply = [0u8; 64];
                    reply[..m.payload.len().min(8)]
                        .copy_from_slice(&m.payload[..m.payload.len().min(8)]);
                    reply[63] = k as u8;
                    match ctx.send(m.peer, Mode::Realtime, &reply) {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        });
        let received = Arc::new(AtomicUsize::new(0));
        let got = received.clone();
        source.on_message(move |_, _, _| {
            got.fetch_add(1, Ordering::Relaxed);
        });

        let peer = source
            .connect(relay.local_addr(), relay.public_key())
            .unwrap();
        for _ in 0..1000 {
            if source.peer_info(peer).is_some_and(|p| p.established) && !relay.peers().is_empty() {
                break;
            }
            relay.turn(Duration::from_millis(2)).unwrap();
            source.turn(Duration::from_millis(2)).unwrap();
        }
        assert!(source.peer_info(peer).is_some_and(|p| p.established));
        assert_eq!(
            relay.peers().len(),
            1,
            "{kind}: relay never saw the peer up"
        );

        // Every message waits in the relay's socket before the relay runs again.
        for n in 0..MESSAGES as u64 {
            source.send(peer, Mode::Realtime, &n.to_le_bytes()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));

        let want = MESSAGES * PER_MESSAGE;
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..20_000 {
            if received.load(Ordering::Relaxed) >= want || Instant::now() > deadline {
                break;
            }
            relay.turn(Duration::from_millis(1)).unwrap();
            source.turn(Duration::from_millis(1)).unwrap();
        }
        assert_eq!(refused.load(Ordering::Relaxed), 0, "{kind}: sends refused");
        assert_eq!(sent_ok.load(Ordering::Relaxed), want, "{kind}");
        assert_eq!(relay.stats().packets_send_dropped, 0, "{kind}");
        assert_eq!(
            received.load(Ordering::Relaxed),
            want,
            "{kind}: replies lost"
        );
    }
}
