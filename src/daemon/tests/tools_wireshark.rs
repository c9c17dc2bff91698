//! The Wireshark dissector (tools/wireshark/intentra.lua) over a capture made by
//! `intentra serve --capture` with a client sending to it: tshark must name every packet
//! type and its fields as PROTOCOL.md does, with the values the capture holds, and count
//! the same packets per type as `intentra-replay`, and with the key log open every transport
//! packet in both directions. Skipped, saying so, without tshark.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        "Selective: 0x",
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
    ] {
        assert_eq!(
            by_type.get(&ty).copied().unwrap_or(0),
            report["counts"][label].as_u64().unwrap(),
            "{label}: tshark {by_type:?}, replay {}",
            report["counts"]
        );
    }
    assert!(by_type.get(&5).copied().unwrap_or(0) >= 20);
    let transport: u64 = (5..=9).map(|t| by_type.get(&t).copied().unwrap_or(0)).sum();
    assert_eq!(decrypted as u64, transport);
    // The 20 Realtime messages' plaintext, as the client sent them, is in the tree.
    assert!(verbose.matches("Type: Realtime (5)").count() >= 20);

    // The heuristic finds it on a port nobody configured.
    let heuristic = tshark(&[
        "-o",
        "intentra.port:0",
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
