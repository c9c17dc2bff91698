//! The daemon's configuration: one TOML file, every option with its default.
//!
//! Owns the `Config` tree (parsed with serde, unknown keys refused), its range
//! checks, and the two other files an operator writes by hand: the key file
//! and the allow-list. Every error is one line naming the file and the key or
//! line at fault. It must never echo secret key material into an error, and
//! never start anything: it only reads, checks and prints.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use intentra::proto::{KeyError, Keypair, PublicKey, SecretKey};

mod annotated;

/// The config file, the allow-list and the key file are small; a larger file
/// is a mistake (wrong path) and must not be slurped into memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
const MAX_ALLOW_LIST_BYTES: u64 = 16 << 20;
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Default metrics listen address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9700);

/// Default UDP bind address.
pub const DEFAULT_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7700);

/// The whole configuration. Every section may be omitted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub io: IoConfig,
    pub limits: LimitsConfig,
    pub timers: TimersConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// `[hub]`: publish/subscribe hub mode (see `HubSection`).
    #[serde(skip_serializing_if = "HubSection::is_default")]
    pub hub: HubSection,
    /// The file this was loaded from, so validation errors can name it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// `[node]`: identity, sockets and peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// One UDP socket per entry.
    pub bind: Vec<SocketAddr>,
    pub workers: usize,
    /// Hex secret key file; required by `serve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// One hex public key per line; absent means any peer key is accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_list: Option<PathBuf>,
    /// Accept an allow-list with no keys (every peer refused) instead of refusing it.
    pub allow_list_empty_ok: bool,
    /// Smart batching: messages queued together for one peer share sealed datagrams.
    pub bundling: bool,
    /// Peers to connect to at start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerConfig>,
    /// Write received and sent datagrams to this pcap file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<PathBuf>,
    /// Rotate the capture once it would grow past this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_max_bytes: Option<u64>,
    /// Rotated capture files kept (FILE.1 ... FILE.N); default 4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_keep: Option<usize>,
}

impl NodeSection {
    /// Makes the relative file paths relative to `dir` (the config file's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        if dir.as_os_str().is_empty() {
            return;
        }
        for path in [&mut self.key_file, &mut self.allow_list, &mut self.capture]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            bind: vec![DEFAULT_BIND],
            workers: 1,
            key_file: None,
            allow_list: None,
            allow_list_empty_ok: false,
            bundling: true,
            peers: Vec::new(),
            capture: None,
            capture_max_bytes: None,
            capture_keep: None,
        }
    }
}

/// One `[[node.peers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub address: SocketAddr,
    #[serde(with = "hex_public_key")]
    pub public_key: PublicKey,
}

/// Which datagram I/O driver to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoDriver {
    /// io_uring if the kernel allows it, else recvmmsg/sendmmsg.
    #[default]
    Auto,
    /// io_uring only; fail to start without it.
    Uring,
    /// recvmmsg/sendmmsg batches.
    Mmsg,
    /// One recvfrom/sendto per datagram (portable fallback).
    Basic,
}

/// What a worker does when it has nothing to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IdleMode {
    /// Sleep in the kernel until a datagram or a timer is due.
    #[default]
    Block,
    /// Spin briefly, then yield, then block.
    Backoff,
    /// Never sleep: lowest latency, one core per worker at 100%.
    Spin,
}

/// The receive buffer the daemon asks for unless told otherwise: a kernel default of about
/// 200 KiB holds under half a millisecond of a 500k packets/s flood, so a worker that is
/// descheduled that long loses legitimate datagrams with the flood's (perf/flood.md); 4 MiB
/// holds about 10 ms. The kernel caps it at `net.core.rmem_max`, and the daemon warns then.
pub const DEFAULT_RECV_BUFFER_BYTES: usize = 4 << 20;

/// `[io]`: sockets and batching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoConfig {
    pub driver: IoDriver,
    pub idle: IdleMode,
    pub batch_size: usize,
    pub buffers: usize,
    pub buffer_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recv_buffer_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_buffer_bytes: Option<usize>,
    pub gso: bool,
    pub gro: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_poll_us: Option<u32>,
    /// One CPU per worker, in worker order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_cores: Option<Vec<usize>>,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            driver: IoDriver::Auto,
            idle: IdleMode::Block,
            batch_size: 64,
            buffers: 4096,
            buffer_size: 2048,
            recv_buffer_bytes: Some(DEFAULT_RECV_BUFFER_BYTES),
            send_buffer_bytes: None,
            gso: true,
            gro: true,
            busy_poll_us: None,
            pin_cores: None,
        }
    }
}

/// `[limits]`: the budgets that keep an attacker from costing us more than a packet each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub rate_pps: u64,
    pub rate_burst: u64,
    pub handshakes_in_flight: usize,
    pub handshakes_per_ip: usize,
    pub always_cookie: bool,
    pub handshake_rate: u32,
    pub handshake_burst: u32,
    pub handshake_rate_per_source: u32,
    pub handshake_burst_per_source: u32,
    pub handshake_sources: usize,
    pub strike_threshold: u32,
    pub strike_decay_ms: u64,
    pub max_peers: usize,
    pub reliable_queue_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_pps: 10_000,
            rate_burst: 1_000,
            handshakes_in_flight: 100,
            handshakes_per_ip: 5,
            always_cookie: false,
            handshake_rate: 1_000,
            handshake_burst: 100,
            handshake_rate_per_source: 10,
            handshake_burst_per_source: 10,
            handshake_sources: 4_096,
            strike_threshold: 10,
            strike_decay_ms: 10_000,
            max_peers: 4096,
            reliable_queue_bytes: intentra::proto::DEFAULT_QUEUE_BYTES,
        }
    }
}

/// `[timers]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimersConfig {
    pub keepalive_ms: u64,
    pub idle_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub handshake_retry_ms: u64,
    /// Longest delay between two handshake retransmissions (the delay doubles up to it).
    pub handshake_retry_max_ms: u64,
    /// How long replaced keys still open packets in flight after a rekey.
    pub previous_keys_linger_ms: u64,
    pub rekey_after_s: u64,
    pub reject_after_s: u64,
    /// First delay before redialling a lost configured peer; doubles per failure.
    pub redial_initial_ms: u64,
    /// Longest delay between two redials of a configured peer.
    pub redial_max_ms: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            keepalive_ms: 1000,
            idle_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            handshake_retry_ms: 250,
            handshake_retry_max_ms: 2_000,
            previous_keys_linger_ms: 10_000,
            rekey_after_s: 120,
            reject_after_s: 180,
            redial_initial_ms: 1000,
            redial_max_ms: 60_000,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `"off"` in the file disables the endpoint (TOML has no null).
    #[serde(with = "listen_or_off")]
    pub listen: Option<SocketAddr>,
    /// Export one series per peer (cardinality grows with the peer count).
    pub per_peer: bool,
    pub publish_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(DEFAULT_METRICS_LISTEN),
            per_peer: false,
            publish_interval_ms: 200,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`info`) or a tracing filter (`info,intentra::proto=debug`).
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Our key pair and whom we accept, read from the files the config names.
#[derive(Clone)]
pub struct Identity {
    pub keypair: Keypair,
    /// `None`: any peer key is accepted.
    pub allow_list: Option<Vec<PublicKey>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret half.
        f.debug_struct("Identity")
            .field("public", &self.keypair.public)
            .field("allow_list", &self.allow_list.as_ref().map(Vec::len))
            .finish()
    }
}

/// Everything that can go wrong reading the operator's files. Display is one line.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be opened or read.
    Io { path: PathBuf, source: io::Error },
    /// The file is larger than any sane file of its kind.
    TooLarge { path: PathBuf, limit: u64 },
    /// TOML syntax, an unknown key or a value of the wrong type.
    Parse {
        path: Option<PathBuf>,
        line: Option<usize>,
        key: String,
        message: String,
    },
    /// A value out of range or inconsistent with another.
    Invalid {
        path: Option<PathBuf>,
        key: &'static str,
        message: String,
    },
    /// A bad line in the allow-list.
    AllowList {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The key file is unusable. The message never contains key material.
    KeyFile { path: PathBuf, message: String },
    /// The key file can be read by other users.
    KeyFileMode { path: PathBuf, mode: u32 },
    /// Writing a new key file failed.
    KeyWrite { path: PathBuf, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            ConfigError::TooLarge { path, limit } => {
                write!(f, "{}: file is larger than {limit} bytes", path.display())
            }
            ConfigError::Parse {
                path,
                line,
                key,
                message,
            } => {
                if let Some(path) = path {
                    write!(f, "{}:", escape_control(&path.display().to_string()))?;
                    if let Some(line) = line {
                        write!(f, "{line}:")?;
                    }
                    f.write_str(" ")?;
                } else if let Some(line) = line {
                    write!(f, "line {line}: ")?;
                }
                let message = escape_control(message);
                if key.is_empty() {
                    f.write_str(&message)
                } else {
                    write!(f, "{}: {message}", escape_control(key))
                }
            }
            ConfigError::Invalid { path, key, message } => {
                if let Some(path) = path {
                    write!(f, "{}: ", path.display())?;
                }
                write!(f, "{key} {message}")
            }
            ConfigError::AllowList {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
            ConfigError::KeyFile { path, message } => {
                write!(f, "{}: {message}", path.display())
            }
            ConfigError::KeyFileMode { path, mode } => write!(
                f,
                "{}: mode {mode:04o} lets other users read the secret key; run chmod 600 on it",
                path.display()
            ),
            ConfigError::KeyWrite { path, message } => {
                write!(f, "{}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ConfigError {
    /// Attaches the file name to an error produced from a string.
    fn in_file(mut self, file: &Path) -> ConfigError {
        match &mut self {
            ConfigError::Parse { path, .. } | ConfigError::Invalid { path, .. } => {
                *path = Some(file.to_path_buf());
            }
            _ => {}
        }
        self
    }
}

impl Config {
    /// Parses TOML. Does not validate ranges: apply overrides, then call `validate`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let line = inner.span().map(|span| line_of(text, span.start));
            ConfigError::Parse {
                path: None,
                line,
                // serde_path_to_error renders the root as ".".
                key: if key == "." { String::new() } else { key },
                message: one_line(inner.message()),
            }
        })
    }

    /// Reads and parses a file. Does not validate ranges (see `from_toml_str`).
    /// Relative paths in the file (`node.key_file`, `node.allow_list`,
    /// `node.capture`) are relative to the file's directory, not to the working
    /// directory, so `serve --config /etc/intentra/intentra.toml` finds the same
    /// files from wherever it is started.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_bounded(path, MAX_CONFIG_BYTES)?;
        let mut config = Config::from_toml_str(&text).map_err(|e| e.in_file(path))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        config.node.resolve_paths(dir);
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The effective configuration with every option: set ones as TOML, unset
    /// ones commented out with what leaving them unset means, each under a
    /// comment saying what it does. Parsing it gives back an equal `Config`.
    pub fn to_annotated_toml(&self) -> String {
        annotated::render(self)
    }

    /// The effective configuration as TOML; parsing it gives back an equal `Config`.
    pub fn to_toml_string(&self) -> String {
        // Serializing plain structs of strings, numbers and lists cannot fail;
        // fall back to a comment rather than panic if a future field breaks that.
        toml::to_string(self).unwrap_or_else(|err| {
            format!(
                "# cannot print configuration: {}\n",
                one_line(&err.to_string())
            )
        })
    }

    /// Range and consistency checks. Errors name the key, e.g.
    /// `limits.rate_pps must be between 1 and 10000000, got 0`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|(key, message)| ConfigError::Invalid {
            path: self.source.clone(),
            key,
            message,
        })
    }

    /// Reads the files the configuration names: the key file (required) and
    /// the allow-list (if set). `serve` calls this at start and on reload.
    pub fn load_identity(&self) -> Result<Identity, ConfigError> {
        let key_file = self
            .node
            .key_file
            .as_deref()
            .ok_or_else(|| ConfigError::Invalid {
                path: self.source.clone(),
                key: "node.key_file",
                message: "must be set to serve (or pass --key FILE)".to_owned(),
            })?;
        Ok(Identity {
            keypair: read_key_file(key_file)?,
            allow_list: self.load_allow_list()?,
        })
    }

    /// Reads the allow-list, if one is named. A list with no keys refuses every
    /// peer, which is nearly always an emptied or truncated file: it is refused
    /// unless `node.allow_list_empty_ok` says it is meant.
    pub fn load_allow_list(&self) -> Result<Option<Vec<PublicKey>>, ConfigError> {
        let Some(path) = self.node.allow_list.as_deref() else {
            return Ok(None);
        };
        let keys = read_allow_list(path).map_err(|err| match err {
            // The file is named, but not which option asked for it.
            ConfigError::Io { path, source } => ConfigError::Invalid {
                path: Some(path),
                key: "node.allow_list",
                message: format!("cannot be read: {source}"),
            },
            other => other,
        })?;
        if keys.is_empty() && !self.node.allow_list_empty_ok {
            return Err(ConfigError::Invalid {
                path: Some(path.to_path_buf()),
                key: "node.allow_list",
                message: "lists no keys, so every peer would be refused; add keys, or set \
                          node.allow_list_empty_ok = true if refusing everyone is meant"
                    .to_owned(),
            });
        }
        Ok(Some(keys))
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        let Config {
            node,
            io,
            limits,
            timers,
            metrics,
            log,
            hub,
            source: _,
        } = self;
        check_hub(hub, node)?;

        if node.bind.is_empty() {
            return Err(("node.bind", "must list at least one address".to_owned()));
        }
        if let Some(dup) = first_duplicate(&node.bind) {
            return Err(("node.bind", format!("lists {dup} twice")));
        }
        range("node.workers", node.workers, 1, 256)?;
        if let Some(dup) = first_duplicate(
            &node
                .peers
                .iter()
                .map(|peer| peer.public_key)
                .collect::<Vec<_>>(),
        ) {
            return Err(("node.peers", format!("lists public key {dup} twice")));
        }

        range("io.batch_size", io.batch_size, 1, 1024)?;
        range("io.buffers", io.buffers, 16, 1 << 20)?;
        if io.buffers < io.batch_size {
            return Err((
                "io.buffers",
                format!(
                    "must be at least io.batch_size ({}), got {}",
                    io.batch_size, io.buffers
                ),
            ));
        }
        range("io.buffer_size", io.buffer_size, 1024, 65_535)?;
        let buffer_total = io.buffers.saturating_mul(io.buffer_size);
        if buffer_total > MAX_IO_BUFFER_TOTAL_BYTES {
            return Err((
                "io.buffers",
                format!(
                    "x io.buffer_size ({} x {} = {buffer_total} bytes per worker) must be at \
                     most {MAX_IO_BUFFER_TOTAL_BYTES}; lower one of them",
                    io.buffers, io.buffer_size
                ),
            ));
        }
        if let Some(bytes) = io.recv_buffer_bytes {
            range("io.recv_buffer_bytes", bytes, 4096, 1 << 30)?;
        }
        if let Some(bytes) = io.send_buffer_bytes {
            range("io.send_buffer_bytes", bytes, 4096, 1 << 30)?;
        }
        if let Some(us) = io.busy_poll_us {
            range("io.busy_poll_us", us, 1, 1_000_000)?;
        }
        if let Some(cores) = &io.pin_cores {
            if cores.len() != node.workers {
                return Err((
                    "io.pin_cores",
                    format!(
                        "must list one core per worker (node.workers = {}), got {}",
                        node.workers,
                        cores.len()
                    ),
                ));
            }
            if let Some(dup) = first_duplicate(cores) {
                return Err(("io.pin_cores", format!("lists core {dup} twice")));
            }
            if let Some(core) = cores.iter().find(|&&c| c >= 4096) {
                return Err(("io.pin_cores", format!("core {core} is out of range")));
            }
        }

        range("limits.rate_pps", limits.rate_pps, 1, 10_000_000)?;
        range("limits.rate_burst", limits.rate_burst, 1, 10_000_000)?;
        range(
            "limits.handshakes_in_flight",
            limits.handshakes_in_flight,
            1,
            1_000_000,
        )?;
        range(
            "limits.handshakes_per_ip",
            limits.handshakes_per_ip,
            1,
            limits.handshakes_in_flight,
        )?;
        range(
            "limits.handshake_rate",
            limits.handshake_rate,
            1,
            10_000_000,
        )?;
        range(
            "limits.handshake_burst",
            limits.handshake_burst,
            1,
            10_000_000,
        )?;
        range(
            "limits.handshake_rate_per_source",
            limits.handshake_rate_per_source,
            1,
            10_000_000,
        )?;
        range(
            "limits.handshake_burst_per_source",
            limits.handshake_burst_per_source,
            1,
            10_000_000,
        )?;
        range(
            "limits.handshake_sources",
            limits.handshake_sources,
            4,
            16_777_216,
        )?;
        range(
            "limits.strike_threshold",
            limits.strike_threshold,
            1,
            1_000_000,
        )?;
        range(
            "limits.strike_decay_ms",
            limits.strike_decay_ms,
            1,
            3_600_000,
        )?;
        range("limits.max_peers", limits.max_peers, 1, 1_000_000)?;
        range(
            "limits.reliable_queue_bytes",
            limits.reliable_queue_bytes,
            1,
            MAX_RELIABLE_QUEUE_BYTES,
        )?;
        let reliable_total = limits.reliable_queue_bytes.saturating_mul(limits.max_peers);
        if reliable_total > MAX_RELIABLE_TOTAL_BYTES {
            return Err((
                "limits.reliable_queue_bytes",
                format!(
                    "x limits.max_peers ({} x {} = {reliable_total} bytes of reliable queues) \
                     must be at most {MAX_RELIABLE_TOTAL_BYTES}; lower one of them",
                    limits.reliable_queue_bytes, limits.max_peers
                ),
            ));
        }

        range("timers.keepalive_ms", timers.keepalive_ms, 10, 60_000)?;
        range(
            "timers.idle_timeout_ms",
            timers.idle_timeout_ms,
            timers.keepalive_ms.saturating_add(1),
            3_600_000,
        )?;
        range(
            "timers.handshake_timeout_ms",
            timers.handshake_timeout_ms,
            100,
            600_000,
        )?;
        range(
            "timers.handshake_retry_ms",
            timers.handshake_retry_ms,
            10,
            timers.handshake_timeout_ms,
        )?;
        range(
            "timers.handshake_retry_max_ms",
            timers.handshake_retry_max_ms,
            timers.handshake_retry_ms,
            600_000,
        )?;
        range(
            "timers.previous_keys_linger_ms",
            timers.previous_keys_linger_ms,
            0,
            3_600_000,
        )?;
        range("timers.rekey_after_s", timers.rekey_after_s, 1, 86_400)?;
        range(
            "timers.redial_initial_ms",
            timers.redial_initial_ms,
            10,
            600_000,
        )?;
        range(
            "timers.redial_max_ms",
            timers.redial_max_ms,
            timers.redial_initial_ms,
            3_600_000,
        )?;
        range(
            "timers.reject_after_s",
            timers.reject_after_s,
            timers.rekey_after_s.saturating_add(1),
            7 * 86_400,
        )?;

        range(
            "metrics.publish_interval_ms",
            metrics.publish_interval_ms,
            10,
            60_000,
        )?;

        if let Err(message) = check_log_filter(&log.level) {
            return Err(("log.level", message));
        }
        Ok(())
    }
}

/// The level names a filter may use.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter strictly. tracing's own parser reads a bare word such as
/// `loud` as a target name ("everything from the `loud` module"), which
/// silences the daemon; here every directive must be a level, or
/// `target=level` with a level from `LEVELS`.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    let bad = |why: String| {
        Err(format!(
            "is not a level or filter (\"{}\"): {why}; use one of {} or target=level, \
             comma-separated, e.g. \"info,intentra::proto=debug\"",
            escape_control(filter),
            LEVELS.join(", ")
        ))
    };
    let is_level = |word: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim()));
    let directives: Vec<&str> = filter.split(',').map(str::trim).collect();
    if directives.iter().all(|d| d.is_empty()) {
        return bad("it is empty".to_owned());
    }
    for directive in directives {
        if directive.is_empty() {
            continue;
        }
        match directive.rsplit_once('=') {
            None if is_level(directive) => {}
            None => return bad(format!("{:?} is not a level", escape_control(directive))),
            Some((target, level)) => {
                let target = target.trim();
                let target_ok = !target.is_empty()
                    && target
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'));
                if !target_ok {
                    return bad(format!("{:?} is not a module path", escape_control(target)));
                }
                if !is_level(level) {
                    return bad(format!("{:?} is not a level", escape_control(level)));
                }
            }
        }
    }
    // Whatever passed above must also be accepted by the filter actually installed.
    if let Err(err) = tracing_subscriber::EnvFilter::builder().parse(filter) {
        return bad(one_line(&err.to_string()));
    }
    Ok(())
}

/// Upper bound of `limits.reliable_queue_bytes` (per peer): more than the Reliable
/// sender can ever have in flight (1,024 segments of the largest payload) is never used.
pub const MAX_RELIABLE_QUEUE_BYTES: usize = intentra::proto::MAX_QUEUE_BYTES;
/// Upper bound of `limits.reliable_queue_bytes` x `limits.max_peers`.
pub const MAX_RELIABLE_TOTAL_BYTES: usize = 4 << 30;
/// Upper bound of `io.buffers` x `io.buffer_size` (per worker).
pub const MAX_IO_BUFFER_TOTAL_BYTES: usize = 1 << 30;

fn range<T: PartialOrd + fmt::Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), (&'static str, String)> {
    if value < min || value > max {
        return Err((key, format!("must be between {min} and {max}, got {value}")));
    }
    Ok(())
}

fn first_duplicate<T: Ord + Copy>(items: &[T]) -> Option<T> {
    let mut sorted = items.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()
        .get(..end)
        .map_or(0, |head| head.iter().filter(|&&b| b == b'\n').count())
        + 1
}

/// User-facing errors are one line; parser messages sometimes are not.
fn one_line(message: &str) -> String {
    escape_control(&message.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Control characters (newline, escape, ...) as Rust-style escapes, so a key
/// or value quoted in an error can neither break the line nor drive a terminal.
pub fn escape_control(text: &str) -> String {
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

fn read_bounded(path: &Path, limit: u64) -> Result<String, ConfigError> {
    let file = fs::File::open(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_file_bounded(path, file, limit)
}

fn read_file_bounded(path: &Path, file: fs::File, limit: u64) -> Result<String, ConfigError> {
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > limit {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(text)
}

/// Reads an allow-list: one hex public key per line, `#` starts a comment,
/// blank lines are ignored. Duplicates are refused: they usually mean a
/// copy-paste mistake that replaced the key that was meant.
pub fn read_allow_list(path: &Path) -> Result<Vec<PublicKey>, ConfigError> {
    let text = read_bounded(path, MAX_ALLOW_LIST_BYTES)?;
    parse_allow_list(&text).map_err(|(line, message)| ConfigError::AllowList {
        path: path.to_path_buf(),
        line,
        message,
    })
}

fn parse_allow_list(text: &str) -> Result<Vec<PublicKey>, (usize, String)> {
    let mut keys: Vec<(PublicKey, usize)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let key: PublicKey = content
            .parse()
            .map_err(|err: KeyError| (line_no, format!("not a public key: {err}")))?;
        if let Some((_, first)) = keys.iter().find(|(k, _)| *k == key) {
            return Err((
                line_no,
                format!("public key {} already listed on line {first}", key.short()),
            ));
        }
        keys.push((key, line_no));
    }
    Ok(keys.into_iter().map(|(key, _)| key).collect())
}

/// Reads our static key: one line of hex secret key. Refuses files other
/// users can read, and the all-zero key.
pub fn read_key_file(path: &Path) -> Result<Keypair, ConfigError> {
    let io_err = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Open first and check the opened file, so the mode we check is the mode
    // of the bytes we read. O_NONBLOCK keeps a FIFO from hanging the open.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    let metadata = file.metadata().map_err(io_err)?;
    if !metadata.is_file() {
        return Err(ConfigError::KeyFile {
            path: path.to_path_buf(),
            message: "not a regular file".to_owned(),
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::KeyFileMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = read_file_bounded(path, file, MAX_KEY_FILE_BYTES)?;
    // Only the kind of failure is reported: the content is a secret.
    let secret = SecretKey::from_hex(text.trim()).map_err(|err| ConfigError::KeyFile {
        path: path.to_path_buf(),
        message: format!("not a secret key: {err}"),
    })?;
    Ok(Keypair::from_secret(secret))
}

/// Writes a secret key file with mode 0600, atomically: the key is written to
/// a temporary file in the same directory and then linked into place, so a
/// crash never leaves a half-written key and an existing file is never
/// replaced unless `overwrite` is set.
pub fn write_key_file(path: &Path, secret: &SecretKey, overwrite: bool) -> Result<(), ConfigError> {
    let fail = |message: String| ConfigError::KeyWrite {
        path: path.to_path_buf(),
        message,
    };
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(fail(
            "already exists; pass --force to replace it".to_owned(),
        ));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| fail("is not a file name".to_owned()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let written = (|| -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask may only remove bits, but be explicit in case the file
        // system ignores the create mode.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(secret.to_hex().as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    })();
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail(format!("cannot write {}: {err}", tmp.display())));
    }

    let placed = if overwrite {
        fs::rename(&tmp, path)
    } else {
        // link(2) fails if the target exists: no window in which another
        // process's key could be replaced.
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        linked
    };
    placed.map_err(|err| {
        let _ = fs::remove_file(&tmp);
        if err.kind() == io::ErrorKind::AlreadyExists {
            fail("already exists; pass --force to replace it".to_owned())
        } else {
            fail(err.to_string())
        }
    })?;
    // Make the new directory entry durable too.
    if let Ok(dir) = fs::File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// `public_key = "<64 hex>"` in the TOML file.
mod hex_public_key {
    use super::PublicKey;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &PublicKey, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&key.to_hex())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PublicKey, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|err| serde::de::Error::custom(format!("not a public key: {err}")))
    }
}

/// `listen = "127.0.0.1:9700"` or `listen = "off"`.
mod listen_or_off {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        listen: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match listen {
            Some(addr) => serializer.collect_str(addr),
            None => serializer.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_listen(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses a metrics listen address, or `off` to disable the endpoint.
pub fn parse_listen(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "off" | "none" | "" => Ok(None),
        addr => addr.parse().map(Some).map_err(|_| {
            format!("expected an address like 127.0.0.1:9700 or \"off\", got {addr:?}")
        }),
    }
}

/// `[hub]`: run this daemon as a publish/subscribe hub (PROTOCOL.md section 19).
///
/// A hub runs as **one** worker on **one** socket (`node.workers = 1`, one `node.bind`):
/// its state (topics, subscribers, presence, links) is one table that a message from
/// any session reads and a relay to any other session writes, so sessions on several
/// SO_REUSEPORT workers would need a lock per message and a cross-thread hand-off per
/// relay, whose latency is the other worker's wake-up. The hub's node also dials the
/// `[[node.peers]]` itself (no separate outbound worker), so links share that table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    pub enabled: bool,
    /// Who may publish and subscribe on what; default deny.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HubRule>,
    /// Public keys (hex) of the hubs this hub links with. Dial them with `[[node.peers]]`
    /// on one side (or both).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Send each new subscriber the topic's last relayed publish.
    pub last_value_cache: bool,
    /// A member or link not heard from for this long is reported down (silent). The
    /// node's keepalive is set to a third of it (at most 3 s) and its idle timeout to
    /// three times it.
    pub detection_time_ms: u64,
    /// Reliable messages held per peer while the transport answers WouldBlock; one more
    /// closes the session (dropping a control message would desynchronise the peer).
    pub backlog_per_peer: usize,
    /// How often queued Reliable messages are retried and hub timers run.
    pub tick_ms: u64,
    /// Most topics the hub tracks.
    pub max_topics: usize,
    /// Most subscriptions plus advertisements per member.
    pub max_memberships_per_member: usize,
    /// Export per-topic series (members by role, publishes accepted and relayed) that
    /// `intentra status` shows as a topics table; cardinality grows with topics.
    pub per_topic_metrics: bool,
}

/// One `[[hub.rules]]` entry: `key` is a hex public key or `"*"`, `topic` an exact name
/// or a prefix ending in `*`, `allow` a list of `"publish"` and/or `"subscribe"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubRule {
    pub key: String,
    pub topic: String,
    pub allow: Vec<String>,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection {
            enabled: false,
            rules: Vec::new(),
            links: Vec::new(),
            last_value_cache: false,
            detection_time_ms: 3000,
            backlog_per_peer: 4096,
            tick_ms: 5,
            max_topics: 4096,
            max_memberships_per_member: 256,
            per_topic_metrics: false,
        }
    }
}

impl HubSection {
    fn is_default(&self) -> bool {
        *self == HubSection::default()
    }
}

/// The `[hub]` checks; called from `Config::validate`.
fn check_hub(hub: &HubSection, node: &NodeSection) -> Result<(), (&'static str, String)> {
    range("hub.detection_time_ms", hub.detection_time_ms, 300, 600_000)?;
    range("hub.backlog_per_peer", hub.backlog_per_peer, 1, 1 << 20)?;
    range("hub.tick_ms", hub.tick_ms, 1, 1000)?;
    range("hub.max_topics", hub.max_topics, 1, 1 << 20)?;
    range(
        "hub.max_memberships_per_member",
        hub.max_memberships_per_member,
        1,
        1 << 16,
    )?;
    for (i, rule) in hub.rules.iter().enumerate() {
        if rule.key != "*" && rule.key.parse::<PublicKey>().is_err() {
            return Err((
                "hub.rules",
                format!(
                    "entry {}: key must be a hex public key or \"*\", got {:?}",
                    i + 1,
                    rule.key
                ),
            ));
        }
        let valid = match rule.topic.strip_suffix('*') {
            Some("") => true,
            Some(prefix) => prefix.len() <= 128 && !prefix.chars().any(char::is_control),
            None => intentra_pubsub::validate_topic_name(&rule.topic).is_ok(),
        };
        if !valid {
            return Err((
                "hub.rules",
                format!(
                    "entry {}: topic {:?} is not a topic name or a prefix ending in *",
                    i + 1,
                    rule.topic
                ),
            ));
        }
        if rule.allow.is_empty()
            || rule
                .allow
                .iter()
                .any(|a| a != "publish" && a != "subscribe")
        {
            return Err((
                "hub.rules",
                format!(
                    "entry {}: allow must list \"publish\" and/or \"subscribe\", got {:?}",
                    i + 1,
                    rule.allow
                ),
            ));
        }
    }
    let mut links = Vec::with_capacity(hub.links.len());
    for link in &hub.links {
        let key: PublicKey = link
            .parse()
            .map_err(|e| ("hub.links", format!("{link:?} is not a public key: {e}")))?;
        links.push(key);
    }
    if let Some(dup) = first_duplicate(&links) {
        return Err(("hub.links", format!("lists public key {dup} twice")));
    }
    if hub.enabled {
        if node.workers != 1 {
            return Err((
                "node.workers",
                format!(
                    "must be 1 with hub.enabled (a hub's state is one table), got {}",
                    node.workers
                ),
            ));
        }
        if node.bind.len() != 1 {
            return Err((
                "node.bind",
                format!(
                    "must list exactly one address with hub.enabled, got {}",
                    node.bind.len()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let config = Config::from_toml_str("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.node.bind, vec![DEFAULT_BIND]);
        assert_eq!(config.limits.rate_pps, 10_000);
        assert_eq!(config.metrics.listen, Some(DEFAULT_METRICS_LISTEN));
        config.validate().unwrap();
    }

    #[test]
    fn allow_list_comments_blank_lines_and_duplicates() {
        let a = "11".repeat(32);
        let b = "22".repeat(32);
        let text = format!("# ops team\n{a}  # alice\n\n   {b}\n");
        let keys = parse_allow_list(&text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].to_hex(), b);
        let dup = format!("{a}\n{b}\n{a}\n");
        assert_eq!(parse_allow_list(&dup).unwrap_err().0, 3);
        let bad = format!("{a}\nnot-a-key\n");
        let (line, message) = parse_allow_list(&bad).unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("not a public key"), "{message}");
    }

    #[test]
    fn line_numbers_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }

    #[test]
    fn listen_accepts_off() {
        assert_eq!(parse_listen("off"), Ok(None));
        assert_eq!(
            parse_listen("127.0.0.1:1"),
            Ok(Some("127.0.0.1:1".parse().unwrap()))
        );
        assert!(parse_listen("localhost").is_err());
    }
}
