//! Configured peers (`[[node.peers]]`) are kept connected: a peer that is down
//! when the daemon starts is connected once it comes up, and a peer killed and
//! restarted is connected again. Real processes over loopback, bounded waits.

mod common;

use std::time::Duration;

use common::{config, free_tcp, free_udp, keygen, scratch, wait_until, Daemon, BIN};

#[test]
fn a_configured_peer_is_redialled_until_it_is_up_and_after_it_restarts() {
    let dir = scratch("ops_redial");
    keygen(&dir, "a.key");
    let b_key = keygen(&dir, "b.key");
    let (a_udp, b_udp) = (free_udp(), free_udp());
    let (a_metrics, b_metrics) = (free_tcp(), free_tcp());
    let peer = format!("peers = [{{ address = \"{b_udp}\", public_key = \"{b_key}\" }}]");
    let a = Daemon::start(
        &dir,
        "a",
        &config(
            a_udp,
            "a.key",
            &peer,
            a_metrics,
            "per_peer = true\n[log]\nlevel = \"info\"",
        ),
        a_metrics,
    );
    let up = |d: &Daemon| {
        d.metric(
            "intentra_configured_peer_up",
            &[("peer", &b_key), ("address", &b_udp.to_string())],
        )
    };
    // B is down: the first attempt times out and the daemon keeps trying.
    wait_until(Duration::from_secs(15), "a redial while B is down", || {
        a.log_text().contains("redialling configured peer")
    });
    assert_eq!(up(&a), 0.0, "{}", a.scrape());

    let b_config = config(b_udp, "b.key", "", b_metrics, "");
    let b = Daemon::start(&dir, "b", &b_config, b_metrics);
    wait_until(Duration::from_secs(15), "A to reach B once B is up", || {
        up(&a) == 1.0
    });
    let attempts = a.metric("intentra_configured_peer_connect_attempts_total", &[]);
    assert!(attempts >= 2.0, "attempts {attempts}");

    // `intentra status --peers` shows B: key, address, state, and rates from two scrapes.
    wait_until(Duration::from_secs(5), "per-peer series", || {
        a.metric("intentra_peer_last_seen_timestamp_seconds", &[]) > 0.0
    });
    let out = std::process::Command::new(BIN)
        .args(["status", "--metrics", &a_metrics.to_string()])
        .args(["--interval", "0.3", "--peers"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("per s (0.3s)"), "{table}");
    let line = table
        .lines()
        .find(|l| l.contains(&b_key))
        .unwrap_or_else(|| panic!("no line for B: {table}"));
    assert!(
        line.contains(&b_udp.to_string()) && line.contains(" up "),
        "{line}"
    );
    assert!(line.contains("s ago"), "{line}");

    // Kill B without a close: A notices by the idle timeout, then redials.
    drop(b);
    wait_until(Duration::from_secs(15), "A to notice B is gone", || {
        up(&a) == 0.0
    });
    let b = Daemon::start(&dir, "b", &b_config, b_metrics);
    wait_until(
        Duration::from_secs(15),
        "A to reach the restarted B",
        || up(&a) == 1.0,
    );
    wait_until(Duration::from_secs(5), "B to count the session", || {
        b.metric("intentra_connections_active", &[]) >= 1.0
    });

    let log = a.stop();
    let lost: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("configured peer lost"))
        .collect();
    assert!(!lost.is_empty(), "{log}");
    for line in &lost {
        assert!(line.contains(" WARN "), "{line}");
        assert!(line.contains(&b_udp.to_string()), "no address: {line}");
        assert!(line.contains("reason="), "no reason: {line}");
    }
    assert!(
        lost.iter().any(|l| l.contains("reason=idle_timeout")),
        "{log}"
    );
    assert!(
        lost.iter().any(|l| l.contains("reason=handshake_timeout")),
        "{log}"
    );
    for line in log
        .lines()
        .filter(|l| l.contains("redialling configured peer"))
    {
        assert!(line.contains(" WARN "), "{line}");
        assert!(line.contains(&b_udp.to_string()), "{line}");
        assert!(line.contains("reason="), "{line}");
    }
}

#[test]
fn a_configured_peer_refused_by_our_allow_list_is_dialled_once_sighup_restores_it() {
    let dir = scratch("ops_redial_allow");
    keygen(&dir, "a.key");
    let b_key = keygen(&dir, "b.key");
    let other = keygen(&dir, "other.key");
    let (a_udp, b_udp) = (free_udp(), free_udp());
    let (a_metrics, b_metrics) = (free_tcp(), free_tcp());
    let _b = Daemon::start(
        &dir,
        "b",
        &config(b_udp, "b.key", "", b_metrics, ""),
        b_metrics,
    );
    // A's own allow-list does not list B yet: every attempt is refused before a packet is sent.
    std::fs::write(dir.join("a-allow"), format!("{other}\n")).unwrap();
    let node = format!(
        "allow_list = \"a-allow\"\npeers = [{{ address = \"{b_udp}\", public_key = \"{b_key}\" }}]"
    );
    // A long back-off: only the reload can make the next attempt come soon.
    let a_config = config(a_udp, "a.key", &node, a_metrics, "")
        .replace("redial_max_ms = 400", "redial_max_ms = 600000")
        .replace("redial_initial_ms = 100", "redial_initial_ms = 30000");
    let a = Daemon::start(&dir, "a", &a_config, a_metrics);
    wait_until(Duration::from_secs(10), "the refused first dial", || {
        a.log_text().contains("cannot dial configured peer")
    });
    assert!(
        a.log_text().contains("reason=not_allowed"),
        "{}",
        a.log_text()
    );
    std::fs::write(dir.join("a-allow"), format!("{other}\n{b_key}\n")).unwrap();
    a.signal(1);
    wait_until(
        Duration::from_secs(10),
        "A to reach B after the reload",
        || a.metric("intentra_configured_peer_up", &[("peer", &b_key)]) == 1.0,
    );
}

#[test]
fn two_daemons_that_list_each_other_hold_one_session_and_heal_when_it_is_lost() {
    let dir = scratch("ops_redial_mutual");
    let a_key = keygen(&dir, "a.key");
    let b_key = keygen(&dir, "b.key");
    let (a_udp, b_udp) = (free_udp(), free_udp());
    let (a_metrics, b_metrics) = (free_tcp(), free_tcp());
    let lists =
        |addr, key: &str| format!("peers = [{{ address = \"{addr}\", public_key = \"{key}\" }}]");
    let extra = "[log]\nlevel = \"info\"";
    let a_config = config(a_udp, "a.key", &lists(b_udp, &b_key), a_metrics, extra);
    let b_config = config(b_udp, "b.key", &lists(a_udp, &a_key), b_metrics, extra);
    let a = Daemon::start(&dir, "a", &a_config, a_metrics);
    let b = Daemon::start(&dir, "b", &b_config, b_metrics);
    let up = |d: &Daemon, key: &str, addr: std::net::SocketAddr| {
        d.metric(
            "intentra_configured_peer_up",
            &[("peer", key), ("address", &addr.to_string())],
        )
    };
    let sessions = |d: &Daemon| d.metric("intentra_connections_active", &[]);
    wait_until(Duration::from_secs(15), "both to see the other up", || {
        up(&a, &b_key, b_udp) == 1.0 && up(&b, &a_key, a_udp) == 1.0
    });
    // Each dialled the other; the daemon whose key is the larger gives up its own dial in
    // favour of the session the smaller key opened: one session per daemon, not two.
    wait_until(Duration::from_secs(10), "one session each", || {
        sessions(&a) == 1.0 && sessions(&b) == 1.0
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!((sessions(&a), sessions(&b)), (1.0, 1.0));
    let (smaller, larger, larger_log) = if a_key < b_key {
        ("a", "b", b.log_text())
    } else {
        ("b", "a", a.log_text())
    };
    assert!(
        larger_log.contains("its session is the pair's one, not dialling"),
        "{larger} should have deferred to {smaller}: {larger_log}"
    );

    // The daemon with the smaller key restarts: the other dials again and they meet again,
    // still with one session each.
    let restart_a = a_key < b_key;
    let (a, b) = if restart_a {
        drop(a);
        std::thread::sleep(Duration::from_millis(200));
        (Daemon::start(&dir, "a", &a_config, a_metrics), b)
    } else {
        drop(b);
        std::thread::sleep(Duration::from_millis(200));
        (a, Daemon::start(&dir, "b", &b_config, b_metrics))
    };
    wait_until(Duration::from_secs(20), "the pair to meet again", || {
        up(&a, &b_key, b_udp) == 1.0 && up(&b, &a_key, a_udp) == 1.0
    });
    wait_until(Duration::from_secs(15), "one session each again", || {
        sessions(&a) == 1.0 && sessions(&b) == 1.0
    });
    drop(a);
    drop(b);
}

/// The worker that dials `[[node.peers]]` is a node of its own: with `--capture` it writes a
/// capture and key log of its own beside the listening worker's, instead of colliding with
/// them (which once stopped a one-worker daemon with peers from starting at all). A second
/// start onto the same files is refused before anything is created, as a configuration error.
#[test]
fn a_daemon_that_dials_its_peers_captures_each_worker_to_files_of_its_own() {
    let dir = scratch("ops_redial_capture");
    keygen(&dir, "a.key");
    let b_key = keygen(&dir, "b.key");
    let (a_udp, b_udp) = (free_udp(), free_udp());
    let (a_metrics, b_metrics) = (free_tcp(), free_tcp());
    let _b = Daemon::start(
        &dir,
        "b",
        &config(b_udp, "b.key", "", b_metrics, ""),
        b_metrics,
    );
    let node = format!(
        "capture = \"cap.pcap\"\npeers = [{{ address = \"{b_udp}\", public_key = \"{b_key}\" }}]"
    );
    let a_config = config(a_udp, "a.key", &node, a_metrics, "");
    let a = Daemon::start(&dir, "a", &a_config, a_metrics);
    wait_until(Duration::from_secs(15), "A to reach B", || {
        a.metric("intentra_configured_peer_up", &[("peer", &b_key)]) == 1.0
    });
    a.stop();
    for name in [
        "cap.pcap.worker0",
        "cap.pcap.worker0.keylog",
        "cap.pcap.worker1",
        "cap.pcap.worker1.keylog",
    ] {
        assert!(dir.join(name).is_file(), "{name} missing");
    }
    assert!(!dir.join("cap.pcap").exists());
    // The dialling worker's session is in its own key log.
    let keylog = std::fs::read_to_string(dir.join("cap.pcap.worker1.keylog")).unwrap();
    assert!(
        keylog.lines().any(|l| l.starts_with("SESSION ")),
        "{keylog}"
    );

    // Restarted onto the same files: exit 2, one line naming the file, nothing touched.
    let before = std::fs::read(dir.join("cap.pcap.worker1")).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.join("a.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("node.capture") && stderr.contains("cap.pcap.worker0"));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(dir.join("cap.pcap.worker1")).unwrap(), before);
}
