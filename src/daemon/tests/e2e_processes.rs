//! Real processes over loopback: `intentra serve` and `intentra connect` exchange messages in
//! both modes; SIGTERM sends closes the client observes; SIGHUP drops a peer taken off the
//! allow-list; the demo runs. Every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_intentra");

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn keygen(dir: &Path, name: &str) -> String {
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
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

struct Server {
    child: Child,
    udp: SocketAddr,
    metrics: SocketAddr,
    key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &Path, allow_list: Option<&str>) -> Server {
    start_server_with(dir, allow_list, &[])
}

fn start_server_with(dir: &Path, allow_list: Option<&str>, extra: &[&str]) -> Server {
    let key = keygen(dir, "server.key");
    let udp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics = free_tcp();
    let mut config = format!(
        "[node]\nbind = [\"{udp}\"]\nkey_file = \"{}\"\n[metrics]\nlisten = \"{metrics}\"\npublish_interval_ms = 20\n[log]\nlevel = \"info\"\n",
        dir.join("server.key").display()
    );
    if let Some(list) = allow_list {
        std::fs::write(dir.join("allow.txt"), list).unwrap();
        config = config.replace(
            "[metrics]",
            &format!(
                "allow_list = \"{}\"\n[metrics]",
                dir.join("allow.txt").display()
            ),
        );
    }
    std::fs::write(dir.join("server.toml"), config).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("server.toml"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        intentra_daemon::metrics_http::fetch_metrics(metrics).is_ok()
    });
    Server {
        child,
        udp,
        metrics,
        key,
    }
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = intentra_daemon::metrics_http::fetch_metrics(server.metrics).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `intentra connect` to `server`, before any extra flags.
fn connect_command(server: &Server) -> Command {
    let mut command = Command::new(BIN);
    command.args([
        "connect",
        "--peer",
        &server.udp.to_string(),
        "--peer-key",
        &server.key,
    ]);
    command
}

fn connect(server: &Server, extra: &[&str]) -> Output {
    connect_command(server).args(extra).output().unwrap()
}

fn signal(child: &Child, signal: i32) {
    // SAFETY-free: nix wraps kill(2).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::try_from(signal).unwrap(),
    )
    .unwrap();
}

#[test]
fn two_processes_exchange_messages_in_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None);
    for mode in ["realtime", "reliable"] {
        let out = connect(
            &server,
            &[
                "--mode", mode, "--rate", "500", "--count", "200", "--size", "128",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("sent=200"), "{stdout}");
    }
    wait_for(Duration::from_secs(5), || {
        metric(&server, "intentra_messages_delivered_total") >= 400.0
    });
    assert!(metric(&server, "intentra_handshakes_completed_total") >= 2.0);
    assert_eq!(metric(&server, "intentra_packets_dropped_crypto"), 0.0);
}

#[test]
fn sigterm_sends_closes_that_the_peer_observes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), None);
    let mut client = connect_command(&server)
        .args(["--rate", "100", "--count", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        metric(&server, "intentra_connections_active") >= 1.0
    });
    signal(&server.child, libc::SIGTERM);
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < end, "server did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut line = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = client.kill();
    let _ = client.wait();
    assert!(line.starts_with("peer closed: shutdown"), "{line}");
}

#[test]
fn sighup_drops_a_peer_taken_off_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let client_key = keygen(dir.path(), "client.key");
    let server = start_server(dir.path(), Some(&format!("{client_key}\n")));
    std::fs::write(
        dir.path().join("client.toml"),
        format!(
            "[node]\nkey_file = \"{}\"\n[metrics]\nlisten = \"off\"\n",
            dir.path().join("client.key").display()
        ),
    )
    .unwrap();
    let mut client = connect_command(&server)
        .args(["--rate", "100", "--count", "100000", "--config"])
        .arg(dir.path().join("client.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        metric(&server, "intentra_connections_active") >= 1.0
    });
    // Another key replaces the client's (a list with no keys at all would be refused).
    let other_key = keygen(dir.path(), "other.key");
    let mut file = std::fs::File::create(dir.path().join("allow.txt")).unwrap();
    writeln!(file, "# the client is gone\n{other_key}").unwrap();
    drop(file);
    signal(&server.child, libc::SIGHUP);
    let mut line = String::new();
    BufReader::new(client.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = client.kill();
    let _ = client.wait();
    assert!(line.starts_with("peer closed: not_allowed"), "{line}");
    wait_for(Duration::from_secs(5), || {
        metric(&server, "intentra_connections_active") == 0.0
    });
}

#[test]
fn the_demo_runs_and_prints_metrics() {
    let out = Command::new(BIN)
        .args(["demo", "--messages", "300", "--metrics"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("handshake: Noise XX complete"));
    assert!(
        stdout.contains("300 reliable echoes received in order"),
        "{stdout}"
    );
    assert!(stdout.contains("intentra_packets_received_total"));
    let json = Command::new(BIN)
        .args(["demo", "--messages", "50", "--json"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["reliable_echoed"], 50);
    assert_eq!(value["realtime_sent"], 50);
    // Without --metrics the summary stands alone.
    let plain = Command::new(BIN)
        .args(["demo", "--messages", "50"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(!text.contains("intentra_packets_received_total"), "{text}");
    assert!(text.contains("client -> server realtime: "), "{text}");
}

/// The demo's echo used to drop a Reliable message its full window refused (about one run in
/// four failed); it now holds it with send_when_writable. Several runs, all complete, also at
/// full speed, where losses are explained by their drop counters.
#[test]
fn the_demo_passes_run_after_run_and_explains_its_losses() {
    for run in 0..6 {
        let rate = if run % 2 == 0 { "2000" } else { "0" };
        let out = Command::new(BIN)
            .args(["demo", "--messages", "1000", "--json", "--rate", rate])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run {run}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(value["reliable_echoed"], 1000, "run {run}: {value}");
        assert_eq!(value["echo_refused"], 0, "run {run}: {value}");
        // Every Realtime loss in either direction shows up in the receiver's drop counters.
        let lost_at_server = 1000 - value["realtime_received_by_server"].as_u64().unwrap();
        let lost_at_client = value["realtime_published_by_server"].as_u64().unwrap()
            - value["realtime_received_by_client"].as_u64().unwrap();
        assert!(
            lost_at_server == 0 || value["server_dropped"].as_u64().unwrap() > 0,
            "{value}"
        );
        assert!(
            lost_at_client == 0 || value["client_dropped"].as_u64().unwrap() > 0,
            "{value}"
        );
    }
}

#[test]
fn connect_with_a_key_the_server_refuses_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let other = keygen(dir.path(), "other.key");
    let server = start_server(dir.path(), Some(&format!("{other}\n")));
    let out = connect(
        &server,
        &["--rate", "100", "--count", "10", "--connect-timeout", "2"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("connected"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("allow-list"), "{stderr}");
    let text = intentra_daemon::metrics_http::fetch_metrics(server.metrics).unwrap();
    assert!(text.contains("not_allowed"), "{text}");
}

#[test]
fn connect_rate_0_sends_each_stdin_line_and_sigint_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None);
    for mode in ["realtime", "reliable"] {
        let mut child = connect_command(&server)
            .args(["--rate", "0", "--mode", mode])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            let mut stdin = child.stdin.take().unwrap();
            for i in 0..50 {
                writeln!(stdin, "line {i}").unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("sent=50 "), "{mode}: {stdout}");
    }
    wait_for(Duration::from_secs(5), || {
        metric(&server, "intentra_messages_delivered_total") >= 100.0
    });
    // SIGINT closes the session and prints the summary.
    let mut child = connect_command(&server)
        .args(["--rate", "100", "--count", "100000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        metric(&server, "intentra_messages_delivered_total") >= 110.0
    });
    signal(&child, libc::SIGINT);
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "connect did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("sent="), "{stdout}");
    wait_for(Duration::from_secs(5), || {
        metric(&server, "intentra_connections_active") == 0.0
    });
    // --log-level logs the session's events.
    let out = connect(
        &server,
        &["--rate", "100", "--count", "5", "--log-level", "info"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("first authenticated packet"), "{stderr}");
    assert!(stderr.contains("session closed"), "{stderr}");
}

/// Serves with `--capture`, runs a Realtime and a Reliable client of `count` messages each,
/// stops the server with SIGTERM and returns it (stopped) with the capture's path.
fn captured_session(dir: &Path, count: &str) -> (Server, std::path::PathBuf) {
    let pcap = dir.join("session.pcap");
    let mut server = start_server_with(dir, None, &["--capture", pcap.to_str().unwrap()]);
    for (sessions, mode) in ["realtime", "reliable"].into_iter().enumerate() {
        let out = connect(
            &server,
            &["--mode", mode, "--rate", "1000", "--count", count],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The client's Close is in flight when it exits: the capture has it only once the
        // server has read it, which a loaded machine may delay past a prompt SIGTERM.
        wait_for(Duration::from_secs(10), || {
            metric(&server, "intentra_connection_closes") >= (sessions + 1) as f64
        });
    }
    signal(&server.child, libc::SIGTERM);
    server.child.wait().unwrap();
    (server, pcap)
}

#[test]
fn a_capture_of_a_served_session_replays_to_the_expected_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, pcap) = captured_session(dir.path(), "100");
    let replay = Command::new(env!("CARGO_BIN_EXE_intentra-replay"))
        .arg(&pcap)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    let counts = &report["counts"];
    // Captured as received by the server: everything the clients sent, nothing malformed.
    // On a loaded machine an ACK or a handshake response can come late enough for the client
    // to send a Reliable segment or its handshake again, so those are at least, not exactly,
    // what one pass would send; Realtime is never resent.
    let count = |kind: &str| counts[kind].as_u64().unwrap_or(0);
    assert_eq!(count("realtime"), 100, "{report}");
    assert!(count("reliable") >= 100, "{report}");
    assert!(count("handshake_init") >= 2, "{report}");
    assert!(count("handshake_response") >= 2, "{report}");
    assert!(count("handshake_finish") >= 2, "{report}");
    assert_eq!(count("close"), 2, "{report}");
    assert!(counts["ack"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(counts["malformed"], 0, "{report}");
}

fn python_with_cryptography() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn an_independent_python_peer_written_from_protocol_md_interoperates() {
    if !python_with_cryptography() {
        // .ci/run installs it, so CI always runs this; a bare machine may not have it.
        eprintln!("skipped: python3 with the `cryptography` package is not available");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None);
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tools/interop/intentra_peer.py"
        ))
        .args([
            "--server",
            &server.udp.to_string(),
            "--server-key",
            &server.key,
        ])
        .args([
            "--send-realtime",
            "150",
            "--send-reliable",
            "150",
            "--payload-size",
            "128",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["handshake_confirmed"], true, "{summary}");
    assert_eq!(summary["reliable_acked"], 150, "{summary}");
    wait_for(Duration::from_secs(5), || {
        metric(&server, "intentra_messages_delivered_total") >= 300.0
    });
    assert_eq!(metric(&server, "intentra_packets_dropped_crypto"), 0.0);
    assert_eq!(metric(&server, "intentra_strike_events_total"), 0.0);
}

/// PROTOCOL.md 7.5 against the daemon: the Python peer sends its messages in Bundles of up
/// to 10, Realtime and Reliable alternating, and the daemon delivers every one (each frame
/// as a lone packet of its kind would be), ACKs the Reliable ones, and refuses nothing.
#[test]
fn the_python_peer_sends_bundles_of_mixed_messages_and_the_daemon_delivers_each() {
    if !python_with_cryptography() {
        eprintln!("skipped: python3 with the `cryptography` package is not available");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None);
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tools/interop/intentra_peer.py"
        ))
        .args([
            "--server",
            &server.udp.to_string(),
            "--server-key",
            &server.key,
        ])
        .args([
            "--send-realtime",
            "100",
            "--send-reliable",
            "100",
            "--bundle",
            "10",
            "--payload-size",
            "96",
            "--rate",
            "200",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["sent"]["realtime"], 100, "{summary}");
    assert_eq!(summary["sent"]["reliable"], 100, "{summary}");
    assert!(
        summary["bundles_sent"].as_u64().unwrap() >= 15,
        "200 messages, at most 10 a bundle: {summary}"
    );
    assert_eq!(summary["reliable_acked"], 100, "{summary}");
    assert_eq!(summary["bad_acks"], 0, "{summary}");
    wait_for(Duration::from_secs(5), || {
        metric(&server, "intentra_messages_delivered_total") >= 200.0
    });
    assert_eq!(metric(&server, "intentra_messages_delivered_total"), 200.0);
    // Labelled {worker="N",reason="..."}: every worker's malformed count is 0.
    let text = intentra_daemon::metrics_http::fetch_metrics(server.metrics).unwrap();
    let malformed: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("intentra_packets_dropped_total{"))
        .filter(|l| l.contains("reason=\"malformed\""))
        .collect();
    assert!(!malformed.is_empty(), "{text}");
    assert!(malformed.iter().all(|l| l.ends_with(" 0")), "{malformed:?}");
    assert_eq!(metric(&server, "intentra_packets_dropped_crypto"), 0.0);
    assert_eq!(metric(&server, "intentra_strike_events_total"), 0.0);
}

#[test]
fn status_prints_sessions_and_drops_of_a_live_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), None);
    let out = connect(&server, &["--rate", "1000", "--count", "50"]);
    assert!(out.status.success());
    wait_for(Duration::from_secs(5), || {
        metric(&server, "intentra_messages_delivered_total") >= 50.0
    });
    let status = Command::new(BIN)
        .args(["status", "--metrics", &server.metrics.to_string()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(table.contains("delivered"), "{table}");
    assert!(
        table.contains("50"),
        "the table shows the 50 delivered messages: {table}"
    );
}

#[test]
fn several_workers_share_one_port_and_sum_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_with(dir.path(), None, &["--workers", "2"]);
    // Clients from many source ports: the kernel spreads them over both workers.
    let clients: Vec<_> = (0..6)
        .map(|_| {
            connect_command(&server)
                .args(["--rate", "500", "--count", "100"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for client in clients {
        let out = client.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for(Duration::from_secs(5), || {
        metric(&server, "intentra_messages_delivered_total") >= 600.0
    });
    let text = intentra_daemon::metrics_http::fetch_metrics(server.metrics).unwrap();
    assert!(
        text.contains("worker=\"0\"") && text.contains("worker=\"1\""),
        "{text}"
    );
    assert_eq!(metric(&server, "intentra_handshakes_completed_total"), 6.0);
}

#[test]
fn a_captured_session_replays_with_the_key_and_the_per_session_key_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, pcap) = captured_session(dir.path(), "120");
    let keylog = dir.path().join("session.pcap.keylog");
    // The daemon said, at WARN, that it was capturing.
    let mut log = String::new();
    std::io::Read::read_to_string(&mut server.child.stderr.take().unwrap(), &mut log).unwrap();
    let warn = log
        .lines()
        .find(|l| l.contains("capture is on"))
        .unwrap_or_default();
    assert!(warn.contains("WARN"), "{log}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keylog).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&pcap).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // One line per session (two clients), each with the server as responder.
    let text = std::fs::read_to_string(&keylog).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("SESSION ")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines.iter().all(|l| l.ends_with(" responder new")),
        "{text}"
    );
    let server_key = dir.path().join("server.key");
    let replay = |key: &Path, local: &str| {
        Command::new(env!("CARGO_BIN_EXE_intentra-replay"))
            .arg(&pcap)
            .args(["--key", key.to_str().unwrap()])
            .args(["--local", local, "--json"])
            .output()
            .unwrap()
    };
    let out = replay(&server_key, &server.udp.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["handshakes_completed"], 2, "{report}");
    assert_eq!(report["sessions_up"], 2, "{report}");
    assert_eq!(report["delivered_realtime"], 120, "{report}");
    assert_eq!(report["delivered_reliable"], 120, "{report}");
    assert_eq!(report["sessions_down"]["remote"], 2, "{report}");
    assert_eq!(report["handshake_inits"], report["handshake_inits_for_key"]);
    assert_eq!(report["transport_packets"], report["opened"], "{report}");

    // The wrong port matches nothing: exit 3, and the hint names the address that was seen.
    let out = replay(&server_key, "127.0.0.1:1");
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no datagram is addressed to --local 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stderr.contains(&server.udp.to_string()), "{stderr}");

    // Another node's key: no HandshakeInit carries a mac1 for it.
    keygen(dir.path(), "other.key");
    let out = replay(&dir.path().join("other.key"), &server.udp.to_string());
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mac1"));

    // A key log with the wrong keys: nothing opens.
    let wrong: String = text
        .lines()
        .map(|l| {
            let mut f: Vec<String> = l.split(' ').map(str::to_string).collect();
            if f[0] == "SESSION" {
                f[4] = "00".repeat(32);
            }
            f.join(" ") + "\n"
        })
        .collect();
    std::fs::write(&keylog, wrong).unwrap();
    let out = replay(&server_key, &server.udp.to_string());
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opened with the keys in"), "{stderr}");
    let wrong: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(wrong["delivered_realtime"], 0, "{wrong}");

    // A seed-style key log of old is refused by name.
    std::fs::write(&keylog, "00".repeat(32)).unwrap();
    let out = replay(&server_key, &server.udp.to_string());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
