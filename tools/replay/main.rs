//! `intentra-replay`: runs every UDP payload of a pcap/pcapng capture through intentra's
//! wire parser and reports what it made of them, and how fast.
//!
//! Owns the command line, the tally and the report. Reading records is `reader`'s job
//! and walking link/IP/UDP headers is `decode`'s; verdicts come from
//! `intentra::proto::wire::parse_header` and nothing else. It must never panic on a
//! capture, however broken: capture errors are one line naming the byte offset, and
//! exit code 2.
//!
//! Exit codes: 0 success; 1 a mode this build cannot run; 2 an unreadable, truncated
//! or corrupt capture (and command-line errors, as clap reports them); 3 a session replay
//! that matched nothing (no datagram to `--local`, no HandshakeInit for `--key`, or no
//! transport packet opened with the key log), with a hint on stderr. In a readable capture,
//! an unusable block or option is a `warning:` line on stderr, blocks of an unknown type one
//! line per type, and fragmented datagrams never completed one line in all.

mod decode;
// In the library, where its fuzz body runs the same code.
use intentra_daemon::replay_reader as reader;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use decode::{decode, DecodeError, Decoded, LinkType, Reassembler};
use intentra::proto::wire::{parse_header, Malformed, PacketType};
use serde::Serialize;

mod session;

/// Count what intentra's wire parser makes of every UDP datagram in a capture.
#[derive(Parser, Debug)]
#[command(name = "intentra-replay", version)]
struct Args {
    /// A pcap or pcapng file (Ethernet/VLAN, raw IP, Linux SLL/SLL2, BSD loopback).
    file: PathBuf,
    /// Only datagrams with this source or destination port are parsed; others count
    /// as not_intentra.
    #[arg(long)]
    port: Option<u16>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Session replay: the receiving node's private key file (needs --local). The datagrams
    /// it received run through a real endpoint, which reports what it would deliver and reject.
    #[arg(long, requires = "local")]
    key: Option<PathBuf>,
    /// Session replay: the receiving node's address in the capture (needs --key).
    #[arg(long, requires = "key")]
    local: Option<SocketAddr>,
    /// Session replay: the per-session key log the node wrote beside the capture (default
    /// FILE.keylog; for a rotated FILE.N without its own, that of FILE).
    #[arg(long)]
    keylog: Option<PathBuf>,
    /// Also print the parser's rate (parse time only).
    #[arg(long, short)]
    verbose: bool,
    /// Accepted for scripts written for earlier versions and ignored: a session replay no
    /// longer re-runs handshakes, so it needs no allow-list or limits (the key log carries
    /// the session keys).
    #[arg(long, hide = true)]
    config: Option<PathBuf>,
}

const PACKET_TYPES: [PacketType; 10] = [
    PacketType::HandshakeInit,
    PacketType::HandshakeResponse,
    PacketType::HandshakeFinish,
    PacketType::CookieReply,
    PacketType::Realtime,
    PacketType::Reliable,
    PacketType::Ack,
    PacketType::Keepalive,
    PacketType::Close,
    PacketType::Bundle,
];

const MALFORMED: [Malformed; 7] = [
    Malformed::TooShort,
    Malformed::TooLong,
    Malformed::BadVersion,
    Malformed::UnknownType,
    Malformed::ReservedNotZero,
    Malformed::BadLength,
    Malformed::ZeroIndex,
];

/// Index into `PACKET_TYPES`; exhaustive so a new packet type breaks the build here.
fn packet_type_index(t: PacketType) -> usize {
    match t {
        PacketType::HandshakeInit => 0,
        PacketType::HandshakeResponse => 1,
        PacketType::HandshakeFinish => 2,
        PacketType::CookieReply => 3,
        PacketType::Realtime => 4,
        PacketType::Reliable => 5,
        PacketType::Ack => 6,
        PacketType::Keepalive => 7,
        PacketType::Close => 8,
        PacketType::Bundle => 9,
    }
}

/// Index into `MALFORMED`; exhaustive so a new rejection breaks the build here.
fn malformed_index(m: Malformed) -> usize {
    match m {
        Malformed::TooShort => 0,
        Malformed::TooLong => 1,
        Malformed::BadVersion => 2,
        Malformed::UnknownType => 3,
        Malformed::ReservedNotZero => 4,
        Malformed::BadLength => 5,
        Malformed::ZeroIndex => 6,
    }
}

/// Everything counted. Every record lands in exactly one bucket, an IP fragment in
/// `ip_fragments`; a datagram reassembled from fragments is then counted once more, by what
/// it turned out to be (so the packet counts are per datagram).
#[derive(Default)]
struct Tally {
    records: u64,
    ip_fragments: u64,
    reassembly: decode::ReassemblyStats,
    packets: [u64; PACKET_TYPES.len()],
    malformed: [u64; MALFORMED.len()],
    not_udp: u64,
    not_intentra: u64,
    /// Datagrams cut short, by the snapshot length or as a first fragment.
    truncated: u64,
    bad_frame: [u64; DecodeError::ALL.len()],
    unsupported_link: BTreeMap<u32, u64>,
    parsed: u64,
    parse_nanos: u128,
}

#[derive(Serialize)]
struct Report<'a> {
    file: String,
    format: &'static str,
    records: u64,
    parsed: u64,
    counts: BTreeMap<&'static str, u64>,
    malformed: BTreeMap<&'static str, u64>,
    bad_frame: BTreeMap<&'static str, u64>,
    unsupported_link_types: &'a BTreeMap<u32, u64>,
    parse_seconds: f64,
    packets_per_second: Option<f64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let name = args.file.display().to_string();
    let warn = |w: reader::Warning| eprintln!("warning: {name}: {w}");
    if let Some(config) = &args.config {
        eprintln!(
            "note: --config {} is ignored: the key log carries what a session replay needs",
            config.display()
        );
    }
    if let (Some(key), Some(local)) = (&args.key, args.local) {
        return match session::replay(&args.file, key, local, args.keylog.as_deref(), warn) {
            Ok(report) => {
                session::print(&report, args.json);
                let note =
                    fragments_note(report.fragments_incomplete, report.fragments_conflicting);
                if let Some(note) = note {
                    eprintln!("warning: {name}: {note}");
                }
                match session::failure(&report, &args.file, key, local) {
                    Some(hint) => {
                        eprintln!("{hint}");
                        ExitCode::from(3)
                    }
                    None => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        };
    }
    let bytes = match std::fs::read(&args.file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut tally = Tally::default();
    let mut payloads: Vec<Cow<'_, [u8]>> = Vec::new();
    let mut reassembler = Reassembler::default();
    let format = match reader::read_frames(
        &bytes,
        |frame| {
            classify(
                &mut tally,
                &mut payloads,
                &mut reassembler,
                args.port,
                frame,
            )
        },
        warn,
    ) {
        Ok(format) => format,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    reassembler.finish();
    tally.reassembly = reassembler.stats;
    if let Some(note) = fragments_note(tally.reassembly.incomplete, tally.reassembly.conflicting) {
        eprintln!("warning: {name}: {note}");
    }
    parse_all(&mut tally, &payloads);

    let report = Report {
        file: name,
        // A pcap variant is worth naming: its records were read by another layout.
        format: reader::pcap_variant(&bytes).map_or(format.label(), |v| v.label()),
        records: tally.records,
        parsed: tally.parsed,
        counts: counts(&tally),
        malformed: MALFORMED
            .iter()
            .map(|m| (m.label(), tally.malformed[malformed_index(*m)]))
            .collect(),
        bad_frame: DecodeError::ALL
            .iter()
            .map(|e| (e.label(), tally.bad_frame[e.index()]))
            .collect(),
        unsupported_link_types: &tally.unsupported_link,
        parse_seconds: tally.parse_nanos as f64 / 1e9,
        packets_per_second: (tally.parse_nanos > 0)
            .then(|| tally.parsed as f64 * 1e9 / tally.parse_nanos as f64),
    };
    if args.json {
        match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("intentra-replay: cannot encode report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print_table(&report, args.verbose);
    }
    ExitCode::SUCCESS
}

/// Says what became of fragmented datagrams that were not reassembled, if any.
fn fragments_note(incomplete: u64, conflicting: u64) -> Option<String> {
    if incomplete == 0 && conflicting == 0 {
        return None;
    }
    Some(format!(
        "{} fragmented datagrams never completed (fragments missing from the capture or cut by \
         its snap length, or older than the reassembly timeout) and {} dropped for \
         overlapping fragments that disagree; counted as fragments_incomplete and \
         fragments_conflicting",
        incomplete, conflicting
    ))
}

/// Sorts one frame into a bucket, or keeps its payload for the timed parse.
fn classify<'a>(
    tally: &mut Tally,
    payloads: &mut Vec<Cow<'a, [u8]>>,
    reassembler: &mut Reassembler,
    port: Option<u16>,
    frame: reader::Frame<'a>,
) {
    tally.records += 1;
    let Some(link) = LinkType::from_linktype(frame.link_type) else {
        *tally.unsupported_link.entry(frame.link_type).or_default() += 1;
        return;
    };
    match decode(link, frame.data) {
        Err(e) => tally.bad_frame[e.index()] += 1,
        Ok(Decoded::NotUdp) => tally.not_udp += 1,
        Ok(Decoded::Fragment(fragment)) => {
            tally.ip_fragments += 1;
            let Some(datagram) = reassembler.push(fragment, frame.timestamp) else {
                return;
            };
            match datagram.decode() {
                Err(e) => tally.bad_frame[e.index()] += 1,
                Ok(Decoded::Udp(udp)) if udp.complete => {
                    if port.is_some_and(|p| udp.src.port() != p && udp.dst.port() != p) {
                        tally.not_intentra += 1;
                    } else {
                        payloads.push(Cow::Owned(udp.payload.to_vec()));
                    }
                }
                Ok(Decoded::Udp(_)) => tally.truncated += 1,
                Ok(_) => tally.not_udp += 1,
            }
        }
        Ok(Decoded::Udp(udp)) => {
            if port.is_some_and(|p| udp.src.port() != p && udp.dst.port() != p) {
                tally.not_intentra += 1;
            } else if !whole(&udp, &frame) {
                // Only part of the datagram was captured; its length (and so its
                // verdict) is unknown.
                tally.truncated += 1;
            } else {
                payloads.push(Cow::Borrowed(udp.payload));
            }
        }
    }
}

/// Whether `udp`, found in `frame`, was captured whole: neither cut by the snapshot length
/// nor only a first fragment. A datagram sized by the capture (IPv4 total length 0) is whole
/// only if the frame is.
fn whole(udp: &decode::Udp<'_>, frame: &reader::Frame<'_>) -> bool {
    udp.complete && !(udp.sized_by_capture && frame.wire_len > frame.data.len())
}

/// Runs the parser over every payload; only this loop is timed.
fn parse_all(tally: &mut Tally, payloads: &[Cow<'_, [u8]>]) {
    let mut packets = [0u64; PACKET_TYPES.len()];
    let mut malformed = [0u64; MALFORMED.len()];
    let start = Instant::now();
    for payload in payloads {
        match parse_header(std::hint::black_box(payload.as_ref())) {
            Ok(header) => packets[packet_type_index(header.packet_type())] += 1,
            Err(m) => malformed[malformed_index(m)] += 1,
        }
    }
    tally.parse_nanos = start.elapsed().as_nanos();
    tally.parsed = payloads.len() as u64;
    for (total, n) in tally.packets.iter_mut().zip(packets) {
        *total += n;
    }
    for (total, n) in tally.malformed.iter_mut().zip(malformed) {
        *total += n;
    }
}

fn counts(tally: &Tally) -> BTreeMap<&'static str, u64> {
    let mut counts: BTreeMap<&'static str, u64> = PACKET_TYPES
        .iter()
        .map(|t| (t.label(), tally.packets[packet_type_index(*t)]))
        .collect();
    counts.insert("malformed", tally.malformed.iter().sum());
    counts.insert("not_udp", tally.not_udp);
    counts.insert("not_intentra", tally.not_intentra);
    counts.insert("truncated", tally.truncated);
    counts.insert("ip_fragments", tally.ip_fragments);
    counts.insert("reassembled", tally.reassembly.reassembled);
    counts.insert("fragments_incomplete", tally.reassembly.incomplete);
    counts.insert("fragments_conflicting", tally.reassembly.conflicting);
    counts.insert("bad_frame", tally.bad_frame.iter().sum());
    counts.insert(
        "unsupported_link",
        tally.unsupported_link.values().sum::<u64>(),
    );
    counts
}

fn print_table(report: &Report<'_>, verbose: bool) {
    println!(
        "{}: {} records ({}), {} UDP payloads parsed",
        report.file, report.records, report.format, report.parsed
    );
    let count = |key: &str| report.counts.get(key).copied().unwrap_or(0);
    let show = |label: String, n: u64| println!("  {label:<32} {n:>10}");
    for t in PACKET_TYPES {
        show(t.label().to_string(), count(t.label()));
    }
    for (label, n) in &report.malformed {
        show(format!("malformed.{label}"), *n);
    }
    for key in [
        "not_udp",
        "not_intentra",
        "truncated",
        "ip_fragments",
        "reassembled",
        "fragments_incomplete",
        "fragments_conflicting",
    ] {
        show(key.to_string(), count(key));
    }
    for (label, n) in report.bad_frame.iter().filter(|(_, n)| **n > 0) {
        show(format!("bad_frame.{label}"), *n);
    }
    for (link, n) in report.unsupported_link_types {
        show(format!("unsupported_link.{link}"), *n);
    }
    if !verbose {
        return;
    }
    match report.packets_per_second {
        Some(rate) => println!(
            "parse rate: {:.1} M packets/s ({} payloads in {:.3} ms, parse time only)",
            rate / 1e6,
            report.parsed,
            report.parse_seconds * 1e3
        ),
        None => println!("parse rate: n/a (nothing parsed)"),
    }
}
