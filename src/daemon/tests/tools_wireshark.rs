//! The Wireshark dissector (tools/wireshark/intentra.lua) over a capture made by
//! `intentra serve --capture` with a client sending to it: tshark must name every packet
//! type and its fields as PROTOCOL.md does, with the values the capture holds, and count
//! the same packets per type as `intentra-replay`, and with the key log open every transport
//! packet in both directions. Skipped, saying so, without tshark.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intentra::capture::{keylog_line, CaptureWriter};
use intentra::proto::internals::{PacketCipher, PacketKey};
use intentra::proto::wire::{self, Counter, TransportKind};
use intentra::proto::{
    Bundled, DropReason, Endpoint, EndpointConfig, Event, Keypair, Mode, PublicKey, Sent, Timestamp,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const BIN: &str = env!("CARGO_BIN_EXE_intentra");
const REPLAY: &str = env!("CARGO_BIN_EXE_intentra-replay");

fn dissector() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/wireshark/intentra.lua")
}

fn tshark_available() -> bool {
    Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path) -> String {
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Serves with `--capture`, sends `count` messages in each mode, stops the server with
/// SIGTERM; returns the capture and the server's address.
fn served_capture(dir: &Path, count: &str) -> (PathBuf, SocketAddr) {
    let key = keygen(&dir.join("server.key"));
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "[node]\nbind = [\"{udp}\"]\nkey_file = \"{}\"\n[metrics]\nlisten = \"{metrics}\"\n",
        dir.join("server.key").display()
    );
    std::fs::write(dir.join("server.toml"), config).unwrap();
    let pcap = dir.join("session.pcap");
    let mut server = Server(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(dir.join("server.toml"))
            .arg("--capture")
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while intentra_daemon::metrics_http::fetch_metrics(metrics).is_err() {
        assert!(Instant::now() < end, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    for mode in ["realtime", "reliable"] {
        let out = Command::new(BIN)
            .args(["connect", "--peer", &udp.to_string(), "--peer-key", &key])
            .args(["--mode", mode, "--rate", "1000", "--count", count])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    server.0.wait().unwrap();
    (pcap, udp)
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-X")
        .arg(format!("lua_script:{}", dissector().display()))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    // A Lua error is reported on stderr (or in the tree) without failing tshark.
    assert!(!stderr.contains("Lua: Error"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!stdout.contains("Lua Error"), "{stdout}");
    stdout
}

#[test]
fn tshark_dissects_a_served_capture_with_the_protocols_field_names() {
    if !tshark_available() {
        eprintln!(
            "SKIPPED tshark_dissects_a_served_capture_with_the_protocols_field_names: tshark is \
             not installed (apt-get install tshark)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pcap, server) = served_capture(dir.path(), "20");
    let pcap_arg = pcap.to_str().unwrap().to_string();
    let keylog = intentra::capture::keylog_path(&pcap);
    let sessions = intentra::capture::read_keylog(&keylog).unwrap();
    assert_eq!(sessions.len(), 2, "one session per client");
    let port_pref = format!("intentra.port:{}", server.port());
    let keylog_pref = format!("intentra.keylog:{}", keylog.display());

    let verbose = tshark(&["-o", &port_pref, "-o", &keylog_pref, "-r", &pcap_arg, "-V"]);
    for expected in [
        "Version: 1",
        "Type: HandshakeInit (1)",
        "Type: HandshakeResponse (2)",
        "Type: HandshakeFinish (3)",
        "Type: Realtime (5)",
        "Type: Reliable (6)",
        "Type: Ack (7)",
        "Type: Close (9)",
        "Reserved: 0x0000",
        "Sender index: 0x",
        "Receiver index: 0x",
        "Ephemeral public key: ",
        "Padding: 000000000000",
        "mac1: ",
        "mac2: ",
        "Encrypted static key: ",
        "Encrypted payload (receive window): ",
        "Encrypted payload (FinishIntent, receive window): ",
        "Counter: 0",
        "Sealed length: ",
        "Ciphertext: ",
        "Tag: ",
    ] {
        assert!(verbose.contains(expected), "no {expected:?} in:\n{verbose}");
    }
    // The indexes the key log names are the ones on the wire: the server's own index is the
    // receiver of the HandshakeFinish and of every transport packet to it.
    for session in &sessions {
        let field = format!("Receiver index: 0x{:08x}", session.local_index);
        assert!(verbose.contains(&field), "no {field:?}");
        let field = format!("Sender index: 0x{:08x}", session.remote_index);
        assert!(verbose.contains(&field), "no {field:?}");
    }
    // Every transport packet, both directions, opens with the key log and is dissected.
    assert!(!verbose.contains("decryption failed"), "{verbose}");
    assert!(!verbose.contains("not decrypted"), "{verbose}");
    for expected in [
        "Message length: ",
        "Sequence: 0",
        "Next expected: ",
        "Selective word: 0x",
        "Close reason: ",
    ] {
        assert!(verbose.contains(expected), "no {expected:?}");
    }
    let decrypted = verbose
        .matches("[Decryption: decrypted with the key log")
        .count();

    // Per-type counts agree with intentra-replay's over the same file (both directions).
    let fields = tshark(&[
        "-o",
        &port_pref,
        "-r",
        &pcap_arg,
        "-T",
        "fields",
        "-e",
        "intentra.type",
    ]);
    let mut by_type = std::collections::BTreeMap::<u32, u64>::new();
    for line in fields.lines().filter(|l| !l.is_empty()) {
        *by_type.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    let replay = Command::new(REPLAY)
        .arg(&pcap)
        .arg("--json")
        .output()
        .unwrap();
    assert!(replay.status.success());
    let report: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    for (ty, label) in [
        (1, "handshake_init"),
        (2, "handshake_response"),
        (3, "handshake_finish"),
        (4, "cookie_reply"),
        (5, "realtime"),
        (6, "reliable"),
        (7, "ack"),
        (8, "keepalive"),
        (9, "close"),
        (10, "bundle"),
    ] {
        assert_eq!(
            by_type.get(&ty).copied().unwrap_or(0),
            report["counts"][label].as_u64().unwrap(),
            "{label}: tshark {by_type:?}, replay {}",
            report["counts"]
        );
    }
    assert!(by_type.get(&5).copied().unwrap_or(0) >= 20);
    let transport: u64 = (5..=10)
        .map(|t| by_type.get(&t).copied().unwrap_or(0))
        .sum();
    assert_eq!(decrypted as u64, transport);
    // The 20 Realtime messages' plaintext, as the client sent them, is in the tree.
    assert!(verbose.matches("Type: Realtime (5)").count() >= 20);

    // The heuristic finds it on a port nobody configured. Heuristics first: the ports are
    // ephemeral, and one that happens to be a registered port of another protocol would
    // otherwise hand its datagrams to that protocol's dissector.
    let heuristic = tshark(&[
        "-o",
        "intentra.port:0",
        "-o",
        "udp.try_heuristic_first:TRUE",
        "-r",
        &pcap_arg,
        "-T",
        "fields",
        "-e",
        "intentra.type",
    ]);
    assert_eq!(
        heuristic.lines().filter(|l| !l.is_empty()).count(),
        by_type.values().sum::<u64>() as usize
    );
}

/// Two endpoints in one process, joined by a loop that records every datagram into a
/// capture (as `intentra serve --capture` would). No socket: the addresses only label the
/// capture.
struct Pair {
    a: Endpoint,
    b: Endpoint,
    a_key: PublicKey,
    b_key: PublicKey,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    capture: CaptureWriter,
    clock: u64,
    /// Messages `b` delivered, in order.
    at_b: Vec<(Mode, Vec<u8>)>,
}

impl Pair {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.clock)
    }

    /// Records `datagram` from `src` and hands it to the other endpoint.
    fn carry(&mut self, src: SocketAddr, datagram: &[u8]) {
        self.clock += 1_000_000;
        let now = self.now();
        let (dst, to) = if src == self.a_addr {
            (self.b_addr, &mut self.b)
        } else {
            (self.a_addr, &mut self.a)
        };
        self.capture
            .record(1_800_000_000_000_000_000 + self.clock, src, dst, datagram)
            .unwrap();
        let mut copy = datagram.to_vec();
        for message in to.handle_datagram(now, src, &mut copy) {
            if dst == self.b_addr {
                self.at_b.push((message.mode, message.payload.to_vec()));
            }
        }
    }

    /// Carries what both endpoints have queued until neither has anything.
    fn settle(&mut self) {
        let mut out = vec![0u8; 1452];
        let mut idle_rounds = 0;
        loop {
            let now = self.now();
            let mut moved = false;
            while let Some(tx) = self.a.poll_transmit(now, &mut out) {
                let datagram = out[..tx.len].to_vec();
                self.carry(self.a_addr, &datagram);
                moved = true;
            }
            while let Some(tx) = self.b.poll_transmit(now, &mut out) {
                let datagram = out[..tx.len].to_vec();
                self.carry(self.b_addr, &datagram);
                moved = true;
            }
            while let Some(event) = self.b.poll_event() {
                if let Event::Message(m) = event {
                    self.at_b.push((m.mode, m.payload.to_vec()));
                }
            }
            while self.a.poll_event().is_some() {}
            if moved {
                idle_rounds = 0;
                continue;
            }
            idle_rounds += 1;
            if idle_rounds > 1 {
                break;
            }
            // Delayed ACKs are due within a millisecond: let them go, then stop.
            self.clock += 2_000_000;
            let now = self.now();
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
        }
    }

    /// Sends `messages` from a to b (or b to a) in one Bundle and carries it.
    fn bundle(&mut self, from_a: bool, messages: &[(Mode, &[u8])]) {
        let mut out = vec![0u8; 1452];
        let now = self.now();
        let (endpoint, other, src) = if from_a {
            (&mut self.a, self.b_key, self.a_addr)
        } else {
            (&mut self.b, self.a_key, self.b_addr)
        };
        let peer = endpoint.peer_by_key(&other).expect("a session");
        let mut bundle = endpoint.bundle(now, peer, &mut out).unwrap();
        for (mode, payload) in messages {
            assert_eq!(bundle.push(*mode, payload).unwrap(), Bundled::Added);
        }
        let tx = bundle.finish().unwrap().unwrap();
        let datagram = out[..tx.len].to_vec();
        assert_eq!(datagram[1], 10, "several messages make a Bundle");
        self.carry(src, &datagram);
    }
}

/// PROTOCOL.md 7.5 in the dissector: a capture of Bundles made by the real endpoint (the
/// spec's worked example among them, in both directions) and one with lying framing, sealed
/// by hand with the logged key. tshark must show every frame with its kind, length and
/// (Reliable) seq, in order, and say why the lying one is malformed.
#[test]
fn tshark_dissects_bundles_frame_by_frame() {
    if !tshark_available() {
        eprintln!(
            "SKIPPED tshark_dissects_bundles_frame_by_frame: tshark is not installed \
             (apt-get install tshark)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("bundles.pcap");
    let a_pair = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(1));
    let b_pair = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(2));
    let (a_key, b_key) = (a_pair.public, b_pair.public);
    let mut a_config = EndpointConfig::new(a_pair);
    a_config.export_session_keys = true;
    let zero = Timestamp::from_nanos(0);
    let mut pair = Pair {
        a: Endpoint::new(a_config, zero, ChaCha20Rng::seed_from_u64(3)),
        b: Endpoint::new(
            EndpointConfig::new(b_pair),
            zero,
            ChaCha20Rng::seed_from_u64(4),
        ),
        a_key,
        b_key,
        a_addr: "127.0.0.1:40001".parse().unwrap(),
        b_addr: "127.0.0.1:40002".parse().unwrap(),
        capture: CaptureWriter::create(&pcap).unwrap(),
        clock: 0,
        at_b: Vec::new(),
    };
    let b_addr = pair.b_addr;
    let to_b = pair.a.connect(zero, b_addr, b_key).unwrap();
    pair.settle();
    // Seven lone Reliable messages, so that the bundle after them is the example of 7.5.
    let mut out = vec![0u8; 1452];
    for i in 0..7u8 {
        let now = pair.now();
        let sent = pair.a.send(now, to_b, Mode::Reliable, &[i], &mut out);
        let Ok(Sent::Now(tx)) = sent else {
            panic!("{sent:?}")
        };
        let datagram = out[..tx.len].to_vec();
        pair.carry(pair.a_addr, &datagram);
    }
    pair.settle();
    pair.bundle(true, &[(Mode::Realtime, b"hi"), (Mode::Reliable, b"ok")]);
    pair.bundle(
        true,
        &[
            (Mode::Reliable, b"second"),
            (Mode::Realtime, b""),
            (Mode::Reliable, b""),
            (Mode::Realtime, b"third"),
        ],
    );
    pair.bundle(
        false,
        &[(Mode::Realtime, b"back"), (Mode::Reliable, b"back-rel")],
    );
    pair.settle();

    // Lying framing, sealed with a's real send key: a Reliable frame, then kind 7.
    let secrets = pair.a.poll_session_keys().expect("a exported its keys");
    let mut plaintext = vec![6, 10, 0];
    plaintext.extend_from_slice(&10u64.to_le_bytes());
    plaintext.extend_from_slice(b"ok");
    plaintext.extend_from_slice(&[7, 0, 0]);
    let mut packet = vec![0u8; wire::TRANSPORT_HEADER_LEN + plaintext.len() + 16];
    let counter = Counter(1000);
    let header: &mut [u8; wire::TRANSPORT_HEADER_LEN] = (&mut packet[..16]).try_into().unwrap();
    wire::write_transport_header(header, TransportKind::Bundle, secrets.remote_index, counter);
    packet[16..16 + plaintext.len()].copy_from_slice(&plaintext);
    PacketKey::new(&secrets.send)
        .seal_in_place(counter, &mut packet)
        .unwrap();
    let delivered_before = pair.at_b.len();
    pair.carry(pair.a_addr, &packet);
    pair.settle();
    pair.capture.flush().unwrap();

    // The endpoint itself: every bundled message delivered in order, the lying one refused.
    let expected: Vec<(Mode, Vec<u8>)> = (0..7u8)
        .map(|i| (Mode::Reliable, vec![i]))
        .chain([
            (Mode::Realtime, b"hi".to_vec()),
            (Mode::Reliable, b"ok".to_vec()),
            (Mode::Reliable, b"second".to_vec()),
            (Mode::Realtime, Vec::new()),
            (Mode::Reliable, Vec::new()),
            (Mode::Realtime, b"third".to_vec()),
        ])
        .collect();
    assert_eq!(pair.at_b, expected);
    assert_eq!(
        pair.at_b.len(),
        delivered_before,
        "the malformed bundle delivered nothing"
    );
    assert_eq!(pair.b.stats().dropped(DropReason::Malformed), 1);

    let keylog = dir.path().join("bundles.keylog");
    std::fs::write(
        &keylog,
        format!("# intentra key log v1\n{}", keylog_line(&secrets)),
    )
    .unwrap();
    let pcap_arg = pcap.to_str().unwrap().to_string();
    let keylog_pref = format!("intentra.keylog:{}", keylog.display());
    let verbose = tshark(&[
        "-o",
        "intentra.port:40002",
        "-o",
        &keylog_pref,
        "-r",
        &pcap_arg,
        "-V",
    ]);
    assert!(!verbose.contains("decryption failed"), "{verbose}");
    assert!(!verbose.contains("not decrypted"), "{verbose}");
    assert_eq!(verbose.matches("Type: Bundle (10)").count(), 4, "{verbose}");
    for expected in [
        // The worked example: Realtime "hi", Reliable seq 7 "ok", 18 bytes sealed as 50.
        "Sealed length: 18",
        "Frame 1: Realtime, 2 bytes",
        "Frame 2: Reliable, 10 bytes, seq 7",
        "Frame kind: Realtime (5)",
        "Frame kind: Reliable (6)",
        "Frame length: 2",
        "Frame length: 10",
        "Sequence: 7",
        "Message: 6869",
        "Message: 6f6b",
        "[Frames: 2]",
        // Four frames, empty messages included.
        "Frame 1: Reliable, 14 bytes, seq 8",
        "Frame 2: Realtime, 0 bytes",
        "Frame 3: Reliable, 8 bytes, seq 9",
        "Frame 4: Realtime, 5 bytes",
        "[Frames: 4]",
        // The other direction: b's own stream starts at 0.
        "Frame 2: Reliable, 16 bytes, seq 0",
        "[Malformed bundle: frame kind 7 at offset 13 is not 5 or 6",
    ] {
        assert!(verbose.contains(expected), "no {expected:?} in:\n{verbose}");
    }
    // Frame by frame, packet by packet: kinds, lengths and seqs in order.
    let fields = tshark(&[
        "-o",
        "intentra.port:40002",
        "-o",
        &keylog_pref,
        "-r",
        &pcap_arg,
        "-Y",
        "intentra.type == 10",
        "-T",
        "fields",
        "-E",
        "separator=;",
        "-e",
        "intentra.bundle.frame.kind",
        "-e",
        "intentra.bundle.frame.length",
        "-e",
        "intentra.reliable.seq",
        "-e",
        "intentra.bundle.frames",
    ]);
    let lines: Vec<&str> = fields.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines,
        [
            "5,6;2,10;7;2",
            "6,5,6,5;14,0,8,5;8,9;4",
            "5,6;4,16;0;2",
            "6;10;10;1",
        ],
        "{fields}"
    );
    // The Info column counts the frames, or says the bundle is malformed.
    let summary = tshark(&[
        "-o",
        "intentra.port:40002",
        "-o",
        &keylog_pref,
        "-r",
        &pcap_arg,
    ]);
    assert_eq!(summary.matches(" frames=2").count(), 2, "{summary}");
    assert_eq!(summary.matches(" frames=4").count(), 1, "{summary}");
    assert_eq!(summary.matches("len=16 malformed").count(), 1, "{summary}");

    // intentra-replay counts the same Bundles.
    let replay = Command::new(REPLAY)
        .arg(&pcap)
        .arg("--json")
        .output()
        .unwrap();
    assert!(replay.status.success());
    let report: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(report["counts"]["bundle"], 4, "{report}");
}

/// A microsecond raw-IP pcap whose records keep only `snaplen` bytes of each packet.
fn snapped_pcap(packets: &[Vec<u8>], snaplen: usize) -> Vec<u8> {
    let mut v = 0xA1B2_C3D4u32.to_le_bytes().to_vec();
    v.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    v.extend_from_slice(&(snaplen as u32).to_le_bytes());
    v.extend_from_slice(&101u32.to_le_bytes());
    for (i, packet) in packets.iter().enumerate() {
        let kept = &packet[..packet.len().min(snaplen)];
        v.extend_from_slice(&1_800_000_000u32.to_le_bytes());
        v.extend_from_slice(&(i as u32).to_le_bytes());
        v.extend_from_slice(&(kept.len() as u32).to_le_bytes());
        v.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        v.extend_from_slice(kept);
    }
    v
}

/// A packet cut at the capture's snap length is laid out by its length on the wire: tshark
/// shows the sealed length the packet has, marks it truncated (expert info), does not try to
/// decrypt part of a ciphertext, and still recognises it heuristically on any port. The same
/// packet captured whole decrypts with the same key log.
#[test]
fn tshark_lays_out_snaplen_cut_packets_by_their_wire_length() {
    if !tshark_available() {
        eprintln!(
            "SKIPPED tshark_lays_out_snaplen_cut_packets_by_their_wire_length: tshark is not \
             installed (apt-get install tshark)"
        );
        return;
    }
    use intentra::proto::wire::SessionIndex;
    use intentra::proto::SessionSecrets;
    let dir = tempfile::tempdir().unwrap();
    let secrets = SessionSecrets {
        local_index: SessionIndex::new(0x1111_2222).unwrap(),
        remote_index: SessionIndex::new(0x3333_4444).unwrap(),
        send: [0x5a; 32],
        recv: [0xa5; 32],
        peer: PublicKey([7; 32]),
        initiator: true,
        rekey: false,
        created: Timestamp::ZERO,
    };
    let keylog = dir.path().join("cut.keylog");
    std::fs::write(
        &keylog,
        format!("# intentra key log v1\n{}", keylog_line(&secrets)),
    )
    .unwrap();
    // A 202-byte Realtime (170 bytes sealed), sealed with the logged send key.
    let counter = Counter(3);
    let mut realtime = vec![0u8; 202];
    let header: &mut [u8; wire::TRANSPORT_HEADER_LEN] = (&mut realtime[..16]).try_into().unwrap();
    wire::write_transport_header(
        header,
        TransportKind::Realtime,
        secrets.remote_index,
        counter,
    );
    realtime[16..186].fill(b'r');
    PacketKey::new(&secrets.send)
        .seal_in_place(counter, &mut realtime)
        .unwrap();
    let mut init = vec![0x5au8; wire::init::LEN];
    wire::write_prefix(&mut init, wire::PacketType::HandshakeInit);
    init[4..8].copy_from_slice(&0x0102_0304u32.to_le_bytes());
    // On a port nobody configured: the heuristic must find them.
    let src: SocketAddr = "127.0.0.1:41001".parse().unwrap();
    let dst: SocketAddr = "127.0.0.1:41002".parse().unwrap();
    let ip = |payload: &[u8]| {
        let mut writer = CaptureWriter::from_writer(Vec::new()).unwrap();
        writer.record(0, src, dst, payload).unwrap();
        writer.into_inner().unwrap()[24 + 16..].to_vec()
    };
    let whole = dir.path().join("whole.pcap");
    std::fs::write(&whole, snapped_pcap(&[ip(&realtime)], 65535)).unwrap();
    let cut = dir.path().join("cut.pcap");
    // Snap length 90: 62 bytes of each datagram after the IPv4 and UDP headers.
    std::fs::write(&cut, snapped_pcap(&[ip(&realtime), ip(&init)], 90)).unwrap();
    let keylog_pref = format!("intentra.keylog:{}", keylog.display());
    let common = [
        "-o",
        "intentra.port:0",
        "-o",
        "udp.try_heuristic_first:TRUE",
        "-o",
        &keylog_pref,
    ];

    let mut args = common.to_vec();
    args.extend(["-r", whole.to_str().unwrap(), "-V"]);
    let verbose = tshark(&args);
    assert!(
        verbose.contains("[Decryption: decrypted with the key log"),
        "{verbose}"
    );
    assert!(verbose.contains("Sealed length: 170"), "{verbose}");

    let mut args = common.to_vec();
    args.extend(["-r", cut.to_str().unwrap(), "-V"]);
    let verbose = tshark(&args);
    for expected in [
        "Type: Realtime (5)",
        "Sealed length: 170",
        "Counter: 3",
        "[46 of 170 bytes captured]",
        "not decrypted: the capture holds 62 of the packet's 202 bytes",
        "Packet cut short by the capture: 62 of 202 bytes captured",
        "Type: HandshakeInit (1)",
        "Sender index: 0x01020304",
        "Packet cut short by the capture: 62 of 120 bytes captured",
    ] {
        assert!(verbose.contains(expected), "no {expected:?} in:\n{verbose}");
    }
    assert!(!verbose.contains("decryption failed"), "{verbose}");
    assert!(
        !verbose.contains("Tag: "),
        "the tag was not captured:\n{verbose}"
    );
    let mut args = common.to_vec();
    args.extend(["-r", cut.to_str().unwrap()]);
    let summary = tshark(&args);
    assert!(
        summary.contains("Realtime receiver=0x33334444 counter=3 len=170 [truncated]"),
        "{summary}"
    );
    assert!(
        summary.contains("HandshakeInit sender=0x01020304 [truncated]"),
        "{summary}"
    );
}
