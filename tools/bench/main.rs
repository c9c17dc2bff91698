//! `intentra-bench`: load test of one intentra receiver by N real intentra peers over loopback,
//! or of the same I/O path with plain UDP (`--raw`), or by one embedded `intentra::Node` fed by
//! a producer thread (`--producer-thread`, with bundling off, on or both), with throughput in
//! messages and datagrams, delivery, one-way latency and receiver CPU; plus `plot` (envelope
//! CSV to SVG) and `csv` (JSON lines to CSV).
//!
//! Owns the command line, the three threads of a run (receiver, sender, and this one showing
//! progress) and the output. It must never send anywhere but 127.0.0.0/8, and every run is
//! bounded in time: the handshake phase by its timeout, the load by warm-up plus duration,
//! the receiver by a stop time and a hard deadline of its own.

mod load;
mod plot;
mod producer;
mod report;
mod sink;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use intentra::proto::wire::{MAX_REALTIME_PAYLOAD, MAX_RELIABLE_PAYLOAD};
use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::Mode;
use intentra::udp::{self as drivers, DriverConfig, DriverKind, SocketConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use report::{BundlingComparison, BundlingRatio, Comparison, Latency, Ratio, Report};
use sink::Rx;

/// The clock both threads stamp and read, and the few values they share.
pub struct Shared {
    clock: quanta::Clock,
    base: quanta::Instant,
    /// Measurement window in `now_ns` units; `u64::MAX` until the generator sets it.
    pub window_start: AtomicU64,
    pub window_end: AtomicU64,
    /// When the receiver stops; `u64::MAX` until the generator is done.
    pub stop_at: AtomicU64,
    /// For the progress bar only.
    pub peers_up: AtomicU64,
    pub sent: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        let clock = quanta::Clock::new();
        let base = clock.now();
        Shared {
            clock,
            base,
            window_start: AtomicU64::new(u64::MAX),
            window_end: AtomicU64::new(u64::MAX),
            stop_at: AtomicU64::new(u64::MAX),
            peers_up: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the run began (never 0, so 0 can mean "unset" nowhere by accident).
    pub fn now_ns(&self) -> u64 {
        let elapsed = self.clock.now().saturating_duration_since(self.base);
        u64::try_from(elapsed.as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }
}

/// After the generator stops, the receiver drains what is still queued for this long.
const GRACE: Duration = Duration::from_millis(300);

#[derive(Parser)]
#[command(
    name = "intentra-bench",
    version,
    about = "Load-test an intentra receiver with N real peers over loopback, against raw UDP on the same I/O path",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Draw an envelope CSV (from `csv`) as an SVG: delivery ratio and p99 against offered load.
    Plot {
        #[arg(long)]
        csv: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Turn a file of `--json` outputs (one per line) into the envelope CSV on stdout.
    Csv {
        #[arg(long)]
        jsonl: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IoArg {
    Basic,
    Mmsg,
    Uring,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Realtime,
    Reliable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BundlingArg {
    On,
    Off,
    /// Both in one invocation, in random order; prints both and the ratios on/off.
    Both,
}

/// The most peers a run may have: each is a whole `Endpoint` in this process (a few KiB).
const MAX_PEERS: u32 = 100_000;
/// The most messages per second a `--producer-thread` run may be paced at.
const MAX_PRODUCER_RATE: u32 = 10_000_000;

/// Who sends in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    /// `--peers` peers from the generator; `raw` sends plain UDP instead.
    Peers { raw: bool },
    /// One node fed by a producer thread (`--producer-thread`).
    Producer { bundling: bool },
}

impl Sender {
    fn is_raw(self) -> bool {
        self == Sender::Peers { raw: true }
    }
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Sending peers (1..=100000), each a real intentra session with its own keys and
    /// handshake. Above 10,000 both sides keep alive every peers/10,000 s (idle timeout 10x
    /// that), so keepalives stay at 10,000/s each way.
    #[arg(long, default_value_t = 100)]
    peers: u32,
    /// Messages per second per peer. With --producer-thread: messages per second of the
    /// producer, 0 for flat out (as fast as the node's handle takes them).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Payload bytes per message (at least 8: the send timestamp).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Plain UDP on the same I/O path: no handshake, no sealing or opening.
    #[arg(long, conflicts_with = "compare")]
    raw: bool,
    /// Run raw UDP, then intentra, with the same parameters; print both and the ratio.
    #[arg(long)]
    compare: bool,
    /// Send from one embedded intentra::Node (on --io's driver, its own loop thread) fed by
    /// one producer thread through its Handle, to the receiver as one peer: the application's
    /// path, where bundling applies. --rate is the producer's (0: flat out).
    #[arg(long, conflicts_with_all = ["raw", "compare", "peers", "sources"])]
    producer_thread: bool,
    /// With --producer-thread: the node's smart batching (NodeConfig::bundling), or both
    /// (one run each, in random order, with the ratios on/off).
    #[arg(long, value_enum, requires = "producer_thread", default_value_t = BundlingArg::On)]
    bundling: BundlingArg,
    /// Receive I/O path to ask for; the one that ran is reported as `io_used`.
    #[arg(long, value_enum, default_value_t = IoArg::Mmsg)]
    io: IoArg,
    /// Delivery mode of the intentra messages.
    #[arg(long, value_enum, default_value_t = ModeArg::Realtime)]
    mode: ModeArg,
    /// Send with UDP GSO where the kernel allows it (else sendmmsg).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    gso: OnOff,
    /// Busy-spin the receiver (never wait in the kernel): the lowest-latency idle strategy,
    /// one core at 100%.
    #[arg(long)]
    spin: bool,
    /// Distinct sender addresses (127.0.0.2, ...), one socket each; default peers/64 in 1..=16.
    #[arg(long)]
    sources: Option<u32>,
    /// Give up on handshakes still pending after this many seconds (default 10 + peers/200,
    /// which leaves 100,000 peers 200 handshakes/s).
    #[arg(long)]
    handshake_timeout: Option<f64>,
    /// Reliable window in bytes (`ReliableConfig::max_queued_bytes`) of the receiver and of
    /// every sending peer (with --producer-thread, of the receiver only); default the
    /// protocol's (128 KiB). Window ≥ rate × message size ×
    /// time to acknowledge, loss recovery included.
    #[arg(long)]
    reliable_window: Option<usize>,
    /// Put the `intentra-proxy` next to this binary between the peers and the receiver,
    /// with these impairment arguments (for example "--delay 1 --loss 0.01"). Loopback only.
    #[arg(long, value_name = "PROXY_ARGS", allow_hyphen_values = true)]
    proxy: Option<String>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// The impairment proxy of `--proxy`, stopped when dropped.
struct ProxyChild(std::process::Child);

impl Drop for ProxyChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `intentra-proxy` in front of `upstream`; returns it and the address peers send to.
fn start_proxy(upstream: SocketAddr, extra: &str) -> Result<(ProxyChild, SocketAddr), BenchError> {
    use std::io::BufRead;
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::Io(format!("cannot find this binary: {e}")))?
        .with_file_name("intentra-proxy");
    let mut child = std::process::Command::new(&exe)
        .args(["--listen", "127.0.0.1:0", "--upstream"])
        .arg(upstream.to_string())
        .args(extra.split_whitespace())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| BenchError::Io(format!("cannot start {}: {e}", exe.display())))?;
    let stdout = child.stdout.take();
    let child = ProxyChild(child);
    let mut line = String::new();
    if let Some(stdout) = stdout {
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| BenchError::Io(format!("proxy: {e}")))?;
    }
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| BenchError::Io(format!("proxy said {line:?}, not its address")))?;
    Ok((child, addr))
}

#[derive(Debug)]
enum BenchError {
    Args(String),
    Io(String),
    Load(load::LoadError),
    Thread(&'static str),
    Plot(plot::PlotError),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Args(e) => write!(f, "invalid arguments: {e}"),
            BenchError::Io(e) => f.write_str(e),
            BenchError::Load(e) => write!(f, "{e}"),
            BenchError::Thread(which) => write!(f, "the {which} thread panicked"),
            BenchError::Plot(e) => write!(f, "{e}"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Plot { csv, out }) => plot::plot(&csv, &out).map_err(BenchError::Plot),
        Some(Command::Csv { jsonl }) => jsonl_to_csv(&jsonl),
        None => bench(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("intentra-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &RunArgs) -> Result<(), BenchError> {
    validate(args)?;
    let progress = !args.json && std::io::stderr().is_terminal();
    if args.producer_thread {
        match args.bundling {
            BundlingArg::On => single(args, Sender::Producer { bundling: true }, progress),
            BundlingArg::Off => single(args, Sender::Producer { bundling: false }, progress),
            BundlingArg::Both => bundling_both(args, progress),
        }
    } else if args.compare {
        compare(args, progress)
    } else {
        single(args, Sender::Peers { raw: args.raw }, progress)
    }
}

/// One run, printed as a table or one JSON object.
fn single(args: &RunArgs, sender: Sender, progress: bool) -> Result<(), BenchError> {
    let report = run_once(args, sender, progress)?;
    if args.json {
        println!("{}", to_json(&report)?);
    } else {
        print!("{}", report::table(&[&report]));
    }
    Ok(())
}

/// `--compare`: raw UDP, then intentra, and the ratios.
fn compare(args: &RunArgs, progress: bool) -> Result<(), BenchError> {
    let raw = run_once(args, Sender::Peers { raw: true }, progress)?;
    let intentra = run_once(args, Sender::Peers { raw: false }, progress)?;
    let ratio = Ratio::of(&intentra, &raw);
    if args.json {
        let comparison = Comparison {
            raw,
            intentra,
            ratio,
        };
        println!("{}", to_json(&comparison)?);
    } else {
        print!("{}", report::table(&[&raw, &intentra]));
        println!(
            "intentra/raw: received pps {:.3}, delivery {:.3}, p50 {:.2}x, p99 {:.2}x, receiver CPU per packet {:.2}x",
            ratio.received_pps,
            ratio.delivery_ratio,
            ratio.p50_latency,
            ratio.p99_latency,
            ratio.receiver_cpu_per_packet
        );
    }
    Ok(())
}

/// `--producer-thread --bundling both`: off and on in one invocation and the ratios on/off.
/// The order is drawn at random, so that repeated invocations favour neither with a drift
/// of the host's load (it is reported as `order`).
fn bundling_both(args: &RunArgs, progress: bool) -> Result<(), BenchError> {
    use rand_chacha::rand_core::RngCore;
    let on_first = ChaCha20Rng::from_entropy().next_u32() & 1 == 1;
    let (off, on) = if on_first {
        let on = run_once(args, Sender::Producer { bundling: true }, progress)?;
        (
            run_once(args, Sender::Producer { bundling: false }, progress)?,
            on,
        )
    } else {
        let off = run_once(args, Sender::Producer { bundling: false }, progress)?;
        (
            off,
            run_once(args, Sender::Producer { bundling: true }, progress)?,
        )
    };
    let ratio = BundlingRatio::of(&on, &off);
    let order = if on_first { "on,off" } else { "off,on" }.to_string();
    if args.json {
        let comparison = BundlingComparison {
            off,
            on,
            ratio,
            order,
        };
        println!("{}", to_json(&comparison)?);
    } else {
        print!("{}", report::table(&[&off, &on]));
        println!(
            "bundling on/off (ran {order}): delivered msgs/s {:.2}x, datagrams/s {:.2}x, p50 {:.2}x, p99 {:.2}x, receiver CPU per msg {:.2}x, per datagram {:.2}x",
            ratio.received_msgs_per_s,
            ratio.received_dps,
            ratio.p50_latency,
            ratio.p99_latency,
            ratio.receiver_cpu_ns_per_msg,
            ratio.receiver_cpu_ns_per_datagram
        );
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, BenchError> {
    serde_json::to_string(value).map_err(|e| BenchError::Io(format!("cannot encode JSON: {e}")))
}

/// Checks the ranges clap cannot express; the first problem found, by flag name.
fn validate(args: &RunArgs) -> Result<(), BenchError> {
    let max = match args.mode {
        ModeArg::Realtime => MAX_REALTIME_PAYLOAD,
        ModeArg::Reliable => MAX_RELIABLE_PAYLOAD,
    };
    let problem = if args.size < 8 || args.size > max {
        Some(format!("--size must be 8..={max} bytes"))
    } else if args.peers == 0 || args.peers > MAX_PEERS {
        Some(format!("--peers must be 1..={MAX_PEERS}"))
    } else if args.producer_thread && args.rate > MAX_PRODUCER_RATE {
        Some(format!(
            "--rate must be 0 (flat out)..={MAX_PRODUCER_RATE} with --producer-thread"
        ))
    } else if !args.producer_thread && (args.rate == 0 || args.rate > 1_000_000) {
        Some("--rate must be 1..=1000000 (0, flat out, needs --producer-thread)".to_string())
    } else if !(args.duration > 0.0 && args.duration <= 3600.0) {
        Some("--duration must be in (0, 3600] seconds".to_string())
    } else if !(args.warmup >= 0.0 && args.warmup <= 600.0) {
        Some("--warmup must be in [0, 600] seconds".to_string())
    } else if args.sources.is_some_and(|s| s == 0 || s > 1024) {
        Some("--sources must be 1..=1024".to_string())
    } else if args
        .handshake_timeout
        .is_some_and(|t| !(t > 0.0 && t <= 600.0))
    {
        Some("--handshake-timeout must be in (0, 600] seconds".to_string())
    } else {
        None
    };
    problem.map_or(Ok(()), |p| Err(BenchError::Args(p)))
}

/// Opens the receive path: the crate's driver of the asked kind when it is a real one, else
/// the benchmark's own `recvmmsg` socket. Returns it, its name and the granted receive buffer.
fn open_rx(io: IoArg) -> Result<(Rx, String, usize), BenchError> {
    let bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let kind = driver_kind(io);
    let mut socket = SocketConfig::new(bind);
    socket.recv_buffer = Some(16 << 20);
    socket.send_buffer = Some(4 << 20);
    // GRO on the receiver: the kernel hands over runs of same-size datagrams as one buffer
    // and the driver walks the segments in place.
    socket.gro = true;
    match drivers::open_driver(kind, &socket, &DriverConfig::default()) {
        Ok(opened) => {
            let granted = opened.driver.caps().recv_buffer;
            let name = match &opened.fallback {
                Some(reason) => format!(
                    "driver:{} (uring unavailable: {reason})",
                    opened.driver.name()
                ),
                None => format!("driver:{}", opened.driver.name()),
            };
            Ok((Rx::Driver(opened.driver), name, granted))
        }
        Err(e) if io == IoArg::Basic => Err(BenchError::Io(format!("cannot open the driver: {e}"))),
        // No driver could be opened: use the benchmark's own recvmmsg.
        Err(_) => {
            let socket = std::net::UdpSocket::bind(bind)
                .map_err(|e| BenchError::Io(format!("cannot bind the receiver: {e}")))?;
            let granted = intentra::udp::raw::set_buffers(&socket, 16 << 20, 4 << 20);
            intentra::udp::raw::set_recv_timeout(&socket, Duration::from_millis(5))
                .map_err(|e| BenchError::Io(format!("cannot set the receive timeout: {e}")))?;
            Ok((Rx::Own(socket), "bench-recvmmsg".to_string(), granted))
        }
    }
}

/// Peers of a run: `--peers`, or the one node of `--producer-thread`.
fn peers_of(args: &RunArgs, sender: Sender) -> u32 {
    match sender {
        Sender::Peers { .. } => args.peers,
        Sender::Producer { .. } => 1,
    }
}

fn receiver_config(keypair: Keypair, args: &RunArgs, sender: Sender) -> EndpointConfig {
    let peers = peers_of(args, sender);
    let mut config = EndpointConfig::new(keypair);
    config.max_peers = peers as usize + 16;
    // Handshakes arrive in a burst from few addresses: budgets and handshake rates above the
    // generator's window, so the measured setup is not paced by the flood defences.
    config.handshakes_in_flight = 2 * load::HANDSHAKE_WINDOW;
    config.handshakes_per_ip = 2 * load::HANDSHAKE_WINDOW;
    let window = u32::try_from(2 * load::HANDSHAKE_WINDOW).unwrap_or(u32::MAX);
    config.handshake_rate = 1_000_000;
    config.handshake_burst = window;
    config.handshake_rate_per_source = 1_000_000;
    config.handshake_burst_per_source = window;
    (config.keepalive_interval, config.idle_timeout) = load::liveness(peers);
    if let Some(bytes) = args.reliable_window {
        config.reliable.max_queued_bytes = bytes;
    }
    // The token bucket stays on the measured path, set above the offered per-peer rate; a
    // flat-out producer has no rate to be above, so the bucket is opened wide.
    if args.rate == 0 {
        config.rate_pps = u32::MAX;
        config.rate_burst = u32::MAX;
    } else {
        config.rate_pps = args.rate.saturating_mul(2).max(10_000);
        config.rate_burst = args.rate.max(1_000);
    }
    config
}

fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

fn driver_kind(io: IoArg) -> DriverKind {
    match io {
        IoArg::Basic => DriverKind::Basic,
        IoArg::Mmsg => DriverKind::Mmsg,
        IoArg::Uring => DriverKind::Uring,
    }
}

/// What the sender thread runs.
enum Job {
    Peers(load::LoadConfig),
    Producer(producer::ProducerConfig),
}

type SenderThread = thread::JoinHandle<Result<load::LoadResult, load::LoadError>>;

/// The parameters of one run that the report repeats.
struct RunPlan {
    sender: Sender,
    delivery: Mode,
    sources: u32,
    warmup: Duration,
    keepalive: Duration,
    io_used: String,
    rcvbuf_bytes: usize,
}

fn run_once(args: &RunArgs, sender: Sender, progress: bool) -> Result<Report, BenchError> {
    let raw = sender.is_raw();
    let shared = Arc::new(Shared::new());
    let (rx, io_used, rcvbuf_bytes) = open_rx(args.io)?;
    let receiver = rx
        .local_addr()
        .map_err(|e| BenchError::Io(format!("receiver address: {e}")))?;
    let keypair = Keypair::generate(&mut ChaCha20Rng::from_entropy());
    let receiver_key = keypair.public;
    let delivery = match args.mode {
        ModeArg::Realtime => Mode::Realtime,
        ModeArg::Reliable => Mode::Reliable,
    };
    let endpoint = (!raw).then(|| receiver_config(keypair, args, sender));
    let peers = peers_of(args, sender);
    let sources = args.sources.unwrap_or((peers / 64).clamp(1, 16)).min(peers);
    let handshake_timeout = secs(
        args.handshake_timeout
            .unwrap_or(10.0 + f64::from(peers) / 200.0),
    );
    let warmup = secs(args.warmup);
    let duration = secs(args.duration);
    let liveness = load::liveness(peers);
    let spin = args.spin;
    let hard_stop = shared.now_ns().saturating_add(
        (handshake_timeout + warmup + duration + Duration::from_secs(30)).as_nanos() as u64,
    );

    let sink_shared = Arc::clone(&shared);
    let proxy = match args.proxy.as_deref() {
        Some(extra) => Some(start_proxy(receiver, extra)?),
        None => None,
    };
    let target = proxy.as_ref().map_or(receiver, |(_, via)| *via);
    let sink = thread::Builder::new()
        .name("bench-receiver".into())
        .spawn(move || sink::run(rx, endpoint, sink_shared, hard_stop, spin))
        .map_err(|e| BenchError::Io(format!("cannot start the receiver: {e}")))?;
    let job = match sender {
        Sender::Peers { raw } => Job::Peers(load::LoadConfig {
            intentra: (!raw).then_some((receiver_key, delivery)),
            receiver: target,
            peers,
            rate_hz: args.rate,
            size: args.size,
            sources,
            gso: args.gso == OnOff::On,
            warmup,
            duration,
            handshake_timeout,
            liveness,
            reliable_window: args.reliable_window,
        }),
        Sender::Producer { bundling } => Job::Producer(producer::ProducerConfig {
            receiver: target,
            receiver_key,
            mode: delivery,
            rate_hz: args.rate,
            size: args.size,
            bundling,
            driver: driver_kind(args.io),
            gso: args.gso == OnOff::On,
            warmup,
            duration,
            handshake_timeout,
            liveness,
        }),
    };
    let generator = match start_sender(job, &shared) {
        Ok(g) => g,
        Err(e) => {
            shared.stop_at.store(0, Ordering::Release);
            let _ = sink.join();
            return Err(e);
        }
    };

    show_progress(&shared, &generator, peers, args.warmup, raw, progress);
    let loaded = generator.join();
    shared.stop_at.store(
        shared.now_ns().saturating_add(GRACE.as_nanos() as u64),
        Ordering::Release,
    );
    let sunk = sink.join().map_err(|_| BenchError::Thread("receiver"))?;
    drop(proxy);
    let loaded = loaded
        .map_err(|_| BenchError::Thread("generator"))?
        .map_err(BenchError::Load)?;
    if let Some(e) = sunk.error.as_ref() {
        return Err(BenchError::Io(e.clone()));
    }
    let plan = RunPlan {
        sender,
        delivery,
        sources,
        warmup,
        keepalive: liveness.0,
        io_used,
        rcvbuf_bytes,
    };
    Ok(make_report(args, &plan, &shared, &loaded, &sunk))
}

/// Starts the sender thread: the peers' generator or the producer.
fn start_sender(job: Job, shared: &Arc<Shared>) -> Result<SenderThread, BenchError> {
    let shared = Arc::clone(shared);
    thread::Builder::new()
        .name("bench-generator".into())
        .spawn(move || match job {
            Job::Peers(config) => load::run(config, shared),
            Job::Producer(config) => producer::run(config, shared),
        })
        .map_err(|e| BenchError::Io(format!("cannot start the generator: {e}")))
}

/// Latency percentiles of the receiver's histogram, microseconds (all 0 when it is empty).
fn latency_us(h: &hdrhistogram::Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let quantile = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Latency {
        p50: quantile(0.50),
        p90: quantile(0.90),
        p99: quantile(0.99),
        p999: quantile(0.999),
        max: h.max() as f64 / 1000.0,
        mean: h.mean() / 1000.0,
    }
}

/// Peak resident memory of this process (VmHWM), KiB; 0 where /proc does not say.
fn max_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn make_report(
    args: &RunArgs,
    plan: &RunPlan,
    shared: &Shared,
    loaded: &load::LoadResult,
    sunk: &sink::SinkResult,
) -> Report {
    let raw = plan.sender.is_raw();
    let window_start = shared.window_start.load(Ordering::Acquire);
    let window_end = shared.window_end.load(Ordering::Acquire);
    let duration_s = window_end.saturating_sub(window_start) as f64 / 1e9;
    let per_second = |count: u64| report::div(count as f64, duration_s);
    let drops: BTreeMap<String, u64> = if raw {
        sunk.kernel_drops
            .map(|k| BTreeMap::from([("kernel_rcvbuf".to_string(), k)]))
            .unwrap_or_default()
    } else {
        sunk.drops
            .iter()
            .map(|(reason, count)| (reason.label().to_string(), *count))
            .collect()
    };
    let (sender, bundling) = match plan.sender {
        Sender::Peers { .. } => ("peers", None),
        Sender::Producer { bundling } => ("producer-thread", Some(bundling)),
    };
    let received = sunk.received;
    let sent = loaded.sent;
    let receiver_cpu_s = sunk.cpu.as_secs_f64();
    let mut report = Report {
        mode: if raw { "raw" } else { "intentra" }.to_string(),
        sender: sender.to_string(),
        bundling,
        sender_io_used: loaded.sender_io.clone(),
        delivery: if raw { "none" } else { plan.delivery.label() }.to_string(),
        io: format!("{:?}", args.io).to_lowercase(),
        io_used: plan.io_used.clone(),
        gso: args.gso == OnOff::On,
        gso_used: loaded.gso_used,
        peers: peers_of(args, plan.sender),
        peers_up: loaded.peers_up,
        sources: plan.sources,
        rate_hz: args.rate,
        size: args.size,
        datagram_len: loaded.datagram_len,
        duration_s,
        warmup_s: plan.warmup.as_secs_f64(),
        target_pps: f64::from(loaded.peers_up) * f64::from(args.rate),
        sent,
        received,
        offered_pps: per_second(sent),
        received_pps: per_second(received),
        received_datagrams: sunk.datagrams,
        delivery_ratio: report::div(received as f64, sent as f64),
        latency_us: latency_us(&sunk.histogram),
        drops,
        kernel_drops: sunk.kernel_drops,
        rcvbuf_bytes: plan.rcvbuf_bytes,
        send_failed: loaded.send_failed,
        send_would_block: loaded.send_would_block,
        send_errors: loaded.send_errors,
        generator_skipped: loaded.skipped,
        peers_lost: loaded.peers_lost,
        truncated: sunk.truncated,
        receiver_cpu_s,
        generator_cpu_s: loaded.cpu.as_secs_f64(),
        receiver_utilization: report::div(receiver_cpu_s, duration_s),
        generator_utilization: report::div(loaded.cpu.as_secs_f64(), duration_s),
        receiver_capacity_pps: report::div(received as f64, receiver_cpu_s),
        sender_loop_cpu_s: loaded.loop_cpu.unwrap_or_default().as_secs_f64(),
        handshake_s: loaded.handshake.as_secs_f64(),
        keepalive_s: plan.keepalive.as_secs_f64(),
        producer_queue_full: loaded.queue_full,
        max_rss_kib: max_rss_kib(),
        negative_latency: sunk.negative_latency,
        ..Report::default()
    };
    report.derive_rates();
    report
}

/// Shows a progress bar on stderr (when it is a terminal) until the generator is done.
fn show_progress(
    shared: &Shared,
    generator: &SenderThread,
    peers: u32,
    warmup_s: f64,
    raw: bool,
    enabled: bool,
) {
    let bar = if enabled {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    let label = if raw { "raw" } else { "intentra" };
    bar.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    while !generator.is_finished() {
        let now = shared.now_ns();
        let start = shared.window_start.load(Ordering::Acquire);
        if start == u64::MAX {
            bar.set_length(u64::from(peers));
            let up = shared.peers_up.load(Ordering::Relaxed);
            bar.set_position(up);
            bar.set_message(format!("handshakes {up}/{peers}"));
        } else {
            let end = shared.window_end.load(Ordering::Acquire);
            let warm = (warmup_s * 1e9) as u64;
            let total = end.saturating_sub(start) + warm;
            let begun = start.saturating_sub(warm);
            bar.set_length(total / 1_000_000);
            bar.set_position(now.saturating_sub(begun).min(total) / 1_000_000);
            let phase = if now < start { "warm-up" } else { "measuring" };
            bar.set_message(format!(
                "{phase}, {} sent in window",
                shared.sent.load(Ordering::Relaxed)
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

/// `csv`: every line of `path` is a `--json` output (a report, a `--compare` pair or a
/// `--bundling both` pair).
fn jsonl_to_csv(path: &std::path::Path) -> Result<(), BenchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::Io(format!("cannot read {}: {e}", path.display())))?;
    println!("{}", report::CSV_HEADER);
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad = |e: serde_json::Error| BenchError::Io(format!("line {}: {e}", number + 1));
        let value: serde_json::Value = serde_json::from_str(line).map_err(bad)?;
        if value.get("intentra").is_some() && value.get("raw").is_some() {
            let pair: Comparison = serde_json::from_value(value).map_err(bad)?;
            println!("{}", report::csv_row(&pair.raw));
            println!("{}", report::csv_row(&pair.intentra));
        } else if value.get("off").is_some() && value.get("on").is_some() {
            let pair: BundlingComparison = serde_json::from_value(value).map_err(bad)?;
            println!("{}", report::csv_row(&pair.off));
            println!("{}", report::csv_row(&pair.on));
        } else {
            let one: Report = serde_json::from_value(value).map_err(bad)?;
            println!("{}", report::csv_row(&one));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["intentra-bench"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("parses").run
    }

    fn refused(extra: &[&str]) -> String {
        match validate(&args(extra)) {
            Err(BenchError::Args(problem)) => problem,
            other => panic!("{extra:?} not refused: {other:?}"),
        }
    }

    #[test]
    fn peers_go_up_to_one_hundred_thousand() {
        assert!(validate(&args(&["--peers", "100000"])).is_ok());
        assert!(refused(&["--peers", "100001"]).contains("--peers"));
        assert!(refused(&["--peers", "0"]).contains("--peers"));
    }

    #[test]
    fn flat_out_is_for_the_producer_thread_only() {
        assert!(refused(&["--rate", "0"]).contains("--producer-thread"));
        assert!(validate(&args(&["--producer-thread", "--rate", "0"])).is_ok());
        assert!(refused(&["--producer-thread", "--rate", "10000001"]).contains("--rate"));
    }

    #[test]
    fn producer_flags_conflict_with_the_peers_flags() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["intentra-bench"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).is_ok()
        };
        assert!(parse(&["--producer-thread", "--bundling", "both"]));
        assert!(
            !parse(&["--bundling", "both"]),
            "--bundling needs --producer-thread"
        );
        assert!(!parse(&["--producer-thread", "--peers", "2"]));
        assert!(!parse(&["--producer-thread", "--compare"]));
        assert!(!parse(&["--producer-thread", "--raw"]));
    }

    #[test]
    fn liveness_keeps_keepalives_at_ten_thousand_per_second() {
        assert_eq!(load::liveness(1).0, Duration::from_secs(1));
        assert_eq!(load::liveness(10_000).0, Duration::from_secs(1));
        let (keepalive, idle) = load::liveness(100_000);
        assert_eq!(keepalive, Duration::from_secs(10));
        assert_eq!(idle, Duration::from_secs(100));
    }
}
