//! The daemon's run functions behind the CLI: `serve`, `connect` and `demo`.
//!
//! Owns the mapping from the TOML configuration to nodes, worker threads,
//! signals (SIGTERM/SIGINT close every peer and exit; SIGHUP reloads the
//! allow-list), the metrics endpoint and rate-limited session logs. It must
//! never print for errors: it returns them and `cli` prints one line.

use std::collections::HashSet;
use std::fmt;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{ConnectArgs, DeliveryMode, DemoArgs};
use crate::config::{Config, ConfigError, IdleMode, IoDriver};
use intentra::udp::{DriverKind, IdleStrategy};
use crate::logging::{LogKind, LogLimiter};
use intentra::metrics::MetricsHub;
use crate::metrics_http;
use intentra::proto::config::EndpointConfig;
use intentra::proto::event::{Event, Mode};
use intentra::proto::keys::{Keypair, PublicKey};
use intentra::proto::reliable::ReliableConfig;
use intentra::proto::strikes::StrikePolicy;
use intentra::node::{Node, NodeConfig, ShutdownHandle};

/// A failure of a run function. `cli` maps `Config` to exit code 2 and
/// everything else to 1.
#[derive(Debug)]
pub enum DaemonError {
    /// A configuration problem found at start (exit code 2).
    Config(ConfigError),
    /// Anything that failed while running, already phrased as one line.
    Runtime(String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(err) => err.fmt(f),
            DaemonError::Runtime(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DaemonError {}

impl From<ConfigError> for DaemonError {
    fn from(err: ConfigError) -> Self {
        DaemonError::Config(err)
    }
}

fn runtime_error(err: impl fmt::Display) -> DaemonError {
    DaemonError::Runtime(err.to_string())
}

/// The protocol core's configuration from the daemon's.
pub fn endpoint_config(
    config: &Config,
    keypair: Keypair,
    allow: Option<Vec<PublicKey>>,
) -> EndpointConfig {
    let limits = &config.limits;
    let timers = &config.timers;
    let mut endpoint = EndpointConfig::new(keypair);
    endpoint.allow_list = allow.map(|keys| keys.into_iter().collect());
    endpoint.max_peers = limits.max_peers;
    endpoint.handshakes_in_flight = limits.handshakes_in_flight;
    endpoint.handshakes_per_ip = limits.handshakes_per_ip;
    endpoint.always_cookie = limits.always_cookie;
    endpoint.rate_pps = u32::try_from(limits.rate_pps).unwrap_or(u32::MAX);
    endpoint.rate_burst = u32::try_from(limits.rate_burst).unwrap_or(u32::MAX);
    endpoint.strikes = StrikePolicy {
        threshold: limits.strike_threshold,
        decay_interval: Duration::from_millis(limits.strike_decay_ms),
    };
    endpoint.reliable = ReliableConfig {
        max_queued_bytes: limits.reliable_queue_bytes,
        ..ReliableConfig::default()
    };
    endpoint.keepalive_interval = Duration::from_millis(timers.keepalive_ms);
    endpoint.idle_timeout = Duration::from_millis(timers.idle_timeout_ms);
    endpoint.handshake_timeout = Duration::from_millis(timers.handshake_timeout_ms);
    endpoint.handshake_retry = Duration::from_millis(timers.handshake_retry_ms);
    endpoint.rekey_after = Duration::from_secs(timers.rekey_after_s);
    endpoint.reject_after = Duration::from_secs(timers.reject_after_s);
    endpoint
}

fn node_config(config: &Config, bind: SocketAddr, endpoint: EndpointConfig) -> NodeConfig {
    let mut node = NodeConfig::new(bind, endpoint);
    node.driver = match config.io.driver {
        // The fastest that works: io_uring, falling back to recvmmsg with the reason logged.
        IoDriver::Auto | IoDriver::Uring => DriverKind::Uring,
        IoDriver::Mmsg => DriverKind::Mmsg,
        IoDriver::Basic => DriverKind::Basic,
    };
    node.idle = match config.io.idle {
        IdleMode::Block => IdleStrategy::Block,
        IdleMode::Backoff => IdleStrategy::default(),
        IdleMode::Spin => IdleStrategy::BusySpin,
    };
    let io = &config.io;
    node.socket.recv_buffer = io.recv_buffer_bytes;
    node.socket.send_buffer = io.send_buffer_bytes;
    node.socket.gso = io.gso;
    node.socket.gro = io.gro;
    node.socket.busy_poll_us = io.busy_poll_us;
    node.socket.reuse_port = config.node.workers > 1;
    node.io.batch = io.batch_size;
    node.io.send_slots = io.buffers;
    node.io.max_datagram = io.buffer_size;
    node.capture = config.node.capture.clone();
    node
}

/// Logs peers coming and going, at most a few lines per second per kind, so that an
/// attack cannot flood the log.
fn session_logger(
    worker: usize,
) -> impl FnMut(&mut intentra::node::Context<'_>, &Event<'_>) + Send {
    let mut limiter = LogLimiter::new(20, Duration::from_secs(1));
    move |ctx, event| match event {
        Event::PeerUp {
            public_key, addr, ..
        } => {
            if limiter.allow(LogKind::SessionUp, ctx.now()) {
                tracing::info!(worker, peer = %public_key.short(), %addr, "session up");
            }
        }
        Event::PeerDown {
            public_key, reason, ..
        } => {
            if limiter.allow(LogKind::SessionDown, ctx.now()) {
                tracing::info!(worker, peer = %public_key.short(), reason = reason.label(), "session down");
            }
        }
        Event::Message(_) => {}
    }
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the allow-list.
pub fn serve(config: Config) -> Result<(), DaemonError> {
    let identity = config.load_identity()?;
    let shutdown = ShutdownHandle::new();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.flag()).map_err(runtime_error)?;
    }

    // Each bind address gets `workers` sockets on SO_REUSEPORT: the kernel keeps a peer's
    // 4-tuple on one of them, so a session stays on one worker for its whole life.
    let workers = config.node.workers.max(1);
    let binds: Vec<SocketAddr> = config
        .node
        .bind
        .iter()
        .flat_map(|&bind| std::iter::repeat_n(bind, workers))
        .collect();
    let outbound = !config.node.peers.is_empty();
    let hub = MetricsHub::new(binds.len() + usize::from(outbound));
    let _server = match config.metrics.listen {
        Some(listen) => Some(
            metrics_http::spawn_metrics_server(listen, hub.clone(), config.metrics.per_peer)
                .map_err(runtime_error)?,
        ),
        None => None,
    };
    let publish_every = Duration::from_millis(config.metrics.publish_interval_ms.max(10));
    let mut nodes = Vec::with_capacity(binds.len());
    for (worker, &bind) in binds.iter().enumerate() {
        let endpoint = endpoint_config(
            &config,
            identity.keypair.clone(),
            identity.allow_list.clone(),
        );
        let mut cfg = node_config(&config, bind, endpoint);
        if binds.len() > 1 {
            // One capture (and key log) per worker: they are independent endpoints.
            cfg.capture = cfg.capture.map(|path| {
                let mut name = path.into_os_string();
                name.push(format!(".worker{worker}"));
                name.into()
            });
        }
        let mut node = Node::bind(cfg).map_err(runtime_error)?;
        if let Some(note) = node.driver_note() {
            tracing::warn!(worker, note, "driver fallback");
        }
        tracing::info!(worker, addr = %node.local_addr(), driver = node.driver_name(), key = %node.public_key(), "listening");
        node.publish_metrics(hub.clone(), worker, publish_every, config.metrics.per_peer);
        node.on_event(session_logger(worker));
        nodes.push(node);
    }
    if outbound {
        // Peers we connect to get a worker of their own on a port of its own: replies to a
        // SO_REUSEPORT socket could be steered to a worker that never sent the handshake.
        let worker = nodes.len();
        let first = config
            .node
            .bind
            .first()
            .copied()
            .unwrap_or(([0, 0, 0, 0], 0).into());
        let bind = SocketAddr::new(first.ip(), 0);
        let endpoint = endpoint_config(
            &config,
            identity.keypair.clone(),
            identity.allow_list.clone(),
        );
        let mut cfg = node_config(&config, bind, endpoint);
        cfg.socket.reuse_port = false;
        let mut node = Node::bind(cfg).map_err(runtime_error)?;
        node.publish_metrics(hub.clone(), worker, publish_every, config.metrics.per_peer);
        node.on_event(session_logger(worker));
        for peer in &config.node.peers {
            node.connect(peer.address, peer.public_key)
                .map_err(|e| DaemonError::Runtime(format!("connect {}: {e}", peer.address)))?;
        }
        tracing::info!(worker, addr = %node.local_addr(), peers = config.node.peers.len(), "connecting to configured peers");
        nodes.push(node);
    }
    let threads: Vec<_> = nodes
        .into_iter()
        .enumerate()
        .map(|(worker, mut node)| {
            let shutdown = shutdown.clone();
            // One flag per worker: every worker reloads its own allow-list on SIGHUP.
            let reload = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
                .map_err(runtime_error)?;
            let config = config.clone();
            std::thread::Builder::new()
                .name(format!("intentra-worker-{worker}"))
                .spawn(move || -> Result<(), DaemonError> {
                    if let Some(core) = config.io.pin_cores.as_ref().and_then(|c| c.get(worker)) {
                        match intentra::udp::affinity::pin_current_thread(*core) {
                            Ok(()) => tracing::info!(worker, core, "pinned"),
                            Err(err) => tracing::warn!(worker, core, error = %err, "cannot pin"),
                        }
                    }
                    let mut watch = EventWatch::default();
                    let mut next_watch = Instant::now();
                    while !shutdown.is_shutdown() {
                        node.turn(Duration::from_millis(50))
                            .map_err(runtime_error)?;
                        if reload.swap(false, Ordering::Relaxed) {
                            reload_allow_list(&config, &mut node);
                        }
                        if Instant::now() >= next_watch {
                            next_watch = Instant::now() + Duration::from_secs(1);
                            watch.log(worker, &node.stats());
                        }
                    }
                    node.close_all(intentra::proto::stats::CloseReason::Shutdown);
                    tracing::info!(worker, "closed every session, exiting");
                    Ok(())
                })
                .map_err(runtime_error)
        })
        .collect::<Result<_, _>>()?;
    for thread in threads {
        thread
            .join()
            .map_err(|_| DaemonError::Runtime("a worker thread panicked".into()))??;
    }
    Ok(())
}

/// Once a second, logs what changed that an operator must hear about: at most one line per
/// kind per second, however hard an attacker pushes.
#[derive(Default)]
struct EventWatch {
    last: intentra::proto::stats::Stats,
}

impl EventWatch {
    fn log(&mut self, worker: usize, now: &intentra::proto::stats::Stats) {
        use intentra::proto::stats::{CloseReason, DropReason};
        let delta =
            |f: &dyn Fn(&intentra::proto::stats::Stats) -> u64| f(now).saturating_sub(f(&self.last));
        let rekeys = delta(&|s| s.rekeys);
        if rekeys > 0 {
            tracing::info!(worker, rekeys, "sessions rekeyed");
        }
        let strikes = delta(&|s| s.closes(CloseReason::Strikes));
        if strikes > 0 {
            tracing::warn!(
                worker,
                sessions = strikes,
                "sessions closed for protocol violations (strikes)"
            );
        }
        let refused = delta(&|s| s.dropped(DropReason::HandshakeBudget));
        if refused > 0 {
            tracing::warn!(
                worker,
                refused,
                "handshake budget exhausted: handshakes refused"
            );
        }
        let challenged = delta(&|s| s.dropped(DropReason::BadCookie));
        if challenged > 0 {
            tracing::info!(worker, challenged, "under handshake load: cookies demanded");
        }
        let limited = delta(&|s| s.dropped(DropReason::RateLimit));
        if limited > 0 {
            tracing::warn!(worker, dropped = limited, "peers over their rate limit");
        }
        self.last = now.clone();
    }
}

fn reload_allow_list(config: &Config, node: &mut Node) {
    match config.load_identity() {
        Ok(identity) => {
            let allow: Option<HashSet<PublicKey>> =
                identity.allow_list.map(|k| k.into_iter().collect());
            let size = allow.as_ref().map(HashSet::len);
            node.set_allow_list(allow);
            tracing::info!(keys = ?size, "allow-list reloaded");
        }
        Err(err) => tracing::warn!(error = %err, "allow-list reload failed, keeping the old one"),
    }
}

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
    });
    let peer_gone = |down: &std::sync::Mutex<Option<intentra::proto::stats::CloseReason>>| {
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
                    Err(intentra::proto::event::SendError::WouldBlock) => {
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
                Err(intentra::proto::event::SendError::WouldBlock) => {
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
    node.close_all(intentra::proto::stats::CloseReason::Local);
    println!(
        "sent={sent} would_block={blocked} received={}",
        received.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Two nodes on loopback in one process: a handshake, messages in both modes, the metrics.
pub fn demo(args: &DemoArgs) -> Result<(), DaemonError> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().map_err(runtime_error)?;
    let mut rng = rand_core::OsRng;
    let server_keys = Keypair::generate(&mut rng);
    let client_keys = Keypair::generate(&mut rng);
    let mut server = Node::bind(NodeConfig::new(loopback, EndpointConfig::new(server_keys)))
        .map_err(runtime_error)?;
    let mut client = Node::bind(NodeConfig::new(loopback, EndpointConfig::new(client_keys)))
        .map_err(runtime_error)?;
    // Publishing keeps the batch-size and handshake-duration histograms for the printout.
    server.publish_metrics(MetricsHub::new(1), 0, Duration::from_millis(10), false);
    let say = !args.json;
    if say {
        println!("intentra demo: two nodes on loopback");
        println!(
            "  server {} key {}",
            server.local_addr(),
            server.public_key()
        );
        println!(
            "  client {} key {}",
            client.local_addr(),
            client.public_key()
        );
    }
    // The server echoes every Reliable message back, in order.
    server.on_event(|ctx, event| {
        if let Event::Message(m) = event {
            if m.mode == Mode::Reliable {
                let _ = ctx.send(m.peer, Mode::Reliable, m.payload);
            }
        }
    });
    let counts = Arc::new(std::sync::Mutex::new([0u64; 2]));
    let seen = counts.clone();
    client.on_message(move |_, mode, _| {
        if let Ok(mut c) = seen.lock() {
            c[usize::from(mode == Mode::Reliable)] += 1;
        }
    });
    let started = Instant::now();
    let peer = client
        .connect(server.local_addr(), server.public_key())
        .map_err(runtime_error)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.peer_info(peer).is_some_and(|p| p.established) || server.peers().is_empty() {
        if Instant::now() > deadline {
            return Err(DaemonError::Runtime(
                "demo: handshake did not complete in 10 s".into(),
            ));
        }
        client
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
        server
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
    }
    let handshake = started.elapsed();
    if say {
        println!(
            "handshake: Noise XX complete in {:.2} ms",
            handshake.as_secs_f64() * 1e3
        );
    }
    let messages = args.messages.max(1);
    let mut sent = [0u64; 2];
    let mut would_block = 0u64;
    let mut realtime_to_client = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while (sent[0] < messages || sent[1] < messages) && Instant::now() < deadline {
        if sent[0] < messages {
            let payload = format!("realtime {}", sent[0]);
            if client
                .send(peer, Mode::Realtime, payload.as_bytes())
                .is_ok()
            {
                sent[0] += 1;
            }
            realtime_to_client += server.publish(Mode::Realtime, b"server state").sent as u64;
        }
        if sent[1] < messages {
            let payload = format!("reliable {}", sent[1]);
            match client.send(peer, Mode::Reliable, payload.as_bytes()) {
                Ok(()) => sent[1] += 1,
                Err(intentra::proto::event::SendError::WouldBlock) => would_block += 1,
                Err(err) => return Err(runtime_error(err)),
            }
        }
        server.turn(Duration::ZERO).map_err(runtime_error)?;
        client.turn(Duration::ZERO).map_err(runtime_error)?;
    }
    // Let the echoes and ACKs settle.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle {
        server
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
        client
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
        let echoed = counts.lock().map(|c| c[1]).unwrap_or(0);
        if echoed >= messages
            && client
                .peer_info(peer)
                .is_some_and(|p| p.reliable_queued_bytes == 0)
        {
            break;
        }
    }
    client.close_all(intentra::proto::stats::CloseReason::Local);
    for _ in 0..10 {
        server
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
    }
    let got = counts.lock().map(|c| *c).unwrap_or([0, 0]);
    let server_stats = server.stats();
    if args.json {
        let summary = serde_json::json!({
            "handshake_ms": handshake.as_secs_f64() * 1e3,
            "realtime_sent": sent[0],
            "reliable_sent": sent[1],
            "server_delivered": server_stats.messages_delivered,
            "reliable_echoed": got[1],
            "realtime_received_by_client": got[0],
            "realtime_published_by_server": realtime_to_client,
            "would_block": would_block,
            "server_dropped": server_stats.dropped_total(),
            "server_closes": server_stats.closes_total(),
        });
        println!("{summary}");
    } else {
        println!(
            "client -> server: {} realtime and {} reliable sent ({} times the 512-byte reliable window said would-block and the client retried)",
            sent[0], sent[1], would_block
        );
        println!(
            "server delivered {} messages; echoed every reliable one back",
            server_stats.messages_delivered
        );
        println!(
            "server -> client: {} reliable echoes received in order, {} of {} realtime updates received",
            got[1], got[0], realtime_to_client
        );
        println!(
            "client closed the session; server saw {} close(s)",
            server_stats.closes_total()
        );
        println!();
        println!("# server metrics (Prometheus text format)");
        print!("{}", server.metrics_text());
    }
    if got[1] < messages {
        return Err(DaemonError::Runtime(format!(
            "demo: only {} of {messages} reliable messages came back",
            got[1]
        )));
    }
    Ok(())
}
