//! Log output set-up and a rate limiter for log events an attacker can trigger.
//!
//! Owns `init` (tracing-subscriber to stderr, text or JSON, filtered by the
//! configured level or directive) and `LogLimiter`, which caps how many events
//! of each kind are logged per interval and counts what it suppressed. The
//! limiter must never allocate, lock or read a clock: it is called from the
//! workers' loops with the `now` they already hold.

use core::fmt;
use core::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use intentra::proto::Timestamp;

/// Why logging could not be set up. Display is one line.
#[derive(Debug)]
pub enum LogInitError {
    /// The level or filter directive did not parse.
    BadLevel { level: String, message: String },
    /// A global subscriber was already installed.
    AlreadySet,
}

impl fmt::Display for LogInitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogInitError::BadLevel { message, .. } => write!(f, "log.level {message}"),
            LogInitError::AlreadySet => f.write_str("logging was already initialised"),
        }
    }
}

impl std::error::Error for LogInitError {}

/// Installs the global subscriber, writing to stderr. `level` is a level
/// (`info`) or a full filter (`warn,intentra::proto=debug`), checked as strictly
/// as `check-config` does (`config::check_log_filter`). `RUST_LOG` is
/// deliberately not consulted: the configured level is the one in force.
/// Colours are used only when stderr is a terminal, so files, pipes and
/// journald get plain text.
pub fn init(level: &str, format: LogFormat) -> Result<(), LogInitError> {
    crate::config::check_log_filter(level).map_err(|message| LogInitError::BadLevel {
        level: crate::config::escape_control(level),
        message,
    })?;
    let filter = EnvFilter::builder()
        .parse(level)
        .map_err(|err| LogInitError::BadLevel {
            level: crate::config::escape_control(level),
            message: err.to_string().replace('\n', " "),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|_| LogInitError::AlreadySet)
}

/// The log events a peer or an attacker can cause at packet rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    SessionUp,
    SessionDown,
    Rekey,
    StrikeClose,
    BudgetExhausted,
    Other,
}

impl LogKind {
    pub const ALL: [LogKind; 6] = [
        LogKind::SessionUp,
        LogKind::SessionDown,
        LogKind::Rekey,
        LogKind::StrikeClose,
        LogKind::BudgetExhausted,
        LogKind::Other,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub const fn label(self) -> &'static str {
        match self {
            LogKind::SessionUp => "session_up",
            LogKind::SessionDown => "session_down",
            LogKind::Rekey => "rekey",
            LogKind::StrikeClose => "strike_close",
            LogKind::BudgetExhausted => "budget_exhausted",
            LogKind::Other => "other",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The limiter's answer for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Log it. `suppressed` events of this kind were dropped since the last
    /// one logged: say so in this line ("... (N similar suppressed)").
    Log { suppressed: u64 },
    /// Do not log it; it has been counted.
    Suppress,
}

impl Admission {
    pub fn is_log(self) -> bool {
        matches!(self, Admission::Log { .. })
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct KindState {
    window_start: Timestamp,
    logged_in_window: u32,
    /// Suppressed since the last event that was logged.
    pending: u64,
    /// Suppressed since the limiter was made, for a metric.
    total: u64,
    started: bool,
}

/// At most `per_interval` events of each kind per `interval` (fixed windows).
#[derive(Debug, Clone)]
pub struct LogLimiter {
    per_interval: u32,
    interval: Duration,
    kinds: [KindState; LogKind::COUNT],
}

impl LogLimiter {
    /// `per_interval == 0` suppresses everything (and still counts it).
    pub fn new(per_interval: u32, interval: Duration) -> LogLimiter {
        LogLimiter {
            per_interval,
            interval,
            kinds: [KindState::default(); LogKind::COUNT],
        }
    }

    /// Decides for one event at `now` and reports what was suppressed before it.
    pub fn check(&mut self, kind: LogKind, now: Timestamp) -> Admission {
        let Some(state) = self.kinds.get_mut(kind.index()) else {
            return Admission::Suppress;
        };
        // A clock that steps back keeps the current window (saturating_since
        // reads zero) rather than opening a new one and letting a burst through.
        if !state.started || now.saturating_since(state.window_start) >= self.interval {
            state.window_start = now;
            state.logged_in_window = 0;
            state.started = true;
        }
        if state.logged_in_window < self.per_interval {
            state.logged_in_window += 1;
            let suppressed = core::mem::take(&mut state.pending);
            Admission::Log { suppressed }
        } else {
            state.pending = state.pending.saturating_add(1);
            state.total = state.total.saturating_add(1);
            Admission::Suppress
        }
    }

    /// `check` without the report; suppressed events are still counted in
    /// `total_suppressed`, but the count pending for the next logged line is
    /// cleared when this returns true.
    pub fn allow(&mut self, kind: LogKind, now: Timestamp) -> bool {
        self.check(kind, now).is_log()
    }

    /// Events of `kind` suppressed since the last one logged.
    pub fn pending_suppressed(&self, kind: LogKind) -> u64 {
        self.kinds.get(kind.index()).map_or(0, |s| s.pending)
    }

    /// Events of `kind` suppressed since the limiter was made.
    pub fn total_suppressed(&self, kind: LogKind) -> u64 {
        self.kinds.get(kind.index()).map_or(0, |s| s.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    #[test]
    fn caps_each_kind_per_interval_and_reports_suppressed() {
        let mut limiter = LogLimiter::new(2, Duration::from_secs(1));
        assert_eq!(
            limiter.check(LogKind::StrikeClose, ms(0)),
            Admission::Log { suppressed: 0 }
        );
        assert!(limiter.allow(LogKind::StrikeClose, ms(10)));
        for i in 0..1000 {
            assert_eq!(
                limiter.check(LogKind::StrikeClose, ms(20 + i % 900)),
                Admission::Suppress
            );
        }
        assert_eq!(limiter.pending_suppressed(LogKind::StrikeClose), 1000);
        // Another kind has its own budget.
        assert!(limiter.allow(LogKind::SessionUp, ms(500)));
        // Next window: the first line carries the count, then it resets.
        assert_eq!(
            limiter.check(LogKind::StrikeClose, ms(1000)),
            Admission::Log { suppressed: 1000 }
        );
        assert_eq!(
            limiter.check(LogKind::StrikeClose, ms(1001)),
            Admission::Log { suppressed: 0 }
        );
        assert_eq!(
            limiter.check(LogKind::StrikeClose, ms(1002)),
            Admission::Suppress
        );
        assert_eq!(limiter.total_suppressed(LogKind::StrikeClose), 1001);
        assert_eq!(limiter.total_suppressed(LogKind::SessionUp), 0);
    }

    #[test]
    fn clock_stepping_back_does_not_open_a_new_window() {
        let mut limiter = LogLimiter::new(1, Duration::from_secs(1));
        assert!(limiter.allow(LogKind::Rekey, ms(5000)));
        assert!(!limiter.allow(LogKind::Rekey, ms(1000)));
        assert!(!limiter.allow(LogKind::Rekey, ms(5999)));
        assert!(limiter.allow(LogKind::Rekey, ms(6000)));
    }

    #[test]
    fn zero_budget_suppresses_everything() {
        let mut limiter = LogLimiter::new(0, Duration::from_secs(1));
        for t in 0..10 {
            assert!(!limiter.allow(LogKind::Other, ms(t * 2000)));
        }
        assert_eq!(limiter.total_suppressed(LogKind::Other), 10);
    }

    #[test]
    fn bad_level_is_one_line_error() {
        let err = init("info,[[[", LogFormat::Text).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("info,[[["), "{text}");
        assert!(!text.contains('\n'));
    }
}
