//! The `intentra` command line: argument parsing, config overrides, exit codes.
//!
//! Owns the subcommands and their flags (clap derive), the mapping of every
//! failure to one line on stderr and an exit code, and the small tools that
//! need no runtime (`keygen`, `pubkey`, `check-config`, `status`). `serve`,
//! `connect` and `demo` are handed to `crate::daemon` (the seam the lead
//! fills). It must never panic on user input or print a secret key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, ConfigError, IdleMode, IoDriver, LogFormat};
use crate::daemon::{self, DaemonError};
use intentra::proto::{Keypair, PublicKey};

/// Success.
pub const EXIT_OK: u8 = 0;
/// The daemon or a tool failed while running (socket, endpoint, I/O).
pub const EXIT_RUNTIME: u8 = 1;
/// Bad arguments, configuration, key file or allow-list.
pub const EXIT_USAGE: u8 = 2;

const LONG_ABOUT: &str = "\
intentra: a hardened UDP transport for high-frequency state between known peers.

Exit codes:
  0  success
  1  runtime error (socket, metrics endpoint, I/O while running)
  2  usage or configuration error (bad flag, config file, key file, allow-list)

Every error is printed as one line on stderr naming the file, key or address at fault.";

#[derive(Debug, Parser)]
#[command(name = "intentra", version, about, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a static key pair: writes the secret key file (mode 0600), prints the public key.
    Keygen(KeygenArgs),
    /// Print the public key of a secret key file.
    Pubkey(PubkeyArgs),
    /// Validate a configuration file and print the effective configuration.
    CheckConfig(CheckConfigArgs),
    /// Print a summary of a running daemon's metrics.
    Status(StatusArgs),
    /// Run the daemon.
    Serve(ServeArgs),
    /// Connect to one peer and send test traffic.
    Connect(ConnectArgs),
    /// Run a self-contained demonstration on loopback.
    Demo(DemoArgs),
    /// Publish on a hub's topic: stdin lines, or generated at --rate.
    Publish(crate::pubsub_cli::PublishArgs),
    /// Subscribe to a hub's topic: one line per message (publisher, sequence, gap).
    Subscribe(crate::pubsub_cli::SubscribeArgs),
    /// Show a hub topic's members, then their changes as they happen.
    Presence(crate::pubsub_cli::PresenceArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// File to write the hex secret key to (created with mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PubkeyArgs {
    /// Secret key file written by `intentra keygen`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct CheckConfigArgs {
    /// Configuration file (TOML).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub overrides: ConfigOverrides,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Address of the daemon's metrics endpoint.
    #[arg(long, value_name = "ADDR", default_value_t = config::DEFAULT_METRICS_LISTEN)]
    pub metrics: SocketAddr,
    /// Seconds between the two scrapes the rates are computed from; 0 scrapes once (no rates).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0,
          value_parser = parse_interval)]
    pub interval: f64,
    /// One line per peer: public key, address, state, packets each way, drops, last seen
    /// (needs metrics.per_peer = true in the daemon).
    #[arg(long)]
    pub peers: bool,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("expected seconds between 0 and 3600, got {text:?}")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); built-in defaults if omitted.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: ConfigOverrides,
}

/// How `connect` delivers its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeliveryMode {
    /// Latest state wins: no retransmission, stale messages dropped.
    Realtime,
    /// Every message delivered in order, retransmitted if lost.
    Reliable,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The peer's UDP address.
    #[arg(long, value_name = "ADDR")]
    pub peer: SocketAddr,
    /// The peer's public key (64 hex characters).
    #[arg(long = "peer-key", value_name = "HEX")]
    pub peer_key: PublicKey,
    /// Messages per second; 0 sends one message per line read from stdin instead.
    #[arg(long, value_name = "HZ", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub rate: u32,
    /// Delivery mode.
    #[arg(long, value_enum, default_value_t = DeliveryMode::Realtime)]
    pub mode: DeliveryMode,
    /// Message size in bytes.
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub size: u16,
    /// Number of messages to send; until interrupted if omitted.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Seconds to wait for the peer's first authenticated packet before giving up.
    #[arg(long = "connect-timeout", value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Configuration file (TOML); built-in defaults if omitted.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: ConfigOverrides,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Messages to exchange, in each mode, each way (at least 1).
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Updates per second each way; 0 sends as fast as the loops go (exceeding the
    /// default 10,000 packets/s per-peer rate limit on purpose).
    #[arg(long, value_name = "HZ", default_value_t = 2000)]
    pub rate: u32,
    /// Also print the server's full metrics (Prometheus text format).
    #[arg(long)]
    pub metrics: bool,
}

/// `--metrics ADDR` or `--metrics off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenArg(pub Option<SocketAddr>);

fn parse_listen_arg(text: &str) -> Result<ListenArg, String> {
    config::parse_listen(text).map(ListenArg)
}

/// Flags that override the configuration file.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigOverrides {
    /// UDP address to bind; repeat for several sockets (replaces node.bind).
    #[arg(long = "bind", value_name = "ADDR")]
    pub bind: Vec<SocketAddr>,
    /// Worker threads (node.workers).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// I/O driver (io.driver).
    #[arg(long = "io", value_enum, value_name = "DRIVER")]
    pub io: Option<IoDriver>,
    /// What an idle worker does (io.idle).
    #[arg(long, value_enum, value_name = "MODE")]
    pub idle: Option<IdleMode>,
    /// Metrics endpoint address, or "off" (metrics.listen).
    #[arg(long, value_name = "ADDR|off", value_parser = parse_listen_arg)]
    pub metrics: Option<ListenArg>,
    /// Secret key file (node.key_file).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Allow-list file, one hex public key per line (node.allow_list).
    #[arg(long = "allow-list", value_name = "FILE")]
    pub allow_list: Option<PathBuf>,
    /// Log level or filter, e.g. "debug" or "info,intentra::proto=trace" (log.level).
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format (log.format).
    #[arg(long = "log-format", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Write every datagram this node sends and receives to FILE as pcap, with the session
    /// keys in FILE.keylog (node.capture); with several workers (or [[node.peers]], dialled
    /// from a worker of their own) one per worker: FILE.worker0, FILE.worker1, ...
    #[arg(long, value_name = "FILE")]
    pub capture: Option<PathBuf>,
    /// Rotate the capture to FILE.1, FILE.2, ... once it would pass BYTES (node.capture_max_bytes).
    #[arg(long = "capture-max-bytes", value_name = "BYTES")]
    pub capture_max_bytes: Option<u64>,
    /// Rotated capture files kept, FILE.1 to FILE.N (node.capture_keep; default 4).
    #[arg(long = "capture-keep", value_name = "N")]
    pub capture_keep: Option<usize>,
}

impl ConfigOverrides {
    /// Applies every flag that was given; the file's value stays otherwise.
    pub fn apply(&self, config: &mut Config) {
        if !self.bind.is_empty() {
            config.node.bind.clone_from(&self.bind);
        }
        if let Some(workers) = self.workers {
            config.node.workers = workers;
        }
        if let Some(driver) = self.io {
            config.io.driver = driver;
        }
        if let Some(idle) = self.idle {
            config.io.idle = idle;
        }
        if let Some(ListenArg(listen)) = self.metrics {
            config.metrics.listen = listen;
        }
        if let Some(key) = &self.key {
            config.node.key_file = Some(key.clone());
        }
        if let Some(allow_list) = &self.allow_list {
            config.node.allow_list = Some(allow_list.clone());
        }
        if let Some(level) = &self.log_level {
            config.log.level.clone_from(level);
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(capture) = &self.capture {
            config.node.capture = Some(capture.clone());
        }
        if let Some(max) = self.capture_max_bytes {
            config.node.capture_max_bytes = Some(max);
        }
        if let Some(keep) = self.capture_keep {
            config.node.capture_keep = Some(keep);
        }
    }
}

/// A failure of one command: the line to print and the exit code.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Runtime(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Runtime(_) => EXIT_RUNTIME,
        }
    }

    fn message(&self) -> &str {
        match self {
            CliError::Usage(m) | CliError::Runtime(m) => m,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(err: ConfigError) -> Self {
        CliError::Usage(err.to_string())
    }
}

impl From<DaemonError> for CliError {
    fn from(err: DaemonError) -> Self {
        match err {
            DaemonError::Config(err) => CliError::Usage(err.to_string()),
            other => CliError::Runtime(other.to_string()),
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => run_cli(cli),
        Err(err) => {
            // clap prints help and version to stdout (exit 0) and usage
            // errors to stderr (exit 2, matching EXIT_USAGE).
            let _ = err.print();
            if err.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_OK)
            }
        }
    }
}

/// Writes a command's output to stdout. When its reader is gone (a pipe whose other end
/// closed, as `| head` does once it has its lines) there is nobody left to tell anything:
/// the command ends at once with exit 0, as the pubsub tools do. Any other error writing
/// stdout is one line on stderr and exit 1.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(err) = std::io::stdout().lock().write_fmt(args) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(EXIT_OK));
        }
        eprintln!("intentra: error: stdout: {err}");
        std::process::exit(i32::from(EXIT_RUNTIME));
    }
}

/// Runs one parsed command; prints any error as one line on stderr.
pub fn run_cli(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            eprintln!("intentra: error: {}", one_line(err.message()));
            ExitCode::from(err.exit_code())
        }
    }
}

fn one_line(message: &str) -> String {
    config::escape_control(&message.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Keygen(args) => keygen(&args),
        Command::Pubkey(args) => {
            let pair = config::read_key_file(&args.key)?;
            outln!("{}", pair.public);
            Ok(())
        }
        Command::CheckConfig(args) => check_config(&args),
        Command::Status(args) => status(&args),
        Command::Serve(args) => {
            let config = effective_config(args.config.as_deref(), &args.overrides)?;
            // Fail with exit code 2 before anything starts if the files are bad.
            config.load_identity()?;
            init_logging(&config)?;
            daemon::serve(config)?;
            Ok(())
        }
        Command::Connect(args) => {
            let mut config = effective_config(args.config.as_deref(), &args.overrides)?;
            if let Some(key) = &config.node.key_file {
                config::read_key_file(key)?;
            }
            // A client's session events are logged when --log-level asks for them; by
            // default stderr carries only warnings and the one-line result.
            if args.overrides.log_level.is_none() {
                config.log.level = "warn".into();
            }
            init_logging(&config)?;
            crate::client::connect(config, &args)?;
            Ok(())
        }
        Command::Demo(args) => {
            crate::demo::demo(&args)?;
            Ok(())
        }
        Command::Publish(args) => Ok(crate::pubsub_cli::publish(&args)?),
        Command::Subscribe(args) => Ok(crate::pubsub_cli::subscribe(&args)?),
        Command::Presence(args) => Ok(crate::pubsub_cli::presence(&args)?),
    }
}

/// File (or defaults), then flags, then range checks.
pub fn effective_config(
    file: Option<&Path>,
    overrides: &ConfigOverrides,
) -> Result<Config, ConfigError> {
    let mut config = match file {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    overrides.apply(&mut config);
    config.validate()?;
    Ok(config)
}

fn init_logging(config: &Config) -> Result<(), CliError> {
    match crate::logging::init(&config.log.level, config.log.format) {
        Ok(()) | Err(crate::logging::LogInitError::AlreadySet) => Ok(()),
        Err(err) => Err(CliError::Usage(err.to_string())),
    }
}

fn keygen(args: &KeygenArgs) -> Result<(), CliError> {
    let pair = Keypair::generate(&mut rand_core::OsRng);
    config::write_key_file(&args.out, &pair.secret, args.force)?;
    outln!("{}", pair.public);
    Ok(())
}

fn check_config(args: &CheckConfigArgs) -> Result<(), CliError> {
    let config = effective_config(Some(&args.file), &args.overrides)?;
    // The key file is optional here (connect-only hosts), but a named one must be usable.
    if let Some(key) = &config.node.key_file {
        config::read_key_file(key)?;
    }
    config.load_allow_list()?;
    out!("{}", config.to_annotated_toml());
    Ok(())
}

fn status(args: &StatusArgs) -> Result<(), CliError> {
    let scrape = || {
        crate::metrics_http::fetch_metrics(args.metrics)
            .map_err(|err| CliError::Runtime(err.to_string()))
    };
    let first = StatusSummary::from_metrics_text(&scrape()?);
    let (summary, rates) = if args.interval > 0.0 {
        let started = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_secs_f64(args.interval));
        let second = StatusSummary::from_metrics_text(&scrape()?);
        let elapsed = started.elapsed().as_secs_f64();
        let rates = second.rates_since(&first, elapsed);
        (second, Some(rates))
    } else {
        (first, None)
    };
    out!("{}", summary.render_with(args.metrics, rates.as_ref()));
    if args.peers {
        out!("{}", summary.render_peers(unix_now()));
    }
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One peer in `intentra status --peers`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerStatus {
    pub address: String,
    /// `up` (a session is established), or `down` (a configured peer without one).
    pub state: &'static str,
    pub configured: bool,
    pub packets_received: f64,
    pub packets_sent: f64,
    pub drops: f64,
    /// Unix time of the last authenticated packet, if known.
    pub last_seen: Option<f64>,
}

/// The peer a sample's `peer` (and `address`) labels name, created on first sight.
fn peer_entry<'a>(
    peers: &'a mut BTreeMap<String, PeerStatus>,
    labels: &[(String, String)],
) -> Option<&'a mut PeerStatus> {
    let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let entry = peers
        .entry(label("peer")?.clone())
        .or_insert_with(|| PeerStatus {
            state: "up",
            ..PeerStatus::default()
        });
    if entry.address.is_empty() {
        if let Some(address) = label("address") {
            entry.address.clone_from(address);
        }
    }
    Some(entry)
}

/// Per-second rates between two scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusRates {
    pub seconds: f64,
    pub packets_received: f64,
    pub messages_delivered: f64,
    pub packets_sent: f64,
    pub handshakes_completed: f64,
    pub drops: BTreeMap<String, f64>,
    pub topics: BTreeMap<String, TopicRates>,
}

/// What `intentra status` prints, summed over workers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSummary {
    pub workers: usize,
    pub sessions_active: f64,
    pub handshakes_in_flight: f64,
    pub packets_received: f64,
    pub messages_delivered: f64,
    pub packets_sent: f64,
    pub handshakes_completed: f64,
    pub drops: BTreeMap<String, f64>,
    pub closes: BTreeMap<String, f64>,
    /// By hex public key.
    pub peers: BTreeMap<String, PeerStatus>,
    /// A hub's topics by name (`hub.per_topic_metrics = true`).
    pub topics: BTreeMap<String, TopicStatus>,
    /// The process is a hub (it exports `intentra_pubsub_*` series).
    pub hub: bool,
}

/// One topic in `intentra status` (a hub with `hub.per_topic_metrics = true`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicStatus {
    pub publishers: f64,
    pub subscribers: f64,
    /// PUBLISH messages the hub accepted on the topic.
    pub published_in: f64,
    /// PUBLISH messages the hub sent on it (one per subscriber or link).
    pub relayed: f64,
}

/// A topic's per-second rates between two scrapes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicRates {
    pub published_in: f64,
    pub relayed: f64,
}

impl StatusSummary {
    /// Reads the samples `metrics::encode` writes; lines it does not know are ignored.
    pub fn from_metrics_text(text: &str) -> StatusSummary {
        let mut summary = StatusSummary::default();
        let mut workers = std::collections::BTreeSet::new();
        for line in text.lines() {
            let Some(sample) = parse_sample_line(line) else {
                continue;
            };
            let label = |key: &str| {
                sample
                    .labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            };
            match sample.name {
                "intentra_packets_received_total" => {
                    summary.packets_received += sample.value;
                    if let Some(worker) = label("worker") {
                        workers.insert(worker);
                    }
                }
                "intentra_connections_active" => summary.sessions_active += sample.value,
                "intentra_handshake_in_flight" => summary.handshakes_in_flight += sample.value,
                "intentra_messages_delivered_total" => {
                    summary.messages_delivered += sample.value;
                }
                "intentra_packets_sent_total" => summary.packets_sent += sample.value,
                "intentra_handshakes_completed_total" => {
                    summary.handshakes_completed += sample.value;
                }
                "intentra_packets_dropped_total" => {
                    if let Some(reason) = label("reason") {
                        *summary.drops.entry(reason).or_default() += sample.value;
                    }
                }
                "intentra_connection_closes_total" => {
                    if let Some(reason) = label("reason") {
                        *summary.closes.entry(reason).or_default() += sample.value;
                    }
                }
                "intentra_peer_packets_received_total" => {
                    if let Some(p) = peer_entry(&mut summary.peers, &sample.labels) {
                        p.packets_received += sample.value;
                    }
                }
                "intentra_peer_packets_sent_total" => {
                    if let Some(p) = peer_entry(&mut summary.peers, &sample.labels) {
                        p.packets_sent += sample.value;
                    }
                }
                "intentra_peer_drops_total" => {
                    if let Some(p) = peer_entry(&mut summary.peers, &sample.labels) {
                        p.drops += sample.value;
                    }
                }
                "intentra_peer_last_seen_timestamp_seconds" => {
                    if let Some(p) = peer_entry(&mut summary.peers, &sample.labels) {
                        p.last_seen =
                            Some(p.last_seen.map_or(sample.value, |t| t.max(sample.value)));
                    }
                }
                "intentra_pubsub_published_in_total" => summary.hub = true,
                "intentra_pubsub_topic_members" => {
                    if let (Some(topic), Some(role)) = (label("topic"), label("role")) {
                        let t = summary.topics.entry(topic).or_default();
                        match role.as_str() {
                            "publisher" => t.publishers += sample.value,
                            "subscriber" => t.subscribers += sample.value,
                            _ => {}
                        }
                    }
                }
                "intentra_pubsub_topic_published_in_total" => {
                    if let Some(topic) = label("topic") {
                        summary.topics.entry(topic).or_default().published_in += sample.value;
                    }
                }
                "intentra_pubsub_topic_relayed_total" => {
                    if let Some(topic) = label("topic") {
                        summary.topics.entry(topic).or_default().relayed += sample.value;
                    }
                }
                "intentra_configured_peer_up" => {
                    let up = sample.value > 0.0;
                    if let Some(p) = peer_entry(&mut summary.peers, &sample.labels) {
                        p.configured = true;
                        p.state = if up { "up" } else { "down" };
                    }
                }
                _ => {}
            }
        }
        summary.workers = workers.len();
        summary
    }

    /// Per-second rates from `earlier` to `self`, `seconds` apart. A counter that went
    /// down (the daemon restarted between the scrapes) counts from zero.
    pub fn rates_since(&self, earlier: &StatusSummary, seconds: f64) -> StatusRates {
        let seconds = seconds.max(1e-3);
        let rate = |now: f64, then: f64| {
            let delta = if now >= then { now - then } else { now };
            delta / seconds
        };
        StatusRates {
            seconds,
            packets_received: rate(self.packets_received, earlier.packets_received),
            messages_delivered: rate(self.messages_delivered, earlier.messages_delivered),
            packets_sent: rate(self.packets_sent, earlier.packets_sent),
            handshakes_completed: rate(self.handshakes_completed, earlier.handshakes_completed),
            drops: self
                .drops
                .iter()
                .map(|(reason, &now)| {
                    let then = earlier.drops.get(reason).copied().unwrap_or(0.0);
                    (reason.clone(), rate(now, then))
                })
                .collect(),
            topics: self
                .topics
                .iter()
                .map(|(name, now)| {
                    let then = earlier.topics.get(name).cloned().unwrap_or_default();
                    let rates = TopicRates {
                        published_in: rate(now.published_in, then.published_in),
                        relayed: rate(now.relayed, then.relayed),
                    };
                    (name.clone(), rates)
                })
                .collect(),
        }
    }

    /// A fixed-width table (totals only).
    pub fn render(&self, addr: SocketAddr) -> String {
        self.render_with(addr, None)
    }

    /// A fixed-width table: totals, and with `rates` a per-second column.
    pub fn render_with(&self, addr: SocketAddr, rates: Option<&StatusRates>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "intentra status from {addr}");
        if let Some(rates) = rates {
            let _ = writeln!(
                out,
                "  {:<24}{:>16}{:>14}",
                "",
                "total",
                format!("per s ({:.1}s)", rates.seconds)
            );
        }
        let _ = writeln!(out, "  {:<24}{:>16}", "workers", self.workers);
        let gauges: [(&str, f64); 2] = [
            ("sessions active", self.sessions_active),
            ("handshakes in flight", self.handshakes_in_flight),
        ];
        for (name, value) in gauges {
            let _ = writeln!(out, "  {name:<24}{value:>16}");
        }
        let counters: [(&str, f64, Option<f64>); 4] = [
            (
                "handshakes completed",
                self.handshakes_completed,
                rates.map(|r| r.handshakes_completed),
            ),
            (
                "packets received",
                self.packets_received,
                rates.map(|r| r.packets_received),
            ),
            (
                "messages delivered",
                self.messages_delivered,
                rates.map(|r| r.messages_delivered),
            ),
            (
                "packets sent",
                self.packets_sent,
                rates.map(|r| r.packets_sent),
            ),
        ];
        for (name, value, rate) in counters {
            match rate {
                Some(rate) => {
                    let _ = writeln!(out, "  {name:<24}{value:>16}{rate:>14.1}");
                }
                None => {
                    let _ = writeln!(out, "  {name:<24}{value:>16}");
                }
            }
        }
        for (title, map, is_drops) in [
            ("drops by reason", &self.drops, true),
            ("closes by reason", &self.closes, false),
        ] {
            let _ = writeln!(out, "{title}");
            let mut any = false;
            for (reason, value) in map.iter().filter(|(_, v)| **v > 0.0) {
                any = true;
                let rate = rates.filter(|_| is_drops).and_then(|r| r.drops.get(reason));
                match rate {
                    Some(rate) => {
                        let _ = writeln!(out, "  {reason:<24}{value:>16}{rate:>14.1}");
                    }
                    None => {
                        let _ = writeln!(out, "  {reason:<24}{value:>16}");
                    }
                }
            }
            if !any {
                let _ = writeln!(out, "  (none)");
            }
        }
        if self.hub || !self.topics.is_empty() {
            out.push_str(&self.render_topics(rates));
        }
        out
    }

    /// A hub's topics: members now, messages in and relayed, and with `rates` both per
    /// second. Empty of rows unless the hub exports per-topic series.
    pub fn render_topics(&self, rates: Option<&StatusRates>) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "topics\n  {:<32}{:>6}{:>6}{:>14}{:>14}",
            "name", "pubs", "subs", "published", "relayed"
        );
        if rates.is_some() {
            let _ = write!(out, "{:>14}{:>14}", "published/s", "relayed/s");
        }
        out.push('\n');
        if self.topics.is_empty() {
            let _ = writeln!(
                out,
                "  (none; per-topic series need hub.per_topic_metrics = true in the daemon)"
            );
        }
        for (name, t) in &self.topics {
            let _ = write!(
                out,
                "  {name:<32}{:>6}{:>6}{:>14}{:>14}",
                t.publishers, t.subscribers, t.published_in, t.relayed
            );
            if let Some(rates) = rates {
                let r = rates.topics.get(name).cloned().unwrap_or_default();
                let _ = write!(out, "{:>14.1}{:>14.1}", r.published_in, r.relayed);
            }
            out.push('\n');
        }
        out
    }

    /// One line per peer; `now` (Unix seconds) turns "last seen" into an age.
    pub fn render_peers(&self, now: f64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "peers
  {:<64}  {:<21}  {:<5}  {:>12}  {:>12}  {:>8}  {:>10}",
            "public key", "address", "state", "received", "sent", "drops", "last seen"
        );
        if self.peers.is_empty() {
            let _ = writeln!(
                out,
                "  (none; per-peer series need metrics.per_peer = true in the daemon)"
            );
        }
        for (key, peer) in &self.peers {
            let seen = match peer.last_seen {
                Some(at) => format!("{:.0}s ago", (now - at).max(0.0)),
                None => "-".to_owned(),
            };
            let state = if peer.configured && peer.state == "down" {
                "down"
            } else {
                peer.state
            };
            let _ = writeln!(
                out,
                "  {key:<64}  {:<21}  {state:<5}  {:>12}  {:>12}  {:>8}  {seen:>10}",
                if peer.address.is_empty() {
                    "-"
                } else {
                    &peer.address
                },
                peer.packets_received,
                peer.packets_sent,
                peer.drops,
            );
        }
        out
    }
}

/// One exposition sample line: `name{k="v",...} value`.
#[derive(Debug, PartialEq)]
struct SampleLine<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample_line(line: &str) -> Option<SampleLine<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line.get(..name_end)?;
    let mut rest = line.get(name_end..)?;
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices();
        let mut key = String::new();
        let mut value = String::new();
        let mut end = None;
        // States: reading a key, inside a quoted value.
        let mut in_value = false;
        while let Some((i, c)) = chars.next() {
            if in_value {
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => {
                        labels.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                        in_value = false;
                    }
                    other => value.push(other),
                }
            } else {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    '=' => {
                        if chars.next()?.1 != '"' {
                            return None;
                        }
                        in_value = true;
                    }
                    ',' | ' ' => {}
                    other => key.push(other),
                }
            }
        }
        rest = after_brace.get(end? + 1..)?;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(SampleLine {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use intentra::metrics::{encode, WorkerSnapshot};
    use intentra::proto::{CloseReason, DropReason};

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sample_lines_parse_with_labels_and_escapes() {
        let s = parse_sample_line(r#"a_total{worker="0",reason="x\"y"} 12"#).unwrap();
        assert_eq!(s.name, "a_total");
        assert_eq!(
            s.labels,
            vec![
                ("worker".to_owned(), "0".to_owned()),
                ("reason".to_owned(), "x\"y".to_owned())
            ]
        );
        assert_eq!(s.value, 12.0);
        assert_eq!(parse_sample_line("plain 3.5").unwrap().value, 3.5);
        assert!(parse_sample_line("# TYPE a counter").is_none());
        assert!(parse_sample_line("broken{a=1} 2").is_none());
    }

    #[test]
    fn status_sums_workers_from_encoded_metrics() {
        let mut a = WorkerSnapshot::new(0);
        a.stats.packets_received = 10;
        a.stats.sessions_active = 2;
        a.stats.record_drop(DropReason::RateLimit);
        a.stats.record_close(CloseReason::IdleTimeout);
        let mut b = WorkerSnapshot::new(1);
        b.stats.packets_received = 5;
        b.stats.sessions_active = 1;
        b.stats.record_drop(DropReason::RateLimit);
        b.stats.record_drop(DropReason::Crypto);
        let summary = StatusSummary::from_metrics_text(&encode(&[a, b], false));
        assert_eq!(summary.workers, 2);
        assert_eq!(summary.packets_received, 15.0);
        assert_eq!(summary.sessions_active, 3.0);
        assert_eq!(summary.drops.get("rate_limit"), Some(&2.0));
        assert_eq!(summary.drops.get("crypto"), Some(&1.0));
        assert_eq!(summary.closes.get("idle_timeout"), Some(&1.0));
        let table = summary.render("127.0.0.1:9700".parse().unwrap());
        assert!(table.contains("rate_limit"), "{table}");
        assert!(
            !table.contains("replay"),
            "zero reasons are hidden: {table}"
        );
    }

    #[test]
    fn topics_come_with_members_and_rates_from_two_scrapes() {
        let text = |published: u64, relayed: u64| {
            format!(
                "intentra_pubsub_published_in_total {published}\n\
                 intentra_pubsub_topic_members{{topic=\"md/btc\",role=\"publisher\"}} 1\n\
                 intentra_pubsub_topic_members{{topic=\"md/btc\",role=\"subscriber\"}} 100\n\
                 intentra_pubsub_topic_published_in_total{{topic=\"md/btc\"}} {published}\n\
                 intentra_pubsub_topic_relayed_total{{topic=\"md/btc\"}} {relayed}\n\
                 intentra_pubsub_topic_members{{topic=\"a \\\"q\\\"\",role=\"subscriber\"}} 2\n"
            )
        };
        let first = StatusSummary::from_metrics_text(&text(1_000, 100_000));
        let second = StatusSummary::from_metrics_text(&text(3_000, 300_000));
        assert!(second.hub);
        let btc = &second.topics["md/btc"];
        assert_eq!((btc.publishers, btc.subscribers), (1.0, 100.0));
        assert_eq!(second.topics["a \"q\""].subscribers, 2.0);
        let rates = second.rates_since(&first, 2.0);
        assert_eq!(rates.topics["md/btc"].published_in, 1_000.0);
        assert_eq!(rates.topics["md/btc"].relayed, 100_000.0);
        let table = second.render_with("127.0.0.1:1".parse().unwrap(), Some(&rates));
        let row = table
            .lines()
            .find(|l| l.trim_start().starts_with("md/btc"))
            .unwrap_or_else(|| panic!("{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["md/btc", "1", "100", "3000", "300000", "1000.0", "100000.0"],
            "{table}"
        );
        // A hub without per-topic series says how to get them; a plain node prints no
        // topics section at all.
        let bare = StatusSummary::from_metrics_text("intentra_pubsub_published_in_total 5\n");
        assert!(bare.render(addr()).contains("hub.per_topic_metrics"));
        let plain = StatusSummary::from_metrics_text("intentra_packets_received_total 5\n");
        assert!(!plain.render(addr()).contains("topics"));
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    #[test]
    fn rates_come_from_two_scrapes_and_peers_from_their_series() {
        let text = |received: u64, dropped: u64| {
            format!(
                "intentra_packets_received_total{{worker=\"0\"}} {received}\n\
                 intentra_packets_dropped_total{{worker=\"0\",reason=\"crypto\"}} {dropped}\n\
                 intentra_peer_packets_received_total{{peer=\"aa\",address=\"127.0.0.1:5\"}} 7\n\
                 intentra_peer_last_seen_timestamp_seconds{{peer=\"aa\",address=\"127.0.0.1:5\"}} 1000\n\
                 intentra_configured_peer_up{{peer=\"bb\",address=\"127.0.0.1:6\"}} 0\n"
            )
        };
        let first = StatusSummary::from_metrics_text(&text(100, 10));
        let second = StatusSummary::from_metrics_text(&text(300, 14));
        let rates = second.rates_since(&first, 2.0);
        assert_eq!(rates.packets_received, 100.0);
        assert_eq!(rates.drops.get("crypto"), Some(&2.0));
        // A restart between the scrapes counts from zero rather than going negative.
        assert_eq!(first.rates_since(&second, 2.0).packets_received, 50.0);
        let table = second.render_with("127.0.0.1:1".parse().unwrap(), Some(&rates));
        assert!(table.contains("100.0"), "{table}");
        let peers = second.render_peers(1010.0);
        let aa = peers
            .lines()
            .find(|l| l.trim_start().starts_with("aa"))
            .unwrap();
        assert!(
            aa.contains("127.0.0.1:5") && aa.contains(" up ") && aa.contains("10s ago"),
            "{peers}"
        );
        let bb = peers
            .lines()
            .find(|l| l.trim_start().starts_with("bb"))
            .unwrap();
        assert!(bb.contains("down") && bb.contains("127.0.0.1:6"), "{peers}");
    }

    #[test]
    fn overrides_replace_file_values() {
        let mut config = Config::default();
        let overrides = ConfigOverrides {
            bind: vec!["127.0.0.1:1".parse().unwrap()],
            workers: Some(3),
            metrics: Some(ListenArg(None)),
            log_format: Some(LogFormat::Json),
            ..ConfigOverrides::default()
        };
        overrides.apply(&mut config);
        assert_eq!(config.node.workers, 3);
        assert_eq!(config.node.bind.len(), 1);
        assert_eq!(config.metrics.listen, None);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.io, crate::config::IoConfig::default());
    }
}
