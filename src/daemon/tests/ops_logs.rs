//! What `intentra serve` writes to stderr when stderr is a file: no colour
//! codes, values in Display form, a `worker` field on every per-worker line,
//! refused handshakes and lost peers at WARN, allow-list reload failures.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config, free_tcp, free_udp, keygen, scratch, wait_until, Daemon, BIN};

/// Per-worker messages: each must carry `worker=`.
const PER_WORKER: &[&str] = &[
    "listening",
    "session up",
    "peer lost",
    "session closed",
    "configured peer lost",
    "dialling configured peer",
    "redialling configured peer",
    "handshakes refused",
    "closed every session",
];

#[test]
fn serve_logs_plain_display_values_with_worker_fields_and_warns_on_refusals_and_losses() {
    let dir = scratch("ops_logs");
    let a_key = keygen(&dir, "a.key");
    let b_key = keygen(&dir, "b.key");
    let (a_udp, b_udp) = (free_udp(), free_udp());
    let (a_metrics, b_metrics) = (free_tcp(), free_tcp());
    // B accepts A only, and has two workers.
    std::fs::write(dir.join("allow"), format!("{a_key}\n")).unwrap();
    let b = Daemon::start(
        &dir,
        "b",
        &config(
            b_udp,
            "b.key",
            "workers = 2\nallow_list = \"allow\"",
            b_metrics,
            "",
        ),
        b_metrics,
    );
    let peer = format!("peers = [{{ address = \"{b_udp}\", public_key = \"{b_key}\" }}]");
    let a = Daemon::start(
        &dir,
        "a",
        &config(a_udp, "a.key", &peer, a_metrics, ""),
        a_metrics,
    );
    wait_until(Duration::from_secs(15), "A up with B", || {
        a.metric("intentra_configured_peer_up", &[]) == 1.0
    });

    // A stranger's handshake is refused (not on B's allow-list).
    keygen(&dir, "stranger.key");
    let mut stranger = Command::new(BIN)
        .args([
            "connect",
            "--peer",
            &b_udp.to_string(),
            "--peer-key",
            &b_key,
        ])
        .args(["--count", "1", "--key"])
        .arg(dir.join("stranger.key"))
        .args(["--metrics", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "B to log the refusal", || {
        b.log_text().contains("handshakes refused")
    });
    let end = Instant::now() + Duration::from_secs(5);
    while stranger.try_wait().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stranger.kill();
    let _ = stranger.wait();

    // An emptied allow-list is refused on reload; the old one stays and it is counted.
    std::fs::write(dir.join("allow"), "# nobody\n").unwrap();
    b.signal(1);
    wait_until(Duration::from_secs(10), "the reload failure", || {
        b.metric("intentra_allow_list_reload_failures_total", &[]) == 1.0
    });
    assert!(b.log_text().contains("allow-list reload failed"));
    // Restored: the reload succeeds and prints the key count in Display form.
    std::fs::write(dir.join("allow"), format!("{a_key}\n")).unwrap();
    b.signal(1);
    wait_until(Duration::from_secs(10), "the reload", || {
        b.log_text().contains("allow-list reloaded")
    });

    // A dies without a close: B loses it by the idle timeout.
    drop(a);
    wait_until(Duration::from_secs(10), "B to lose A", || {
        b.log_text().contains("peer lost")
    });
    let log = b.stop();

    assert!(!log.contains("\x1b["), "colour codes in a file:\n{log}");
    assert!(!log.contains("Some("), "Debug formatting:\n{log}");
    assert!(!log.contains("reason=\""), "quoted (Debug) strings:\n{log}");
    assert!(log.contains("keys=1"), "{log}");
    for line in log.lines() {
        if PER_WORKER.iter().any(|m| line.contains(m)) {
            assert!(line.contains("worker="), "no worker field: {line}");
        }
    }
    let refused = log
        .lines()
        .find(|l| l.contains("handshakes refused"))
        .unwrap();
    assert!(refused.contains(" WARN "), "{refused}");
    assert!(refused.contains("reason=not_allowed"), "{refused}");
    // With the source it claimed (the stranger connects from loopback).
    assert!(refused.contains("source=127.0.0.1:"), "{refused}");
    let lost = log.lines().find(|l| l.contains("peer lost")).unwrap();
    assert!(lost.contains(" WARN "), "{lost}");
    assert!(lost.contains("reason=idle_timeout"), "{lost}");
    assert!(lost.contains("addr=127.0.0.1:"), "no address: {lost}");
}

#[test]
fn a_level_that_is_not_a_level_is_refused_before_start() {
    let dir = scratch("ops_logs_level");
    keygen(&dir, "k");
    let path = dir.join("loud.toml");
    std::fs::write(
        &path,
        "[node]\nkey_file = \"k\"\n[metrics]\nlisten = \"off\"\n[log]\nlevel = \"loud\"\n",
    )
    .unwrap();
    for command in ["check-config", "serve"] {
        let mut cmd = Command::new(BIN);
        if command == "serve" {
            cmd.args(["serve", "--config"]);
        } else {
            cmd.arg("check-config");
        }
        let out = cmd.arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("log.level"), "{err}");
        assert!(err.contains("loud"), "{err}");
    }
}
