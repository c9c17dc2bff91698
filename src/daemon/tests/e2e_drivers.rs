//! The same end-to-end exchange over every I/O driver: three clients reach one server through
//! the impairment proxy (10% loss each way); every Reliable message is echoed back in order
//! exactly once, and the server's Realtime fan-out reaches every client.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::{Event, Mode, SendError};
use intentra::udp::DriverKind;
use intentra::{Node, NodeConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const CLIENTS: usize = 3;

/// What one client received: Reliable sequence numbers in order, and a Realtime count.
type Received = Arc<Mutex<(Vec<u32>, u32)>>;
const MESSAGES: u32 = 200;

fn node(kind: DriverKind, seed: u64) -> Node {
    let keys = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed));
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), EndpointConfig::new(keys));
    config.driver = kind;
    Node::bind(config).unwrap()
}

fn exchange_over(kind: DriverKind) {
    let mut server = node(kind, 1);
    server.on_event(|ctx, event| {
        if let Event::Message(m) = event {
            if m.mode == Mode::Reliable {
                // Clients keep at most 32 messages unechoed, so the echo never finds the
                // server's Reliable queue full.
                ctx.send(m.peer, Mode::Reliable, m.payload).unwrap();
            }
        }
    });
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_intentra-proxy"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &server.local_addr().to_string(),
        ])
        .args(["--loss", "0.1", "--seed", "7", "--duration", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(proxy.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let proxy_addr: SocketAddr = line
        .trim()
        .trim_start_matches("listening ")
        .parse()
        .unwrap();

    let mut clients = Vec::new();
    let mut received = Vec::new();
    for i in 0..CLIENTS {
        let mut client = node(kind, 10 + i as u64);
        let got: Received = Arc::new(Mutex::new((Vec::new(), 0)));
        let sink = got.clone();
        client.on_message(move |_, mode, payload| {
            let mut got = sink.lock().unwrap();
            match mode {
                Mode::Reliable => got
                    .0
                    .push(u32::from_le_bytes(payload[..4].try_into().unwrap())),
                Mode::Realtime => got.1 += 1,
            }
        });
        let peer = client.connect(proxy_addr, server.public_key()).unwrap();
        clients.push((client, peer, 0u32));
        received.push(got);
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut published = 0u32;
    let done = |received: &[Received]| {
        received
            .iter()
            .all(|r| r.lock().unwrap().0.len() == MESSAGES as usize)
    };
    while !done(&received) {
        assert!(
            Instant::now() < deadline,
            "{kind:?}: exchange did not finish"
        );
        for ((client, peer, sent), got) in clients.iter_mut().zip(&received) {
            let up = client.peer_info(*peer).is_some_and(|p| p.established);
            let echoed = got.lock().unwrap().0.len() as u32;
            if up && *sent < MESSAGES && *sent < echoed + 32 {
                match client.send(*peer, Mode::Reliable, &sent.to_le_bytes()) {
                    Ok(()) => *sent += 1,
                    Err(SendError::WouldBlock) => {}
                    Err(err) => panic!("{kind:?}: {err}"),
                }
            }
            client.turn(Duration::ZERO).unwrap();
        }
        if server.peers().len() == CLIENTS && published < 100 {
            published += 1;
            server.publish(Mode::Realtime, b"fan-out");
        }
        server.turn(Duration::from_micros(200)).unwrap();
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
    for (i, got) in received.iter().enumerate() {
        let got = got.lock().unwrap();
        assert_eq!(
            got.0,
            (0..MESSAGES).collect::<Vec<_>>(),
            "{kind:?} client {i}: in order, exactly once"
        );
        assert!(
            got.1 > 50,
            "{kind:?} client {i}: {} of {published} realtime updates through 10% loss",
            got.1
        );
    }
    assert_eq!(server.driver_name(), kind.name());
    assert!(
        server.stats().reliable_retransmits > 0
            || clients.iter().any(|c| c.0.stats().reliable_retransmits > 0)
    );
}

#[test]
fn reliable_and_fan_out_through_loss_over_mmsg() {
    exchange_over(DriverKind::Mmsg);
}

#[test]
fn reliable_and_fan_out_through_loss_over_uring() {
    if intentra::udp::best_available() != DriverKind::Uring {
        eprintln!("skipped: io_uring is not available on this host");
        return;
    }
    exchange_over(DriverKind::Uring);
}

#[test]
fn reliable_and_fan_out_through_loss_over_basic() {
    exchange_over(DriverKind::Basic);
}
