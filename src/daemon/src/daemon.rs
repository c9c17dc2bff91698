//! The daemon's run function behind `intentra serve`, and what `connect` and `demo` share with it.
//!
//! Owns the mapping from the TOML configuration to nodes, worker threads,
//! signals (SIGTERM/SIGINT close every peer and exit; SIGHUP reloads the
//! allow-list), the metrics endpoint and rate-limited session logs. It must
//! never print for errors: it returns them and `cli` prints one line.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError, IdleMode, IoDriver};
use crate::logging::{LogKind, LogLimiter};
use crate::metrics_http;
use intentra::metrics::MetricsHub;
use intentra::node::{Node, NodeConfig, ShutdownHandle};
use intentra::proto::EndpointConfig;
use intentra::proto::Event;
use intentra::proto::ReliableConfig;
use intentra::proto::StrikePolicy;
use intentra::proto::{Keypair, PublicKey};
use intentra::udp::{DriverKind, IdleStrategy};

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

pub(crate) fn runtime_error(err: impl fmt::Display) -> DaemonError {
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

pub(crate) fn node_config(
    config: &Config,
    bind: SocketAddr,
    endpoint: EndpointConfig,
) -> NodeConfig {
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
                    node.close_all(intentra::proto::CloseReason::Shutdown);
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
    last: intentra::proto::Stats,
}

impl EventWatch {
    fn log(&mut self, worker: usize, now: &intentra::proto::Stats) {
        use intentra::proto::{CloseReason, DropReason};
        let delta =
            |f: &dyn Fn(&intentra::proto::Stats) -> u64| f(now).saturating_sub(f(&self.last));
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
