//! `intentra connect`: one peer, test traffic at a set rate or lines from stdin.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{ConnectArgs, DeliveryMode};
use crate::config::Config;
use intentra::node::Node;
use intentra::proto::Keypair;
use intentra::proto::{Event, Mode};

use crate::daemon::{endpoint_config, node_config, runtime_error, DaemonError};

/// Connects to one peer and sends test traffic at a set rate, or lines from stdin.
pub fn connect(config: Config, args: &ConnectArgs) -> Result<(), DaemonError> {
    let keypair = match config.node.key_file {
        Some(_) => config.load_identity()?.keypair,
        None => Keypair::generate(&mut rand_core::OsRng),
    };
    let bind: SocketAddr = if args.peer.is_ipv4() {
        "127.0.0.1:0".parse().map_err(runtime_error)?
    } else {
        "[::1]:0".parse().map_err(runtime_error)?
    };
    let endpoint = endpoint_config(&config, keypair, None);
    let mut node = Node::bind(node_config(&config, bind, endpoint)).map_err(runtime_error)?;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let down = Arc::new(std::sync::Mutex::new(None));
    let (counter, down_reason) = (received.clone(), down.clone());
    node.on_event(move |_, event| match event {
        Event::Message(_) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Event::PeerDown {
            reason,
            peer_reason,
            ..
        } => {
            if let Ok(mut slot) = down_reason.lock() {
                *slot = Some(peer_reason.unwrap_or(*reason));
            }
        }
        Event::PeerUp { .. } => {}
        _ => {}
    });
    let peer_gone = |down: &std::sync::Mutex<Option<intentra::proto::CloseReason>>| {
        down.lock().ok().and_then(|d| *d)
    };
    let peer = node
        .connect(args.peer, args.peer_key)
        .map_err(|e| DaemonError::Runtime(format!("connect {}: {e}", args.peer)))?;
    let up = node
        .run_until(Duration::from_secs(10), |n| {
            n.peer_info(peer).is_some_and(|p| p.established)
        })
        .map_err(runtime_error)?;
    if !up {
        return Err(DaemonError::Runtime(format!(
            "handshake with {} timed out",
            args.peer
        )));
    }
    eprintln!("connected to {} ({})", args.peer, args.peer_key.short());
    let mode = match args.mode {
        DeliveryMode::Realtime => Mode::Realtime,
        DeliveryMode::Reliable => Mode::Reliable,
    };
    let mut sent = 0u64;
    let mut blocked = 0u64;
    if args.rate == 0 {
        // Lines from stdin, one message each.
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.map_err(runtime_error)?;
            loop {
                match node.send(peer, mode, line.as_bytes()) {
                    Ok(()) => break,
                    Err(intentra::proto::SendError::WouldBlock) => {
                        node.turn(Duration::from_millis(1)).map_err(runtime_error)?;
                    }
                    Err(err) => return Err(runtime_error(err)),
                }
            }
            sent += 1;
            node.turn(Duration::ZERO).map_err(runtime_error)?;
        }
    } else {
        let payload = vec![0x5a; usize::from(args.size)];
        let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate));
        let count = args.count.unwrap_or(u64::MAX);
        let start = Instant::now();
        while sent < count {
            if let Some(reason) = peer_gone(&down) {
                println!("peer closed: {} sent={sent}", reason.label());
                return Ok(());
            }
            let due = start + interval.mul_f64(sent as f64);
            let now = Instant::now();
            if now < due {
                node.turn(due - now).map_err(runtime_error)?;
                continue;
            }
            match node.send(peer, mode, &payload) {
                Ok(()) => sent += 1,
                Err(intentra::proto::SendError::WouldBlock) => {
                    blocked += 1;
                    node.turn(Duration::from_millis(1)).map_err(runtime_error)?;
                }
                Err(err) => return Err(runtime_error(err)),
            }
        }
    }
    // Let Reliable traffic drain before closing.
    node.run_until(Duration::from_secs(5), |n| {
        n.peer_info(peer)
            .is_none_or(|p| p.reliable_queued_bytes == 0)
    })
    .map_err(runtime_error)?;
    node.close_all(intentra::proto::CloseReason::Local);
    println!(
        "sent={sent} would_block={blocked} received={}",
        received.load(Ordering::Relaxed)
    );
    Ok(())
}
