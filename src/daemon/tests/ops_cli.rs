//! The built `intentra` binary: keygen/pubkey, check-config, status, help and exit codes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use intentra::metrics::{MetricsHub, WorkerSnapshot};
use intentra::proto::DropReason;
use intentra_daemon::metrics_http::spawn_metrics_server;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_intentra"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ops_cli_{name}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Exit code 2 and exactly one stderr line that contains `needle`.
fn assert_usage_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn keygen_writes_private_file_and_pubkey_reproduces_it() {
    let dir = scratch("keygen");
    let key = dir.join("node.key");
    let out = run(&["keygen", "--out", s(&key)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = stdout(&out).trim().to_owned();
    assert_eq!(public.len(), 64);
    assert!(public.bytes().all(|b| b.is_ascii_hexdigit()));
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The secret is in the file, not on stdout.
    let secret = fs::read_to_string(&key).unwrap();
    assert!(!stdout(&out).contains(secret.trim()));

    let out = run(&["pubkey", "--key", s(&key)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), public);

    // Refuses to overwrite; the key is unchanged.
    let out = run(&["keygen", "--out", s(&key)]);
    assert_usage_error(&out, "node.key");
    assert_eq!(fs::read_to_string(&key).unwrap(), secret);
    // --force replaces it.
    let out = run(&["keygen", "--out", s(&key), "--force"]);
    assert!(out.status.success());
    assert_ne!(stdout(&out).trim(), public);
}

#[test]
fn pubkey_refuses_bad_key_files() {
    let dir = scratch("pubkey");
    let out = run(&["pubkey", "--key", s(&dir.join("absent"))]);
    assert_usage_error(&out, "absent");

    let open = dir.join("open.key");
    fs::write(&open, "11".repeat(32)).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    assert_usage_error(&run(&["pubkey", "--key", s(&open)]), "open.key");
}

#[test]
fn check_config_prints_good_and_rejects_bad_files() {
    let dir = scratch("check");
    let good = dir.join("good.toml");
    fs::write(&good, "[node]\nworkers = 2\n[limits]\nrate_pps = 500\n").unwrap();
    let out = run(&["check-config", s(&good)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("rate_pps = 500"), "{printed}");
    assert!(printed.contains("workers = 2"), "{printed}");
    assert!(
        printed.contains("keepalive_ms = 1000"),
        "defaults printed too: {printed}"
    );
    // Overrides apply on top of the file.
    let out = run(&[
        "check-config",
        s(&good),
        "--workers",
        "4",
        "--metrics",
        "off",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("workers = 4"));
    assert!(stdout(&out).contains("listen = \"off\""));

    let unknown = dir.join("unknown.toml");
    fs::write(&unknown, "[limits]\nrate_ppss = 5\n").unwrap();
    assert_usage_error(&run(&["check-config", s(&unknown)]), "limits.rate_ppss");

    let range = dir.join("range.toml");
    fs::write(&range, "[limits]\nrate_pps = 0\n").unwrap();
    let out = run(&["check-config", s(&range)]);
    assert_usage_error(
        &out,
        "limits.rate_pps must be between 1 and 10000000, got 0",
    );
    assert!(stderr(&out).contains("range.toml"));

    assert_usage_error(
        &run(&["check-config", s(&dir.join("missing.toml"))]),
        "missing.toml",
    );

    let badkey = dir.join("bad.key");
    fs::write(&badkey, "zz\n").unwrap();
    fs::set_permissions(&badkey, fs::Permissions::from_mode(0o600)).unwrap();
    let with_key = dir.join("with_key.toml");
    fs::write(&with_key, format!("[node]\nkey_file = {:?}\n", s(&badkey))).unwrap();
    assert_usage_error(&run(&["check-config", s(&with_key)]), "bad.key");

    let allow = dir.join("allow");
    fs::write(&allow, "# nobody\nnot-hex\n").unwrap();
    let out = run(&["check-config", s(&good), "--allow-list", s(&allow)]);
    assert_usage_error(&out, &format!("{}:2", s(&allow)));
}

#[test]
fn serve_without_a_key_or_on_a_port_in_use_fails_with_one_line() {
    let dir = scratch("serve");
    assert_usage_error(&run(&["serve", "--metrics", "off"]), "node.key_file");
    let key = dir.join("k");
    assert!(run(&["keygen", "--out", s(&key)]).status.success());
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&[
        "serve",
        "--key",
        s(&key),
        "--metrics",
        "off",
        "--bind",
        &addr,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains(" INFO ") && !l.contains(" WARN "))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(&addr),
        "the error names the address: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

#[test]
fn status_prints_a_table_from_a_live_endpoint() {
    let hub = MetricsHub::new(1);
    let mut w = WorkerSnapshot::new(0);
    w.stats.sessions_active = 3;
    w.stats.packets_received = 77;
    w.stats.record_drop(DropReason::BadMac);
    hub.publish(w);
    let server = spawn_metrics_server("127.0.0.1:0".parse().unwrap(), hub, false).unwrap();
    let addr = server.local_addr().to_string();
    let out = run(&["status", "--metrics", &addr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("sessions active"), "{table}");
    assert!(table.contains("77"), "{table}");
    assert!(table.contains("bad_mac"), "{table}");
    assert!(table.contains("per s"), "rates by default: {table}");

    // Two scrapes 0.2 s apart, with one line per peer.
    let out = run(&["status", "--metrics", &addr, "--interval", "0.2", "--peers"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("per s (0.2s)"), "{table}");
    assert!(table.contains("public key"), "{table}");
    let out = run(&["status", "--metrics", &addr, "--interval", "0"]);
    assert!(!stdout(&out).contains("per s"), "one scrape, no rates");
    assert_eq!(
        run(&["status", "--metrics", &addr, "--interval", "-1"])
            .status
            .code(),
        Some(2)
    );
    server.shutdown();

    // Nothing listening: runtime error, one line, naming the address.
    let out = run(&["status", "--metrics", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).contains(&addr));
}

#[test]
fn help_works_for_every_subcommand_and_documents_exit_codes() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(help.contains("Exit codes"), "{help}");
    for sub in [
        "keygen",
        "pubkey",
        "check-config",
        "status",
        "serve",
        "connect",
        "demo",
    ] {
        assert!(help.contains(sub), "{sub} not listed");
        let out = run(&[sub, "--help"]);
        assert!(
            out.status.success(),
            "{sub} --help failed: {}",
            stderr(&out)
        );
        assert!(stdout(&out).contains("Usage:"), "{sub}");
    }
    let serve_help = stdout(&run(&["serve", "--help"]));
    for flag in [
        "--config",
        "--bind",
        "--workers",
        "--io",
        "--idle",
        "--metrics",
        "--key",
        "--allow-list",
        "--log-level",
        "--log-format",
    ] {
        assert!(
            serve_help.contains(flag),
            "{flag} missing from serve --help"
        );
    }
    let connect_help = stdout(&run(&["connect", "--help"]));
    for flag in [
        "--peer",
        "--peer-key",
        "--rate",
        "--mode",
        "--size",
        "--count",
    ] {
        assert!(
            connect_help.contains(flag),
            "{flag} missing from connect --help"
        );
    }
}

#[test]
fn bad_flags_exit_2() {
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(run(&["serve", "--workers", "many"]).status.code(), Some(2));
    assert_eq!(
        run(&["connect", "--peer", "127.0.0.1:1", "--peer-key", "xyz"])
            .status
            .code(),
        Some(2)
    );
}

/// `intentra demo | head -1` and `intentra check-config FILE | head -1`: the reader closes
/// the pipe after its line, and the command ends quietly with exit 0 (it panicked on the
/// failed print, with a backtrace on the user's terminal).
#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    for args in [&["demo"][..], &["check-config", "/dev/null"][..]] {
        let mut child = bin()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?}");
        // The reader is dropped here: every later write finds the pipe closed.
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
