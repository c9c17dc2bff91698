//! Fan-out measured in one process over real loopback sockets: one message to N
//! subscribers, three ways in the same run, so their figures compare.
//!
//! - **raw**: plain kernel UDP. One thread sends each 128-byte message to the N
//!   subscriber sockets with `sendmmsg` (64 per call, `intentra_udp::raw`), the
//!   baseline `intentra-bench` uses.
//! - **plain**: a plain intentra send. The hub's node publishes each message to every
//!   session from a tick (`Context::publish`): N seals into the node's send ring.
//! - **hub**: the pubsub relay. A publisher session sends PUBLISH to `intentra serve`'s
//!   hub glue (`intentra_daemon::hub`, the same code the daemon runs, mmsg driver), which
//!   relays it to the N subscriber sessions.
//!
//! The subscribers are N intentra endpoints with keys of their own, one socket each on
//! 127.0.0.1, all driven by the harness thread (poll, then `recvmmsg` on the readable
//! ones), which also runs the publisher. Per phase it reports messages published,
//! datagrams delivered to subscribers out of those expected, publish-to-last-subscriber
//! latency (p50/p99 over the messages every subscriber got), the CPU time of the sending
//! thread per datagram (`getrusage(RUSAGE_THREAD)`), `sendmmsg` calls per message (counted
//! with `perf stat -e syscalls:sys_enter_sendmmsg -t TID` when perf can, else `-`) and heap
//! allocations per message in the whole process (a counting allocator).
//!
//! The hub's presence detection time is 60 s here, not 3 s: this thread also runs
//! every subscriber's timers, and a stall of it under load would otherwise make the hub
//! report subscribers silent and then back (each an n-wide PRESENCE fan-out), which is
//! presence churn, not the relay being measured.
//!
//! Bounded: `--messages` per phase at `--rate`, each phase at most its duration plus 2 s
//! and a drain of at most 5 s (until all arrived or 500 ms without news), setup at most
//! 300 s. Run with `cargo run --release -p intentra-daemon --example
//! pubsub_fanout -- --subscribers 100 --rate 1000 --messages 5000 --runs 3`.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use intentra::proto::{
    Endpoint, EndpointConfig, Event, Keypair, Mode, PeerId, PublicKey, Sent, Timestamp,
};
use intentra::udp::raw::{self as sys, Outgoing, RecvBatch, SendBatch};
use intentra::udp::DriverKind;
use intentra::{Node, NodeConfig};
use intentra_daemon::config::Config;
use intentra_pubsub::wire::{self, PUBLISH_HEADER_LEN};
use intentra_pubsub::{MemberKey, TopicId};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[path = "../../udp/tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

const TOPIC: &str = "fan/out";
/// Marks a raw datagram (an intentra packet never starts with these bytes' type).
const RAW_MAGIC: [u8; 4] = *b"RAWF";
const HANDSHAKE_WINDOW: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle = 0,
    Raw = 1,
    Plain = 2,
    Hub = 3,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Raw => "raw",
            Phase::Plain => "plain",
            Phase::Hub => "hub",
        }
    }
}

struct Args {
    subscribers: usize,
    rate: u32,
    messages: u32,
    size: usize,
    runs: u32,
}

fn parse_args() -> Args {
    let mut args = Args {
        subscribers: 100,
        rate: 1000,
        messages: 5000,
        size: 128,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        let number = || -> u64 {
            value.parse().unwrap_or_else(|_| {
                eprintln!("{flag}: expected a number, got {value:?}");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--subscribers" => args.subscribers = number().clamp(1, 4000) as usize,
            "--rate" => args.rate = number().clamp(1, 100_000) as u32,
            "--messages" => args.messages = number().clamp(1, 1_000_000) as u32,
            "--size" => args.size = number().clamp(24, 1024) as usize,
            "--runs" => args.runs = number().clamp(1, 20) as u32,
            _ => {
                eprintln!("usage: pubsub_fanout [--subscribers N] [--rate HZ] [--messages N] [--size B] [--runs N]");
                std::process::exit(2)
            }
        }
    }
    args
}

/// What the threads share: the clock origin, the phase, and the hub thread's answers.
struct Shared {
    epoch: Instant,
    phase: AtomicU32,
    /// The plain phase: messages the hub's tick is to publish, and how many it did.
    plain_target: AtomicU32,
    plain_sent: AtomicU32,
    plain_datagrams: AtomicU64,
    rate: u32,
    size: usize,
    /// A CPU-time request to the hub thread (a sequence number) and its answer.
    cpu_asked: AtomicU64,
    cpu_answered: AtomicU64,
    cpu_ns: AtomicU64,
    hub_tid: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

fn thread_cpu_ns() -> u64 {
    sys::thread_cpu_time().as_nanos() as u64
}

/// The app payload every way carries: seq (u32), send time (u64 ns), raw magic, filler.
fn fill_payload(buf: &mut [u8], seq: u32, stamp: u64) {
    buf[0..4].copy_from_slice(&seq.to_le_bytes());
    buf[4..12].copy_from_slice(&stamp.to_le_bytes());
    buf[12..16].copy_from_slice(&RAW_MAGIC);
}

fn read_payload(buf: &[u8]) -> Option<(u32, u64)> {
    let seq = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?);
    let stamp = u64::from_le_bytes(buf.get(4..12)?.try_into().ok()?);
    Some((seq, stamp))
}

// ----- the hub thread ----------------------------------------------------------------------

/// Sessions rekey after this (both sides), not the default 120 s: with 1,000 subscribers on
/// a loaded host, setup alone (quadratic presence) can pass 120 s, and 1,000 rekeys at once
/// in the one harness thread, already saturated by a phase, let every session lapse at
/// `reject_after`. Runs are bounded far below it; rekeying is not what is measured.
const SESSION_REKEY: Duration = Duration::from_secs(3600);

/// The hub's daemon configuration. Every subscriber session comes from 127.0.0.1, one
/// source to the handshake limits: their per-source budgets (10 a second by default) are
/// raised to the whole population, else setup stalls past its 300 s bound. Rekeying as
/// `SESSION_REKEY`.
fn hub_config_text(bind: SocketAddr, key_file: &std::path::Path) -> String {
    format!(
        "[node]\nbind = [\"{bind}\"]\nkey_file = \"{}\"\n\
         [metrics]\nlisten = \"off\"\n[log]\nlevel = \"warn\"\n\
         [io]\ndriver = \"mmsg\"\nrecv_buffer_bytes = 16777216\nsend_buffer_bytes = 16777216\n\
         [limits]\nreliable_queue_bytes = 65536\nmax_peers = 8192\nhandshakes_in_flight = 1024\n\
         handshakes_per_ip = 1024\nrate_pps = 1000000\nrate_burst = 100000\n\
         handshake_rate = 100000\nhandshake_burst = 8192\n\
         handshake_rate_per_source = 100000\nhandshake_burst_per_source = 8192\n\
         [timers]\nrekey_after_s = 3600\nreject_after_s = 3660\n\
         [hub]\nenabled = true\ndetection_time_ms = 60000\n\
         [[hub.rules]]\nkey = \"*\"\ntopic = \"fan/*\"\nallow = [\"publish\", \"subscribe\"]\n",
        key_file.display()
    )
}

fn spawn_hub(
    shared: Arc<Shared>,
    dir: &std::path::Path,
) -> (SocketAddr, PublicKey, std::thread::JoinHandle<()>) {
    let key_file = dir.join("hub.key");
    let keypair = Keypair::generate(&mut rand_core::OsRng);
    intentra_daemon::config::write_key_file(&key_file, &keypair.secret, true).unwrap();
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bind = probe.local_addr().unwrap();
    drop(probe);
    let config = Config::from_toml_str(&hub_config_text(bind, &key_file)).unwrap();
    config.validate().unwrap();
    let identity = config.load_identity().unwrap();
    let endpoint = intentra_daemon::daemon::endpoint_config(&config, identity.keypair, None);
    let mut node_config = NodeConfig::new(bind, endpoint);
    node_config.driver = DriverKind::Mmsg;
    node_config.socket.recv_buffer = config.io.recv_buffer_bytes;
    node_config.socket.send_buffer = config.io.send_buffer_bytes;
    node_config.io.batch = config.io.batch_size;
    node_config.io.send_slots = config.io.buffers;
    intentra_daemon::hub::adjust_node_config(&config, &mut node_config);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        shared
            .hub_tid
            .store(nix::unistd::gettid().as_raw() as u64, Ordering::Relaxed);
        let mut node = Node::bind(node_config).unwrap();
        intentra_daemon::hub::attach(&mut node, &config, |_, _| {}).unwrap();
        tx.send((node.local_addr(), node.public_key())).unwrap();
        let plain = Arc::clone(&shared);
        let mut payload = vec![0u8; shared.size];
        let interval_ns = 1_000_000_000 / u64::from(shared.rate);
        let mut next_due = 0u64;
        // The plain phase's publisher and the CPU-time answers run in the node's thread.
        node.every(Duration::from_millis(1), move |ctx| {
            let asked = plain.cpu_asked.load(Ordering::Acquire);
            if asked != plain.cpu_answered.load(Ordering::Relaxed) {
                plain.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
                plain.cpu_answered.store(asked, Ordering::Release);
            }
            if plain.phase.load(Ordering::Acquire) != Phase::Plain as u32 {
                next_due = 0;
                return;
            }
            let now = plain.now_ns();
            if next_due == 0 {
                next_due = now;
            }
            let target = plain.plain_target.load(Ordering::Relaxed);
            let mut sent = plain.plain_sent.load(Ordering::Relaxed);
            // A bounded catch-up per tick, so the node's loop (and the CPU-time answer)
            // keeps turning when the node falls behind the rate.
            let mut this_tick = 0;
            while sent < target && next_due <= now && this_tick < 4 {
                this_tick += 1;
                sent += 1;
                fill_payload(&mut payload, sent, plain.now_ns());
                let report = ctx.publish(Mode::Realtime, &payload);
                plain
                    .plain_datagrams
                    .fetch_add(report.sent as u64, Ordering::Relaxed);
                next_due += interval_ns;
            }
            plain.plain_sent.store(sent, Ordering::Release);
        });
        while !shared.stop.load(Ordering::Relaxed) {
            node.run_for(Duration::from_millis(50)).unwrap();
        }
    });
    let (addr, key) = rx.recv().unwrap();
    (addr, key, thread)
}

// ----- subscribers and the publisher ---------------------------------------------------------

struct Session {
    endpoint: Endpoint,
    peer: PeerId,
    socket: UdpSocket,
    up: bool,
}

fn session_config(keypair: Keypair) -> EndpointConfig {
    let mut config = EndpointConfig::new(keypair);
    config.max_peers = 1;
    config.handshakes_in_flight = 1;
    config.handshakes_per_ip = 1;
    config.rate_pps = 10_000_000;
    config.rate_burst = 10_000_000;
    config.rekey_after = SESSION_REKEY;
    config.reject_after = SESSION_REKEY + Duration::from_secs(60);
    config
}

impl Session {
    fn new(hub: SocketAddr, hub_key: PublicKey, now: Timestamp, rng: &mut ChaCha20Rng) -> Session {
        let keypair = Keypair::generate(rng);
        let mut endpoint = Endpoint::new(
            session_config(keypair),
            now,
            ChaCha20Rng::seed_from_u64(rng.next_u64()),
        );
        let peer = endpoint.connect(now, hub, hub_key).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        sys::set_buffers(&socket, 1 << 20, 1 << 20);
        Session {
            endpoint,
            peer,
            socket,
            up: false,
        }
    }

    fn key(&self) -> MemberKey {
        MemberKey(*self.endpoint.public_key().as_bytes())
    }

    /// Control packets (handshake, ACKs, keepalives) the endpoint wants out.
    fn transmit(&mut self, now: Timestamp, buf: &mut [u8]) {
        while let Some(t) = self.endpoint.poll_transmit(now, buf) {
            let _ = self.socket.send_to(&buf[..t.len], t.dst);
        }
    }

    fn events(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::PeerUp { .. } => self.up = true,
                Event::PeerDown { .. } => self.up = false,
                _ => {}
            }
        }
    }

    fn send(&mut self, now: Timestamp, mode: Mode, payload: &[u8], buf: &mut [u8]) -> bool {
        match self.endpoint.send(now, self.peer, mode, payload, buf) {
            Ok(Sent::Now(t)) => self.socket.send_to(&buf[..t.len], t.dst).is_ok(),
            // Held beyond the peer's window: the endpoint sends it from poll_transmit.
            Ok(_) => true,
            Err(_) => false,
        }
    }
}

/// Receiver-side tally of one phase.
struct Tally {
    phase: Phase,
    delivered: u64,
    per_seq: Vec<u32>,
    last_arrival: Vec<u64>,
    sent_at: Vec<u64>,
}

impl Tally {
    fn new(messages: u32) -> Tally {
        let n = messages as usize + 1;
        Tally {
            phase: Phase::Idle,
            delivered: 0,
            per_seq: vec![0; n],
            last_arrival: vec![0; n],
            sent_at: vec![0; n],
        }
    }

    fn reset(&mut self, phase: Phase) {
        self.phase = phase;
        self.delivered = 0;
        self.per_seq.fill(0);
        self.last_arrival.fill(0);
        self.sent_at.fill(0);
    }

    fn record(&mut self, app: &[u8], now: u64) {
        let Some((seq, stamp)) = read_payload(app) else {
            return;
        };
        let i = seq as usize;
        if i == 0 || i >= self.per_seq.len() {
            return;
        }
        self.delivered += 1;
        self.per_seq[i] += 1;
        self.last_arrival[i] = self.last_arrival[i].max(now);
        self.sent_at[i] = stamp;
    }
}

struct Harness {
    shared: Arc<Shared>,
    subs: Vec<Session>,
    publisher: Option<Session>,
    pollfds: Vec<libc::pollfd>,
    batch: RecvBatch,
    control: Vec<u8>,
    tally: Tally,
    topic: TopicId,
}

impl Harness {
    /// Waits at most `wait` for any subscriber socket, then reads every readable one
    /// and hands each datagram to its endpoint (or counts it, for a raw one).
    fn pump(&mut self, wait: Duration) {
        sys::wait_readable(&mut self.pollfds, wait);
        let now_ns = self.shared.now_ns();
        let now = Timestamp::from_nanos(now_ns);
        for i in 0..self.subs.len() {
            if self.pollfds[i].revents == 0 {
                continue;
            }
            let sub = &mut self.subs[i];
            let fd = sub.socket.as_raw_fd();
            loop {
                let n = match self.batch.recv(fd, libc::MSG_DONTWAIT) {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                for k in 0..n {
                    let Some(d) = self.batch.get(k) else { continue };
                    if d.data.get(12..16) == Some(&RAW_MAGIC[..]) && d.data.len() < 1500 {
                        if self.tally.phase == Phase::Raw {
                            self.tally.record(d.data, now_ns);
                        }
                        continue;
                    }
                    for m in sub.endpoint.handle_datagram(now, d.src, d.data) {
                        let app = match self.tally.phase {
                            Phase::Hub => m.payload.get(PUBLISH_HEADER_LEN..),
                            Phase::Plain => Some(m.payload),
                            _ => None,
                        };
                        if let Some(app) = app {
                            self.tally.record(app, now_ns);
                        }
                    }
                }
                if n < sys::BATCH {
                    break;
                }
            }
            sub.events();
            sub.transmit(now, &mut self.control);
        }
        if let Some(p) = self.publisher.as_mut() {
            let fd = p.socket.as_raw_fd();
            while let Ok(n) = self.batch.recv(fd, libc::MSG_DONTWAIT) {
                if n == 0 {
                    break;
                }
                for k in 0..n {
                    if let Some(d) = self.batch.get(k) {
                        let _ = p.endpoint.handle_datagram(now, d.src, d.data);
                    }
                }
            }
            p.events();
            p.transmit(now, &mut self.control);
        }
    }

    fn timers(&mut self) {
        let now = Timestamp::from_nanos(self.shared.now_ns());
        for s in self.subs.iter_mut().chain(self.publisher.as_mut()) {
            s.endpoint.handle_timeout(now);
            s.events();
            s.transmit(now, &mut self.control);
        }
    }

    /// Brings every session up (a bounded window of handshakes at a time), subscribes
    /// the subscribers, advertises the publisher, then waits for the presence traffic
    /// (every member hears of every other) to settle.
    fn setup(&mut self, hub: SocketAddr, hub_key: PublicKey, n: usize) {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(300);
        let mut rng = ChaCha20Rng::from_entropy();
        let mut last_timers = Instant::now();
        while self.subs.iter().filter(|s| s.up).count() < n {
            assert!(
                Instant::now() < deadline,
                "handshakes did not finish in 300 s"
            );
            let pending = self.subs.iter().filter(|s| !s.up).count();
            while self.subs.len() < n && pending < HANDSHAKE_WINDOW {
                let now = Timestamp::from_nanos(self.shared.now_ns());
                let mut s = Session::new(hub, hub_key, now, &mut rng);
                s.transmit(now, &mut self.control);
                self.pollfds.push(sys::pollfd(s.socket.as_raw_fd()));
                self.subs.push(s);
                if self.subs.iter().filter(|s| !s.up).count() >= HANDSHAKE_WINDOW {
                    break;
                }
            }
            self.pump(Duration::from_millis(1));
            if last_timers.elapsed() >= Duration::from_millis(10) {
                last_timers = Instant::now();
                self.timers();
            }
        }
        eprintln!(
            "setup: {n} sessions up after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let now = Timestamp::from_nanos(self.shared.now_ns());
        let mut p = Session::new(hub, hub_key, now, &mut rng);
        p.transmit(now, &mut self.control);
        self.publisher = Some(p);
        while !self.publisher.as_ref().is_some_and(|p| p.up) {
            assert!(Instant::now() < deadline, "the publisher did not come up");
            self.pump(Duration::from_millis(1));
            if last_timers.elapsed() >= Duration::from_millis(10) {
                last_timers = Instant::now();
                self.timers();
            }
        }
        // Every SUBSCRIBE makes the hub tell each earlier member (PRESENCE_UP) and send
        // the new one a snapshot: n²/2 Reliable messages each way, settled below.
        let now = Timestamp::from_nanos(self.shared.now_ns());
        let frame = wire::subscribe(TOPIC);
        for s in &mut self.subs {
            assert!(s.send(now, Mode::Reliable, frame.as_bytes(), &mut self.control));
        }
        let now = Timestamp::from_nanos(self.shared.now_ns());
        let frame = wire::advertise(TOPIC);
        let p = self.publisher.as_mut().unwrap();
        assert!(p.send(now, Mode::Reliable, frame.as_bytes(), &mut self.control));
        self.settle(deadline);
    }

    /// Runs until no session has Reliable bytes in flight or waiting and the sockets have
    /// been quiet for 300 ms.
    fn settle(&mut self, deadline: Instant) {
        let mut quiet_since = Instant::now();
        loop {
            assert!(Instant::now() < deadline, "setup traffic did not settle");
            let before = self.received_packets();
            self.pump(Duration::from_millis(5));
            self.timers();
            let busy = self.received_packets() != before
                || self.subs.iter().chain(self.publisher.as_ref()).any(|s| {
                    s.endpoint
                        .peer_info(s.peer)
                        .is_some_and(|i| i.reliable_queued_bytes > 0)
                });
            if busy {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(300) {
                return;
            }
        }
    }

    fn received_packets(&self) -> u64 {
        self.subs
            .iter()
            .map(|s| s.endpoint.stats().packets_received)
            .sum()
    }
}

/// The hub phase's publisher, on a thread of its own so that it publishes on time
/// whatever the subscribers' thread is doing: Realtime PUBLISH messages at `interval`,
/// seq 1..=`total`, and whatever its session needs meanwhile (ACKs, keepalives).
fn publish(
    mut p: Session,
    shared: Arc<Shared>,
    go: Arc<AtomicBool>,
    topic: TopicId,
    interval: u64,
    total: u32,
    size: usize,
) -> (Session, u32) {
    let origin = p.key();
    let mut app = vec![0u8; size];
    let mut frame = vec![0u8; PUBLISH_HEADER_LEN + size];
    let mut out = vec![0u8; 2048];
    let mut batch = RecvBatch::new();
    // Everything is allocated before the measured window opens.
    while !go.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_micros(100));
    }
    let fd = p.socket.as_raw_fd();
    let start = shared.now_ns();
    let mut sent = 0u32;
    while sent < total {
        let due = start + interval * u64::from(sent);
        let now = shared.now_ns();
        if now < due {
            std::thread::sleep(Duration::from_nanos((due - now).min(1_000_000)));
            continue;
        }
        sent += 1;
        let stamp = shared.now_ns();
        fill_payload(&mut app, sent, stamp);
        let len = PUBLISH_HEADER_LEN + size;
        wire::write_publish_header(&mut frame, 0, topic, &origin, u64::from(sent));
        frame[PUBLISH_HEADER_LEN..len].copy_from_slice(&app);
        let now = Timestamp::from_nanos(stamp);
        let _ = p.send(now, Mode::Realtime, &frame[..len], &mut out);
        while let Ok(n) = batch.recv(fd, libc::MSG_DONTWAIT) {
            if n == 0 {
                break;
            }
            for k in 0..n {
                if let Some(d) = batch.get(k) {
                    let _ = p.endpoint.handle_datagram(now, d.src, d.data);
                }
            }
        }
        p.endpoint.handle_timeout(now);
        p.events();
        p.transmit(now, &mut out);
    }
    (p, sent)
}

// ----- phases ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct PhaseResult {
    published: u64,
    datagrams_sent: u64,
    delivered: u64,
    expected: u64,
    complete: u64,
    p50_us: f64,
    p99_us: f64,
    cpu_ns: u64,
    sendmmsg: Option<u64>,
    send_failed: u64,
    allocations: u64,
    seconds: f64,
}

impl PhaseResult {
    /// CPU per datagram really sent: relays the node could not take cost next to nothing.
    fn cpu_per_datagram_ns(&self) -> f64 {
        let sent = self.datagrams_sent.saturating_sub(self.send_failed);
        if sent == 0 {
            return f64::NAN;
        }
        self.cpu_ns as f64 / sent as f64
    }
}

/// `perf stat` counting `sendmmsg` calls of one thread until stopped.
struct PerfCount(Option<Child>);

impl PerfCount {
    fn start(tid: u64) -> PerfCount {
        let child = Command::new("perf")
            .args(["stat", "-x,", "-e", "syscalls:sys_enter_sendmmsg", "-t"])
            .arg(tid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok();
        // perf needs a moment to attach; the phase has not started yet.
        std::thread::sleep(Duration::from_millis(300));
        PerfCount(child)
    }

    fn stop(self) -> Option<u64> {
        let child = self.0?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let out = child.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        text.lines()
            .find(|l| l.contains("sys_enter_sendmmsg"))
            .and_then(|l| l.split(',').next())
            .and_then(|v| v.trim().parse().ok())
    }
}

fn hub_cpu(shared: &Shared) -> u64 {
    let ask = shared.cpu_asked.fetch_add(1, Ordering::AcqRel) + 1;
    let end = Instant::now() + Duration::from_secs(30);
    while shared.cpu_answered.load(Ordering::Acquire) != ask {
        assert!(Instant::now() < end, "the hub thread did not answer");
        std::thread::sleep(Duration::from_micros(100));
    }
    shared.cpu_ns.load(Ordering::Relaxed)
}

fn latency(tally: &Tally, subscribers: usize) -> (u64, f64, f64) {
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    let mut complete = 0;
    for i in 1..tally.per_seq.len() {
        if tally.per_seq[i] as usize == subscribers {
            complete += 1;
            let took = tally.last_arrival[i].saturating_sub(tally.sent_at[i]);
            let _ = hist.record(took / 1000);
        }
    }
    if complete == 0 {
        return (0, f64::NAN, f64::NAN);
    }
    (
        complete,
        hist.value_at_quantile(0.5) as f64,
        hist.value_at_quantile(0.99) as f64,
    )
}

fn run_phase(h: &mut Harness, phase: Phase, args: &Args, raw_socket: &UdpSocket) -> PhaseResult {
    let n = h.subs.len();
    let shared = Arc::clone(&h.shared);
    h.tally.reset(phase);
    let dsts: Vec<SocketAddr> = h
        .subs
        .iter()
        .map(|s| s.socket.local_addr().unwrap())
        .collect();
    let interval = 1_000_000_000 / u64::from(args.rate);
    let span = Duration::from_nanos(interval * u64::from(args.messages));
    let limit = span + Duration::from_secs(2);
    let mut result = PhaseResult::default();
    match phase {
        Phase::Raw => {
            // The raw sender is a thread of its own, so its CPU time is its own.
            let (tx, rx) = std::sync::mpsc::channel::<u64>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            let socket = raw_socket.try_clone().unwrap();
            let shared2 = Arc::clone(&shared);
            let messages = args.messages;
            let size = args.size;
            let sender = std::thread::spawn(move || {
                tx.send(nix::unistd::gettid().as_raw() as u64).unwrap();
                let mut payload = vec![0u8; size];
                let mut out: Vec<Outgoing> = Vec::with_capacity(sys::BATCH);
                let mut batch = SendBatch::new();
                let fd = socket.as_raw_fd();
                let _ = go_rx.recv();
                let (allocs0, cpu0, start) = (allocations(), thread_cpu_ns(), shared2.now_ns());
                let mut sent = 0u64;
                for seq in 1..=messages {
                    let due = start + interval * u64::from(seq - 1);
                    let now = shared2.now_ns();
                    if now < due {
                        std::thread::sleep(Duration::from_nanos(due - now));
                    }
                    fill_payload(&mut payload, seq, shared2.now_ns());
                    for chunk in dsts.chunks(sys::BATCH) {
                        out.clear();
                        out.extend(chunk.iter().map(|&dst| Outgoing {
                            dst,
                            offset: 0,
                            len: size,
                        }));
                        let mut at = 0;
                        let mut tries = 0;
                        while at < out.len() && tries < 1000 {
                            match batch.send(fd, &payload, &out[at..]) {
                                Ok(k) => at += k,
                                Err(_) => {
                                    tries += 1;
                                    std::thread::yield_now();
                                }
                            }
                        }
                        sent += at as u64;
                    }
                }
                (sent, thread_cpu_ns() - cpu0, allocations() - allocs0)
            });
            let tid = rx.recv().unwrap();
            let perf = PerfCount::start(tid);
            let started = Instant::now();
            go_tx.send(()).unwrap();
            let mut last_timers = Instant::now();
            while !sender.is_finished() && started.elapsed() < limit {
                h.pump(Duration::from_millis(1));
                if last_timers.elapsed() >= Duration::from_millis(100) {
                    last_timers = Instant::now();
                    h.timers();
                }
            }
            let (sent, cpu, allocs) = sender.join().unwrap();
            result.sendmmsg = perf.stop();
            result.published = u64::from(args.messages);
            result.datagrams_sent = sent;
            result.cpu_ns = cpu;
            result.allocations = allocs;
            result.seconds = started.elapsed().as_secs_f64();
        }
        Phase::Plain | Phase::Hub => {
            let tid = shared.hub_tid.load(Ordering::Relaxed);
            let perf = PerfCount::start(tid);
            let relayed0 = hub_relayed();
            let failed0 =
                intentra_daemon::hub::exported_counters().map_or(0, |c| c.realtime_send_failed);
            let cpu0 = hub_cpu(&shared);
            // Started (and its thread spawned) before allocations are counted.
            let start_publisher = Arc::new(AtomicBool::new(false));
            let mut last_timers = Instant::now();
            let publisher = match phase {
                Phase::Hub => {
                    let p = h.publisher.take().expect("publisher");
                    let (shared, topic) = (Arc::clone(&shared), h.topic);
                    let (messages, size) = (args.messages, args.size);
                    let go = Arc::clone(&start_publisher);
                    Some(std::thread::spawn(move || {
                        publish(p, shared, go, topic, interval, messages, size)
                    }))
                }
                _ => {
                    shared.plain_sent.store(0, Ordering::Relaxed);
                    shared.plain_datagrams.store(0, Ordering::Relaxed);
                    shared.plain_target.store(args.messages, Ordering::Relaxed);
                    None
                }
            };
            let allocs0 = allocations();
            let started = Instant::now();
            start_publisher.store(true, Ordering::Release);
            if publisher.is_none() {
                shared.phase.store(Phase::Plain as u32, Ordering::Release);
            }
            loop {
                let done = match &publisher {
                    Some(t) => t.is_finished(),
                    None => shared.plain_sent.load(Ordering::Acquire) >= args.messages,
                };
                if done || started.elapsed() >= limit {
                    break;
                }
                h.pump(Duration::from_millis(1));
                // Keepalives and ACKs go out, so the hub keeps hearing every subscriber.
                if last_timers.elapsed() >= Duration::from_millis(100) {
                    last_timers = Instant::now();
                    h.timers();
                }
            }
            let mut sent = 0;
            if let Some(t) = publisher {
                let (p, n) = t.join().unwrap();
                h.publisher = Some(p);
                sent = n;
            }
            shared.phase.store(Phase::Idle as u32, Ordering::Release);
            // A relay that falls behind is still working through its socket when the last
            // message is published: wait until every subscriber has every message, or
            // nothing new arrived for 500 ms (at most 5 s), so late is told from lost.
            let published = match phase {
                Phase::Plain => u64::from(shared.plain_sent.load(Ordering::Relaxed)),
                _ => u64::from(sent),
            };
            let drain_end = Instant::now() + Duration::from_secs(5);
            let mut last = (h.tally.delivered, Instant::now());
            while Instant::now() < drain_end
                && h.tally.delivered < published * n as u64
                && last.1.elapsed() < Duration::from_millis(500)
            {
                h.pump(Duration::from_millis(1));
                if h.tally.delivered != last.0 {
                    last = (h.tally.delivered, Instant::now());
                }
            }
            result.cpu_ns = hub_cpu(&shared) - cpu0;
            let failed =
                intentra_daemon::hub::exported_counters().map_or(0, |c| c.realtime_send_failed);
            result.allocations = allocations() - allocs0;
            result.seconds = started.elapsed().as_secs_f64();
            result.sendmmsg = perf.stop();
            match phase {
                Phase::Plain => {
                    result.published = u64::from(shared.plain_sent.load(Ordering::Relaxed));
                    // The publisher's session is one of the node's peers too.
                    result.datagrams_sent = shared.plain_datagrams.load(Ordering::Relaxed);
                }
                _ => {
                    result.published = u64::from(sent);
                    result.datagrams_sent = hub_relayed() - relayed0;
                    // Relays the node could not take (its deferred-send queue was full).
                    result.send_failed = failed.saturating_sub(failed0);
                }
            }
        }
        Phase::Idle => {}
    }
    // Stragglers still in flight.
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        h.pump(Duration::from_millis(1));
    }
    result.delivered = h.tally.delivered;
    result.expected = result.published * n as u64;
    let (complete, p50, p99) = latency(&h.tally, n);
    result.complete = complete;
    result.p50_us = p50;
    result.p99_us = p99;
    result
}

/// PUBLISH messages the hub has sent, from the series the daemon exports. The glue
/// refreshes its copy every 100 ms, so this waits 150 ms first; it allocates, so it is
/// called outside the windows allocations are counted in.
fn hub_relayed() -> u64 {
    std::thread::sleep(Duration::from_millis(150));
    let text = intentra_daemon::hub::append_metrics(String::new());
    text.lines()
        .find_map(|l| l.strip_prefix("intentra_pubsub_relayed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args = parse_args();
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        phase: AtomicU32::new(0),
        plain_target: AtomicU32::new(0),
        plain_sent: AtomicU32::new(0),
        plain_datagrams: AtomicU64::new(0),
        rate: args.rate,
        size: args.size,
        cpu_asked: AtomicU64::new(0),
        cpu_answered: AtomicU64::new(0),
        cpu_ns: AtomicU64::new(0),
        hub_tid: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (hub_addr, hub_key, hub_thread) = spawn_hub(Arc::clone(&shared), dir.path());
    let mut h = Harness {
        shared: Arc::clone(&shared),
        subs: Vec::new(),
        publisher: None,
        pollfds: Vec::new(),
        batch: RecvBatch::new(),
        control: vec![0u8; 2048],
        tally: Tally::new(args.messages),
        topic: TopicId::of(TOPIC),
    };
    let setup = Instant::now();
    h.setup(hub_addr, hub_key, args.subscribers);
    eprintln!(
        "setup: {} subscribers up and subscribed in {:.1} s",
        h.subs.len(),
        setup.elapsed().as_secs_f64()
    );
    let raw_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    sys::set_buffers(&raw_socket, 1 << 20, 16 << 20);
    println!(
        "subscribers={} rate={}/s messages={} size={}B",
        args.subscribers, args.rate, args.messages, args.size
    );
    println!(
        "{:<4} {:<6} {:>9} {:>11} {:>8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "run",
        "way",
        "msgs",
        "datagrams",
        "dropped",
        "deliv%",
        "complete",
        "p50us",
        "p99us",
        "cpu/dg",
        "mmsg/msg",
        "alloc/msg"
    );
    for run in 1..=args.runs {
        for phase in [Phase::Raw, Phase::Plain, Phase::Hub] {
            let r = run_phase(&mut h, phase, &args, &raw_socket);
            let mmsg = r
                .sendmmsg
                .map(|c| format!("{:.2}", c as f64 / r.published.max(1) as f64))
                .unwrap_or_else(|| "-".to_owned());
            println!(
                "{:<4} {:<6} {:>9} {:>11} {:>8} {:>8.3}% {:>10} {:>9.0} {:>9.0} {:>7.0}ns {:>11} {:>9.3}",
                run,
                phase.name(),
                r.published,
                r.datagrams_sent,
                r.send_failed,
                100.0 * r.delivered as f64 / r.expected.max(1) as f64,
                r.complete,
                r.p50_us,
                r.p99_us,
                r.cpu_per_datagram_ns(),
                mmsg,
                r.allocations as f64 / r.published.max(1) as f64,
            );
            let _ = r.seconds;
            let glue = intentra_daemon::hub::exported_counters().unwrap_or_default();
            eprintln!(
                "  after {}: subscriber sessions up {} of {}, hub backlog overflows {}",
                phase.name(),
                h.subs.iter().filter(|s| s.up).count(),
                h.subs.len(),
                glue.backlog_overflow
            );
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = hub_thread.join();
}
