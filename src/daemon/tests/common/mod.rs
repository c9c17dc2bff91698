//! Real `intentra serve` processes on loopback for the ops tests: config files
//! in a scratch directory, stderr to a file (read while the daemon runs, and
//! never a pipe that could fill and block it), bounded waits, kill on drop.
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_intentra");

pub fn scratch(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Writes `dir/name` with `intentra keygen`; returns the public key.
pub fn keygen(dir: &Path, name: &str) -> String {
    let out = Command::new(BIN)
        .args(["keygen", "--force", "--out"])
        .arg(dir.join(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Short timers so losses and redials happen within a test's patience.
pub const FAST_TIMERS: &str = "[timers]\nkeepalive_ms = 100\nidle_timeout_ms = 1000\nhandshake_timeout_ms = 600\nhandshake_retry_ms = 100\nredial_initial_ms = 100\nredial_max_ms = 400\n";

/// A running `intentra serve`.
pub struct Daemon {
    pub child: Child,
    pub metrics: SocketAddr,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `serve --config dir/<name>.toml` (written from `config`, which must
    /// set `metrics.listen` to `metrics`) with stderr to `dir/<name>.log`, and
    /// waits (at most 10 s) for its metrics endpoint.
    pub fn start(dir: &Path, name: &str, config: &str, metrics: SocketAddr) -> Daemon {
        let path = dir.join(format!("{name}.toml"));
        fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            // A relative config path and another working directory: the paths in
            // the file must still resolve against the file's own directory.
            .current_dir("/")
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            metrics,
            log,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while intentra_daemon::metrics_http::fetch_metrics(metrics).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("{name} exited with {status}: {}", daemon.log_text());
            }
            assert!(
                Instant::now() < end,
                "{name} did not start: {}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn scrape(&self) -> String {
        intentra_daemon::metrics_http::fetch_metrics(self.metrics).unwrap_or_default()
    }

    /// Sum of the samples of `name` whose label set contains every `labels` pair.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum_samples(&self.scrape(), name, labels)
    }

    pub fn signal(&self, signal: i32) {
        // kill(1) keeps the tests free of unsafe signal calls.
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then wait (at most 10 s) for a clean exit.
    pub fn stop(mut self) -> String {
        self.signal(15);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log_text()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sum_samples(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `done` every 20 ms for at most `limit`; panics with `what` on timeout.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `[node]` with one bind address, a relative key file and extra lines; metrics on `metrics`.
pub fn config(
    bind: SocketAddr,
    key: &str,
    node_extra: &str,
    metrics: SocketAddr,
    rest: &str,
) -> String {
    format!(
        "[node]\nbind = [\"{bind}\"]\nkey_file = \"{key}\"\n{node_extra}\n{FAST_TIMERS}\n[metrics]\nlisten = \"{metrics}\"\npublish_interval_ms = 20\n{rest}\n"
    )
}
