//! The daemon's run function behind `intentra serve`, and what `connect` and `demo` share with it.
//!
//! Owns the mapping from the TOML configuration to nodes, worker threads,
//! signals (SIGTERM/SIGINT close every peer and exit; SIGHUP reloads the
//! allow-list, once, on the main thread), the metrics endpoint, rate-limited
//! session logs and the redial of configured peers (`crate::redial`). It must
//! never print for errors: it returns them and `cli` prints one line.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::config::{Config, ConfigError, IdleMode, IoDriver};
use crate::logging::{LogKind, LogLimiter};
use crate::metrics_http;
use crate::redial::{Redial, RedialPolicy};
use intentra::metrics::{AllowListReloads, MetricsHub, PeerSeen};
use intentra::proto::EndpointConfig;
use intentra::proto::ReliableConfig;
use intentra::proto::StrikePolicy;
use intentra::proto::Timestamp;
use intentra::proto::{CloseReason, DropReason};
use intentra::proto::{ConnectError, Event, PeerId};
use intentra::proto::{Keypair, PublicKey};
use intentra::udp::{DriverKind, IdleStrategy};
use intentra::{Node, NodeConfig, ShutdownHandle};

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

/// Where each of `workers` workers writes its capture: FILE itself for a lone worker, else
/// FILE.worker0, FILE.worker1, ... (the worker that dials `node.peers` included): each is an
/// independent endpoint with key sets of its own, so each gets a capture and key log of its own.
fn capture_paths(capture: Option<&Path>, workers: usize) -> Vec<PathBuf> {
    let Some(capture) = capture else {
        return Vec::new();
    };
    if workers <= 1 {
        return vec![capture.to_path_buf()];
    }
    (0..workers)
        .map(|worker| {
            let mut name = capture.as_os_str().to_owned();
            name.push(format!(".worker{worker}"));
            PathBuf::from(name)
        })
        .collect()
}

/// A capture never overwrites a file, so a path taken (by a file, a directory or a symlink)
/// is a configuration error found before any worker starts: nothing is created, and the
/// daemon does not leave half of its captures behind when the second one is refused.
fn refuse_existing_captures(captures: &[PathBuf]) -> Result<(), DaemonError> {
    let taken = captures
        .iter()
        .flat_map(|capture| [capture.clone(), intentra::capture::keylog_path(capture)])
        .find(|path| path.symlink_metadata().is_ok());
    match taken {
        // No config file prefix: the path may have come from `--capture`.
        Some(path) => Err(DaemonError::Config(ConfigError::Invalid {
            path: None,
            key: "node.capture",
            message: format!(
                "{} exists (a capture never overwrites a file: move it away or choose another name)",
                path.display()
            ),
        })),
        None => Ok(()),
    }
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
    endpoint.handshake_rate = limits.handshake_rate;
    endpoint.handshake_burst = limits.handshake_burst;
    endpoint.handshake_rate_per_source = limits.handshake_rate_per_source;
    endpoint.handshake_burst_per_source = limits.handshake_burst_per_source;
    endpoint.handshake_sources = limits.handshake_sources;
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
    endpoint.handshake_retry_max = Duration::from_millis(timers.handshake_retry_max_ms);
    endpoint.previous_keys_linger = Duration::from_millis(timers.previous_keys_linger_ms);
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
    node.bundling = config.node.bundling;
    node.capture = config.node.capture.clone();
    node.capture_limits = intentra::capture::CaptureLimits {
        max_bytes: config.node.capture_max_bytes,
        keep: (config.node.capture_keep)
            .unwrap_or(intentra::capture::CaptureLimits::default().keep),
    };
    node
}

/// Where one worker's events go: the log (rate-limited), the configured peers'
/// redial state and the per-peer "last seen" times. Shared by the worker's event
/// handler and its tick, which both run on the worker's thread (the lock is
/// never contended).
struct WorkerEvents {
    worker: usize,
    limiter: LogLimiter,
    /// Addresses of live peers, so a loss can be logged with the address; one
    /// entry per peer the endpoint holds (bounded by `limits.max_peers`).
    addrs: HashMap<PeerId, SocketAddr>,
    redial: Option<Redial>,
    /// Jitter for the redial delays: randomness stays out of the protocol core.
    rng: rand_chacha::ChaCha8Rng,
    hub: MetricsHub,
    per_peer: bool,
    /// Per peer: packets received at the last tick, and when that count last moved.
    seen: HashMap<PublicKey, (u64, u64)>,
    /// Sessions with configured peers held by listening workers, shared by all workers.
    inbound: InboundSessions,
}

/// Which configured peers hold a session with one of our listening workers (that they
/// initiated), shared between the listening workers, which record them, and the dialling
/// worker, which does not dial a peer whose own session is the pair's one. Touched on
/// session events and ticks only, never per packet.
#[derive(Clone)]
struct InboundSessions {
    own_key: PublicKey,
    configured: Arc<std::collections::HashSet<PublicKey>>,
    up: Arc<Mutex<HashMap<PublicKey, u32>>>,
}

impl InboundSessions {
    fn new(own_key: PublicKey, config: &Config) -> InboundSessions {
        InboundSessions {
            own_key,
            configured: Arc::new(config.node.peers.iter().map(|p| p.public_key).collect()),
            up: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn changed(&self, key: &PublicKey, delta: i32) {
        if !self.configured.contains(key) {
            return;
        }
        let mut up = self.up.lock().unwrap_or_else(|p| p.into_inner());
        let count = up.entry(*key).or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            up.remove(key);
        }
    }

    /// Whether the pair's one session with `key` is the one it initiated to a listening
    /// worker: it has one, and its key is the smaller (PROTOCOL.md 11.4's rule, applied
    /// across the daemon's endpoints).
    fn covers(&self, key: &PublicKey) -> bool {
        key.0 < self.own_key.0
            && self
                .up
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(key)
    }
}

impl WorkerEvents {
    fn new(
        worker: usize,
        hub: MetricsHub,
        per_peer: bool,
        redial: Option<Redial>,
        inbound: InboundSessions,
    ) -> WorkerEvents {
        use rand_core::SeedableRng;
        WorkerEvents {
            worker,
            limiter: LogLimiter::new(20, Duration::from_secs(1)),
            addrs: HashMap::new(),
            redial,
            rng: rand_chacha::ChaCha8Rng::from_rng(rand_core::OsRng)
                .unwrap_or_else(|_| rand_chacha::ChaCha8Rng::seed_from_u64(worker as u64)),
            hub,
            per_peer,
            seen: HashMap::new(),
            inbound,
        }
    }

    fn on_event(&mut self, now: Timestamp, event: &Event<'_>) {
        let worker = self.worker;
        match *event {
            Event::PeerUp {
                peer,
                public_key,
                addr,
            } => {
                if self.addrs.insert(peer, addr).is_none() && self.redial.is_none() {
                    self.inbound.changed(&public_key, 1);
                }
                let configured = self
                    .redial
                    .as_mut()
                    .and_then(|r| r.up(&public_key, peer))
                    .is_some();
                if configured {
                    self.publish_configured();
                }
                if self.limiter.allow(LogKind::SessionUp, now) {
                    tracing::info!(worker, peer = %public_key.short(), %addr, configured, "session up");
                }
            }
            Event::PeerDown {
                peer,
                public_key,
                reason,
                peer_reason,
            } => {
                let known = self.addrs.remove(&peer);
                if self.redial.is_none() && known.is_some() {
                    self.inbound.changed(&public_key, -1);
                }
                let random = self.rng.next_u64();
                let retry = self
                    .redial
                    .as_mut()
                    .and_then(|r| r.down(peer, now, reason.label(), random));
                if retry.is_some() {
                    self.publish_configured();
                }
                let addr = known.or(retry.map(|r| r.addr));
                let addr = addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
                let peer_reason = peer_reason.map_or("", CloseReason::label);
                let expected = matches!(reason, CloseReason::Local | CloseReason::Shutdown);
                // Configured peers: every loss is logged (their number is bounded by the file);
                // other peers within the limiter's budget.
                if retry.is_none() && !self.limiter.allow(LogKind::SessionDown, now) {
                    return;
                }
                match retry {
                    _ if expected => {
                        tracing::info!(worker, peer = %public_key.short(), %addr, reason = %reason.label(), "session closed");
                    }
                    Some(retry) => tracing::warn!(
                        worker,
                        peer = %public_key.short(),
                        %addr,
                        reason = %reason.label(),
                        peer_reason = %peer_reason,
                        retry_in_ms = retry.delay.as_millis() as u64,
                        "configured peer lost, will redial"
                    ),
                    None => tracing::warn!(
                        worker,
                        peer = %public_key.short(),
                        %addr,
                        reason = %reason.label(),
                        peer_reason = %peer_reason,
                        "peer lost"
                    ),
                }
            }
            Event::Message(_) => {}
            _ => {}
        }
    }

    /// Dials the configured peers that are due, and samples per-peer "last seen".
    fn on_tick(&mut self, ctx: &mut intentra::Context<'_>) {
        let now = ctx.now();
        let worker = self.worker;
        let mut changed = false;
        if let Some(redial) = self.redial.as_mut() {
            // Two daemons that list each other would otherwise hold two sessions per pair
            // (each dialler's to the other's listener): keep the one the smaller key opened.
            let keys: Vec<PublicKey> = redial.targets().iter().map(|t| t.public_key).collect();
            for key in keys {
                let covered = self.inbound.covers(&key);
                let (close, moved) = redial.covered(&key, covered, now);
                if let Some(id) = close {
                    ctx.close(id);
                }
                if moved {
                    changed = true;
                    if covered {
                        tracing::info!(worker, peer = %key.short(), "configured peer connected to us: its session is the pair's one, not dialling");
                    } else {
                        tracing::info!(worker, peer = %key.short(), "configured peer no longer connected to us: dialling");
                    }
                }
            }
            let due: Vec<usize> = redial.due(now).collect();
            for index in due {
                let Some(target) = redial.targets().get(index).cloned() else {
                    continue;
                };
                changed = true;
                match ctx.connect(target.addr, target.public_key) {
                    Ok(id) => {
                        redial.dialled(index, id);
                        if target.attempts == 0 {
                            tracing::info!(worker, peer = %target.public_key.short(), addr = %target.addr, "dialling configured peer");
                        } else {
                            tracing::warn!(
                                worker,
                                peer = %target.public_key.short(),
                                addr = %target.addr,
                                reason = %target.last_reason,
                                attempt = target.attempts + 1,
                                "redialling configured peer"
                            );
                        }
                    }
                    Err(err) => {
                        let reason = connect_error_label(err);
                        let random = self.rng.next_u64();
                        let retry = redial.refused(index, now, reason, random);
                        tracing::warn!(
                            worker,
                            peer = %target.public_key.short(),
                            addr = %target.addr,
                            reason = %reason,
                            error = %err,
                            retry_in_ms = retry.map_or(0, |r| r.delay.as_millis() as u64),
                            "cannot dial configured peer"
                        );
                    }
                }
            }
        }
        if changed {
            self.publish_configured();
        }
        if self.per_peer {
            self.sample_seen(ctx);
        }
    }

    fn sample_seen(&mut self, ctx: &intentra::Context<'_>) {
        let unix = unix_seconds();
        let mut seen = HashMap::with_capacity(self.seen.len());
        let mut published = Vec::with_capacity(self.seen.len());
        for id in ctx.peers() {
            let Some(info) = ctx.peer_info(id) else {
                continue;
            };
            let at = match self.seen.get(&info.public_key) {
                Some(&(received, at)) if received == info.packets_received => at,
                _ => unix,
            };
            seen.insert(info.public_key, (info.packets_received, at));
            published.push(PeerSeen {
                public_key: info.public_key,
                addr: info.addr,
                unix_seconds: at,
            });
        }
        self.seen = seen;
        let worker = self.worker;
        self.hub.update_daemon(|d| {
            d.peers_seen.insert(worker, published);
        });
    }

    fn publish_configured(&self) {
        if let Some(redial) = &self.redial {
            let peers = redial.snapshot();
            self.hub.update_daemon(|d| d.configured_peers = Some(peers));
        }
    }
}

fn connect_error_label(err: ConnectError) -> &'static str {
    match err {
        ConnectError::TooManyPeers => "too_many_peers",
        ConnectError::NoFreeIndex => "no_free_index",
        ConnectError::SelfConnect => "self_connect",
        ConnectError::NotAllowed => "not_allowed",
        _ => "other",
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_seconds_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Installs the worker's event handler and tick; returns the shared state.
fn watch_events(
    node: &mut Node,
    worker: usize,
    hub: &MetricsHub,
    config: &Config,
    redial: Option<Redial>,
    inbound: &InboundSessions,
) -> Arc<Mutex<WorkerEvents>> {
    let events = Arc::new(Mutex::new(WorkerEvents::new(
        worker,
        hub.clone(),
        config.metrics.per_peer,
        redial,
        inbound.clone(),
    )));
    let on_event = Arc::clone(&events);
    node.on_event(move |ctx, event| lock_events(&on_event).on_event(ctx.now(), event));
    let publish = Duration::from_millis(config.metrics.publish_interval_ms.max(10));
    let every = if lock_events(&events).redial.is_some() {
        publish.min(Duration::from_millis(100))
    } else {
        publish
    };
    let on_tick = Arc::clone(&events);
    node.every(every, move |ctx| lock_events(&on_tick).on_tick(ctx));
    events
}

fn lock_events(events: &Mutex<WorkerEvents>) -> std::sync::MutexGuard<'_, WorkerEvents> {
    events.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the allow-list.
pub fn serve(config: Config) -> Result<(), DaemonError> {
    let identity = config.load_identity()?;
    if let Some(peer) = config
        .node
        .peers
        .iter()
        .find(|p| p.public_key == identity.keypair.public)
    {
        return Err(DaemonError::Config(ConfigError::Invalid {
            path: config.source.clone(),
            key: "node.peers",
            message: format!(
                "lists this node's own public key (address {})",
                peer.address
            ),
        }));
    }
    let shutdown = ShutdownHandle::new();
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.flag()).map_err(runtime_error)?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()).map_err(runtime_error)?;

    // Each bind address gets `workers` sockets on SO_REUSEPORT: the kernel keeps a peer's
    // 4-tuple on one of them, so a session stays on one worker for its whole life.
    let workers = config.node.workers.max(1);
    let binds: Vec<SocketAddr> = config
        .node
        .bind
        .iter()
        .flat_map(|&bind| std::iter::repeat_n(bind, workers))
        .collect();
    // A hub dials its peers from its own node (crate::hub), not from an outbound worker.
    let outbound = !config.node.peers.is_empty() && !config.hub.enabled;
    let hub = MetricsHub::new(binds.len() + usize::from(outbound));
    hub.update_daemon(|d| {
        d.allow_list = Some(AllowListReloads {
            failures: 0,
            last_success_unix: unix_seconds_f64(),
        });
    });
    let _server = match config.metrics.listen {
        Some(listen) => Some(
            metrics_http::spawn_metrics_server(listen, hub.clone(), config.metrics.per_peer)
                .map_err(runtime_error)?,
        ),
        None => None,
    };
    let publish_every = Duration::from_millis(config.metrics.publish_interval_ms.max(10));
    let captures = capture_paths(
        config.node.capture.as_deref(),
        binds.len() + usize::from(outbound),
    );
    refuse_existing_captures(&captures)?;
    let mut nodes = Vec::with_capacity(binds.len());
    let inbound = InboundSessions::new(identity.keypair.public, &config);
    for (worker, &bind) in binds.iter().enumerate() {
        let endpoint = endpoint_config(
            &config,
            identity.keypair.clone(),
            identity.allow_list.clone(),
        );
        let mut cfg = node_config(&config, bind, endpoint);
        crate::hub::adjust_node_config(&config, &mut cfg);
        cfg.capture = captures.get(worker).cloned();
        let mut node = tracing::info_span!("worker", worker)
            .in_scope(|| Node::bind(cfg))
            .map_err(runtime_error)?;
        if let Some(note) = node.driver_note() {
            tracing::warn!(worker, note = %note, "driver fallback");
        }
        tracing::info!(worker, addr = %node.local_addr(), driver = %node.driver_name(), key = %node.public_key(), "listening");
        node.publish_metrics(hub.clone(), worker, publish_every, config.metrics.per_peer);
        let events = watch_events(&mut node, worker, &hub, &config, None, &inbound);
        if config.hub.enabled {
            // The hub glue takes the node's event callback and hands every event on to
            // the worker's session accounting.
            let inner = Arc::clone(&events);
            crate::hub::attach(&mut node, &config, move |ctx, event| {
                lock_events(&inner).on_event(ctx.now(), event)
            })?;
        }
        nodes.push((node, events));
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
        cfg.capture = captures.get(worker).cloned();
        let mut node = tracing::info_span!("worker", worker)
            .in_scope(|| Node::bind(cfg))
            .map_err(runtime_error)?;
        node.publish_metrics(hub.clone(), worker, publish_every, config.metrics.per_peer);
        let redial = Redial::new(
            RedialPolicy {
                initial: Duration::from_millis(config.timers.redial_initial_ms),
                max: Duration::from_millis(config.timers.redial_max_ms),
            },
            config.node.peers.iter().map(|p| (p.public_key, p.address)),
        );
        let events = watch_events(&mut node, worker, &hub, &config, Some(redial), &inbound);
        lock_events(&events).publish_configured();
        // The first dial happens on the worker's first tick; every later one after a loss.
        tracing::info!(worker, addr = %node.local_addr(), peers = config.node.peers.len(), "connecting to configured peers");
        nodes.push((node, events));
    }
    let mut reloads = Vec::with_capacity(nodes.len());
    let threads: Vec<_> = nodes
        .into_iter()
        .enumerate()
        .map(|(worker, (mut node, events))| {
            let shutdown = shutdown.clone();
            // The main thread reads the allow-list once per SIGHUP and hands every worker a copy.
            let (reload_tx, reload) = std::sync::mpsc::channel::<AllowList>();
            reloads.push(reload_tx);
            let config = config.clone();
            std::thread::Builder::new()
                .name(format!("intentra-worker-{worker}"))
                .spawn(move || -> Result<(), DaemonError> {
                    if let Some(core) = config.io.pin_cores.as_ref().and_then(|c| c.get(worker)) {
                        match intentra::udp::pin_current_thread(*core) {
                            Ok(()) => tracing::info!(worker, core, "pinned"),
                            Err(err) => tracing::warn!(worker, core, error = %err, "cannot pin"),
                        }
                    }
                    let mut watch = EventWatch::default();
                    let mut next_watch = Instant::now();
                    while !shutdown.is_shutdown() {
                        node.turn(Duration::from_millis(50))
                            .map_err(runtime_error)?;
                        while let Ok(allow) = reload.try_recv() {
                            node.set_allow_list(allow);
                            if let Some(redial) = lock_events(&events).redial.as_mut() {
                                // A key restored to the list should not wait out a long back-off.
                                redial.retry_now();
                            }
                        }
                        if Instant::now() >= next_watch {
                            next_watch = Instant::now() + Duration::from_secs(1);
                            let mut sources = RefusalSources::default();
                            node.drain_refused_handshakes(|addr, reason| {
                                sources.note(reason, addr)
                            });
                            watch.log(worker, &node.stats(), &sources);
                        }
                    }
                    node.close_all(CloseReason::Shutdown);
                    tracing::info!(worker, "closed every session, exiting");
                    Ok(())
                })
                .map_err(runtime_error)
        })
        .collect::<Result<_, _>>()?;
    // Until a signal stops us or a worker fails: reload on SIGHUP.
    let mut threads: Vec<std::thread::JoinHandle<Result<(), DaemonError>>> = threads;
    while !shutdown.is_shutdown() && !threads.iter().any(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if hup.swap(false, Ordering::Relaxed) {
            reload_allow_list(&config, &hub, &reloads);
        }
    }
    // A worker that failed stops the others too.
    shutdown.shutdown();
    let mut result = Ok(());
    for thread in threads.drain(..) {
        let joined = thread
            .join()
            .map_err(|_| DaemonError::Runtime("a worker thread panicked".into()))
            .and_then(|r| r);
        if result.is_ok() {
            result = joined;
        }
    }
    result
}

/// What a worker is handed on reload: `None` accepts any key.
type AllowList = Option<HashSet<PublicKey>>;

/// Once a second, logs what changed that an operator must hear about: at most one line per
/// kind per second, however hard an attacker pushes.
#[derive(Default)]
struct EventWatch {
    last: intentra::proto::Stats,
}

/// The latest source address of each kind of refused handshake since the last log line.
#[derive(Default)]
struct RefusalSources {
    not_allowed: Option<SocketAddr>,
    budget: Option<SocketAddr>,
    cookie: Option<SocketAddr>,
}

impl RefusalSources {
    fn note(&mut self, reason: DropReason, addr: SocketAddr) {
        match reason {
            DropReason::NotAllowed => self.not_allowed = Some(addr),
            DropReason::HandshakeBudget => self.budget = Some(addr),
            DropReason::BadCookie => self.cookie = Some(addr),
            _ => {}
        }
    }

    fn of(&self, reason: DropReason) -> Option<SocketAddr> {
        match reason {
            DropReason::NotAllowed => self.not_allowed,
            DropReason::HandshakeBudget => self.budget,
            DropReason::BadCookie => self.cookie,
            _ => None,
        }
    }
}

impl EventWatch {
    fn log(&mut self, worker: usize, now: &intentra::proto::Stats, sources: &RefusalSources) {
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
        // Refused handshakes: one line per reason per second, whatever the rate, with the
        // count and the latest source address (as claimed: the packet is unauthenticated).
        for (reason, what) in [
            (
                DropReason::NotAllowed,
                "handshakes refused: peer key not on the allow-list",
            ),
            (
                DropReason::HandshakeBudget,
                "handshakes refused: handshake budget spent, or the peer table full (limits.max_peers)",
            ),
            (
                DropReason::BadCookie,
                "handshakes refused: missing or bad cookie (under load)",
            ),
        ] {
            let refused = delta(&|s| s.dropped(reason));
            if refused > 0 {
                match sources.of(reason) {
                    Some(source) => {
                        tracing::warn!(worker, reason = %reason.label(), refused, %source, "{what}")
                    }
                    None => tracing::warn!(worker, reason = %reason.label(), refused, "{what}"),
                }
            }
        }
        let limited = delta(&|s| s.dropped(DropReason::RateLimit));
        if limited > 0 {
            tracing::warn!(worker, dropped = limited, "peers over their rate limit");
        }
        self.last = now.clone();
    }
}

/// Reads the key file and allow-list once and hands the list to every worker.
fn reload_allow_list(config: &Config, hub: &MetricsHub, workers: &[Sender<AllowList>]) {
    match config.load_identity() {
        Ok(identity) => {
            let allow: AllowList = identity.allow_list.map(|k| k.into_iter().collect());
            let keys = allow
                .as_ref()
                .map_or_else(|| "any".to_owned(), |a| a.len().to_string());
            for worker in workers {
                // A worker that already exited does not need the list.
                let _ = worker.send(allow.clone());
            }
            hub.update_daemon(|d| {
                let reloads = d.allow_list.get_or_insert_with(AllowListReloads::default);
                reloads.last_success_unix = unix_seconds_f64();
            });
            tracing::info!(keys = %keys, "allow-list reloaded");
        }
        Err(err) => {
            hub.update_daemon(|d| {
                d.allow_list
                    .get_or_insert_with(AllowListReloads::default)
                    .failures += 1;
            });
            tracing::warn!(error = %err, "allow-list reload failed, keeping the old one");
        }
    }
}
