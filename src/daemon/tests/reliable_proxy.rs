//! Reliable delivery across a real impaired path: two nodes on loopback with the
//! `intentra-proxy` process between them (1 ms of delay each way, 1% loss each way), both
//! with default settings. 100,000 messages must arrive in order and exactly once, without
//! a single `reorder_buffer_full` drop (issue 9).
//!
//! The sender runs inside its node's loop: it sends until `WouldBlock` and continues from
//! `on_writable`, so it offers as much as the window admits. The receiver checks order in
//! its `on_message` callback (no cross-thread event queue that could drop). Bounded in
//! time: the test fails, it does not hang, if delivery stalls.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intentra::proto::{DropReason, EndpointConfig, Event, Keypair, Mode, PeerId, SendError};
use intentra::{Node, NodeConfig};

const PROXY: &str = env!("CARGO_BIN_EXE_intentra-proxy");
const COUNT: u64 = 100_000;
const SIZE: usize = 128;
/// Far above what 100,000 messages need at the measured rates; only a stall reaches it.
const LIMIT: Duration = Duration::from_secs(240);

struct ProxyProcess(Child);

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_proxy(upstream: SocketAddr) -> (ProxyProcess, SocketAddr) {
    let mut child = Command::new(PROXY)
        .args(["--listen", "127.0.0.1:0", "--upstream"])
        .arg(upstream.to_string())
        .args(["--delay", "1", "--loss", "0.01", "--seed", "9"])
        .args(["--duration", &LIMIT.as_secs().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn intentra-proxy");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (ProxyProcess(child), addr)
}

fn message(seq: u64) -> [u8; SIZE] {
    let mut out = [0x5a; SIZE];
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out
}

/// Sends from `next` until the window is full or everything is out.
fn pump(ctx: &mut intentra::Context<'_>, peer: PeerId, next: &AtomicU64, errors: &AtomicU64) {
    loop {
        let seq = next.load(Ordering::Relaxed);
        if seq >= COUNT {
            return;
        }
        match ctx.send(peer, Mode::Reliable, &message(seq)) {
            Ok(()) => next.store(seq + 1, Ordering::Relaxed),
            Err(SendError::WouldBlock) => return,
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

#[test]
fn reliable_through_a_lossy_delayed_proxy_arrives_in_order_exactly_once() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let keys = || EndpointConfig::new(Keypair::generate(&mut rand_core::OsRng));
    let mut receiver = Node::bind(NodeConfig::new(loopback, keys())).expect("bind receiver");
    let mut sender = Node::bind(NodeConfig::new(loopback, keys())).expect("bind sender");
    let (proxy, via) = start_proxy(receiver.local_addr());
    let receiver_key = receiver.public_key();

    // The receiver: every Reliable message must be the next one, exactly once.
    let delivered = Arc::new(AtomicU64::new(0));
    let misordered = Arc::new(AtomicU64::new(0));
    let first_wrong = Arc::new(Mutex::new(None));
    {
        let (delivered, misordered, first_wrong) =
            (delivered.clone(), misordered.clone(), first_wrong.clone());
        receiver.on_message(move |_, mode, payload| {
            if mode != Mode::Reliable {
                return;
            }
            let expected = delivered.load(Ordering::Relaxed);
            let got = payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
            if got == Some(expected) && payload == message(expected) {
                delivered.store(expected + 1, Ordering::Relaxed);
            } else {
                misordered.fetch_add(1, Ordering::Relaxed);
                first_wrong
                    .lock()
                    .unwrap()
                    .get_or_insert((expected, got, payload.len()));
            }
        });
    }

    // The sender: as fast as the window admits, from inside its loop.
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    {
        let (next, errors) = (next.clone(), errors.clone());
        sender.on_event(move |ctx, event| {
            if let Event::PeerUp { peer, .. } = event {
                pump(ctx, *peer, &next, &errors);
            }
        });
    }
    {
        let (next, errors) = (next.clone(), errors.clone());
        sender.on_writable(move |ctx, peer| pump(ctx, peer, &next, &errors));
    }
    sender.connect(via, receiver_key).expect("connect");

    let (sender_handle, receiver_handle) = (sender.handle(), receiver.handle());
    let receiver_thread = std::thread::spawn(move || {
        receiver.run().expect("receiver loop");
        receiver
    });
    let sender_thread = std::thread::spawn(move || {
        sender.run().expect("sender loop");
        sender
    });

    let start = Instant::now();
    let mut last = (0, start);
    while delivered.load(Ordering::Relaxed) < COUNT && start.elapsed() < LIMIT {
        std::thread::sleep(Duration::from_millis(50));
        let now = delivered.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20) {
            break; // stalled: report below
        }
    }
    let took = start.elapsed();
    // Let the last ACKs and retransmissions settle, so counters are final.
    std::thread::sleep(Duration::from_millis(200));
    sender_handle.shutdown();
    receiver_handle.shutdown();
    let sender = sender_thread.join().expect("sender thread");
    let receiver = receiver_thread.join().expect("receiver thread");
    drop(proxy);

    let (rx, tx) = (receiver.stats(), sender.stats());
    let got = delivered.load(Ordering::Relaxed);
    eprintln!(
        "{got} of {COUNT} delivered in {took:?} ({:.0} msg/s); sender: {} retransmits, {} would-block; \
         receiver drops: reorder_buffer_full {}, rate_limit {}, replay {}",
        got as f64 / took.as_secs_f64(),
        tx.reliable_retransmits,
        tx.send_would_block,
        rx.dropped(DropReason::ReorderBufferFull),
        rx.dropped(DropReason::RateLimit),
        rx.dropped(DropReason::Replay),
    );
    assert_eq!(
        misordered.load(Ordering::Relaxed),
        0,
        "out of order or duplicated: first (expected, got, len) = {:?}",
        first_wrong.lock().unwrap()
    );
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "sends refused other than WouldBlock"
    );
    assert_eq!(got, COUNT, "not everything arrived within {LIMIT:?}");
    assert_eq!(rx.dropped(DropReason::ReorderBufferFull), 0);
    assert!(
        tx.reliable_retransmits > 0,
        "the proxy really lost packets, so some were retransmitted"
    );
}
