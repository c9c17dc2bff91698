//! SEAM: the daemon's run functions, called by `cli::run_cli`.
//!
//! This file is a placeholder owned by the lead, who replaces it with the real
//! `serve`, `connect` and `demo` built on the protocol core and the runtime.
//! It must keep these three signatures (or change `cli.rs` with them), and it
//! must never print: it returns errors and `cli` prints them as one line.

use std::fmt;

use crate::cli::{ConnectArgs, DemoArgs};
use crate::config::{Config, ConfigError};

/// A failure of a run function. `cli` maps `Config` to exit code 2 and
/// everything else to 1.
#[derive(Debug)]
pub enum DaemonError {
    /// The function is not implemented yet.
    NotWired(&'static str),
    /// A configuration problem found at start (exit code 2).
    Config(ConfigError),
    /// Anything that failed while running, already phrased as one line.
    Runtime(String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::NotWired(what) => write!(f, "{what}: not wired yet"),
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

/// Runs the daemon with a validated configuration until SIGTERM/SIGINT.
///
/// Wiring notes for the real implementation: `cli` has already validated the
/// config, checked the key file and allow-list, and initialised logging.
/// `config.load_identity()` gives the key pair and allow-list (call it again
/// on SIGHUP to reload the allow-list); `metrics::MetricsHub::new(workers)` is
/// shared with the workers, which call `hub.update(worker, ..)` every
/// `metrics.publish_interval_ms`; `metrics_http::spawn_metrics_server` serves
/// it when `metrics.listen` is set (its error names the address: map it to
/// `DaemonError::Runtime`).
pub fn serve(_config: Config) -> Result<(), DaemonError> {
    Err(DaemonError::NotWired("serve"))
}

/// Connects to one peer and sends test traffic.
pub fn connect(_config: Config, _args: &ConnectArgs) -> Result<(), DaemonError> {
    Err(DaemonError::NotWired("connect"))
}

/// Runs a self-contained demonstration on loopback.
pub fn demo(_args: &DemoArgs) -> Result<(), DaemonError> {
    Err(DaemonError::NotWired("demo"))
}
