//! The loopback demo in its smallest form: two nodes in one thread, a Noise XX handshake,
//! one message in each mode, and what the receiver saw.
//!
//! `cargo run -p intentra --example loopback`. (`intentra demo` is the full version, with
//! rates, echoes, backpressure and every loss explained.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intentra::{EndpointConfig, Keypair, Mode, Node, NodeConfig, OsRng};

fn node() -> std::io::Result<Node> {
    let keys = Keypair::generate(&mut OsRng);
    Node::bind(NodeConfig::new(
        "127.0.0.1:0".parse().expect("a literal address"),
        EndpointConfig::new(keys),
    ))
}

/// Turns both loops until `done` holds or five seconds pass.
fn turn_until(a: &mut Node, b: &mut Node, mut done: impl FnMut(&Node, &Node) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done(a, b) {
            return true;
        }
        for node in [&mut *a, &mut *b] {
            if let Err(err) = node.turn(Duration::from_millis(1)) {
                eprintln!("loop failed: {err}");
                return false;
            }
        }
    }
    done(a, b)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut server = node()?;
    let mut client = node()?;
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    server.on_message(move |peer, mode, bytes| {
        let text = String::from_utf8_lossy(bytes).into_owned();
        println!("server: {} message from {peer}: {text:?}", mode.label());
        log.lock().expect("not poisoned").push(text);
    });

    let peer = client.connect(server.local_addr(), server.public_key())?;
    if !turn_until(&mut client, &mut server, |c, _| {
        c.peer_info(peer).is_some_and(|p| p.established)
    }) {
        return Err("the handshake did not complete".into());
    }
    println!("client: session with {} established", server.local_addr());

    client.send(peer, Mode::Realtime, b"state update")?;
    client.send(peer, Mode::Reliable, b"order placed")?;
    let arrived = turn_until(&mut client, &mut server, |_, _| {
        received.lock().expect("not poisoned").len() == 2
    });
    client.close_all(intentra::CloseReason::Local);
    let _ = client.turn(Duration::ZERO);
    if !arrived {
        return Err("not every message arrived".into());
    }
    Ok(())
}
