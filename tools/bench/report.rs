//! Results of one benchmark run: the JSON object `--json` prints, the end-of-run table, and the
//! CSV rows the envelope sweep plots.
//!
//! Owns the result schema (its key names are what scripts and tests read) and its text forms.
//! It must never measure anything: the load and sink modules fill it in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One-way latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// One run. Counts cover the measurement window only: messages sent (by their send timestamp)
/// after the warm-up and before the end, and those of them the receiver delivered.
///
/// A message is one payload with its own send timestamp; a datagram is what the receiver
/// read from its socket. They are the same except with `--producer-thread --bundling on`,
/// where one datagram (a bundle, PROTOCOL.md 7.5) carries several messages. The older keys
/// (`sent`, `received`, `received_pps`, `receiver_capacity_pps`) count messages.
///
/// Keys added after the first release default when absent, so `csv` still reads old files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// "intentra" or "raw".
    pub mode: String,
    /// Who sent: "peers" (N peers, each its own endpoint, sealed by the generator) or
    /// "producer-thread" (one `intentra::Node`, fed by one thread through its `Handle`).
    #[serde(default = "default_sender")]
    pub sender: String,
    /// `--producer-thread` only: whether the sending node bundled (`NodeConfig::bundling`).
    #[serde(default)]
    pub bundling: Option<bool>,
    /// `--producer-thread` only: the sending node's driver.
    #[serde(default)]
    pub sender_io_used: Option<String>,
    /// Delivery mode of intentra messages: "realtime" or "reliable" ("none" for raw).
    pub delivery: String,
    /// The receive I/O path asked for (`--io`) and the one that ran.
    pub io: String,
    pub io_used: String,
    pub gso: bool,
    pub gso_used: bool,
    pub peers: u32,
    /// Peers whose handshake completed (all of them for raw).
    pub peers_up: u32,
    pub sources: u32,
    /// Messages per second per peer; 0 means flat out (`--producer-thread` only).
    pub rate_hz: u32,
    pub size: usize,
    /// Bytes of each datagram on the wire (payload plus intentra's header and tag).
    pub datagram_len: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// peers_up x rate_hz: what the generator was asked to send.
    pub target_pps: f64,
    pub sent: u64,
    pub received: u64,
    /// What the generator actually put on the wire per second of the window.
    pub offered_pps: f64,
    pub received_pps: f64,
    /// Messages delivered in the window (the same count as `received`).
    #[serde(default)]
    pub received_msgs: u64,
    /// `received_msgs` per second of the window (the same as `received_pps`).
    #[serde(default)]
    pub received_msgs_per_s: f64,
    /// Datagrams that delivered at least one of the window's messages.
    #[serde(default)]
    pub received_datagrams: u64,
    /// `received_datagrams` per second of the window.
    #[serde(default)]
    pub received_dps: f64,
    /// received_msgs / received_datagrams: above 1 only when datagrams carried bundles.
    #[serde(default)]
    pub msgs_per_datagram: f64,
    /// Receiver thread CPU per delivered message, nanoseconds.
    #[serde(default)]
    pub receiver_cpu_ns_per_msg: f64,
    /// Receiver thread CPU per datagram that delivered a message, nanoseconds.
    #[serde(default)]
    pub receiver_cpu_ns_per_datagram: f64,
    pub delivery_ratio: f64,
    pub latency_us: Latency,
    /// Receiver endpoint drops by reason over the window; for raw, the kernel's.
    pub drops: BTreeMap<String, u64>,
    /// Datagrams the kernel discarded at the receiver socket (full receive buffer) in the window.
    pub kernel_drops: Option<u64>,
    /// Receive buffer the kernel granted the receiver socket (0 when the crate driver owns it).
    pub rcvbuf_bytes: usize,
    /// Sends the kernel refused (full send buffer); those packets were not counted as sent.
    /// With `--producer-thread`: sends the node's loop refused in the window after its handle
    /// took them (a full Reliable window, above all), likewise not counted as sent.
    pub send_failed: u64,
    /// Packets the generator skipped because it ran more than 50 ms behind schedule (the whole
    /// run, warm-up included): non-zero means the generator, not the receiver, set the limit.
    pub generator_skipped: u64,
    /// Sends the sender endpoints refused for another reason than WouldBlock (should be 0).
    pub send_errors: u64,
    /// Peers whose session closed during the load (should be 0).
    pub peers_lost: u32,
    /// Datagrams longer than a receive slot (should be 0).
    pub truncated: u64,
    /// Reliable sends the sender endpoints refused with WouldBlock (with `--producer-thread`,
    /// the node's loop, over the whole run).
    pub send_would_block: u64,
    pub receiver_cpu_s: f64,
    pub generator_cpu_s: f64,
    /// receiver_cpu_s / duration_s: near 1.0 means the receiver thread was saturated.
    pub receiver_utilization: f64,
    /// generator_cpu_s / duration_s: near 1.0 means the generator, not the receiver, was the limit.
    pub generator_utilization: f64,
    /// received / receiver_cpu_s: packets per second one receiver core would handle at this cost.
    pub receiver_capacity_pps: f64,
    /// `--producer-thread`: CPU the sending node's loop thread used over the window (its
    /// producer's is `generator_cpu_s`); 0 for the peers' generator, which has no loop.
    #[serde(default)]
    pub sender_loop_cpu_s: f64,
    /// sender_loop_cpu_s / duration_s: near 1.0 means the sending node's loop was the limit.
    #[serde(default)]
    pub sender_loop_utilization: f64,
    /// Sender CPU per delivered message, nanoseconds: the generator's (or, with
    /// `--producer-thread`, the producer thread's), and the sending node's loop's. With the
    /// receiver's `receiver_cpu_ns_per_msg` they are what each thread of the path costs.
    #[serde(default)]
    pub generator_cpu_ns_per_msg: f64,
    /// The sending node's loop's CPU per delivered message (0 without `--producer-thread`).
    #[serde(default)]
    pub sender_loop_cpu_ns_per_msg: f64,
    /// Wall time of the handshake phase.
    pub handshake_s: f64,
    /// Keepalive interval of both sides (raised above 10,000 peers, see `--help`).
    #[serde(default)]
    pub keepalive_s: f64,
    /// Sends the producer's `Handle` refused because its queue was full (`--producer-thread`;
    /// the producer retried them, so they are back-pressure, not loss).
    #[serde(default)]
    pub producer_queue_full: u64,
    /// Peak resident memory of the whole bench process so far (generator, receiver and, with
    /// `--producer-thread`, the sending node), KiB; 0 where /proc is unavailable. The second
    /// report of `--compare` or `--bundling both` includes the first run's peak.
    #[serde(default)]
    pub max_rss_kib: u64,
    /// Deliveries whose timestamp was later than the receiver's clock (clock skew; counted 0).
    pub negative_latency: u64,
}

fn default_sender() -> String {
    "peers".to_string()
}

/// `a / b`, or 0 where `b` is 0 (a ratio of nothing is reported as 0, never NaN or inf).
pub fn div(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl Report {
    /// Receiver CPU per received message, nanoseconds.
    pub fn cpu_ns_per_packet(&self) -> f64 {
        div(self.receiver_cpu_s * 1e9, self.received as f64)
    }

    /// Fills the message and datagram figures from `received`, `received_datagrams`,
    /// `receiver_cpu_s` and `duration_s`.
    pub fn derive_rates(&mut self) {
        let cpu_ns = self.receiver_cpu_s * 1e9;
        self.received_msgs = self.received;
        self.received_msgs_per_s = self.received_pps;
        self.received_dps = div(self.received_datagrams as f64, self.duration_s);
        self.msgs_per_datagram = div(self.received as f64, self.received_datagrams as f64);
        self.receiver_cpu_ns_per_msg = div(cpu_ns, self.received as f64);
        self.receiver_cpu_ns_per_datagram = div(cpu_ns, self.received_datagrams as f64);
        self.sender_loop_utilization = div(self.sender_loop_cpu_s, self.duration_s);
        self.generator_cpu_ns_per_msg = div(self.generator_cpu_s * 1e9, self.received as f64);
        self.sender_loop_cpu_ns_per_msg = div(self.sender_loop_cpu_s * 1e9, self.received as f64);
    }

    /// The label of the table's first column: the mode, or the bundling of a producer run
    /// (whose mode is always intentra).
    fn label(&self) -> String {
        match self.bundling {
            Some(true) => "bundling on".to_string(),
            Some(false) => "bundling off".to_string(),
            None => self.mode.clone(),
        }
    }

    fn drops_text(&self) -> String {
        let mut text = String::new();
        for (label, count) in self.drops.iter().filter(|(_, c)| **c > 0) {
            let _ = write!(text, "{label}={count} ");
        }
        if let Some(k) = self.kernel_drops.filter(|k| *k > 0) {
            let _ = write!(text, "kernel={k}");
        }
        if text.is_empty() {
            text.push('-');
        }
        text.trim_end().to_string()
    }
}

/// The ratios a `--compare` run reports: intentra over raw, measured in the same process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub received_pps: f64,
    pub delivery_ratio: f64,
    pub p50_latency: f64,
    pub p99_latency: f64,
    pub receiver_cpu_per_packet: f64,
}

impl Ratio {
    pub fn of(intentra: &Report, raw: &Report) -> Ratio {
        Ratio {
            received_pps: div(intentra.received_pps, raw.received_pps),
            delivery_ratio: div(intentra.delivery_ratio, raw.delivery_ratio),
            p50_latency: div(intentra.latency_us.p50, raw.latency_us.p50),
            p99_latency: div(intentra.latency_us.p99, raw.latency_us.p99),
            receiver_cpu_per_packet: div(intentra.cpu_ns_per_packet(), raw.cpu_ns_per_packet()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub raw: Report,
    pub intentra: Report,
    pub ratio: Ratio,
}

/// The ratios a `--bundling both` run reports: bundling on over off, in the same process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundlingRatio {
    /// Delivered messages per second.
    pub received_msgs_per_s: f64,
    /// Datagrams per second (below 1 when bundling packs several messages per datagram).
    pub received_dps: f64,
    pub p50_latency: f64,
    pub p99_latency: f64,
    pub receiver_cpu_ns_per_msg: f64,
    pub receiver_cpu_ns_per_datagram: f64,
}

impl BundlingRatio {
    pub fn of(on: &Report, off: &Report) -> BundlingRatio {
        BundlingRatio {
            received_msgs_per_s: div(on.received_msgs_per_s, off.received_msgs_per_s),
            received_dps: div(on.received_dps, off.received_dps),
            p50_latency: div(on.latency_us.p50, off.latency_us.p50),
            p99_latency: div(on.latency_us.p99, off.latency_us.p99),
            receiver_cpu_ns_per_msg: div(on.receiver_cpu_ns_per_msg, off.receiver_cpu_ns_per_msg),
            receiver_cpu_ns_per_datagram: div(
                on.receiver_cpu_ns_per_datagram,
                off.receiver_cpu_ns_per_datagram,
            ),
        }
    }
}

/// `--producer-thread --bundling both`: the two runs and their ratios. `order` says which
/// ran first ("off,on" or "on,off").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundlingComparison {
    pub off: Report,
    pub on: Report,
    pub ratio: BundlingRatio,
    pub order: String,
}

/// The end-of-run table, one row per report. `msgs/s` is delivered messages (the old
/// `recv/s`), `dgrams/s` the datagrams that carried them; `ns/msg` and `ns/dgram` are the
/// receiver thread's CPU per each; `hs s` is the handshake phase.
pub fn table(reports: &[&Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:>6} {:>6} {:>5} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>7} {:>8} {:>7}  drops",
        "mode", "peers", "rate", "size", "target/s", "offered/s", "msgs/s", "dgrams/s", "deliv",
        "p50us", "p99us", "p999us", "max us", "rx util", "gen util", "ns/msg", "ns/dgram", "hs s"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<13} {:>6} {:>6} {:>5} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>8.4} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>7.2} {:>8.2} {:>7.0} {:>8.0} {:>7.3}  {}",
            r.label(),
            r.peers_up,
            r.rate_hz,
            r.size,
            r.target_pps,
            r.offered_pps,
            r.received_msgs_per_s,
            r.received_dps,
            r.delivery_ratio,
            r.latency_us.p50,
            r.latency_us.p99,
            r.latency_us.p999,
            r.latency_us.max,
            r.receiver_utilization,
            r.generator_utilization,
            r.receiver_cpu_ns_per_msg,
            r.receiver_cpu_ns_per_datagram,
            r.handshake_s,
            r.drops_text()
        );
    }
    // A producer run has three busy threads: what each costs says which one sets the limit.
    for r in reports.iter().filter(|r| r.sender_loop_cpu_s > 0.0) {
        let _ = writeln!(
            out,
            "{}: CPU per delivered message: producer {:.0} ns (busy {:.2}), node loop {:.0} ns (busy {:.2}), receiver {:.0} ns (busy {:.2})",
            r.label(),
            r.generator_cpu_ns_per_msg,
            r.generator_utilization,
            r.sender_loop_cpu_ns_per_msg,
            r.sender_loop_utilization,
            r.receiver_cpu_ns_per_msg,
            r.receiver_utilization,
        );
    }
    out
}

/// Columns of the envelope CSV, in order.
pub const CSV_HEADER: &str = "mode,delivery,io_used,gso_used,peers,peers_up,rate_hz,size,duration_s,target_pps,offered_pps,received_pps,delivery_ratio,p50_us,p90_us,p99_us,p999_us,max_us,receiver_cpu_s,kernel_drops,endpoint_drops,receiver_utilization,generator_utilization,receiver_capacity_pps,sender,bundling,received_datagrams,received_dps,receiver_cpu_ns_per_msg,receiver_cpu_ns_per_datagram,handshake_s";

/// One CSV row for `report` (no field contains a comma).
pub fn csv_row(r: &Report) -> String {
    let endpoint_drops: u64 = r.drops.values().sum();
    format!(
        "{},{},{},{},{},{},{},{},{:.3},{:.0},{:.0},{:.0},{:.6},{:.1},{:.1},{:.1},{:.1},{:.1},{:.3},{},{},{:.3},{:.3},{:.0},{},{},{},{:.0},{:.1},{:.1},{:.3}",
        r.mode,
        r.delivery,
        r.io_used,
        r.gso_used,
        r.peers,
        r.peers_up,
        r.rate_hz,
        r.size,
        r.duration_s,
        r.target_pps,
        r.offered_pps,
        r.received_pps,
        r.delivery_ratio,
        r.latency_us.p50,
        r.latency_us.p90,
        r.latency_us.p99,
        r.latency_us.p999,
        r.latency_us.max,
        r.receiver_cpu_s,
        r.kernel_drops.unwrap_or(0),
        endpoint_drops,
        r.receiver_utilization,
        r.generator_utilization,
        r.receiver_capacity_pps,
        r.sender,
        match r.bundling {
            Some(true) => "on",
            Some(false) => "off",
            None => "-",
        },
        r.received_datagrams,
        r.received_dps,
        r.receiver_cpu_ns_per_msg,
        r.receiver_cpu_ns_per_datagram,
        r.handshake_s
    )
}

/// One point of a plot, read back from the CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvPoint {
    pub mode: String,
    pub target_pps: f64,
    pub offered_pps: f64,
    pub delivery_ratio: f64,
    pub p99_us: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsvError {
    MissingHeader,
    MissingColumn(&'static str),
    BadRow { line: usize },
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CsvError::MissingHeader => f.write_str("empty CSV: no header line"),
            CsvError::MissingColumn(c) => write!(f, "CSV has no column {c:?}"),
            CsvError::BadRow { line } => write!(f, "CSV line {line}: missing or non-numeric field"),
        }
    }
}

impl std::error::Error for CsvError {}

/// Reads the envelope CSV (by header names, so added columns do not break old files).
pub fn parse_csv(text: &str) -> Result<Vec<CsvPoint>, CsvError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or(CsvError::MissingHeader)?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let column = |name: &'static str| {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or(CsvError::MissingColumn(name))
    };
    let (mode, target, offered, delivery, p99) = (
        column("mode")?,
        column("target_pps")?,
        column("offered_pps")?,
        column("delivery_ratio")?,
        column("p99_us")?,
    );
    let mut points = Vec::new();
    for (index, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = CsvError::BadRow { line: index + 1 };
        let num = |i: usize| -> Result<f64, CsvError> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or(bad.clone())
        };
        points.push(CsvPoint {
            mode: fields.get(mode).ok_or(bad.clone())?.to_string(),
            target_pps: num(target)?,
            offered_pps: num(offered)?,
            delivery_ratio: num(delivery)?,
            p99_us: num(p99)?,
        });
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_through_the_plot_reader() {
        let report = Report {
            mode: "intentra".into(),
            target_pps: 100_000.0,
            offered_pps: 99_000.0,
            delivery_ratio: 0.5,
            latency_us: Latency {
                p99: 42.5,
                ..Latency::default()
            },
            ..Report::default()
        };
        let text = format!("{CSV_HEADER}\n{}\n", csv_row(&report));
        let points = parse_csv(&text).unwrap();
        assert_eq!(
            points,
            vec![CsvPoint {
                mode: "intentra".into(),
                target_pps: 100_000.0,
                offered_pps: 99_000.0,
                delivery_ratio: 0.5,
                p99_us: 42.5
            }]
        );
    }

    #[test]
    fn messages_and_datagrams_are_derived_apart() {
        let mut report = Report {
            received: 1_000,
            received_pps: 1_000.0,
            received_datagrams: 250,
            receiver_cpu_s: 0.001,
            duration_s: 1.0,
            ..Report::default()
        };
        report.derive_rates();
        assert_eq!(report.received_msgs, 1_000);
        assert_eq!(report.received_msgs_per_s, 1_000.0);
        assert_eq!(report.received_dps, 250.0);
        assert_eq!(report.msgs_per_datagram, 4.0);
        assert!((report.receiver_cpu_ns_per_msg - 1_000.0).abs() < 1e-6);
        assert!((report.receiver_cpu_ns_per_datagram - 4_000.0).abs() < 1e-6);
        // No sending loop (the peers' generator): no loop figures, not a division by zero.
        assert_eq!(report.sender_loop_utilization, 0.0);
        assert_eq!(report.sender_loop_cpu_ns_per_msg, 0.0);
        let mut producer = Report {
            generator_cpu_s: 0.0005,
            sender_loop_cpu_s: 0.0008,
            ..report.clone()
        };
        producer.derive_rates();
        assert!((producer.generator_cpu_ns_per_msg - 500.0).abs() < 1e-6);
        assert!((producer.sender_loop_cpu_ns_per_msg - 800.0).abs() < 1e-6);
        assert!((producer.sender_loop_utilization - 0.0008).abs() < 1e-12);
        // Nothing received: zeros, never NaN or infinity.
        let mut empty = Report::default();
        empty.derive_rates();
        assert_eq!(empty.receiver_cpu_ns_per_datagram, 0.0);
        assert_eq!(empty.msgs_per_datagram, 0.0);
    }

    #[test]
    fn reports_without_the_newer_keys_still_parse() {
        let mut old = serde_json::to_value(Report::default()).unwrap();
        let map = old.as_object_mut().unwrap();
        for key in [
            "sender",
            "bundling",
            "sender_io_used",
            "received_msgs",
            "received_msgs_per_s",
            "received_datagrams",
            "received_dps",
            "msgs_per_datagram",
            "receiver_cpu_ns_per_msg",
            "receiver_cpu_ns_per_datagram",
            "keepalive_s",
            "producer_queue_full",
            "max_rss_kib",
            "sender_loop_cpu_s",
            "sender_loop_utilization",
            "generator_cpu_ns_per_msg",
            "sender_loop_cpu_ns_per_msg",
        ] {
            assert!(map.remove(key).is_some(), "{key} is a key of the report");
        }
        let report: Report = serde_json::from_value(old).unwrap();
        assert_eq!(report.sender, "peers");
        assert_eq!(report.bundling, None);
    }

    #[test]
    fn bundling_ratio_is_on_over_off() {
        let off = Report {
            received_msgs_per_s: 100.0,
            latency_us: Latency {
                p50: 20.0,
                ..Latency::default()
            },
            ..Report::default()
        };
        let on = Report {
            received_msgs_per_s: 300.0,
            latency_us: Latency {
                p50: 10.0,
                ..Latency::default()
            },
            ..Report::default()
        };
        let ratio = BundlingRatio::of(&on, &off);
        assert_eq!(ratio.received_msgs_per_s, 3.0);
        assert_eq!(ratio.p50_latency, 0.5);
        assert_eq!(ratio.received_dps, 0.0, "0 where off has no datagrams");
    }

    #[test]
    fn csv_errors_name_the_problem() {
        assert_eq!(parse_csv(""), Err(CsvError::MissingHeader));
        assert_eq!(
            parse_csv("mode,target_pps\n"),
            Err(CsvError::MissingColumn("offered_pps"))
        );
        let text = format!("{CSV_HEADER}\nraw,x\n");
        assert_eq!(parse_csv(&text), Err(CsvError::BadRow { line: 2 }));
    }
}
