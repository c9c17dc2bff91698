//! `intentra publish`, `intentra subscribe` and `intentra presence`: shell tools that
//! attach one [`intentra_pubsub::Member`] to one hub over one session.
//!
//! Owns their flags, the member's glue to a node (the same shape as the hub's: node
//! events in, sends out, a FIFO for Reliable sends refused with `WouldBlock`), the
//! output formats (one line per message or presence change, text or JSON), and the
//! exits: 0 on success, on SIGINT/SIGTERM and when stdout is closed (`| head`); 1 with
//! one line when the handshake fails, the hub refuses the request or closes the session.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::Args;

use crate::cli::DeliveryMode;
use crate::config::Config;
use crate::daemon::{endpoint_config, node_config, runtime_error, DaemonError};
use crate::hub::member_key;
use intentra::proto::{Event, Mode as TransportMode, PeerId, SendError};
use intentra::proto::{Keypair, PublicKey};
use intentra::{Context, Node};
use intentra_pubsub::{
    Action, Event as PubsubEvent, Member, MemberConfig, MemberKey, Mode, PresenceReason, Role,
    Sink, Timestamp, TopicId,
};

/// How often the member's timers run and queued Reliable sends are retried.
const TICK: Duration = Duration::from_millis(5);
/// Reliable publishes held while the transport answers WouldBlock before `publish`
/// stops reading its input.
const PUBLISH_BACKLOG: usize = 256;
/// After the last publish: how long to wait for Reliable data to be acknowledged, and
/// then for a late REFUSED.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
const LINGER: Duration = Duration::from_millis(200);

/// Flags every pubsub tool takes: which hub, which topic, who we are.
#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    /// The hub's UDP address.
    #[arg(long, value_name = "ADDR")]
    pub peer: SocketAddr,
    /// The hub's public key (64 hex characters).
    #[arg(long = "peer-key", value_name = "HEX")]
    pub peer_key: PublicKey,
    /// The topic (1 to 128 bytes of UTF-8 without control characters).
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Secret key file: this member's identity, which the hub's rules name. A fresh
    /// key is generated if omitted.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Local UDP address to bind (default: any address, a free port).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Configuration file for [io], [limits], [timers] and [log]; defaults if omitted.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds to wait for the handshake (and for `--wait-subscribers`).
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Delivery mode of the publishes.
    #[arg(long, value_enum, default_value_t = DeliveryMode::Realtime)]
    pub mode: DeliveryMode,
    /// Publishes per second, generated (payload: `--payload`, else the message number);
    /// without it, one publish per line of stdin.
    #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: Option<u32>,
    /// With `--rate`: how many publishes (until interrupted if omitted).
    #[arg(long, value_name = "N", requires = "rate")]
    pub count: Option<u64>,
    /// With `--rate`: the payload of every publish.
    #[arg(long, value_name = "TEXT", requires = "rate")]
    pub payload: Option<String>,
    /// Wait until this many subscribers are present on the topic before publishing.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub wait_subscribers: usize,
}

#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub hub: HubArgs,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A pubsub event, owned, for the main loop to print.
#[derive(Debug, Clone)]
enum Note {
    Message {
        publisher: MemberKey,
        mode: Mode,
        seq: Option<u64>,
        hops: u8,
        payload: Vec<u8>,
    },
    Gap {
        publisher: MemberKey,
        missing: u64,
    },
    Restarted {
        publisher: MemberKey,
    },
    Presence {
        up: bool,
        member: MemberKey,
        role: Role,
        hub: MemberKey,
        reason: PresenceReason,
    },
    Refused {
        action: Action,
    },
}

/// What the node's callbacks and the main loop share (one thread: the lock is free).
struct Shared {
    member: Member<PeerId>,
    hub: Option<PeerId>,
    hub_key: PublicKey,
    queue: VecDeque<Vec<u8>>,
    notes: VecDeque<Note>,
    down: Option<String>,
    now: Timestamp,
}

trait Transmit {
    fn transmit(
        &mut self,
        peer: PeerId,
        mode: TransportMode,
        bytes: &[u8],
    ) -> Result<(), SendError>;
}

impl Transmit for Context<'_> {
    fn transmit(
        &mut self,
        peer: PeerId,
        mode: TransportMode,
        bytes: &[u8],
    ) -> Result<(), SendError> {
        self.send(peer, mode, bytes)
    }
}

impl Transmit for Node {
    fn transmit(
        &mut self,
        peer: PeerId,
        mode: TransportMode,
        bytes: &[u8],
    ) -> Result<(), SendError> {
        self.send(peer, mode, bytes)
    }
}

struct Out<'a, T: Transmit + ?Sized> {
    tx: &'a mut T,
    queue: &'a mut VecDeque<Vec<u8>>,
    notes: &'a mut VecDeque<Note>,
}

impl<T: Transmit + ?Sized> Sink<PeerId> for Out<'_, T> {
    fn send(&mut self, to: PeerId, mode: Mode, bytes: &[u8]) {
        match mode {
            // Lost like any Realtime message when the node cannot take it.
            Mode::Realtime => {
                let _ = self.tx.transmit(to, TransportMode::Realtime, bytes);
            }
            Mode::Reliable => {
                if !self.queue.is_empty() {
                    self.queue.push_back(bytes.to_vec());
                    return;
                }
                if let Err(SendError::WouldBlock | SendError::BufferTooSmall) =
                    self.tx.transmit(to, TransportMode::Reliable, bytes)
                {
                    self.queue.push_back(bytes.to_vec());
                }
            }
        }
    }

    fn event(&mut self, event: PubsubEvent<'_>) {
        let note = match event {
            PubsubEvent::Message {
                publisher,
                mode,
                seq,
                hops,
                payload,
                ..
            } => Note::Message {
                publisher,
                mode,
                seq: seq.map(|s| s.0),
                hops,
                payload: payload.to_vec(),
            },
            PubsubEvent::Gap {
                publisher, missing, ..
            } => Note::Gap { publisher, missing },
            PubsubEvent::StreamRestarted { publisher, .. } => Note::Restarted { publisher },
            PubsubEvent::PresenceUp {
                member, role, hub, ..
            } => Note::Presence {
                up: true,
                member,
                role,
                hub,
                reason: PresenceReason::Joined,
            },
            PubsubEvent::PresenceDown {
                member,
                role,
                hub,
                reason,
                ..
            } => Note::Presence {
                up: false,
                member,
                role,
                hub,
                reason,
            },
            PubsubEvent::Refused { action, .. } => Note::Refused { action },
            _ => return,
        };
        self.notes.push_back(note);
    }
}

impl Shared {
    /// Runs `f` on the member with outputs to `tx`, after sending what was waiting.
    fn with_member<T: Transmit + ?Sized>(
        &mut self,
        tx: &mut T,
        f: impl FnOnce(&mut Member<PeerId>, Timestamp, &mut Out<'_, T>),
    ) {
        if let Some(hub) = self.hub {
            while let Some(front) = self.queue.front() {
                match tx.transmit(hub, TransportMode::Reliable, front) {
                    Err(SendError::WouldBlock | SendError::BufferTooSmall) => break,
                    Ok(()) | Err(_) => {
                        self.queue.pop_front();
                    }
                }
            }
        }
        let mut out = Out {
            tx,
            queue: &mut self.queue,
            notes: &mut self.notes,
        };
        f(&mut self.member, self.now, &mut out);
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// One member on one node with one session to one hub.
struct Attached {
    node: Node,
    shared: Arc<Mutex<Shared>>,
    peer: PeerId,
    topic: TopicId,
    stop: Arc<AtomicBool>,
}

fn tool_config(args: &HubArgs) -> Result<Config, DaemonError> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => {
            let mut c = Config::default();
            c.log.level = "warn".to_owned();
            c
        }
    };
    if let Some(key) = &args.key {
        config.node.key_file = Some(key.clone());
    }
    config.metrics.listen = None;
    config.validate()?;
    match crate::logging::init(&config.log.level, config.log.format) {
        Ok(()) | Err(crate::logging::LogInitError::AlreadySet) => {}
        Err(err) => return Err(runtime_error(err)),
    }
    Ok(config)
}

/// Binds a node, connects to the hub, waits for the session; the member is attached
/// to it from the first event on.
fn attach(args: &HubArgs) -> Result<Attached, DaemonError> {
    intentra_pubsub::validate_topic_name(&args.topic)
        .map_err(|e| DaemonError::Runtime(format!("topic {:?}: {e}", args.topic)))?;
    let config = tool_config(args)?;
    let keypair = match config.node.key_file {
        Some(_) => config.load_identity()?.keypair,
        None => Keypair::generate(&mut rand_core::OsRng),
    };
    let own = member_key(&keypair.public);
    let own_hex = keypair.public.to_hex();
    let bind = args.bind.unwrap_or_else(|| {
        if args.peer.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        }
    });
    let endpoint = endpoint_config(&config, keypair, Some(vec![args.peer_key]));
    let mut cfg = node_config(&config, bind, endpoint);
    cfg.socket.reuse_port = false;
    cfg.capture = None;
    let mut node = Node::bind(cfg).map_err(runtime_error)?;
    let shared = Arc::new(Mutex::new(Shared {
        member: Member::new(own, MemberConfig::default()),
        hub: None,
        hub_key: args.peer_key,
        queue: VecDeque::new(),
        notes: VecDeque::new(),
        down: None,
        now: Timestamp::ZERO,
    }));
    let events = Arc::clone(&shared);
    node.on_event(move |ctx, event| {
        let mut s = lock(&events);
        s.now = Timestamp(ctx.now().as_nanos());
        match event {
            Event::PeerUp {
                peer, public_key, ..
            } if *public_key == s.hub_key => {
                let peer = *peer;
                s.hub = Some(peer);
                s.down = None;
                let key = member_key(public_key);
                s.with_member(ctx, |m, now, out| m.peer_up(peer, key, now, out));
            }
            Event::PeerDown {
                peer,
                reason,
                peer_reason,
                ..
            } if s.hub == Some(*peer) => {
                let peer = *peer;
                s.hub = None;
                s.queue.clear();
                s.down = Some(peer_reason.unwrap_or(*reason).label().to_owned());
                s.with_member(ctx, |m, now, out| m.peer_down(peer, now, out));
            }
            Event::Message(msg) if s.hub == Some(msg.peer) => {
                let mode = match msg.mode {
                    TransportMode::Realtime => Mode::Realtime,
                    TransportMode::Reliable => Mode::Reliable,
                };
                let (peer, payload) = (msg.peer, msg.payload);
                s.with_member(ctx, |m, now, out| {
                    m.handle_message(peer, mode, payload, now, out);
                });
            }
            _ => {}
        }
    });
    let ticks = Arc::clone(&shared);
    node.every(TICK, move |ctx| {
        let mut s = lock(&ticks);
        s.now = Timestamp(ctx.now().as_nanos());
        s.with_member(ctx, |m, now, out| m.handle_timeout(now, out));
    });
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).map_err(runtime_error)?;
    }
    let peer = node
        .connect(args.peer, args.peer_key)
        .map_err(|e| DaemonError::Runtime(format!("connect {}: {e}", args.peer)))?;
    let deadline = Duration::from_secs(args.timeout);
    let up = node
        .run_until(deadline, |n| {
            // A handshake that gave up leaves no handle behind.
            n.peer_info(peer).is_none_or(|p| p.established) || stop.load(Ordering::Relaxed)
        })
        .map_err(runtime_error)?;
    if stop.load(Ordering::Relaxed) {
        return Err(DaemonError::Runtime(
            "interrupted before the session was up".into(),
        ));
    }
    if !up || node.peer_info(peer).is_none() {
        return Err(DaemonError::Runtime(format!(
            "handshake with hub {} ({}) failed: no answer within {} s",
            args.peer,
            args.peer_key.short(),
            args.timeout
        )));
    }
    // The PeerUp event is delivered within the same turn; make sure it was.
    node.turn(Duration::ZERO).map_err(runtime_error)?;
    eprintln!(
        "intentra: connected to hub {} ({}) as {own_hex}",
        args.peer,
        args.peer_key.short()
    );
    let topic = intentra_pubsub::TopicId::of(&args.topic);
    Ok(Attached {
        node,
        shared,
        peer,
        topic,
        stop,
    })
}

impl Attached {
    /// One turn of the node; then the error that ends the tool, if any.
    fn turn(&mut self, wait: Duration) -> Result<(), DaemonError> {
        self.node.turn(wait).map_err(runtime_error)?;
        let s = lock(&self.shared);
        if let Some(reason) = &s.down {
            return Err(DaemonError::Runtime(format!(
                "session to hub {} closed: {reason}",
                self.peer
            )));
        }
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs `f` on the member from the main loop.
    fn member<R>(
        &mut self,
        f: impl FnOnce(&mut Member<PeerId>, Timestamp, &mut Out<'_, Node>) -> R,
    ) -> R {
        let mut s = lock(&self.shared);
        let mut result = None;
        s.with_member(&mut self.node, |m, now, out| result = Some(f(m, now, out)));
        match result {
            Some(r) => r,
            None => unreachable!("with_member runs its closure"),
        }
    }

    fn take_notes(&mut self) -> VecDeque<Note> {
        std::mem::take(&mut lock(&self.shared).notes)
    }

    /// Whether every Reliable message sent so far was acknowledged.
    fn drained(&self) -> bool {
        lock(&self.shared).queue.is_empty()
            && self
                .node
                .peer_info(self.peer)
                .is_none_or(|p| p.reliable_queued_bytes == 0)
    }

    fn backlog(&self) -> usize {
        lock(&self.shared).queue.len()
    }

    fn close(mut self) {
        self.node.close_all(intentra::proto::CloseReason::Local);
    }
}

fn refused(action: Action, topic: &str) -> DaemonError {
    let what = match action {
        Action::Publish => "publishing on",
        Action::Subscribe => "subscribing to",
        Action::Link => "linking for",
        _ => "a request on",
    };
    DaemonError::Runtime(format!("the hub refused {what} topic {topic:?}"))
}

/// `intentra publish`.
pub fn publish(args: &PublishArgs) -> Result<(), DaemonError> {
    let mut a = attach(&args.hub)?;
    let topic_name = args.hub.topic.clone();
    let topic = a
        .member(|m, now, out| m.advertise(&topic_name, now, out))
        .map_err(|e| DaemonError::Runtime(format!("topic {topic_name:?}: {e}")))?;
    let mode = match args.mode {
        DeliveryMode::Realtime => Mode::Realtime,
        DeliveryMode::Reliable => Mode::Reliable,
    };
    let check = |a: &mut Attached| -> Result<(), DaemonError> {
        for note in a.take_notes() {
            if let Note::Refused { action } = note {
                return Err(refused(action, &args.hub.topic));
            }
        }
        Ok(())
    };
    // Wait for the ADVERTISE to be acknowledged (a refusal follows it at once), and for
    // the subscribers asked for.
    let deadline = Instant::now() + Duration::from_secs(args.hub.timeout);
    loop {
        a.turn(Duration::from_millis(5))?;
        check(&mut a)?;
        let subscribers = lock(&a.shared)
            .member
            .presence(topic)
            .filter(|e| e.role == Role::Subscriber)
            .count();
        if a.drained() && subscribers >= args.wait_subscribers {
            break;
        }
        if a.stopped() {
            a.close();
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DaemonError::Runtime(format!(
                "{subscribers} of {} subscribers present on {:?} after {} s",
                args.wait_subscribers, args.hub.topic, args.hub.timeout
            )));
        }
    }
    let mut sent = 0u64;
    let mut publish_one = |a: &mut Attached, payload: &[u8]| -> Result<(), DaemonError> {
        a.member(|m, now, out| m.publish(topic, mode, payload, now, out))
            .map_err(|e| DaemonError::Runtime(format!("publish: {e}")))?;
        sent += 1;
        Ok(())
    };
    match args.rate {
        None => {
            let (tx, rx) = std::sync::mpsc::sync_channel::<String>(1024);
            std::thread::Builder::new()
                .name("intentra-stdin".into())
                .spawn(move || {
                    for line in std::io::stdin().lock().lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                })
                .map_err(runtime_error)?;
            loop {
                if a.stopped() {
                    break;
                }
                if a.backlog() >= PUBLISH_BACKLOG {
                    a.turn(Duration::from_millis(1))?;
                    check(&mut a)?;
                    continue;
                }
                match rx.recv_timeout(Duration::from_millis(2)) {
                    Ok(line) => publish_one(&mut a, line.as_bytes())?,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
                a.turn(Duration::ZERO)?;
                check(&mut a)?;
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
            let count = args.count.unwrap_or(u64::MAX);
            let start = Instant::now();
            let mut n = 0u64;
            while n < count && !a.stopped() {
                let due = start + interval.mul_f64(n as f64);
                let now = Instant::now();
                if now < due {
                    a.turn((due - now).min(Duration::from_millis(50)))?;
                    check(&mut a)?;
                    continue;
                }
                if a.backlog() >= PUBLISH_BACKLOG {
                    a.turn(Duration::from_millis(1))?;
                    check(&mut a)?;
                    continue;
                }
                n += 1;
                let payload = match &args.payload {
                    Some(p) => p.clone(),
                    None => n.to_string(),
                };
                publish_one(&mut a, payload.as_bytes())?;
                a.turn(Duration::ZERO)?;
                check(&mut a)?;
            }
        }
    }
    // Reliable data acknowledged, then a moment for a late REFUSED.
    let end = Instant::now() + DRAIN_LIMIT;
    while !a.drained() && Instant::now() < end && !a.stopped() {
        a.turn(Duration::from_millis(5))?;
        check(&mut a)?;
    }
    let end = Instant::now() + LINGER;
    while Instant::now() < end && !a.stopped() {
        a.turn(Duration::from_millis(5))?;
        check(&mut a)?;
    }
    eprintln!("intentra: published {sent} on {:?}", args.hub.topic);
    a.close();
    Ok(())
}

/// Whether the reader of stdout went away (a pipe whose other end closed).
fn stdout_closed() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::from(0u16)), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

fn hex(key: &MemberKey) -> String {
    key.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn text_payload(payload: &[u8]) -> String {
    let text = String::from_utf8_lossy(payload);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::Publisher => "publisher",
        Role::Subscriber => "subscriber",
        _ => "member",
    }
}

fn reason_str(reason: PresenceReason) -> &'static str {
    match reason {
        PresenceReason::Joined => "joined",
        PresenceReason::Left => "left",
        PresenceReason::Closed => "closed",
        PresenceReason::Silent => "silent",
        _ => "other",
    }
}

/// Writes one line; `false` when stdout is closed (the tool then exits cleanly).
fn emit(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .is_ok()
}

/// `intentra subscribe`.
pub fn subscribe(args: &SubscribeArgs) -> Result<(), DaemonError> {
    let mut a = attach(&args.hub)?;
    let topic_name = args.hub.topic.clone();
    a.member(|m, now, out| m.subscribe(&topic_name, now, out))
        .map_err(|e| DaemonError::Runtime(format!("topic {topic_name:?}: {e}")))?;
    let mut received = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut gaps: Vec<(MemberKey, u64)> = Vec::new();
    let mut next_check = Instant::now();
    while !a.stopped() && received < limit {
        a.turn(Duration::from_millis(50))?;
        for note in a.take_notes() {
            match note {
                Note::Refused { action } => return Err(refused(action, &args.hub.topic)),
                Note::Gap { publisher, missing } => gaps.push((publisher, missing)),
                Note::Restarted { publisher } => {
                    eprintln!(
                        "intentra: publisher {} restarted its stream",
                        hex(&publisher)
                    );
                }
                Note::Message {
                    publisher,
                    mode,
                    seq,
                    hops,
                    payload,
                } => {
                    let gap = gaps
                        .iter()
                        .position(|(k, _)| *k == publisher)
                        .map_or(0, |i| gaps.swap_remove(i).1);
                    let mode = match mode {
                        Mode::Realtime => "realtime",
                        Mode::Reliable => "reliable",
                    };
                    let line = if args.json {
                        serde_json::json!({
                            "topic": args.hub.topic,
                            "publisher": hex(&publisher),
                            "mode": mode,
                            "seq": seq,
                            "gap": gap,
                            "hops": hops,
                            "payload": String::from_utf8_lossy(&payload),
                        })
                        .to_string()
                    } else {
                        let seq = seq.map_or_else(|| "-".to_owned(), |s| s.to_string());
                        format!(
                            "publisher={} seq={seq} gap={gap} hops={hops} payload={}",
                            hex(&publisher),
                            text_payload(&payload)
                        )
                    };
                    if !emit(&line) {
                        a.close();
                        return Ok(());
                    }
                    received += 1;
                    if received >= limit {
                        break;
                    }
                }
                Note::Presence { .. } => {}
            }
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(100);
            if stdout_closed() {
                break;
            }
        }
    }
    a.close();
    Ok(())
}

/// `intentra presence`: the topic's members (the hub's snapshot, lines `member ...`),
/// then each change as it happens (`up ...`, `down ... reason=...`). The snapshot has
/// no end marker: it is what arrives before the subscription is acknowledged and the
/// session has been quiet for a moment.
pub fn presence(args: &PresenceArgs) -> Result<(), DaemonError> {
    let mut a = attach(&args.hub)?;
    let topic_name = args.hub.topic.clone();
    a.member(|m, now, out| m.subscribe(&topic_name, now, out))
        .map_err(|e| DaemonError::Runtime(format!("topic {topic_name:?}: {e}")))?;
    let started = Instant::now();
    let mut last_note = Instant::now();
    let mut in_snapshot = true;
    let mut next_check = Instant::now();
    while !a.stopped() {
        a.turn(Duration::from_millis(20))?;
        let notes = a.take_notes();
        if !notes.is_empty() {
            last_note = Instant::now();
        }
        for note in notes {
            match note {
                Note::Refused { action } => return Err(refused(action, &args.hub.topic)),
                Note::Presence {
                    up,
                    member,
                    role,
                    hub,
                    reason,
                } => {
                    let kind = match (up, in_snapshot) {
                        (true, true) => "member",
                        (true, false) => "up",
                        (false, _) => "down",
                    };
                    let line = if args.json {
                        serde_json::json!({
                            "topic": args.hub.topic,
                            "event": kind,
                            "member": hex(&member),
                            "role": role_str(role),
                            "hub": hex(&hub),
                            "reason": reason_str(reason),
                        })
                        .to_string()
                    } else if up {
                        format!(
                            "{kind} {} {} hub={}",
                            hex(&member),
                            role_str(role),
                            hex(&hub)
                        )
                    } else {
                        format!(
                            "{kind} {} {} hub={} reason={}",
                            hex(&member),
                            role_str(role),
                            hex(&hub),
                            reason_str(reason)
                        )
                    };
                    if !emit(&line) {
                        a.close();
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        if in_snapshot
            && a.drained()
            && started.elapsed() >= Duration::from_millis(200)
            && last_note.elapsed() >= Duration::from_millis(150)
        {
            in_snapshot = false;
            let n = lock(&a.shared).member.presence(a.topic).count();
            eprintln!(
                "intentra: {n} members on {:?}; changes follow",
                args.hub.topic
            );
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(100);
            if stdout_closed() {
                break;
            }
        }
    }
    a.close();
    Ok(())
}
