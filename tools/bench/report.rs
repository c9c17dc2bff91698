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

/// One run. Counts cover the measurement window only: packets sent (by their send timestamp)
/// after the warm-up and before the end, and those of them the receiver delivered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// "intentra" or "raw".
    pub mode: String,
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
    pub delivery_ratio: f64,
    pub latency_us: Latency,
    /// Receiver endpoint drops by reason over the window; for raw, the kernel's.
    pub drops: BTreeMap<String, u64>,
    /// Datagrams the kernel discarded at the receiver socket (full receive buffer) in the window.
    pub kernel_drops: Option<u64>,
    /// Receive buffer the kernel granted the receiver socket (0 when the crate driver owns it).
    pub rcvbuf_bytes: usize,
    /// Sends the kernel refused (full send buffer); those packets were not counted as sent.
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
    /// Reliable sends the sender endpoints refused with WouldBlock.
    pub send_would_block: u64,
    pub receiver_cpu_s: f64,
    pub generator_cpu_s: f64,
    /// receiver_cpu_s / duration_s: near 1.0 means the receiver thread was saturated.
    pub receiver_utilization: f64,
    /// generator_cpu_s / duration_s: near 1.0 means the generator, not the receiver, was the limit.
    pub generator_utilization: f64,
    /// received / receiver_cpu_s: packets per second one receiver core would handle at this cost.
    pub receiver_capacity_pps: f64,
    /// Wall time of the handshake phase.
    pub handshake_s: f64,
    /// Deliveries whose timestamp was later than the receiver's clock (clock skew; counted 0).
    pub negative_latency: u64,
}

impl Report {
    /// Receiver CPU per received packet, nanoseconds.
    pub fn cpu_ns_per_packet(&self) -> f64 {
        if self.received == 0 {
            return 0.0;
        }
        self.receiver_cpu_s * 1e9 / self.received as f64
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
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
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

/// The end-of-run table, one row per report.
pub fn table(reports: &[&Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:>6} {:>6} {:>5} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>8} {:>8}  drops",
        "mode", "peers", "rate", "size", "target/s", "offered/s", "recv/s", "deliv", "p50us", "p99us",
        "p999us", "max us", "rx util", "gen util", "rx ns/pk"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<9} {:>6} {:>6} {:>5} {:>10.0} {:>10.0} {:>10.0} {:>8.4} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>7.2} {:>8.2} {:>8.0}  {}",
            r.mode,
            r.peers_up,
            r.rate_hz,
            r.size,
            r.target_pps,
            r.offered_pps,
            r.received_pps,
            r.delivery_ratio,
            r.latency_us.p50,
            r.latency_us.p99,
            r.latency_us.p999,
            r.latency_us.max,
            r.receiver_utilization,
            r.generator_utilization,
            r.cpu_ns_per_packet(),
            r.drops_text()
        );
    }
    out
}

/// Columns of the envelope CSV, in order.
pub const CSV_HEADER: &str = "mode,delivery,io_used,gso_used,peers,peers_up,rate_hz,size,duration_s,target_pps,offered_pps,received_pps,delivery_ratio,p50_us,p90_us,p99_us,p999_us,max_us,receiver_cpu_s,kernel_drops,endpoint_drops,receiver_utilization,generator_utilization,receiver_capacity_pps";

/// One CSV row for `report` (no field contains a comma).
pub fn csv_row(r: &Report) -> String {
    let endpoint_drops: u64 = r.drops.values().sum();
    format!(
        "{},{},{},{},{},{},{},{},{:.3},{:.0},{:.0},{:.0},{:.6},{:.1},{:.1},{:.1},{:.1},{:.1},{:.3},{},{},{:.3},{:.3},{:.0}",
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
        r.receiver_capacity_pps
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
