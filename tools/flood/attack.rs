//! The attacks. Each is bounded by a packet count and a duration, paced to a target rate,
//! and sends only to the server on loopback. Forged source addresses go through a raw
//! IPv4 socket (`IPPROTO_RAW`, so the IPv4 and UDP headers are ours, built here in safe
//! Rust); the garbage flood uses an ordinary socket and `sendmmsg`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use intentra::proto::internals::{mac1_key, write_init_macs};
use intentra::proto::wire::init;
use intentra::proto::PublicKey;
use intentra::udp::raw::{Outgoing, SendBatch, BATCH};
use nix::sys::socket::{
    sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::legit::Control;

/// The attacks, in the order the suite runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Spoofed HandshakeInits with valid mac1 from many distinct source addresses.
    InitFlood,
    /// HandshakeInits from one source, same sender index, a new ephemeral each time.
    InitChurn,
    /// Inits from every legitimate peer's IP (other ports), refreshed, while they rekey.
    Squat,
    /// Replays and junk carrying real session indexes, from a real peer's address and port.
    Junk,
    /// Random datagrams as fast as asked (500k/s by default).
    Garbage,
    /// Idle and half-open TCP connections on the metrics port while it is scraped.
    IdleTcp,
}

impl Attack {
    /// Every attack, in suite order.
    pub const ALL: [Attack; 6] = [
        Attack::InitFlood,
        Attack::InitChurn,
        Attack::Squat,
        Attack::Junk,
        Attack::Garbage,
        Attack::IdleTcp,
    ];

    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Attack::InitFlood => "init-flood",
            Attack::InitChurn => "init-churn",
            Attack::Squat => "squat",
            Attack::Junk => "junk",
            Attack::Garbage => "garbage",
            Attack::IdleTcp => "idle-tcp",
        }
    }
}

/// Where and how hard.
pub struct Plan {
    pub server: SocketAddrV4,
    pub server_key: PublicKey,
    pub metrics: SocketAddr,
    pub legit_ips: Vec<Ipv4Addr>,
    pub duration: Duration,
    /// Target packets per second (handshake floods, junk, garbage).
    pub rate: u64,
    /// Distinct spoofed sources of the init flood.
    pub sources: u32,
    /// Squatting ports per legitimate IP; idle connections for idle-tcp.
    pub count: u32,
}

/// What an attack did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub packets: u64,
    pub send_errors: u64,
    pub seconds: f64,
    /// Distinct source addresses used.
    pub sources: u64,
    /// CPU of the attacking thread over its run, in cores: near 1.0 means the attack
    /// was limited by its own core, not by the target rate.
    pub attacker_cpu: f64,
    /// Attack-specific figures (scrapes for idle-tcp, why it could not run, ...).
    pub detail: String,
}

/// Why an attack could not run at all.
#[derive(Debug)]
pub enum AttackError {
    /// The raw socket (needs root or CAP_NET_RAW) or another socket failed.
    Socket(String),
}

impl std::fmt::Display for AttackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttackError::Socket(e) => f.write_str(e),
        }
    }
}

/// Runs one attack to its bounds (or until `control.stop`).
pub fn run(attack: Attack, plan: &Plan, control: &Control) -> Result<Outcome, AttackError> {
    let cpu = intentra::udp::raw::thread_cpu_time();
    let mut outcome = match attack {
        Attack::InitFlood => init_flood(plan, control),
        Attack::InitChurn => init_churn(plan, control),
        Attack::Squat => squat(plan, control),
        Attack::Junk => junk(plan, control),
        Attack::Garbage => garbage(plan, control),
        Attack::IdleTcp => idle_tcp(plan, control),
    }?;
    let used = intentra::udp::raw::thread_cpu_time().saturating_sub(cpu);
    if outcome.seconds > 0.0 {
        outcome.attacker_cpu = used.as_secs_f64() / outcome.seconds;
    }
    Ok(outcome)
}

/// Paces a sender to `rate` packets/s for at most `duration` and `rate * duration` packets.
struct Pacer {
    start: Instant,
    rate: u64,
    limit: u64,
    end: Instant,
    sent: u64,
}

impl Pacer {
    fn new(rate: u64, duration: Duration) -> Pacer {
        let start = Instant::now();
        Pacer {
            start,
            rate: rate.max(1),
            limit: (rate as f64 * duration.as_secs_f64()).ceil() as u64,
            end: start + duration,
            sent: 0,
        }
    }

    /// How many may go now (at most `max`); `None` once the bounds are reached. Sleeps
    /// briefly when ahead of schedule.
    fn next(&mut self, max: u64, control: &Control) -> Option<u64> {
        loop {
            let now = Instant::now();
            if now >= self.end || self.sent >= self.limit || control.stop.load(Ordering::Acquire) {
                return None;
            }
            let due = ((now - self.start).as_secs_f64() * self.rate as f64) as u64;
            let due = due.min(self.limit);
            if due > self.sent {
                let n = (due - self.sent).min(max);
                self.sent += n;
                return Some(n);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    fn seconds(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

/// A raw IPv4 socket: every datagram's IPv4 and UDP headers are built by `send`.
struct RawSender {
    fd: OwnedFd,
    packet: Vec<u8>,
}

impl RawSender {
    fn open() -> Result<RawSender, AttackError> {
        // IPPROTO_RAW implies IP_HDRINCL: the kernel sends our header as is (it fills in
        // the IP checksum and ID), which is how a spoofed source gets on the wire.
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::Raw,
        )
        .map_err(|e| {
            AttackError::Socket(format!(
                "cannot open a raw IPv4 socket (root or CAP_NET_RAW needed): {e}"
            ))
        })?;
        Ok(RawSender {
            fd,
            packet: Vec::with_capacity(1600),
        })
    }

    fn send(&mut self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> bool {
        build_udp(&mut self.packet, src, dst, payload);
        sendto(
            self.fd.as_raw_fd(),
            &self.packet,
            &SockaddrIn::from(dst),
            MsgFlags::empty(),
        )
        .is_ok()
    }
}

fn checksum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 + UDP datagram from `src` to `dst` carrying `payload`, checksums included.
pub fn build_udp(out: &mut Vec<u8>, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    out.clear();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    out.extend_from_slice(&src.ip().octets());
    out.extend_from_slice(&dst.ip().octets());
    let ip_sum = checksum_fold(checksum_add(0, &out[..20]));
    out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&(udp_len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    // Pseudo-header: addresses, protocol, UDP length.
    let mut sum = checksum_add(0, &src.ip().octets());
    sum = checksum_add(sum, &dst.ip().octets());
    sum += 17 + udp_len as u32;
    sum = checksum_add(sum, &out[20..]);
    let mut udp_sum = checksum_fold(sum);
    if udp_sum == 0 {
        // 0 means "no checksum" in UDP over IPv4; its one's-complement twin is sent instead.
        udp_sum = 0xffff;
    }
    out[26..28].copy_from_slice(&udp_sum.to_be_bytes());
}

/// A HandshakeInit for the server: `sender`, an ephemeral `e` (any 32 bytes are a valid
/// X25519 public value, so the responder does all its Diffie-Hellman work), a valid mac1
/// and no cookie.
pub fn handshake_init(mac1: &[u8; 32], sender: u32, e: &[u8; 32]) -> [u8; init::LEN] {
    let mut packet = [0u8; init::LEN];
    packet[..4].copy_from_slice(&[1, 1, 0, 0]);
    packet[init::SENDER..init::NOISE].copy_from_slice(&sender.to_le_bytes());
    packet[init::NOISE..init::NOISE + 32].copy_from_slice(e);
    write_init_macs(&mut packet, mac1, None);
    packet
}

fn nonzero(rng: &mut ChaCha20Rng) -> u32 {
    rng.next_u32().max(1)
}

fn ephemeral(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut e = [0u8; 32];
    rng.fill_bytes(&mut e);
    e
}

fn init_flood(plan: &Plan, control: &Control) -> Result<Outcome, AttackError> {
    let mut raw = RawSender::open()?;
    let mut rng = ChaCha20Rng::from_entropy();
    let mac1 = mac1_key(&plan.server_key);
    let base = u32::from(Ipv4Addr::new(127, 64, 0, 0));
    let sources = plan.sources.max(1);
    let mut pacer = Pacer::new(plan.rate, plan.duration);
    let (mut sent, mut errors, mut i) = (0u64, 0u64, 0u32);
    while let Some(n) = pacer.next(64, control) {
        for _ in 0..n {
            let ip = Ipv4Addr::from(base + (i % sources));
            i = i.wrapping_add(1);
            let port = 1024 + (rng.next_u32() % 60_000) as u16;
            let packet = handshake_init(&mac1, nonzero(&mut rng), &ephemeral(&mut rng));
            if raw.send(SocketAddrV4::new(ip, port), plan.server, &packet) {
                sent += 1;
            } else {
                errors += 1;
            }
        }
    }
    Ok(Outcome {
        packets: sent,
        send_errors: errors,
        seconds: pacer.seconds(),
        sources: u64::from(sources.min(i)),
        attacker_cpu: 0.0,
        detail: format!("127.64.0.0 + {sources} addresses, random ports"),
    })
}

fn init_churn(plan: &Plan, control: &Control) -> Result<Outcome, AttackError> {
    let mut raw = RawSender::open()?;
    let mut rng = ChaCha20Rng::from_entropy();
    let mac1 = mac1_key(&plan.server_key);
    let src = SocketAddrV4::new(Ipv4Addr::new(127, 0, 4, 1), 40_000);
    let sender = nonzero(&mut rng);
    let mut pacer = Pacer::new(plan.rate, plan.duration);
    let (mut sent, mut errors) = (0u64, 0u64);
    while let Some(n) = pacer.next(64, control) {
        for _ in 0..n {
            let packet = handshake_init(&mac1, sender, &ephemeral(&mut rng));
            if raw.send(src, plan.server, &packet) {
                sent += 1;
            } else {
                errors += 1;
            }
        }
    }
    Ok(Outcome {
        packets: sent,
        send_errors: errors,
        seconds: pacer.seconds(),
        sources: 1,
        attacker_cpu: 0.0,
        detail: format!("from {src}, sender index fixed, new ephemeral per packet"),
    })
}

/// Every squatting port sends a fresh init twice a second: a pending handshake never
/// ages out, and the source's budget stays full while the real peer tries to rekey.
const SQUAT_REFRESH: Duration = Duration::from_millis(500);

fn squat(plan: &Plan, control: &Control) -> Result<Outcome, AttackError> {
    let mut raw = RawSender::open()?;
    let mut rng = ChaCha20Rng::from_entropy();
    let mac1 = mac1_key(&plan.server_key);
    let ports = plan.count.max(1);
    let squatters: Vec<(SocketAddrV4, u32)> = plan
        .legit_ips
        .iter()
        .flat_map(|ip| (0..ports).map(move |p| SocketAddrV4::new(*ip, 50_000 + p as u16)))
        .map(|a| (a, 0))
        .collect();
    let mut squatters: Vec<(SocketAddrV4, u32)> = squatters
        .into_iter()
        .map(|(a, _)| (a, nonzero(&mut rng)))
        .collect();
    let start = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    let rounds = (plan.duration.as_secs_f64() / SQUAT_REFRESH.as_secs_f64()).ceil() as u64;
    for round in 0..rounds {
        if control.stop.load(Ordering::Acquire) || start.elapsed() >= plan.duration {
            break;
        }
        for (src, sender) in squatters.iter_mut() {
            let packet = handshake_init(&mac1, *sender, &ephemeral(&mut rng));
            if raw.send(*src, plan.server, &packet) {
                sent += 1;
            } else {
                errors += 1;
            }
        }
        let next = SQUAT_REFRESH * (round as u32 + 1);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait.min(plan.duration.saturating_sub(start.elapsed())));
        }
    }
    Ok(Outcome {
        packets: sent,
        send_errors: errors,
        seconds: start.elapsed().as_secs_f64(),
        sources: squatters.len() as u64,
        attacker_cpu: 0.0,
        detail: format!(
            "{ports} ports on each of {} legitimate IPs, refreshed every {} ms",
            plan.legit_ips.len(),
            SQUAT_REFRESH.as_millis()
        ),
    })
}

fn junk(plan: &Plan, control: &Control) -> Result<Outcome, AttackError> {
    let mut raw = RawSender::open()?;
    let mut rng = ChaCha20Rng::from_entropy();
    let mut pacer = Pacer::new(plan.rate, plan.duration);
    let (mut sent, mut errors, mut replays, mut forged) = (0u64, 0u64, 0u64, 0u64);
    let mut snapshot: Vec<Vec<u8>> = Vec::new();
    let mut victim = None;
    let mut refreshed = Instant::now() - Duration::from_secs(1);
    let mut packet = Vec::with_capacity(1500);
    let mut i = 0usize;
    while let Some(n) = pacer.next(32, control) {
        // The peer's newest datagrams carry its current session index (rekeys change it).
        if refreshed.elapsed() >= Duration::from_millis(100) {
            refreshed = Instant::now();
            if let Ok(c) = control.capture.lock() {
                victim = c.addr;
                snapshot = c.sent.iter().cloned().collect();
            }
        }
        let Some(src) = victim else { continue };
        if snapshot.is_empty() {
            continue;
        }
        for _ in 0..n {
            i = i.wrapping_add(1);
            let Some(original) = snapshot.get(i % snapshot.len()) else {
                continue;
            };
            packet.clear();
            packet.extend_from_slice(original);
            if i % 2 == 0 {
                replays += 1;
            } else {
                // Same receiver index, a counter just ahead of the peer's, a wrong tag.
                forged += 1;
                let counter = packet
                    .get(8..16)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0)
                    .wrapping_add(1 + u64::from(rng.next_u32() % 4096));
                if let Some(c) = packet.get_mut(8..16) {
                    c.copy_from_slice(&counter.to_le_bytes());
                }
                if let Some(body) = packet.get_mut(16..) {
                    rng.fill_bytes(body);
                }
            }
            if raw.send(src, plan.server, &packet) {
                sent += 1;
            } else {
                errors += 1;
            }
        }
    }
    Ok(Outcome {
        packets: sent,
        send_errors: errors,
        seconds: pacer.seconds(),
        sources: 1,
        attacker_cpu: 0.0,
        detail: match victim {
            Some(v) => format!("from the peer's own {v}: {replays} replays, {forged} forged"),
            None => "peer 0 had sent nothing to learn from".to_string(),
        },
    })
}

/// Bytes of every garbage datagram: one size, so that a batch goes out as one GSO send.
const GARBAGE_LEN: usize = 160;

fn garbage(plan: &Plan, control: &Control) -> Result<Outcome, AttackError> {
    let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 6, 1), 0))
        .map_err(|e| AttackError::Socket(format!("cannot bind the garbage sender: {e}")))?;
    intentra::udp::raw::set_buffers(&socket, 1 << 20, 8 << 20);
    let mut gso = intentra::udp::raw::gso_supported(&socket);
    let mut rng = ChaCha20Rng::from_entropy();
    // BATCH datagrams back to back: odd ones random bytes (they fail the parser), even ones
    // with a valid transport prefix and a fresh random receiver index per batch (they reach
    // the session lookup).
    let mut pool = vec![0u8; BATCH * GARBAGE_LEN];
    rng.fill_bytes(&mut pool);
    let out: Vec<Outgoing> = (0..BATCH)
        .map(|i| Outgoing {
            dst: SocketAddr::V4(plan.server),
            offset: i * GARBAGE_LEN,
            len: GARBAGE_LEN,
        })
        .collect();
    let mut batch = SendBatch::new();
    let mut pacer = Pacer::new(plan.rate, plan.duration);
    let (mut sent, mut errors) = (0u64, 0u64);
    while let Some(n) = pacer.next(BATCH as u64, control) {
        let n = (n as usize).min(BATCH);
        for i in (0..n).step_by(2) {
            if let Some(b) = pool.get_mut(i * GARBAGE_LEN..i * GARBAGE_LEN + 8) {
                b[..4].copy_from_slice(&[1, 5, 0, 0]);
                b[4..8].copy_from_slice(&rng.next_u32().max(1).to_le_bytes());
            }
        }
        let Some(bytes) = pool.get(..n * GARBAGE_LEN) else {
            break;
        };
        if gso && n > 1 {
            match intentra::udp::raw::send_gso(
                socket.as_raw_fd(),
                SocketAddr::V4(plan.server),
                bytes,
                GARBAGE_LEN as u16,
            ) {
                Ok(_) => {
                    sent += n as u64;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    errors += n as u64;
                    continue;
                }
                // The kernel refuses GSO after all: sendmmsg from here on.
                Err(_) => gso = false,
            }
        }
        match batch.send(socket.as_raw_fd(), &pool, &out[..n]) {
            Ok(k) => {
                sent += k as u64;
                errors += (n - k.min(n)) as u64;
            }
            Err(_) => errors += n as u64,
        }
    }
    Ok(Outcome {
        packets: sent,
        send_errors: errors,
        seconds: pacer.seconds(),
        sources: 1,
        attacker_cpu: 0.0,
        detail: format!(
            "{GARBAGE_LEN}-byte datagrams from 127.0.6.1 by {}, one thread",
            if gso {
                "UDP GSO (64 per send)"
            } else {
                "sendmmsg"
            }
        ),
    })
}

fn open_idle(metrics: SocketAddr, half_request: bool) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).ok()?;
    // Half say nothing; half start a request and never finish it.
    if half_request {
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
    }
    let _ = s.set_nonblocking(true);
    Some(s)
}

/// Whether the server has closed (or reset) this connection.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn idle_tcp(plan: &Plan, control: &Control) -> Result<Outcome, AttackError> {
    let mut idle: Vec<Option<TcpStream>> = (0..plan.count)
        .map(|i| open_idle(plan.metrics, i % 2 == 1))
        .collect();
    let mut opened = idle.iter().filter(|s| s.is_some()).count() as u64;
    let (mut refused, mut reopened) = (plan.count as u64 - opened, 0u64);
    let start = Instant::now();
    let (mut ok, mut failed, mut slowest) = (0u32, 0u32, Duration::ZERO);
    while start.elapsed() < plan.duration && !control.stop.load(Ordering::Acquire) {
        let t = Instant::now();
        match intentra_daemon::metrics_http::fetch_metrics(plan.metrics) {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
        slowest = slowest.max(t.elapsed());
        // Keep all of them open: one the server closed is replaced at once, as a
        // slow-loris client would.
        for (i, slot) in idle.iter_mut().enumerate() {
            if slot.as_mut().is_none_or(closed) {
                *slot = open_idle(plan.metrics, i % 2 == 1);
                match slot {
                    Some(_) => {
                        reopened += 1;
                        opened += 1;
                    }
                    None => refused += 1,
                }
            }
        }
        let left = plan.duration.saturating_sub(start.elapsed());
        std::thread::sleep(Duration::from_millis(500).min(left));
    }
    Ok(Outcome {
        packets: opened,
        send_errors: refused,
        seconds: start.elapsed().as_secs_f64(),
        sources: 1,
        attacker_cpu: 0.0,
        detail: format!(
            "{} connections held open ({reopened} reopened after the server closed them, {refused} refused); scrapes {ok} ok, {failed} failed, slowest {:.2} s",
            plan.count,
            slowest.as_secs_f64()
        ),
    })
}
