//! The `intentra serve` under attack: its configuration, its process (killed on drop, so
//! every exit path of the tool takes it down), and what the suite reads from outside it:
//! CPU time and RSS from `/proc/<pid>`, counters from its metrics endpoint.

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intentra::proto::PublicKey;

/// `/proc/<pid>/stat` counts CPU time in USER_HZ ticks, which Linux fixes at 100 for
/// user space whatever the kernel's own tick rate.
const USER_HZ: f64 = 100.0;

/// What the suite configures beyond the defaults.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The `intentra` binary.
    pub bin: PathBuf,
    /// Scratch directory: key, config and log.
    pub dir: PathBuf,
    /// Seconds between rekeys, so that every attack window contains rekeys.
    pub rekey_after_s: u64,
    /// Seconds until unrenewed keys are refused.
    pub reject_after_s: u64,
    /// `[io] driver` (auto, uring, mmsg, basic).
    pub driver: String,
}

/// A running server. Dropping it kills the process.
pub struct Server {
    child: Child,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Its metrics endpoint.
    pub metrics: SocketAddr,
    /// Its static public key.
    pub key: PublicKey,
    /// Its stderr.
    pub log: PathBuf,
}

/// Why the server could not be started.
#[derive(Debug)]
pub enum ServerError {
    /// A file or process operation failed.
    Io(String),
    /// The server exited or never opened its metrics endpoint.
    Start(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Io(e) => write!(f, "{e}"),
            ServerError::Start(e) => write!(f, "the server did not start: {e}"),
        }
    }
}

fn free_port_udp() -> Result<SocketAddr, ServerError> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| ServerError::Io(format!("cannot find a free UDP port: {e}")))
}

fn free_port_tcp() -> Result<SocketAddr, ServerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| ServerError::Io(format!("cannot find a free TCP port: {e}")))
}

/// The configuration: a hub (the legitimate peers exchange messages through it), one
/// worker, short rekey timers, metrics on loopback. Limits stay at their defaults: the
/// suite measures what an operator gets.
pub fn config_text(addr: SocketAddr, metrics: SocketAddr, options: &ServerOptions) -> String {
    format!(
        "[node]\nbind = [\"{addr}\"]\nkey_file = \"server.key\"\nworkers = 1\n\n\
         [io]\ndriver = \"{driver}\"\n\n\
         [timers]\nrekey_after_s = {rekey}\nreject_after_s = {reject}\n\n\
         [metrics]\nlisten = \"{metrics}\"\n\n\
         [hub]\nenabled = true\n\n\
         [[hub.rules]]\nkey = \"*\"\ntopic = \"flood/*\"\nallow = [\"publish\", \"subscribe\"]\n",
        driver = options.driver,
        rekey = options.rekey_after_s,
        reject = options.reject_after_s,
    )
}

impl Server {
    /// Generates a key, writes the configuration and starts `intentra serve`; waits (at most
    /// 10 s) for its metrics endpoint.
    pub fn start(options: &ServerOptions) -> Result<Server, ServerError> {
        let io = |what: &str, e: std::io::Error| ServerError::Io(format!("{what}: {e}"));
        fs::create_dir_all(&options.dir)
            .map_err(|e| io("cannot create the scratch directory", e))?;
        let key_path = options.dir.join("server.key");
        let out = Command::new(&options.bin)
            .args(["keygen", "--force", "--out"])
            .arg(&key_path)
            .output()
            .map_err(|e| io(&format!("cannot run {}", options.bin.display()), e))?;
        if !out.status.success() {
            return Err(ServerError::Start(format!(
                "keygen failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let key: PublicKey = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| ServerError::Start(format!("keygen printed no public key: {e}")))?;
        let addr = free_port_udp()?;
        let metrics = free_port_tcp()?;
        let config = options.dir.join("server.toml");
        fs::write(&config, config_text(addr, metrics, options))
            .map_err(|e| io("cannot write the configuration", e))?;
        let log = options.dir.join("server.log");
        let stderr = fs::File::create(&log).map_err(|e| io("cannot create the log", e))?;
        // With util-linux's setpriv the kernel kills the server even if this tool is
        // SIGKILLed (parent-death signal, kept across exec); the guard covers the rest.
        let mut command = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&options.bin);
                c
            }
            None => Command::new(&options.bin),
        };
        let child = command
            .args(["serve", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| io(&format!("cannot start {}", options.bin.display()), e))?;
        let mut server = Server {
            child,
            addr,
            metrics,
            key,
            log,
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if intentra_daemon::metrics_http::fetch_metrics(metrics).is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(ServerError::Start(format!(
                    "exited with {status}: {}",
                    server.log_tail()
                )));
            }
            if Instant::now() > end {
                return Err(ServerError::Start(format!(
                    "no metrics endpoint after 10 s: {}",
                    server.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// User plus system CPU seconds of every thread so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(self.pid())
    }

    /// Resident set size in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid())
    }

    /// One scrape, parsed into series (name with labels) and value.
    pub fn scrape(&self) -> Option<BTreeMap<String, f64>> {
        intentra_daemon::metrics_http::fetch_metrics(self.metrics)
            .ok()
            .map(|text| parse_metrics(&text))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setpriv() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("setpriv"))
        .find(|p| p.is_file())
}

/// `utime + stime` of `/proc/<pid>/stat` in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is index 0 here, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// `VmRSS` of `/proc/<pid>/status` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Prometheus text: every sample line as `name{labels}` -> value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// Whether `dir` looks like a scratch directory this tool may reuse.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join(format!("intentra-flood-{}", std::process::id()))
}

/// The `intentra` binary next to this one (cargo puts every bin of the package there).
pub fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join("intentra")
}
