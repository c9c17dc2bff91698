//! `intentra::capture::CaptureWriter` end to end: a capture of intentra-looking packets
//! and garbage is read back by the `intentra-replay` binary, whose verdict counts must
//! match exactly; truncated and random files must fail with exit code 2 and an error
//! naming the offset.

#[path = "../../../tools/replay/decode.rs"]
mod decode;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use intentra::capture::CaptureWriter;
use intentra::proto::wire::{
    self, Counter, PacketType, SessionIndex, TransportKind, TRANSPORT_HEADER_LEN,
    TRANSPORT_OVERHEAD,
};
use serde_json::Value;

const REPLAY: &str = env!("CARGO_BIN_EXE_intentra-replay");
const PORT: u16 = 51820;

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("intentra-{}-{name}", std::process::id()))
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn transport(kind: TransportKind, plaintext_len: usize) -> Vec<u8> {
    let mut pkt = vec![0xa5; TRANSPORT_OVERHEAD + plaintext_len];
    let mut header = [0u8; TRANSPORT_HEADER_LEN];
    wire::write_transport_header(
        &mut header,
        kind,
        SessionIndex::new(0x0102_0304).unwrap(),
        Counter(77),
    );
    pkt[..TRANSPORT_HEADER_LEN].copy_from_slice(&header);
    pkt
}

/// A handshake-phase packet of `len` bytes whose index fields at `indices` are non-zero.
fn handshake(packet_type: PacketType, len: usize, indices: &[usize]) -> Vec<u8> {
    let mut pkt = vec![0x5a; len];
    wire::write_prefix(&mut pkt, packet_type);
    for &at in indices {
        pkt[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    }
    pkt
}

/// Deterministic filler that never starts with the protocol version byte.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    if let Some(first) = out.first_mut() {
        *first |= 0x80;
    }
    out
}

/// The capture, and the offset of each record in it.
struct Built {
    file: TempFile,
    offsets: Vec<usize>,
}

fn build_capture(name: &str) -> Built {
    let client4: SocketAddr = "10.0.0.1:40000".parse().unwrap();
    let server4: SocketAddr = format!("10.0.0.2:{PORT}").parse().unwrap();
    let client6: SocketAddr = "[fd00::1]:40001".parse().unwrap();
    let server6: SocketAddr = format!("[fd00::2]:{PORT}").parse().unwrap();
    let other_a: SocketAddr = "10.0.0.3:5353".parse().unwrap();
    let other_b: SocketAddr = "10.0.0.4:5353".parse().unwrap();

    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut add = |n: usize, make: &dyn Fn(usize) -> Vec<u8>| {
        for i in 0..n {
            packets.push(make(i));
        }
    };
    add(3, &|_| {
        handshake(PacketType::HandshakeInit, wire::init::LEN, &[4])
    });
    add(2, &|_| {
        handshake(PacketType::HandshakeResponse, wire::response::LEN, &[4, 8])
    });
    add(1, &|_| {
        handshake(PacketType::HandshakeFinish, wire::finish::LEN, &[4])
    });
    add(1, &|_| {
        handshake(PacketType::CookieReply, wire::cookie_reply::LEN, &[4])
    });
    add(5, &|i| transport(TransportKind::Realtime, 64 + i * 100));
    add(4, &|i| transport(TransportKind::Reliable, 8 + i));
    add(3, &|_| transport(TransportKind::Ack, wire::ACK_LEN));
    add(2, &|_| transport(TransportKind::Keepalive, 0));
    add(1, &|_| transport(TransportKind::Close, 1));
    // Malformed, one kind at a time.
    add(1, &|_| vec![1, 5, 0]);
    add(1, &|_| Vec::new());
    add(1, &|_| {
        transport(TransportKind::Realtime, wire::MAX_REALTIME_PAYLOAD + 1)
    });
    add(4, &|i| garbage(i as u64 + 1, 20 + i * 37));
    add(1, &|_| {
        let mut p = transport(TransportKind::Realtime, 10);
        p[1] = 0x20;
        p
    });
    add(1, &|_| {
        let mut p = transport(TransportKind::Realtime, 10);
        p[2] = 1;
        p
    });
    add(1, &|_| {
        handshake(PacketType::HandshakeInit, wire::init::LEN - 1, &[4])
    });
    add(1, &|_| transport(TransportKind::Keepalive, 1));
    add(1, &|_| {
        let mut p = handshake(PacketType::HandshakeInit, wire::init::LEN, &[]);
        p[wire::init::SENDER..wire::init::SENDER + 4].fill(0);
        p
    });

    let path = temp_path(name);
    let mut writer = CaptureWriter::create(&path).unwrap();
    let mut offsets = Vec::new();
    let mut offset = 24;
    let mut ts = 1_700_000_000_000_000_000u64;
    for (i, payload) in packets.iter().enumerate() {
        // Alternate families and directions.
        let (src, dst) = match i % 4 {
            0 => (client4, server4),
            1 => (server4, client4),
            2 => (client6, server6),
            _ => (server6, client6),
        };
        writer.record(ts, src, dst, payload).unwrap();
        offsets.push(offset);
        offset += 16 + if src.is_ipv4() { 20 } else { 40 } + 8 + payload.len();
        ts += 1_000_000;
    }
    // Valid realtime packets between two other hosts on another port.
    for _ in 0..3 {
        let payload = transport(TransportKind::Realtime, 32);
        writer.record(ts, other_a, other_b, &payload).unwrap();
        offsets.push(offset);
        offset += 16 + 20 + 8 + payload.len();
    }
    writer.flush().unwrap();
    drop(writer);
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, offset);
    Built {
        file: TempFile(path),
        offsets,
    }
}

fn replay(path: &Path, extra: &[&str]) -> Output {
    Command::new(REPLAY).arg(path).args(extra).output().unwrap()
}

fn replay_json(path: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let output = replay(path, &args);
    assert!(
        output.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

fn assert_counts(report: &Value, key: &str, expected: &[(&str, u64)]) {
    for (name, n) in expected {
        assert_eq!(report[key][name].as_u64(), Some(*n), "{key}.{name}");
    }
}

#[test]
fn replay_counts_every_verdict_exactly() {
    let built = build_capture("verdicts.pcap");
    let report = replay_json(&built.file.0, &[]);
    assert_eq!(report["format"], "pcap");
    assert_eq!(report["records"].as_u64(), Some(37));
    assert_eq!(report["parsed"].as_u64(), Some(37));
    assert_counts(
        &report,
        "counts",
        &[
            ("handshake_init", 3),
            ("handshake_response", 2),
            ("handshake_finish", 1),
            ("cookie_reply", 1),
            ("realtime", 8),
            ("reliable", 4),
            ("ack", 3),
            ("keepalive", 2),
            ("close", 1),
            ("malformed", 12),
            ("not_udp", 0),
            ("not_intentra", 0),
            ("incomplete", 0),
            ("bad_frame", 0),
        ],
    );
    assert_counts(
        &report,
        "malformed",
        &[
            ("too_short", 2),
            ("too_long", 1),
            ("bad_version", 4),
            ("unknown_type", 1),
            ("reserved_not_zero", 1),
            ("bad_length", 2),
            ("zero_index", 1),
        ],
    );
    assert!(report["packets_per_second"].is_number() || report["packets_per_second"].is_null());
}

#[test]
fn port_filter_sets_other_traffic_aside() {
    let built = build_capture("port.pcap");
    let report = replay_json(&built.file.0, &["--port", &PORT.to_string()]);
    assert_eq!(report["parsed"].as_u64(), Some(34));
    assert_counts(
        &report,
        "counts",
        &[("realtime", 5), ("not_intentra", 3), ("malformed", 12)],
    );
}

#[test]
fn written_records_decode_back_to_the_same_datagrams() {
    let built = build_capture("decode.pcap");
    let bytes = std::fs::read(&built.file.0).unwrap();
    for (i, &offset) in built.offsets.iter().enumerate() {
        let incl = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().unwrap());
        let frame = &bytes[offset + 16..offset + 16 + incl as usize];
        match decode::decode(decode::LinkType::Raw, frame) {
            Ok(decode::Decoded::Udp(udp)) => {
                assert!(udp.complete, "record {i}");
                assert!(udp.src.port() == PORT || udp.dst.port() == PORT || i >= 34);
            }
            other => panic!("record {i} decoded as {other:?}"),
        }
    }
}

#[test]
fn text_report_names_the_verdicts_and_the_rate() {
    let built = build_capture("text.pcap");
    let output = replay(&built.file.0, &[]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("handshake_init"));
    assert!(text.contains("malformed.bad_version"));
    assert!(text.contains("parse rate"));
}

#[test]
fn truncated_capture_names_the_record_offset() {
    let built = build_capture("full.pcap");
    let bytes = std::fs::read(&built.file.0).unwrap();
    let record = built.offsets[10];
    let cut = TempFile(temp_path("cut.pcap"));
    std::fs::write(&cut.0, &bytes[..record + 20]).unwrap();
    let output = replay(&cut.0, &["--json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("{}: truncated record at offset {record}\n", cut.0.display())
    );
}

#[test]
fn random_bytes_and_missing_files_are_clear_errors() {
    let random = TempFile(temp_path("random.pcap"));
    std::fs::write(&random.0, garbage(42, 4096)).unwrap();
    let output = replay(&random.0, &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a pcap or pcapng file"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);

    let header_only = TempFile(temp_path("short.pcap"));
    let built = build_capture("short-src.pcap");
    let bytes = std::fs::read(&built.file.0).unwrap();
    std::fs::write(&header_only.0, &bytes[..10]).unwrap();
    let output = replay(&header_only.0, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("truncated file header at offset 0"));

    let output = replay(&temp_path("does-not-exist.pcap"), &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn session_replay_errors_name_the_file_in_one_line() {
    let built = build_capture("session.pcap");
    // A missing key file: exit 2, one line naming it.
    let output = replay(
        &built.file.0,
        &["--key", "/nonexistent/key", "--local", "127.0.0.1:51820"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/key"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // --key needs --local.
    let output = replay(&built.file.0, &["--key", "/nonexistent/key"]);
    assert_eq!(output.status.code(), Some(2));
}
