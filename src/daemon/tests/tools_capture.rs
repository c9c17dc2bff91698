//! `intentra::capture` end to end: a capture of intentra-looking packets and garbage is read
//! back by the `intentra-replay` binary, whose verdict counts must match exactly; truncated
//! and random files must fail with exit code 2 and an error naming the offset. Capture files
//! are private (0600, never an existing file or a symlink) and rotate at their size limit;
//! the key log's lines round-trip; pcapng files pcap-file's parser refuses are read.

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
    add(3, &|_| transport(TransportKind::Ack, wire::ACK_MIN_LEN));
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
            ("truncated", 0),
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
fn text_report_names_the_verdicts() {
    let built = build_capture("text.pcap");
    let output = replay(&built.file.0, &[]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("handshake_init"));
    assert!(text.contains("malformed.bad_version"));
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

// ----- capture files: private, never overwriting, rotating -------------------------------

use intentra::capture::{keylog_path, rotated_path, CaptureLimits, Recorder};
use std::os::unix::fs::PermissionsExt;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn local() -> SocketAddr {
    "127.0.0.1:51820".parse().unwrap()
}

#[test]
fn capture_and_key_log_are_new_files_of_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cap.pcap");
    let mut recorder = Recorder::create(&pcap, local(), CaptureLimits::default()).unwrap();
    recorder.received("127.0.0.1:4000".parse().unwrap(), b"x");
    recorder.flush();
    assert_eq!(mode(&pcap), 0o600);
    assert_eq!(mode(&keylog_path(&pcap)), 0o600);
    let keylog = std::fs::read_to_string(keylog_path(&pcap)).unwrap();
    assert!(keylog.starts_with("# intentra key log v1"), "{keylog}");
    drop(recorder);
    // A second capture to the same name is refused, and the first is left as it was.
    let before = std::fs::read(&pcap).unwrap();
    let err = Recorder::create(&pcap, local(), CaptureLimits::default())
        .err()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("cap.pcap"), "{err}");
    assert_eq!(std::fs::read(&pcap).unwrap(), before);
}

#[test]
fn an_existing_key_log_is_refused_whatever_its_mode_and_no_capture_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cap.pcap");
    let keylog = keylog_path(&pcap);
    std::fs::write(&keylog, "someone else's\n").unwrap();
    std::fs::set_permissions(&keylog, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Recorder::create(&pcap, local(), CaptureLimits::default())
        .err()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("cap.pcap.keylog"), "{err}");
    assert_eq!(mode(&keylog), 0o644);
    assert_eq!(
        std::fs::read_to_string(&keylog).unwrap(),
        "someone else's\n"
    );
    assert!(
        !pcap.exists(),
        "the capture created a moment before is removed"
    );
}

#[test]
fn a_symlink_planted_at_the_key_log_or_the_capture_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::write(&target, "precious").unwrap();
    let target_mode = mode(&target);
    for planted in ["cap.pcap.keylog", "cap.pcap"] {
        let pcap = dir.path().join("cap.pcap");
        let _ = std::fs::remove_file(&pcap);
        let _ = std::fs::remove_file(keylog_path(&pcap));
        std::os::unix::fs::symlink(&target, dir.path().join(planted)).unwrap();
        assert!(
            Recorder::create(&pcap, local(), CaptureLimits::default()).is_err(),
            "{planted}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(
            mode(&target),
            target_mode,
            "the target's mode is left alone"
        );
        let dangling = dir.path().join(format!("{planted}.dangling"));
        let _ = std::fs::remove_file(dir.path().join(planted));
        // A dangling symlink is refused too (O_CREAT alone would create its target).
        std::os::unix::fs::symlink(&dangling, dir.path().join(planted)).unwrap();
        assert!(Recorder::create(&pcap, local(), CaptureLimits::default()).is_err());
        assert!(!dangling.exists(), "{planted}");
        let _ = std::fs::remove_file(dir.path().join(planted));
    }
}

#[test]
fn the_capture_rotates_at_its_size_limit_and_keeps_n_files() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cap.pcap");
    let src: SocketAddr = "127.0.0.1:4000".parse().unwrap();
    let payload = [0x5au8; 100];
    let record = intentra::capture::record_len(src, local(), &payload) as u64;
    assert_eq!(record, 16 + 20 + 8 + 100);
    // Three records fit a file exactly.
    let limits = CaptureLimits {
        max_bytes: Some(24 + 3 * record),
        keep: 2,
    };
    let mut recorder = Recorder::create(&pcap, local(), limits).unwrap();
    for _ in 0..11 {
        recorder.received(src, &payload);
    }
    recorder.flush();
    // 11 records: 3 + 3 + 3 + 2; the oldest file was deleted, FILE.1 and FILE.2 kept.
    assert_eq!(recorder.rotations(), 3);
    assert_eq!(recorder.write_errors(), 0);
    drop(recorder);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert_eq!(size(&pcap), 24 + 2 * record);
    assert_eq!(size(&rotated_path(&pcap, 1)), 24 + 3 * record);
    assert_eq!(size(&rotated_path(&pcap, 2)), 24 + 3 * record);
    assert!(!rotated_path(&pcap, 3).exists());
    for p in [pcap.clone(), rotated_path(&pcap, 1), rotated_path(&pcap, 2)] {
        assert_eq!(mode(&p), 0o600);
        // Each file is a whole capture on its own.
        let report = replay_json(&p, &[]);
        assert_eq!(report["counts"]["bad_frame"].as_u64(), Some(0));
        assert!(report["records"].as_u64().unwrap() >= 2);
    }
}

#[test]
fn a_record_larger_than_the_limit_still_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cap.pcap");
    let limits = CaptureLimits {
        max_bytes: Some(10),
        keep: 0,
    };
    let mut recorder = Recorder::create(&pcap, local(), limits).unwrap();
    for i in 0..3u8 {
        recorder.received("127.0.0.1:4000".parse().unwrap(), &[i; 50]);
    }
    recorder.flush();
    assert_eq!(recorder.rotations(), 2);
    drop(recorder);
    assert!(!rotated_path(&pcap, 1).exists());
    let bytes = std::fs::read(&pcap).unwrap();
    assert_eq!(bytes.len(), 24 + 16 + 28 + 50);
    assert_eq!(bytes[bytes.len() - 1], 2);
}

// ----- the key log's format ---------------------------------------------------------------

#[test]
fn key_log_lines_round_trip_and_bad_lines_are_named() {
    use intentra::capture::{keylog_line, parse_keylog};
    use intentra::proto::PublicKey;
    use intentra::proto::SessionSecrets;
    use intentra::proto::Timestamp;
    let secrets = SessionSecrets {
        local_index: SessionIndex::new(0x0a0b_0c0d).unwrap(),
        remote_index: SessionIndex::new(7).unwrap(),
        send: [0x11; 32],
        recv: [0x22; 32],
        peer: PublicKey([0x33; 32]),
        initiator: false,
        rekey: true,
        created: Timestamp::ZERO,
    };
    let line = keylog_line(&secrets);
    assert_eq!(
        line,
        format!(
            "SESSION 0a0b0c0d 00000007 {} {} {} responder rekey\n",
            "11".repeat(32),
            "22".repeat(32),
            "33".repeat(32)
        )
    );
    let text = format!("# comment\n\n{line}");
    let parsed = parse_keylog(&text).unwrap();
    assert_eq!(parsed.len(), 1);
    let s = parsed[0];
    assert_eq!((s.local_index, s.remote_index), (0x0a0b_0c0d, 7));
    assert_eq!(
        (s.send, s.recv, s.peer),
        ([0x11; 32], [0x22; 32], [0x33; 32])
    );
    assert!(!s.initiator && s.rekey);
    // A seed-style key log of old, or a cut line, names the line.
    assert_eq!(parse_keylog(&"00".repeat(32)).err(), Some(1));
    assert_eq!(
        parse_keylog(&format!("{line}{}", &line[..60])).err(),
        Some(2)
    );
    // The Debug form never shows the keys.
    let debug = format!("{secrets:?}");
    assert!(
        !debug.contains("17") && !debug.contains("11, 17"),
        "{debug}"
    );
}

// ----- pcapng files pcap-file rejects ------------------------------------------------------

/// A little-endian pcapng block.
fn ng_block(out: &mut Vec<u8>, block_type: u32, body: &[u8]) {
    let padded = body.len().div_ceil(4) * 4;
    let total = (12 + padded) as u32;
    out.extend_from_slice(&block_type.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + padded - body.len(), 0);
    out.extend_from_slice(&total.to_le_bytes());
}

fn ng_option(code: u16, value: &[u8]) -> Vec<u8> {
    let mut v = code.to_le_bytes().to_vec();
    v.extend_from_slice(&(value.len() as u16).to_le_bytes());
    v.extend_from_slice(value);
    v.resize(v.len().div_ceil(4) * 4, 0);
    v
}

/// SHB with `shb_options`, an IDB for raw IP, and one EPB per datagram (IPv4, UDP, PORT).
fn pcapng_capture(shb_options: &[u8], datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    shb.extend_from_slice(shb_options);
    ng_block(&mut out, 0x0A0D_0D0A, &shb);
    let mut idb = 101u16.to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&0u32.to_le_bytes());
    idb.extend(ng_option(2, b"lo"));
    idb.extend(ng_option(0, &[]));
    ng_block(&mut out, 1, &idb);
    for payload in datagrams {
        // A pcap record's frame (IP + UDP + payload), as CaptureWriter builds it.
        let mut writer = CaptureWriter::from_writer(Vec::new()).unwrap();
        let src: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let dst: SocketAddr = format!("10.0.0.2:{PORT}").parse().unwrap();
        writer.record(0, src, dst, payload).unwrap();
        let pcap = writer.into_inner().unwrap();
        let frame = &pcap[24 + 16..];
        let mut epb = vec![0u8; 12];
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(frame);
        ng_block(&mut out, 6, &epb);
    }
    out
}

fn pcap_file_rejects(bytes: &[u8]) -> bool {
    let Ok((mut rest, mut parser)) = pcap_file::pcapng::PcapNgParser::new(bytes) else {
        return true;
    };
    while !rest.is_empty() {
        match parser.next_block(rest) {
            Ok((r, _)) => rest = r,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn pcapng_with_options_pcap_file_rejects_is_read() {
    // A comment that is not UTF-8, a custom option (PEN + odd-length data) and a custom
    // option of the non-copyable kind: legal pcapng, all read by tcpdump and Wireshark.
    let mut options = ng_option(1, b"captured on \xff\xfe");
    options.extend(ng_option(2988, &[0x00, 0x00, 0x7f, 0xff, b'x', b'y', b'z']));
    options.extend(ng_option(19373, &[1, 2, 3, 4, 5]));
    options.extend(ng_option(0, &[]));
    let datagrams = vec![
        transport(TransportKind::Realtime, 40),
        transport(TransportKind::Reliable, 20),
    ];
    let bytes = pcapng_capture(&options, &datagrams);
    assert!(
        pcap_file_rejects(&bytes),
        "this capture is meant to be one pcap-file's parser refuses"
    );
    let file = TempFile(temp_path("options.pcapng"));
    std::fs::write(&file.0, &bytes).unwrap();
    let output = replay(&file.0, &["--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["format"], "pcapng");
    assert_counts(
        &report,
        "counts",
        &[("realtime", 1), ("reliable", 1), ("bad_frame", 0)],
    );
}

#[test]
fn a_malformed_option_is_ignored_with_a_warning_naming_the_block_and_offset() {
    // An option claiming more bytes than its block holds.
    let mut options = 2988u16.to_le_bytes().to_vec();
    options.extend_from_slice(&400u16.to_le_bytes());
    options.extend_from_slice(&[0; 8]);
    let bytes = pcapng_capture(&options, &[transport(TransportKind::Keepalive, 0)]);
    let file = TempFile(temp_path("bad-option.pcapng"));
    std::fs::write(&file.0, &bytes).unwrap();
    let output = replay(&file.0, &["--json"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "one warning line expected: {stderr}"
    );
    assert!(
        stderr.starts_with(&format!(
            "warning: {}: section header block at offset 0: option 2988",
            file.0.display()
        )),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_counts(&report, "counts", &[("keepalive", 1)]);
}

#[test]
fn the_parse_rate_is_shown_only_when_verbose() {
    let built = build_capture("verbose.pcap");
    let quiet = replay(&built.file.0, &[]);
    assert!(!String::from_utf8_lossy(&quiet.stdout).contains("parse rate"));
    let verbose = replay(&built.file.0, &["--verbose"]);
    assert!(String::from_utf8_lossy(&verbose.stdout).contains("parse rate"));
}

// ----- what the reader skips, and the capture formats it reads ----------------------------

/// Runs the replay on `bytes` written to a temporary file: exit code, report, stderr lines.
fn replay_bytes(name: &str, bytes: &[u8], extra: &[&str]) -> (Option<i32>, Value, Vec<String>) {
    let file = TempFile(temp_path(name));
    std::fs::write(&file.0, bytes).unwrap();
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let output = replay(&file.0, &args);
    let stderr = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|l| l.replace(&file.0.display().to_string(), "FILE"))
        .collect();
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code(), report, stderr)
}

#[test]
fn unknown_pcapng_blocks_warn_once_per_type_and_metadata_blocks_do_not() {
    let datagrams = [transport(TransportKind::Realtime, 40)];
    let mut bytes = pcapng_capture(&[], &datagrams);
    // Name resolution, interface statistics, journal, decryption secrets, custom blocks:
    // standard, and never a packet.
    for block_type in [4, 5, 9, 0x0A, 0x0BAD, 0x4000_0BAD] {
        ng_block(&mut bytes, block_type, &[0; 8]);
    }
    let unknown = bytes.len();
    ng_block(&mut bytes, 0x0BAD_F00D, b"unknown block");
    let local_use = bytes.len();
    ng_block(&mut bytes, 0x8000_0001, b"local use");
    ng_block(&mut bytes, 0x0BAD_F00D, b"unknown again");
    // A second section after them: its packets are read too.
    bytes.extend(pcapng_capture(&[], &datagrams));
    let (code, report, stderr) = replay_bytes("blocks.pcapng", &bytes, &[]);
    assert_eq!(code, Some(0), "{stderr:?}");
    assert_eq!(
        stderr,
        [
            format!(
                "warning: FILE: block at offset {unknown}: unknown block type 0x0badf00d \
                 skipped (2 blocks of this type, the first here)"
            ),
            format!(
                "warning: FILE: block at offset {local_use}: unknown block type 0x80000001 \
                 skipped"
            ),
        ]
    );
    assert_counts(&report, "counts", &[("realtime", 2)]);
}

#[test]
fn a_pcapng_section_of_another_major_version_is_read_with_a_warning() {
    let mut bytes = pcapng_capture(&[], &[transport(TransportKind::Keepalive, 0)]);
    // Major version, after block type, length and byte-order magic.
    bytes[12..14].copy_from_slice(&2u16.to_le_bytes());
    let (code, report, stderr) = replay_bytes("v2.pcapng", &bytes, &[]);
    assert_eq!(code, Some(0), "{stderr:?}");
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(
        stderr[0]
            .starts_with("warning: FILE: section header block at offset 0: pcapng major version 2"),
        "{stderr:?}"
    );
    assert_counts(&report, "counts", &[("keepalive", 1)]);
}

/// `pcap` (as CaptureWriter writes it, with nanosecond time stamps) with `extra` bytes after
/// each record's header and `magic` at the start, as Kuznetsov's patched libpcap and its kin
/// write (with microseconds).
fn with_longer_record_headers(pcap: &[u8], magic: u32, extra: &[u8]) -> Vec<u8> {
    assert_eq!(pcap[..4], 0xA1B2_3C4Du32.to_le_bytes());
    let mut out = pcap[..24].to_vec();
    out[..4].copy_from_slice(&magic.to_le_bytes());
    let mut at = 24;
    while at < pcap.len() {
        let field = |i: usize| u32::from_le_bytes(pcap[at + i..at + i + 4].try_into().unwrap());
        let incl = field(8) as usize;
        out.extend_from_slice(&pcap[at..at + 4]);
        out.extend_from_slice(&(field(4) / 1000).to_le_bytes());
        out.extend_from_slice(&pcap[at + 8..at + 16]);
        out.extend_from_slice(extra);
        out.extend_from_slice(&pcap[at + 16..at + 16 + incl]);
        at += 16 + incl;
    }
    out
}

#[test]
fn modified_pcap_variants_are_read() {
    let built = build_capture("modified-src.pcap");
    let pcap = std::fs::read(&built.file.0).unwrap();
    let expected = replay_json(&built.file.0, &[]);
    // ifindex 1, protocol 0x0800, pkt_type 0 (PACKET_HOST), pad: editcap -F modpcap.
    let ss991029 = [1, 0, 0, 0, 0x00, 0x08, 0, 0];
    let ss990915 = [1, 0, 0, 0, 0x00, 0x08, 0, 0, 0, 0, 0, 0];
    for (magic, extra, label) in [
        (0xA1B2_CD34, &ss991029[..], "pcap (modified, ss991029)"),
        (
            0xA1B2_CD34,
            &ss990915[..],
            "pcap (modified, ss990915: SuSE 6.3)",
        ),
        (
            0xA1B2_C3D4,
            &ss991029[..],
            "pcap (modified, ss990417: Red Hat 6.1)",
        ),
    ] {
        let bytes = with_longer_record_headers(&pcap, magic, extra);
        let (code, report, stderr) = replay_bytes("modified.pcap", &bytes, &[]);
        assert_eq!(code, Some(0), "{label}: {stderr:?}");
        assert_eq!(report["format"], label);
        assert_eq!(report["counts"], expected["counts"], "{label}");
    }
    // Nokia's layout without Nokia's values (as editcap writes it): refused by name.
    let bytes = with_longer_record_headers(&pcap, 0xA1B2_C3D4, &[0; 4]);
    let (code, _, stderr) = replay_bytes("nokia.pcap", &bytes, &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.len() == 1
            && stderr[0].starts_with("FILE: corrupt record at offset 24: ")
            && stderr[0].contains("Nokia"),
        "{stderr:?}"
    );
}

/// Ethernet frames around the datagrams (IPv4, UDP, PORT) as CaptureWriter builds them.
fn ethernet_frames(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
    datagrams
        .iter()
        .map(|payload| {
            let mut writer = CaptureWriter::from_writer(Vec::new()).unwrap();
            let src: SocketAddr = "10.0.0.1:40000".parse().unwrap();
            let dst: SocketAddr = format!("10.0.0.2:{PORT}").parse().unwrap();
            writer.record(0, src, dst, payload).unwrap();
            let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
            frame.extend_from_slice(&writer.into_inner().unwrap()[24 + 16..]);
            frame
        })
        .collect()
}

/// A little-endian classic pcap with the given link-type field.
fn pcap_with_link_field(link_field: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = 0xA1B2_C3D4u32.to_le_bytes().to_vec();
    v.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&link_field.to_le_bytes());
    for frame in frames {
        v.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        v.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        v.extend_from_slice(frame);
    }
    v
}

#[test]
fn a_pcap_link_type_field_with_an_fcs_length_is_read_and_the_fcs_stripped() {
    let datagrams = vec![
        transport(TransportKind::Realtime, 40),
        transport(TransportKind::Reliable, 20),
    ];
    let mut frames = ethernet_frames(&datagrams);
    for frame in &mut frames {
        frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    }
    // LINKTYPE_ETHERNET, FCS length present (bit 26), 2 16-bit words (bits 28-31): libpcap's
    // LT_FCS_DATALINK_EXT(2).
    let bytes = pcap_with_link_field(0x2400_0001, &frames);
    let (code, report, stderr) = replay_bytes("fcs.pcap", &bytes, &[]);
    assert_eq!(code, Some(0), "{stderr:?}");
    assert_counts(
        &report,
        "counts",
        &[
            ("realtime", 1),
            ("reliable", 1),
            ("unsupported_link", 0),
            ("bad_frame", 0),
            ("malformed", 0),
        ],
    );
}

#[test]
fn an_ipv4_total_length_of_zero_is_the_rest_of_the_frame() {
    // As a host captures its own TSO/GSO frames: total length 0. Ethernet pads short
    // frames, but the UDP length bounds the datagram.
    let datagrams = vec![
        transport(TransportKind::Keepalive, 0),
        transport(TransportKind::Realtime, 100),
    ];
    let mut frames = ethernet_frames(&datagrams);
    for frame in &mut frames {
        frame[14 + 2..14 + 4].fill(0);
        frame.resize(frame.len().max(60), 0);
    }
    // The same, with an FCS the link-type field declares: it is not part of the datagram.
    let mut with_fcs = frames.clone();
    for frame in &mut with_fcs {
        frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    }
    for (link_field, frames) in [(1, &frames), (0x2400_0001, &with_fcs)] {
        let bytes = pcap_with_link_field(link_field, frames);
        let (code, report, stderr) = replay_bytes("tso.pcap", &bytes, &[]);
        assert_eq!(code, Some(0), "{stderr:?}");
        assert_counts(
            &report,
            "counts",
            &[("keepalive", 1), ("realtime", 1), ("bad_frame", 0)],
        );
    }
    // Cut by the snapshot length, such a frame is not whole: its length is unknown.
    let mut bytes = pcap_with_link_field(1, &frames[1..]);
    let wire = u32::from_le_bytes(bytes[24 + 12..24 + 16].try_into().unwrap());
    bytes[24 + 12..24 + 16].copy_from_slice(&(wire + 100).to_le_bytes());
    let (_, report, _) = replay_bytes("tso-cut.pcap", &bytes, &[]);
    assert_counts(&report, "counts", &[("realtime", 0), ("bad_frame", 0)]);
}

// ----- session replays of hand-built captures ----------------------------------------------

use intentra::proto::{Endpoint, EndpointConfig, Keypair, Mode, Sent, Timestamp};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// One datagram as it crossed the wire: capture time (ns), source, destination, bytes.
type Wire = (u64, SocketAddr, SocketAddr, Vec<u8>);

/// A real session between two in-process endpoints, a to b: a handshake, then `messages`
/// Realtime messages of `size` bytes. b's private key is written to `dir/b.key`; the
/// datagrams are returned in order, and b's key log lines.
fn real_session(dir: &Path, messages: usize, size: usize) -> (Vec<Wire>, String, PathBuf) {
    let a_addr: SocketAddr = "10.1.0.1:40000".parse().unwrap();
    let b_addr: SocketAddr = "10.1.0.2:7700".parse().unwrap();
    let b_pair = || Keypair::generate(&mut ChaCha20Rng::seed_from_u64(2));
    let key = dir.join("b.key");
    intentra_daemon::config::write_key_file(&key, &b_pair().secret, false).unwrap();
    let zero = Timestamp::from_nanos(0);
    let a_keys = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(1));
    let b_public = b_pair().public;
    let mut a = Endpoint::new(
        EndpointConfig::new(a_keys),
        zero,
        ChaCha20Rng::seed_from_u64(3),
    );
    let mut b_config = EndpointConfig::new(b_pair());
    b_config.export_session_keys = true;
    let mut b = Endpoint::new(b_config, zero, ChaCha20Rng::seed_from_u64(4));
    let mut wire: Vec<Wire> = Vec::new();
    let mut clock = 0u64;
    let mut out = vec![0u8; 1452];
    let to_b = a.connect(zero, b_addr, b_public).unwrap();
    // Carries everything queued on either side until both are quiet.
    let settle = |a: &mut Endpoint, b: &mut Endpoint, clock: &mut u64, wire: &mut Vec<Wire>| {
        let mut out = vec![0u8; 1452];
        loop {
            let mut moved = false;
            *clock += 1_000_000;
            let now = Timestamp::from_nanos(*clock);
            while let Some(tx) = a.poll_transmit(now, &mut out) {
                let mut datagram = out[..tx.len].to_vec();
                wire.push((*clock, a_addr, b_addr, datagram.clone()));
                let _ = b.handle_datagram(now, a_addr, &mut datagram);
                moved = true;
            }
            while let Some(tx) = b.poll_transmit(now, &mut out) {
                let mut datagram = out[..tx.len].to_vec();
                wire.push((*clock, b_addr, a_addr, datagram.clone()));
                let _ = a.handle_datagram(now, b_addr, &mut datagram);
                moved = true;
            }
            while b.poll_event().is_some() {}
            while a.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
    };
    settle(&mut a, &mut b, &mut clock, &mut wire);
    for i in 0..messages {
        clock += 1_000_000;
        let now = Timestamp::from_nanos(clock);
        let payload = vec![i as u8; size];
        let sent = a.send(now, to_b, Mode::Realtime, &payload, &mut out);
        let Ok(Sent::Now(tx)) = sent else {
            panic!("{sent:?}")
        };
        wire.push((clock, a_addr, b_addr, out[..tx.len].to_vec()));
    }
    settle(&mut a, &mut b, &mut clock, &mut wire);
    let mut keylog = String::from("# intentra key log v1\n");
    while let Some(secrets) = b.poll_session_keys() {
        keylog.push_str(&intentra::capture::keylog_line(&secrets));
    }
    (wire, keylog, key)
}

/// The IPv4 (or IPv6) packet CaptureWriter would record for a datagram.
fn ip_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut writer = CaptureWriter::from_writer(Vec::new()).unwrap();
    writer.record(0, src, dst, payload).unwrap();
    writer.into_inner().unwrap()[24 + 16..].to_vec()
}

/// A microsecond pcap of raw IP (101): (time in ns, captured bytes, length on the wire).
fn raw_ip_pcap(records: &[(u64, Vec<u8>, usize)]) -> Vec<u8> {
    let mut v = 0xA1B2_C3D4u32.to_le_bytes().to_vec();
    v.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&65535u32.to_le_bytes());
    v.extend_from_slice(&101u32.to_le_bytes());
    for (ts, frame, wire) in records {
        v.extend_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
        v.extend_from_slice(&((ts % 1_000_000_000 / 1_000) as u32).to_le_bytes());
        v.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        v.extend_from_slice(&(*wire as u32).to_le_bytes());
        v.extend_from_slice(frame);
    }
    v
}

/// Session replay of `pcap` (written to `dir`, with `keylog` beside it) as b at 10.1.0.2:7700.
fn session_replay(
    dir: &Path,
    pcap: &[u8],
    keylog: &str,
    key: &Path,
) -> (Option<i32>, Value, String) {
    let file = dir.join("cap.pcap");
    std::fs::write(&file, pcap).unwrap();
    std::fs::write(keylog_path(&file), keylog).unwrap();
    let output = replay(
        &file,
        &[
            "--key",
            key.to_str().unwrap(),
            "--local",
            "10.1.0.2:7700",
            "--json",
        ],
    );
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&file.display().to_string(), "FILE");
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code(), report, stderr)
}

/// Each datagram of `wire` as a raw-IP record captured whole.
fn whole_records(wire: &[Wire]) -> Vec<(u64, Vec<u8>, usize)> {
    wire.iter()
        .map(|(ts, src, dst, d)| {
            let ip = ip_packet(*src, *dst, d);
            let len = ip.len();
            (*ts, ip, len)
        })
        .collect()
}

#[test]
fn a_whole_session_capture_replays_and_the_helpers_are_sound() {
    let dir = tempfile::tempdir().unwrap();
    let (wire, keylog, key) = real_session(dir.path(), 5, 100);
    let records = whole_records(&wire);
    let (code, report, stderr) = session_replay(dir.path(), &raw_ip_pcap(&records), &keylog, &key);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["sessions_up"], 1, "{report}");
    assert_eq!(report["delivered_realtime"], 5, "{report}");
    assert_eq!(report["truncated"], 0, "{report}");
}

#[test]
fn snaplen_cut_datagrams_are_counted_as_truncated_and_the_hint_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (wire, keylog, key) = real_session(dir.path(), 5, 100);
    // Snap length 90: every datagram of the session is cut short.
    let records: Vec<_> = wire
        .iter()
        .map(|(ts, src, dst, d)| {
            let ip = ip_packet(*src, *dst, d);
            let len = ip.len();
            (*ts, ip[..len.min(90)].to_vec(), len)
        })
        .collect();
    let cut = |w: &&Wire| ip_packet(w.1, w.2, &w.3).len() > 90;
    let to_b = wire
        .iter()
        .filter(|w| w.2.port() == 7700)
        .filter(cut)
        .count();
    assert_eq!(to_b, wire.iter().filter(|w| w.2.port() == 7700).count());
    let (code, report, stderr) = session_replay(dir.path(), &raw_ip_pcap(&records), &keylog, &key);
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!(report["truncated"], to_b as u64, "{report}");
    assert_eq!(report["datagrams_to_local"], 0, "{report}");
    assert!(
        stderr.contains(&format!(
            "none of the {to_b} datagrams to --local 10.1.0.2:7700 was captured whole"
        )) && stderr.contains("snap length")
            && !stderr.contains("destinations in the capture"),
        "{stderr}"
    );
    // Plain mode counts them as truncated too.
    let file = dir.path().join("cap.pcap");
    let report = replay_json(&file, &[]);
    let all_cut = wire.iter().filter(cut).count() as u64;
    assert_eq!(report["counts"]["truncated"], all_cut, "{report}");
}

#[test]
fn a_session_replay_on_an_unsupported_link_type_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (wire, keylog, key) = real_session(dir.path(), 2, 50);
    let records = whole_records(&wire);
    let mut pcap = raw_ip_pcap(&records);
    // LINKTYPE_USER0.
    pcap[20..24].copy_from_slice(&147u32.to_le_bytes());
    let (code, report, stderr) = session_replay(dir.path(), &pcap, &keylog, &key);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "link types this tool does not read: 147 ({} frames)",
            wire.len()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("holds no UDP datagram"), "{stderr}");
    assert_eq!(report["unsupported_link_types"]["147"], wire.len() as u64);
}

#[test]
fn a_missing_key_log_is_named_as_missing_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (wire, _, key) = real_session(dir.path(), 1, 10);
    let records = whole_records(&wire);
    let file = dir.path().join("cap.pcap");
    std::fs::write(&file, raw_ip_pcap(&records)).unwrap();
    let output = replay(
        &file,
        &["--key", key.to_str().unwrap(), "--local", "10.1.0.2:7700"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cap.pcap.keylog: key log not found"),
        "{stderr}"
    );
    assert!(stderr.contains("--keylog"), "{stderr}");
    assert!(stderr.contains("FILE.workerN.keylog"), "{stderr}");
    assert!(!stderr.contains("RNG seed"), "{stderr}");
}

/// `ip` (an IPv4 packet without options) as the fragments a path of `mtu` bytes makes of it,
/// with identification `id`; whole if it fits.
fn ipv4_fragments(ip: &[u8], mtu: usize, id: u16) -> Vec<Vec<u8>> {
    if ip.len() <= mtu {
        return vec![ip.to_vec()];
    }
    let (header, payload) = ip.split_at(20);
    let step = (mtu - 20) / 8 * 8;
    let pieces: Vec<&[u8]> = payload.chunks(step).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut p = header.to_vec();
            p[2..4].copy_from_slice(&((20 + piece.len()) as u16).to_be_bytes());
            p[4..6].copy_from_slice(&id.to_be_bytes());
            let more = if i + 1 < pieces.len() { 0x2000 } else { 0 };
            p[6..8].copy_from_slice(&(more | (i * step / 8) as u16).to_be_bytes());
            p.extend_from_slice(piece);
            p
        })
        .collect()
}

/// The session's datagrams as a path with a 576-byte MTU delivers them, each datagram's
/// fragments passed through `shuffle` (which may reorder or drop them).
fn fragmented_capture(
    wire: &[Wire],
    shuffle: impl Fn(usize, Vec<Vec<u8>>) -> Vec<Vec<u8>>,
) -> Vec<u8> {
    let mut records = Vec::new();
    for (n, (ts, src, dst, datagram)) in wire.iter().enumerate() {
        let fragments = ipv4_fragments(&ip_packet(*src, *dst, datagram), 576, n as u16);
        for (i, f) in shuffle(n, fragments).into_iter().enumerate() {
            let len = f.len();
            records.push((ts + i as u64 * 1_000, f, len));
        }
    }
    raw_ip_pcap(&records)
}

#[test]
fn a_fragmented_session_is_reassembled_and_opened() {
    let dir = tempfile::tempdir().unwrap();
    // 1000-byte messages: sealed datagrams of about 1030 bytes, two fragments each at 576.
    let (wire, keylog, key) = real_session(dir.path(), 6, 1000);
    let big = wire.iter().filter(|w| w.3.len() > 576 - 28).count();
    assert_eq!(big, 6);
    for (name, shuffle) in [
        (
            "in order",
            (|_, f| f) as fn(usize, Vec<Vec<u8>>) -> Vec<Vec<u8>>,
        ),
        ("last fragment first", |_, mut f: Vec<Vec<u8>>| {
            f.reverse();
            f
        }),
    ] {
        let pcap = fragmented_capture(&wire, shuffle);
        let (code, report, stderr) = session_replay(dir.path(), &pcap, &keylog, &key);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        assert_eq!(report["delivered_realtime"], 6, "{name}: {report}");
        assert_eq!(report["reassembled"], 6, "{name}: {report}");
        assert_eq!(report["ip_fragments"], 12, "{name}: {report}");
        assert_eq!(report["fragments_incomplete"], 0, "{name}: {report}");
        assert_eq!(
            report["transport_packets"], report["opened"],
            "{name}: {report}"
        );
        // Plain mode counts the reassembled datagrams by type.
        let report = replay_json(&dir.path().join("cap.pcap"), &[]);
        assert_counts(
            &report,
            "counts",
            &[
                ("realtime", 6),
                ("ip_fragments", 12),
                ("reassembled", 6),
                ("truncated", 0),
            ],
        );
    }
}

#[test]
fn a_fragmented_datagram_missing_a_fragment_is_counted_and_mentioned() {
    let dir = tempfile::tempdir().unwrap();
    let (wire, keylog, key) = real_session(dir.path(), 4, 1000);
    // The second fragment of the first message is lost; the rest arrive.
    let first_big = wire.iter().position(|w| w.3.len() > 576).unwrap();
    let pcap = fragmented_capture(&wire, |n, mut f| {
        if n == first_big {
            f.truncate(1);
        }
        f
    });
    let (code, report, stderr) = session_replay(dir.path(), &pcap, &keylog, &key);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["delivered_realtime"], 3, "{report}");
    assert_eq!(report["fragments_incomplete"], 1, "{report}");
    assert!(
        stderr.contains("1 fragmented datagrams never completed"),
        "{stderr}"
    );
    let output = replay(&dir.path().join("cap.pcap"), &["--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 fragmented datagrams never completed"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_counts(
        &report,
        "counts",
        &[("realtime", 3), ("fragments_incomplete", 1)],
    );

    // Nothing but fragments that never complete: exit 3, and the hint says why.
    let only_first: Vec<Wire> = wire.iter().filter(|w| w.3.len() > 576).cloned().collect();
    let pcap = fragmented_capture(&only_first, |_, mut f| {
        f.truncate(1);
        f
    });
    let (code, _, stderr) = session_replay(dir.path(), &pcap, &keylog, &key);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("fragmented datagrams never completed"),
        "{stderr}"
    );
}
