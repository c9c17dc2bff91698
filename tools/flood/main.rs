//! `intentra-flood`: attacks a real `intentra serve` over loopback while legitimate peers
//! are measured alongside, one bounded attack at a time, and reports per attack what it
//! cost the legitimate traffic and the server (issue 13, "A flood suite over real sockets").
//!
//! Owns the command line, the order of a suite (a baseline without attack, then each
//! attack), the measurements taken from outside the server (CPU and RSS from /proc, the
//! metrics endpoint, the kernel's drop counter of its socket) and the report. It must
//! send only to 127.0.0.0/8, keep every attack within its packet count and duration, and
//! take the server it started down on every exit path (the `Server` guard kills it on
//! drop, SIGINT/SIGTERM end the suite early through the same path).

mod attack;
mod legit;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use attack::{Attack, Outcome, Plan};
use legit::{Control, LegitConfig, PhaseStats};
use server::{Server, ServerOptions};

#[derive(Parser, Debug)]
#[command(
    name = "intentra-flood",
    version,
    about = "Attack a real `intentra serve` over loopback while legitimate peers are measured; one table row per attack"
)]
struct Cli {
    /// Attacks to run, in order (default: all). A baseline without attack always runs first.
    #[arg(long, value_enum, value_delimiter = ',')]
    attacks: Vec<Attack>,
    /// Legitimate peers (at least 2: each subscribes to its neighbour's topic).
    #[arg(long, default_value_t = 8)]
    peers: u32,
    /// Messages per second per legitimate peer (every tenth Reliable, the rest Realtime).
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Payload bytes of a legitimate message.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Seconds of each phase (baseline and every attack).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds after each phase for late messages and for the server to settle.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Target HandshakeInits per second of init-flood and init-churn.
    #[arg(long, default_value_t = 20_000)]
    init_rate: u64,
    /// Distinct spoofed source addresses of init-flood.
    #[arg(long, default_value_t = 16_384)]
    sources: u32,
    /// Squatting ports per legitimate IP.
    #[arg(long, default_value_t = 8)]
    squat_ports: u32,
    /// Target packets per second of the junk/replay attack.
    #[arg(long, default_value_t = 5_000)]
    junk_rate: u64,
    /// Target packets per second of the garbage flood.
    #[arg(long, default_value_t = 500_000)]
    garbage_rate: u64,
    /// Idle TCP connections on the metrics port.
    #[arg(long, default_value_t = 50)]
    idle_conns: u32,
    /// The server's `timers.rekey_after_s` (short, so every phase contains rekeys).
    #[arg(long, default_value_t = 5)]
    rekey_after: u64,
    /// The server's `timers.reject_after_s`.
    #[arg(long, default_value_t = 8)]
    reject_after: u64,
    /// The server's `[io] driver`.
    #[arg(long, default_value = "auto")]
    driver: String,
    /// The `intentra` binary (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Scratch directory for the server's key, config and log (default: a new one in /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Also append the JSON object as one line to this file.
    #[arg(long)]
    jsonl: Option<PathBuf>,
}

/// One row of the report.
#[derive(Debug, Serialize)]
struct Row {
    phase: String,
    attack: Option<Outcome>,
    attack_pps: f64,
    /// Server CPU over the phase, in cores (1.0 = one core busy).
    server_cpu: f64,
    sent: u64,
    received: u64,
    /// Messages due while the session was down or refused by the transport.
    unsent: u64,
    delivery: f64,
    delivery_realtime: f64,
    delivery_reliable: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// p99 over the baseline's p99.
    p99_vs_baseline: f64,
    /// Legitimate sessions that closed (peer:reason), and dials that failed.
    sessions_closed: Vec<String>,
    rekeys: u64,
    peers_rekeyed: u32,
    new_peer_ms: Option<f64>,
    new_peer_error: Option<String>,
    rss_before: u64,
    rss_after: u64,
    /// Server drop counters by reason, during the phase.
    drops: BTreeMap<String, f64>,
    /// Other server counters during the phase (closes by reason, rekeys, handshakes, cookies).
    server: BTreeMap<String, f64>,
    /// Datagrams the kernel dropped at the server's socket (receive buffer full).
    kernel_drops: Option<u64>,
    /// Aims this phase missed.
    missed: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    date_unix: u64,
    /// The server this run started (and stopped).
    server_pid: u32,
    server_driver: String,
    peers: u32,
    rate: u32,
    size: usize,
    duration_s: f64,
    rekey_after_s: u64,
    reject_after_s: u64,
    /// /proc/loadavg before and after: the server shares the machine's cores.
    loadavg_start: String,
    loadavg_end: String,
    rows: Vec<Row>,
}

#[derive(Debug)]
enum FloodError {
    Args(String),
    Server(server::ServerError),
    Legit(String),
    Attack(String),
}

impl std::fmt::Display for FloodError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FloodError::Args(e) => write!(f, "invalid arguments: {e}"),
            FloodError::Server(e) => write!(f, "{e}"),
            FloodError::Legit(e) => write!(f, "legitimate peers: {e}"),
            FloodError::Attack(e) => write!(f, "attack: {e}"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match suite(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intentra-flood: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A progress line on stderr. A closed stderr (`2>&1 | head`) must not end the suite
/// early: `eprintln!` would panic there.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn validate(cli: &Cli) -> Result<(), FloodError> {
    let problem = if !(2..=200).contains(&cli.peers) {
        Some("--peers must be 2..=200")
    } else if !(1..=10_000).contains(&cli.rate) {
        Some("--rate must be 1..=10000")
    } else if cli.size < 17 || cli.size > 1000 {
        Some("--size must be 17..=1000")
    } else if !(cli.duration >= 2.0 && cli.duration <= 120.0) {
        Some("--duration must be in [2, 120] seconds")
    } else if !(cli.settle >= 0.0 && cli.settle <= 30.0) {
        Some("--settle must be in [0, 30] seconds")
    } else if cli.init_rate > 2_000_000 || cli.junk_rate > 2_000_000 || cli.garbage_rate > 5_000_000
    {
        Some("attack rates are bounded: init and junk 2M/s, garbage 5M/s")
    } else if cli.sources == 0 || cli.sources > 1 << 22 {
        Some("--sources must be 1..=4194304 (127.64.0.0 upwards)")
    } else if cli.squat_ports == 0 || cli.squat_ports > 1000 {
        Some("--squat-ports must be 1..=1000")
    } else if cli.idle_conns > 1000 {
        Some("--idle-conns must be at most 1000")
    } else {
        None
    };
    problem.map_or(Ok(()), |p| Err(FloodError::Args(p.to_string())))
}

fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v).unwrap_or(Duration::ZERO)
}

/// Sleeps up to `d`, returning early (false) once the suite is interrupted.
fn nap(d: Duration, control: &Control, interrupted: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted.load(Ordering::Acquire) {
            control.stop.store(true, Ordering::Release);
            return false;
        }
        thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
    }
    true
}

fn suite(cli: &Cli) -> Result<(), FloodError> {
    validate(cli)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&interrupted));
    }
    let attacks: Vec<Attack> = if cli.attacks.is_empty() {
        Attack::ALL.to_vec()
    } else {
        cli.attacks.clone()
    };
    let options = ServerOptions {
        bin: cli.server_bin.clone().unwrap_or_else(server::default_bin),
        dir: cli.dir.clone().unwrap_or_else(server::default_dir),
        rekey_after_s: cli.rekey_after,
        reject_after_s: cli.reject_after,
        driver: cli.driver.clone(),
    };
    let mut srv = Server::start(&options).map_err(FloodError::Server)?;
    let SocketAddr::V4(server_v4) = srv.addr else {
        return Err(FloodError::Args("the server address must be IPv4".into()));
    };
    let loadavg_start = loadavg();
    let server_pid = srv.pid();
    say(format_args!(
        "intentra-flood: server pid {server_pid} on {} (metrics {}), log {}",
        srv.addr,
        srv.metrics,
        srv.log.display()
    ));
    let control = Arc::new(Control::new());
    let legit_config = LegitConfig {
        server: srv.addr,
        server_key: srv.key,
        peers: cli.peers,
        rate: cli.rate,
        size: cli.size,
        phases: attacks.len() + 1,
        rekey_after: Duration::from_secs(cli.rekey_after),
        reject_after: Duration::from_secs(cli.reject_after),
    };
    let legit_control = Arc::clone(&control);
    let legit = thread::Builder::new()
        .name("flood-legit".into())
        .spawn(move || legit::run(legit_config, legit_control))
        .map_err(|e| FloodError::Legit(format!("cannot start the thread: {e}")))?;

    let duration = secs(cli.duration);
    let settle = secs(cli.settle);
    let mut windows: Vec<(String, Option<Outcome>, Sample, Sample)> = Vec::new();
    let mut failure = None;

    // Wait for the peers' first sessions and subscriptions, at most 10 s.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while control.up.load(Ordering::Acquire) < cli.peers && Instant::now() < ready_by {
        if !nap(Duration::from_millis(50), &control, &interrupted) {
            break;
        }
    }
    nap(Duration::from_secs(1), &control, &interrupted);

    let phases: Vec<Option<Attack>> = std::iter::once(None)
        .chain(attacks.iter().copied().map(Some))
        .collect();
    for (i, attack) in phases.iter().enumerate() {
        if interrupted.load(Ordering::Acquire) || !srv.alive() {
            break;
        }
        let name = attack.map_or("baseline", Attack::name).to_string();
        say(format_args!("intentra-flood: {name} ({} s)", cli.duration));
        let before = Sample::take(&srv);
        control.phase.store(i as u32 + 1, Ordering::Release);
        let started = Instant::now();
        let handle = attack.map(|a| {
            let plan = Plan {
                server: server_v4,
                server_key: srv.key,
                metrics: srv.metrics,
                legit_ips: (0..cli.peers).map(legit::peer_ip).collect(),
                duration,
                rate: match a {
                    Attack::InitFlood | Attack::InitChurn => cli.init_rate,
                    Attack::Junk => cli.junk_rate,
                    Attack::Garbage => cli.garbage_rate,
                    Attack::Squat | Attack::IdleTcp => 1,
                },
                sources: cli.sources,
                count: match a {
                    Attack::IdleTcp => cli.idle_conns,
                    _ => cli.squat_ports,
                },
            };
            let c = Arc::clone(&control);
            thread::spawn(move || attack::run(a, &plan, &c))
        });
        // A new peer tries to connect one second into the phase.
        if nap(Duration::from_secs(1), &control, &interrupted) {
            control.probes.fetch_add(1, Ordering::AcqRel);
        }
        let outcome = match handle {
            Some(h) => match h.join() {
                Ok(Ok(o)) => Some(o),
                Ok(Err(e)) => {
                    failure = Some(FloodError::Attack(format!("{name}: {e}")));
                    None
                }
                Err(_) => {
                    failure = Some(FloodError::Attack(format!("{name}: the thread panicked")));
                    None
                }
            },
            None => None,
        };
        if let Some(rest) = duration.checked_sub(started.elapsed()) {
            nap(rest, &control, &interrupted);
        }
        let mut end = Sample::take(&srv);
        control.phase.store(0, Ordering::Release);
        nap(settle, &control, &interrupted);
        let settled = Sample::take(&srv);
        // CPU over the attack window; counters and memory once late packets have landed.
        end.metrics = settled.metrics;
        end.rss = settled.rss;
        end.kernel_drops = settled.kernel_drops;
        end.seconds = started.elapsed().as_secs_f64() - settle.as_secs_f64();
        windows.push((name, outcome, before, end));
        if failure.is_some() {
            break;
        }
    }
    control.stop.store(true, Ordering::Release);
    let stats = legit
        .join()
        .map_err(|_| FloodError::Legit("the thread panicked".into()))?
        .map_err(FloodError::Legit)?;
    let server_died = !srv.alive();
    let log_tail = srv.log_tail();
    drop(srv);
    // A scratch directory of our own (it holds a throwaway server key) goes once the server
    // is down; one the caller named, or one whose log explains a failure, stays.
    if cli.dir.is_none() && failure.is_none() && !server_died {
        let _ = std::fs::remove_dir_all(&options.dir);
    }
    if let Some(f) = failure {
        return Err(f);
    }
    if server_died {
        return Err(FloodError::Legit(format!("the server exited: {log_tail}")));
    }

    let baseline_p99 = stats.get(1).map_or(0, |s| quantile(s, 0.99));
    let rows: Vec<Row> = windows
        .into_iter()
        .enumerate()
        .map(|(i, (name, outcome, before, after))| {
            row(
                cli,
                name,
                outcome,
                &before,
                &after,
                stats.get(i + 1),
                baseline_p99,
            )
        })
        .collect();
    let report = Report {
        server_pid,
        date_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        server_driver: cli.driver.clone(),
        peers: cli.peers,
        rate: cli.rate,
        size: cli.size,
        duration_s: cli.duration,
        rekey_after_s: cli.rekey_after,
        reject_after_s: cli.reject_after,
        loadavg_start,
        loadavg_end: loadavg(),
        rows,
    };
    if let Some(path) = &cli.jsonl {
        let line = serde_json::to_string(&report)
            .map_err(|e| FloodError::Legit(format!("cannot encode JSON: {e}")))?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| FloodError::Legit(format!("cannot open {}: {e}", path.display())))?;
        use std::io::Write as _;
        writeln!(file, "{line}")
            .map_err(|e| FloodError::Legit(format!("cannot write {}: {e}", path.display())))?;
    }
    if cli.json {
        match serde_json::to_string(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => return Err(FloodError::Legit(format!("cannot encode JSON: {e}"))),
        }
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The server seen from outside at one moment.
struct Sample {
    cpu: Option<f64>,
    rss: Option<u64>,
    metrics: BTreeMap<String, f64>,
    kernel_drops: Option<u64>,
    seconds: f64,
}

impl Sample {
    fn take(srv: &Server) -> Sample {
        Sample {
            cpu: srv.cpu_seconds(),
            rss: srv.rss_bytes(),
            metrics: srv.scrape().unwrap_or_default(),
            kernel_drops: kernel_drops(srv.addr),
            seconds: 0.0,
        }
    }
}

/// The `drops` column of the server socket's line in /proc/net/udp.
fn kernel_drops(addr: SocketAddr) -> Option<u64> {
    let SocketAddr::V4(a) = addr else { return None };
    let text = std::fs::read_to_string("/proc/net/udp").ok()?;
    let want = format!("{:08X}:{:04X}", u32::from(*a.ip()).swap_bytes(), a.port());
    text.lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some(want.as_str()))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

fn quantile(s: &PhaseStats, q: f64) -> u64 {
    if s.latency_us.is_empty() {
        0
    } else {
        s.latency_us.value_at_quantile(q)
    }
}

fn ratio(received: u64, sent: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        received as f64 / sent as f64
    }
}

/// Server series reported besides the drops; everything else in the scrape is left out.
const SERVER_SERIES: [&str; 10] = [
    "intentra_connection_closes_total",
    "intentra_rekeys_total",
    "intentra_handshakes_completed_total",
    "intentra_handshakes_initiated_total",
    "intentra_cookie_replies_sent_total",
    "intentra_strike_events_total",
    "intentra_replay_rejections_total",
    "intentra_packets_received_total",
    "intentra_handshakes_displaced_total",
    "intentra_reliable_abandoned_total",
];

fn series_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// `name{worker="0",reason="x"}` -> `reason=x` style key without the worker label.
fn short_key(series: &str) -> String {
    let name = series_name(series).trim_start_matches("intentra_");
    let labels: Vec<String> = series
        .split_once('{')
        .map(|(_, rest)| rest.trim_end_matches('}'))
        .unwrap_or("")
        .split(',')
        .filter(|l| !l.is_empty() && !l.starts_with("worker="))
        .map(|l| l.replace('"', ""))
        .collect();
    if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

fn deltas(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    names: &[&str],
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (series, value) in after {
        if !names.contains(&series_name(series)) {
            continue;
        }
        let d = value - before.get(series).copied().unwrap_or(0.0);
        if d != 0.0 {
            *out.entry(short_key(series)).or_insert(0.0) += d;
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn row(
    cli: &Cli,
    phase: String,
    attack: Option<Outcome>,
    before: &Sample,
    after: &Sample,
    stats: Option<&PhaseStats>,
    baseline_p99: u64,
) -> Row {
    let empty;
    let s = match stats {
        Some(s) => s,
        None => {
            empty = PhaseStats::empty(cli.peers as usize);
            &empty
        }
    };
    let sent: u64 = s.sent.iter().sum();
    let unsent: u64 = s.unsent.iter().sum();
    let received: u64 = s.received.iter().sum();
    let delivery = ratio(received, sent + unsent);
    let p99 = quantile(s, 0.99);
    let (new_peer_ms, new_peer_error) = match &s.probe {
        Some(Ok(d)) => (Some(d.as_secs_f64() * 1000.0), None),
        Some(Err(e)) => (None, Some(e.clone())),
        None => (None, Some("no probe ran".to_string())),
    };
    let peers_rekeyed = s.rekeyed.iter().filter(|r| **r).count() as u32;
    let attack_pps = attack.as_ref().map_or(0.0, |o| {
        if o.seconds > 0.0 {
            o.packets as f64 / o.seconds
        } else {
            0.0
        }
    });
    let rss_before = before.rss.unwrap_or(0);
    let rss_after = after.rss.unwrap_or(0);
    let mut missed = Vec::new();
    if delivery < 0.99 {
        missed.push(format!("delivery {:.4} < 0.99", delivery));
    }
    if s.downs.iter().any(|d| !d.contains(":dial-")) {
        missed.push(format!("{} legitimate session(s) closed", s.downs.len()));
    }
    if cli.duration >= (cli.rekey_after + 2) as f64 && peers_rekeyed < cli.peers {
        missed.push(format!("only {peers_rekeyed}/{} peers rekeyed", cli.peers));
    }
    match new_peer_ms {
        Some(ms) if ms > 2000.0 => missed.push(format!("new peer took {:.0} ms > 2 s", ms)),
        None => missed.push("new peer did not connect".to_string()),
        _ => {}
    }
    // Flat: within 10% or 4 MiB of where the phase started.
    if rss_after > rss_before + (rss_before / 10).max(4 << 20) {
        missed.push(format!(
            "RSS grew {:.1} -> {:.1} MiB",
            rss_before as f64 / 1048576.0,
            rss_after as f64 / 1048576.0
        ));
    }
    Row {
        phase,
        attack,
        attack_pps,
        server_cpu: match (before.cpu, after.cpu) {
            (Some(a), Some(b)) if after.seconds > 0.0 => (b - a) / after.seconds,
            _ => 0.0,
        },
        sent,
        received,
        unsent,
        delivery,
        delivery_realtime: ratio(s.received[0], s.sent[0] + s.unsent[0]),
        delivery_reliable: ratio(s.received[1], s.sent[1] + s.unsent[1]),
        p50_us: quantile(s, 0.5),
        p99_us: p99,
        max_us: if s.latency_us.is_empty() {
            0
        } else {
            s.latency_us.max()
        },
        p99_vs_baseline: if baseline_p99 > 0 {
            p99 as f64 / baseline_p99 as f64
        } else {
            0.0
        },
        sessions_closed: s.downs.clone(),
        rekeys: s.rekeys,
        peers_rekeyed,
        new_peer_ms,
        new_peer_error,
        rss_before,
        rss_after,
        drops: deltas(
            &before.metrics,
            &after.metrics,
            &["intentra_packets_dropped_total"],
        ),
        server: deltas(&before.metrics, &after.metrics, &SERVER_SERIES),
        kernel_drops: match (before.kernel_drops, after.kernel_drops) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        missed,
    }
}

fn table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} legitimate peers x {} msg/s ({} B, 1 in 10 Reliable) through the hub; {} s per phase; rekey_after {} s, reject_after {} s",
        report.peers, report.rate, report.size, report.duration_s, report.rekey_after_s, report.reject_after_s
    );
    let _ = writeln!(
        out,
        "load average {} at the start, {} at the end (the server shares the machine's cores)",
        report.loadavg_start, report.loadavg_end
    );
    let _ = writeln!(
        out,
        "{:<11} {:>10} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8} {:>9} {:>13}",
        "phase",
        "attack/s",
        "cpu",
        "delivery",
        "p99 ms",
        "x base",
        "closed",
        "rekeyed",
        "new peer",
        "RSS MiB"
    );
    for r in &report.rows {
        let _ =
            writeln!(
            out,
            "{:<11} {:>10.0} {:>6.2} {:>9.4} {:>9.2} {:>7.2} {:>7} {:>8} {:>9} {:>6.1}->{:<6.1}",
            r.phase,
            r.attack_pps,
            r.server_cpu,
            r.delivery,
            r.p99_us as f64 / 1000.0,
            r.p99_vs_baseline,
            r.sessions_closed.iter().filter(|d| !d.contains(":dial-")).count(),
            format!("{}/{}", r.peers_rekeyed, report.peers),
            r.new_peer_ms
                .map_or("failed".to_string(), |ms| format!("{ms:.0} ms")),
            r.rss_before as f64 / 1048576.0,
            r.rss_after as f64 / 1048576.0,
        );
    }
    for r in &report.rows {
        let _ = writeln!(out, "{}:", r.phase);
        if let Some(a) = &r.attack {
            let _ = writeln!(
                out,
                "  attack: {} packets in {:.1} s ({} send errors), {} sources, attacker CPU {:.2}; {}",
                a.packets, a.seconds, a.send_errors, a.sources, a.attacker_cpu, a.detail
            );
        }
        let join = |m: &BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            out,
            "  legit: sent {} received {} unsent {}; realtime {:.4}, reliable {:.4}; p50 {:.2} ms, max {:.2} ms; rekeys {}",
            r.sent, r.received, r.unsent, r.delivery_realtime, r.delivery_reliable,
            r.p50_us as f64 / 1000.0, r.max_us as f64 / 1000.0, r.rekeys
        );
        if !r.sessions_closed.is_empty() {
            let _ = writeln!(out, "  closed: {}", r.sessions_closed.join(" "));
        }
        if let Some(e) = &r.new_peer_error {
            let _ = writeln!(out, "  new peer: {e}");
        }
        let _ = writeln!(out, "  server drops: {}", join(&r.drops));
        let _ = writeln!(
            out,
            "  server: {}; kernel socket drops {}",
            join(&r.server),
            r.kernel_drops.map_or("?".to_string(), |k| k.to_string())
        );
        let _ = writeln!(
            out,
            "  aims: {}",
            if r.missed.is_empty() {
                "met".to_string()
            } else {
                format!("MISSED: {}", r.missed.join("; "))
            }
        );
    }
    out
}
