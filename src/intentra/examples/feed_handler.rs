//! A feed handler thread publishes market-data updates through a `Handle` while the node's
//! loop runs on its own thread; on the receiving node, a consumer thread reads them with
//! `Events::recv_timeout`, without writing any loop code. Runs on loopback and exits by
//! itself (about two seconds):
//!
//! ```text
//! cargo run -p intentra --example feed_handler
//! ```

use std::time::{Duration, Instant};

use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::Mode;
use intentra::{Node, NodeConfig};
use intentra::{NodeEvent, RecvError};

const UPDATES: u64 = 2_000;
const RATE_HZ: u64 = 1_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let loopback = "127.0.0.1:0".parse()?;
    let mut feed = Node::bind(NodeConfig::new(
        loopback,
        EndpointConfig::new(Keypair::generate(&mut rand_core::OsRng)),
    ))?;
    let mut subscriber = Node::bind(NodeConfig::new(
        loopback,
        EndpointConfig::new(Keypair::generate(&mut rand_core::OsRng)),
    ))?;
    let (sub_addr, sub_key) = (subscriber.local_addr(), subscriber.public_key());
    let feed_handle = feed.handle();
    let mut feed_events = feed.events();
    let sub_handle = subscriber.handle();
    let mut sub_events = subscriber.events();

    // Each node's loop on its own thread; `run` returns after `Handle::shutdown`.
    let feed_loop = std::thread::spawn(move || feed.run());
    let sub_loop = std::thread::spawn(move || subscriber.run());

    // The feed handler: connect, wait for the session, publish at RATE_HZ, then one
    // Reliable end-of-feed message that waits for room if the window is full.
    let handle = feed_handle.clone();
    let feed_thread = std::thread::spawn(move || -> Result<(u64, u64), String> {
        handle
            .connect(sub_addr, sub_key)
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let peer = loop {
            match feed_events.recv_timeout(&mut buf, Duration::from_secs(5)) {
                Ok(NodeEvent::PeerUp { peer, .. }) => break peer,
                Ok(_) => continue,
                Err(err) => return Err(format!("no session: {err}")),
            }
        };
        let start = Instant::now();
        let (mut queued, mut refused) = (0u64, 0u64);
        for seq in 0..UPDATES {
            let due = start + Duration::from_micros(seq * 1_000_000 / RATE_HZ);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut update = [0u8; 64];
            update[..8].copy_from_slice(&seq.to_le_bytes());
            match handle.publish(Mode::Realtime, &update) {
                Ok(()) => queued += 1,
                Err(_) => refused += 1,
            }
        }
        handle
            .send_timeout(peer, Mode::Reliable, b"end", Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        Ok((queued, refused))
    });

    // The consumer: every event of the subscriber, copied into its own buffer.
    let consumer = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let (mut updates, mut last_seq) = (0u64, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match sub_events.recv_timeout(&mut buf, Duration::from_millis(500)) {
                Ok(NodeEvent::Message {
                    mode: Mode::Realtime,
                    len,
                    ..
                }) if len >= 8 => {
                    updates += 1;
                    last_seq = buf[..8].try_into().ok().map(u64::from_le_bytes);
                }
                Ok(NodeEvent::Message {
                    mode: Mode::Reliable,
                    ..
                }) => break,
                Ok(NodeEvent::PeerUp { addr, .. }) => {
                    println!("subscriber: session up with {addr}")
                }
                Ok(_) | Err(RecvError::Timeout) => {}
                Err(err) => {
                    eprintln!("subscriber: {err}");
                    break;
                }
            }
        }
        (updates, last_seq, sub_events.drops())
    });

    let fed = feed_thread.join().map_err(|_| "feed thread panicked")?;
    let (updates, last_seq, drops) = consumer.join().map_err(|_| "consumer panicked")?;
    let stats = feed_handle.stats();
    feed_handle.shutdown();
    sub_handle.shutdown();
    feed_loop.join().map_err(|_| "feed loop panicked")??;
    sub_loop.join().map_err(|_| "subscriber loop panicked")??;
    let (queued, refused) = fed?;
    println!(
        "feed: {queued} updates queued ({refused} refused by a full queue), {} sent in {} loop batches",
        stats.sent, stats.batches
    );
    println!(
        "subscriber: {updates} of {UPDATES} updates read (last seq {last_seq:?}), {} dropped by a full event queue",
        drops.total()
    );
    Ok(())
}
