//! `intentra connect`: one peer, test traffic at a set rate or lines from stdin.
//!
//! Says "connected" only once the peer has sent an authenticated packet (its keepalive after
//! the handshake): an initiator's handshake completes on its side even when the responder
//! then refuses its key, so completion alone proves nothing. Exits non-zero with one line
//! when no such packet comes. SIGINT and SIGTERM close the session and print the summary.
//! With `--rate 0`, a reader thread sends each stdin line through a `Handle` while this
//! thread runs the node.

use std::io::BufRead;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::{ConnectArgs, DeliveryMode, ListenArg};
use crate::config::Config;
use intentra::metrics::MetricsHub;
use intentra::proto::CloseReason;
use intentra::proto::Keypair;
use intentra::proto::{Event, Mode, PeerId, SendError};
use intentra::{Handle, HandleError};
use intentra::{Node, ShutdownHandle};

use crate::daemon::{endpoint_config, node_config, runtime_error, DaemonError};

/// The address to bind: `--bind` if given, else an ephemeral port on loopback for a
/// loopback peer and on the unspecified address otherwise.
fn bind_addr(args: &ConnectArgs) -> SocketAddr {
    if let Some(bind) = args.overrides.bind.first() {
        return *bind;
    }
    let ip = args.peer.ip();
    match (ip.is_ipv4(), ip.is_loopback()) {
        (true, true) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        (true, false) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        (false, true) => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        (false, false) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    }
}

type Down = Arc<Mutex<Option<CloseReason>>>;

fn gone(down: &Down) -> Option<CloseReason> {
    down.lock().ok().and_then(|d| *d)
}

/// Connects to one peer and sends test traffic at a set rate, or lines from stdin.
pub fn connect(config: Config, args: &ConnectArgs) -> Result<(), DaemonError> {
    let keypair = match config.node.key_file {
        Some(_) => config.load_identity()?.keypair,
        None => Keypair::generate(&mut rand_core::OsRng),
    };
    let own_key = keypair.public;
    let bind = bind_addr(args);
    let endpoint = endpoint_config(&config, keypair, None);
    let mut node = Node::bind(node_config(&config, bind, endpoint)).map_err(runtime_error)?;
    let shutdown = node.shutdown_handle();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.flag()).map_err(runtime_error)?;
    }
    // Metrics only when asked for on the command line (the config's listen address is the
    // daemon's, which may be in use by it).
    let _metrics = match args.overrides.metrics {
        Some(ListenArg(Some(listen))) => {
            let hub = MetricsHub::new(1);
            node.publish_metrics(hub.clone(), 0, Duration::from_millis(100), true);
            let server =
                crate::metrics_http::spawn_metrics_server(listen, hub, config.metrics.per_peer)
                    .map_err(runtime_error)?;
            tracing::info!(addr = %server.local_addr(), "serving metrics");
            Some(server)
        }
        _ => None,
    };
    let received = Arc::new(AtomicU64::new(0));
    let down: Down = Arc::new(Mutex::new(None));
    let (counter, down_reason) = (received.clone(), down.clone());
    node.on_event(move |_, event| match event {
        Event::Message(_) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Event::PeerDown {
            public_key,
            reason,
            peer_reason,
            ..
        } => {
            let reason = peer_reason.unwrap_or(*reason);
            tracing::info!(peer = %public_key.short(), reason = reason.label(), "session down");
            if let Ok(mut slot) = down_reason.lock() {
                *slot = Some(reason);
            }
        }
        Event::PeerUp {
            public_key, addr, ..
        } => {
            tracing::info!(peer = %public_key.short(), %addr, "handshake complete");
            // A session replaced by a newer one with the same peer (a handshake one side
            // sent again, PROTOCOL.md 11.3) is reported down, then up: the peer is not gone.
            if let Ok(mut slot) = down_reason.lock() {
                *slot = None;
            }
        }
        _ => {}
    });
    tracing::info!(local = %node.local_addr(), peer = %args.peer, "connecting");
    let peer = node
        .connect(args.peer, args.peer_key)
        .map_err(|e| DaemonError::Runtime(format!("connect {}: {e}", args.peer)))?;
    let timeout = Duration::from_secs_f64(args.connect_timeout.clamp(0.1, 3600.0));
    node.run_until(timeout, |n| {
        gone(&down).is_some() || n.peer_info(peer).is_some_and(|p| p.packets_received > 0)
    })
    .map_err(runtime_error)?;
    let confirmed = node.peer_info(peer).is_some_and(|p| p.packets_received > 0);
    if !confirmed {
        if shutdown.is_shutdown() {
            node.close_all(CloseReason::Local);
            outln!("interrupted before the peer answered");
            return Ok(());
        }
        let why = match gone(&down) {
            Some(reason) => format!("the session ended: {}", reason.label()),
            None => format!(
                "no authenticated packet within {:.1} s: the peer refused the handshake (is key {} on its allow-list?) or is not answering",
                timeout.as_secs_f64(),
                own_key.short()
            ),
        };
        return Err(DaemonError::Runtime(format!(
            "connect {}: {why}",
            args.peer
        )));
    }
    eprintln!("connected to {} ({})", args.peer, args.peer_key.short());
    tracing::info!(peer = %args.peer_key.short(), addr = %args.peer, "connected: first authenticated packet received");
    let mode = match args.mode {
        DeliveryMode::Realtime => Mode::Realtime,
        DeliveryMode::Reliable => Mode::Reliable,
    };
    let outcome = if args.rate == 0 {
        stdin_lines(&mut node, peer, mode, &shutdown, &down)?
    } else {
        at_rate(&mut node, peer, mode, args, &shutdown, &down)?
    };
    let Traffic { sent, blocked } = outcome;
    if let Some(reason) = gone(&down) {
        outln!("peer closed: {} sent={sent}", reason.label());
        return Ok(());
    }
    if !shutdown.is_shutdown() {
        // Let Reliable traffic drain before closing.
        node.run_until(Duration::from_secs(5), |n| {
            n.peer_info(peer)
                .is_none_or(|p| p.reliable_queued_bytes == 0)
        })
        .map_err(runtime_error)?;
    }
    let reason = if shutdown.is_shutdown() {
        CloseReason::Shutdown
    } else {
        CloseReason::Local
    };
    node.close_all(reason);
    tracing::info!(
        sent,
        received = received.load(Ordering::Relaxed),
        "session closed"
    );
    outln!(
        "sent={sent} would_block={blocked} received={}",
        received.load(Ordering::Relaxed)
    );
    Ok(())
}

struct Traffic {
    sent: u64,
    blocked: u64,
}

/// Test traffic at `--rate` messages per second until `--count`, a signal or the peer's close.
fn at_rate(
    node: &mut Node,
    peer: PeerId,
    mode: Mode,
    args: &ConnectArgs,
    shutdown: &ShutdownHandle,
    down: &Down,
) -> Result<Traffic, DaemonError> {
    let payload = vec![0x5a; usize::from(args.size)];
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let count = args.count.unwrap_or(u64::MAX);
    let start = Instant::now();
    let (mut sent, mut blocked) = (0u64, 0u64);
    while sent < count && !shutdown.is_shutdown() && gone(down).is_none() {
        let due = start + interval.mul_f64(sent as f64);
        let now = Instant::now();
        if now < due {
            node.turn((due - now).min(Duration::from_millis(100)))
                .map_err(runtime_error)?;
            continue;
        }
        match node.send(peer, mode, &payload) {
            Ok(()) => sent += 1,
            Err(SendError::WouldBlock) => {
                blocked += 1;
                node.turn(Duration::from_millis(1)).map_err(runtime_error)?;
            }
            Err(err) => return Err(runtime_error(err)),
        }
    }
    Ok(Traffic { sent, blocked })
}

/// One message per stdin line, sent by a reader thread through a `Handle` (Reliable lines
/// wait for room with `send_timeout`; none is skipped) while this thread runs the loop.
fn stdin_lines(
    node: &mut Node,
    peer: PeerId,
    mode: Mode,
    shutdown: &ShutdownHandle,
    down: &Down,
) -> Result<Traffic, DaemonError> {
    let handle = node.handle();
    let sent = Arc::new(AtomicU64::new(0));
    let blocked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let failure = Arc::new(Mutex::new(None::<String>));
    {
        let (sent, blocked, done, failure) =
            (sent.clone(), blocked.clone(), done.clone(), failure.clone());
        let stop = shutdown.clone();
        std::thread::spawn(move || {
            let result = read_lines(&handle, peer, mode, &stop, &sent, &blocked);
            if let (Err(err), Ok(mut slot)) = (result, failure.lock()) {
                *slot = Some(err);
            }
            done.store(true, Ordering::Release);
            // Wake the loop so it sees `done` at once.
            handle.wake();
        });
    }
    while !done.load(Ordering::Acquire) && !shutdown.is_shutdown() && gone(down).is_none() {
        node.turn(Duration::from_millis(100))
            .map_err(runtime_error)?;
    }
    // The reader's last commands are queued: one more turn sends them.
    node.turn(Duration::ZERO).map_err(runtime_error)?;
    if let Some(err) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(DaemonError::Runtime(err));
    }
    Ok(Traffic {
        sent: sent.load(Ordering::Relaxed),
        blocked: blocked.load(Ordering::Relaxed),
    })
}

fn read_lines(
    handle: &Handle,
    peer: PeerId,
    mode: Mode,
    stop: &ShutdownHandle,
    sent: &AtomicU64,
    blocked: &AtomicU64,
) -> Result<(), String> {
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        loop {
            if stop.is_shutdown() {
                return Ok(());
            }
            let result = match mode {
                Mode::Realtime => handle.send(peer, mode, line.as_bytes()),
                Mode::Reliable => {
                    handle.send_timeout(peer, mode, line.as_bytes(), Duration::from_secs(1))
                }
            };
            match result {
                Ok(()) => break,
                Err(HandleError::QueueFull(_) | HandleError::Timeout) => {
                    blocked.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(err) => return Err(format!("sending a stdin line: {err}")),
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
