//! Configuration parsing, validation, printing, and the key and allow-list files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use intentra::proto::{Keypair, SecretKey};
use intentra_daemon::config::{
    read_allow_list, read_key_file, write_key_file, Config, ConfigError, IdleMode, IoDriver,
    LogFormat,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A fresh directory under the target dir (no tempfile crate needed).
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ops_config_{name}_{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

const FULL: &str = r#"
[node]
bind = ["127.0.0.1:7700", "[::1]:7700"]
workers = 2
key_file = "/etc/intentra/key"
allow_list = "/etc/intentra/allow"
capture = "/var/lib/intentra/cap.pcap"
peers = [
  { address = "127.0.0.2:7700", public_key = "2222222222222222222222222222222222222222222222222222222222222222" },
]

[io]
driver = "mmsg"
idle = "spin"
batch_size = 32
buffers = 1024
buffer_size = 4096
recv_buffer_bytes = 8388608
send_buffer_bytes = 8388608
gso = false
gro = false
busy_poll_us = 50
pin_cores = [2, 3]

[limits]
rate_pps = 2000
rate_burst = 200
handshakes_in_flight = 50
handshakes_per_ip = 2
always_cookie = true
strike_threshold = 5
strike_decay_ms = 5000
max_peers = 64
reliable_queue_bytes = 65536

[timers]
keepalive_ms = 500
idle_timeout_ms = 5000
handshake_timeout_ms = 5000
handshake_retry_ms = 100
rekey_after_s = 60
reject_after_s = 90

[metrics]
listen = "127.0.0.1:9999"
per_peer = true
publish_interval_ms = 100

[log]
level = "debug,intentra::proto=trace"
format = "json"
"#;

#[test]
fn every_option_parses_and_round_trips() {
    let config = Config::from_toml_str(FULL).unwrap();
    config.validate().unwrap();
    assert_eq!(config.node.workers, 2);
    assert_eq!(config.node.bind.len(), 2);
    assert_eq!(config.node.peers.len(), 1);
    assert_eq!(config.io.driver, IoDriver::Mmsg);
    assert_eq!(config.io.idle, IdleMode::Spin);
    assert_eq!(config.io.pin_cores, Some(vec![2, 3]));
    assert!(config.limits.always_cookie);
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9999".parse().unwrap())
    );
    assert_eq!(config.log.format, LogFormat::Json);

    let printed = config.to_toml_string();
    assert_eq!(Config::from_toml_str(&printed).unwrap(), config);
    let defaults = Config::default().to_toml_string();
    assert_eq!(Config::from_toml_str(&defaults).unwrap(), Config::default());
    // Every default option is printed, so the output documents the effective values.
    for key in [
        "rate_pps",
        "keepalive_ms",
        "publish_interval_ms",
        "gso",
        "listen",
    ] {
        assert!(defaults.contains(key), "{key} missing from:\n{defaults}");
    }
}

#[test]
fn metrics_off_round_trips() {
    let config = Config::from_toml_str("[metrics]\nlisten = \"off\"\n").unwrap();
    assert_eq!(config.metrics.listen, None);
    let again = Config::from_toml_str(&config.to_toml_string()).unwrap();
    assert_eq!(again.metrics.listen, None);
}

fn parse_err(text: &str) -> String {
    let err = Config::from_toml_str(text).unwrap_err();
    let message = err.to_string();
    assert!(!message.contains('\n'), "not one line: {message}");
    message
}

#[test]
fn unknown_keys_and_bad_types_name_the_key() {
    let m = parse_err("[limits]\nrate_ppss = 5\n");
    assert!(m.contains("limits.rate_ppss"), "{m}");
    let m = parse_err("[node]\nworkers = 1\n\n[bogus]\nx = 1\n");
    assert!(m.contains("bogus"), "{m}");
    assert!(m.starts_with("line 4:"), "{m}");
    let m = parse_err("[io]\ndriver = \"fast\"\n");
    assert!(m.contains("io.driver"), "{m}");
    let m = parse_err("[node]\npeers = [{ address = \"127.0.0.1:1\", public_key = \"00\" }]\n");
    assert!(m.contains("node.peers[0].public_key"), "{m}");
    let m = parse_err("[node]\npeers = [{ address = \"x\", public_key = \"00\", extra = 1 }]\n");
    assert!(m.contains("node.peers[0]"), "{m}");
    let m = parse_err("[metrics]\nlisten = \"localhost\"\n");
    assert!(m.contains("metrics.listen"), "{m}");
}

fn invalid(text: &str) -> String {
    let config = Config::from_toml_str(text).unwrap();
    let err = config.validate().unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn range_errors_name_the_key_and_value() {
    assert_eq!(
        invalid("[limits]\nrate_pps = 0\n"),
        "limits.rate_pps must be between 1 and 10000000, got 0"
    );
    assert!(invalid("[node]\nworkers = 0\n").starts_with("node.workers "));
    assert!(invalid("[node]\nbind = []\n").starts_with("node.bind "));
    assert!(invalid("[node]\nbind = [\"127.0.0.1:1\", \"127.0.0.1:1\"]\n").contains("twice"));
    assert!(invalid("[io]\nbatch_size = 5000\n").starts_with("io.batch_size "));
    assert!(invalid("[io]\nbatch_size = 64\nbuffers = 32\n").starts_with("io.buffers "));
    assert!(invalid("[io]\npin_cores = [0, 1]\n").starts_with("io.pin_cores "));
    assert!(invalid("[limits]\nhandshakes_per_ip = 101\n").starts_with("limits.handshakes_per_ip "));
    assert!(invalid("[timers]\nidle_timeout_ms = 1000\n").starts_with("timers.idle_timeout_ms "));
    assert!(invalid("[timers]\nreject_after_s = 120\n").starts_with("timers.reject_after_s "));
    assert!(
        invalid("[metrics]\npublish_interval_ms = 0\n").starts_with("metrics.publish_interval_ms ")
    );
    assert!(invalid("[log]\nlevel = \"info,[[[\"\n").starts_with("log.level "));
}

#[test]
fn loaded_files_are_named_in_errors() {
    let dir = scratch("named");
    let path = dir.join("bad.toml");
    fs::write(&path, "[limits]\nrate_pps = 0\n").unwrap();
    let config = Config::load(&path).unwrap();
    let m = config.validate().unwrap_err().to_string();
    assert!(
        m.starts_with(&format!("{}: limits.rate_pps", path.display())),
        "{m}"
    );

    fs::write(&path, "[limits]\n\nnope = 1\n").unwrap();
    let m = Config::load(&path).unwrap_err().to_string();
    assert!(
        m.starts_with(&format!("{}:3: limits.nope", path.display())),
        "{m}"
    );

    let missing = dir.join("missing.toml");
    let m = Config::load(&missing).unwrap_err().to_string();
    assert!(m.contains("missing.toml"), "{m}");
}

fn keypair() -> Keypair {
    Keypair::generate(&mut ChaCha20Rng::seed_from_u64(7))
}

#[test]
fn key_file_round_trip_mode_and_refusals() {
    let dir = scratch("keys");
    let path = dir.join("node.key");
    let pair = keypair();
    write_key_file(&path, &pair.secret, false).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(read_key_file(&path).map(|p| p.public).unwrap(), pair.public);

    // No overwrite without force; the original key survives.
    let other = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(8));
    let err = write_key_file(&path, &other.secret, false).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(read_key_file(&path).map(|p| p.public).unwrap(), pair.public);
    write_key_file(&path, &other.secret, true).unwrap();
    assert_eq!(
        read_key_file(&path).map(|p| p.public).unwrap(),
        other.public
    );
    // No temporary files left behind.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

    // Readable by others: refused, naming the file and the mode.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = read_key_file(&path)
        .map(|p| p.public)
        .unwrap_err()
        .to_string();
    assert!(err.contains("node.key") && err.contains("0644"), "{err}");

    // Garbage and the all-zero key: refused, naming the file, never echoing content.
    let bad = dir.join("bad.key");
    fs::write(&bad, "not-a-key-deadbeef\n").unwrap();
    fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
    let err = read_key_file(&bad)
        .map(|p| p.public)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.key") && !err.contains("deadbeef"),
        "{err}"
    );
    fs::write(&bad, "00".repeat(32)).unwrap();
    let err = read_key_file(&bad)
        .map(|p| p.public)
        .unwrap_err()
        .to_string();
    assert!(err.contains("all-zero"), "{err}");

    // A directory or a FIFO is refused (and the FIFO does not block the open).
    let err = read_key_file(&dir)
        .map(|p| p.public)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
    let fifo = dir.join("fifo.key");
    if std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let err = read_key_file(&fifo)
            .map(|p| p.public)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    let err = read_key_file(&dir.join("absent.key"))
        .map(|p| p.public)
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.key"), "{err}");
    let _ = SecretKey::from_hex(&"11".repeat(32)).unwrap();
}

#[test]
fn allow_list_file_errors_name_file_and_line() {
    let dir = scratch("allow");
    let path = dir.join("allow");
    let pair = keypair();
    fs::write(&path, format!("# peers\n\n{}  # node a\n", pair.public)).unwrap();
    assert_eq!(read_allow_list(&path).unwrap(), vec![pair.public]);
    fs::write(&path, format!("{}\nxyz\n", pair.public)).unwrap();
    let err = read_allow_list(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2:", path.display())), "{err}");
}

#[test]
fn load_identity_requires_a_key_file() {
    let dir = scratch("identity");
    let mut config = Config::default();
    let err = config.load_identity().unwrap_err().to_string();
    assert!(err.contains("node.key_file"), "{err}");
    let key = dir.join("k");
    write_key_file(&key, &keypair().secret, false).unwrap();
    config.node.key_file = Some(key);
    let identity = config.load_identity().unwrap();
    assert_eq!(identity.keypair.public, keypair().public);
    assert!(identity.allow_list.is_none());
    assert!(!format!("{identity:?}").contains(&keypair().secret.to_hex()));
}

mod shipped {
    use super::*;
    use std::process::Command;

    fn example() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/intentra.example.toml")
    }

    fn check_config(path: &std::path::Path, cwd: &std::path::Path) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_intentra"))
            .current_dir(cwd)
            .arg("check-config")
            .arg(path)
            .output()
            .unwrap()
    }

    /// The annotated example passes check-config once installed next to its allow-list.
    #[test]
    fn the_example_configuration_passes_check_config() {
        let dir = scratch("example");
        let installed = dir.join("intentra.toml");
        fs::copy(example(), &installed).unwrap();
        fs::write(dir.join("allow-list"), format!("{}\n", "22".repeat(32))).unwrap();
        // Started from elsewhere: the relative allow_list still resolves next to the file.
        let out = check_config(&installed, std::path::Path::new("/"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(printed.contains("[[node.peers]]"), "{printed}");
        assert!(
            printed.contains(&format!(
                "allow_list = {:?}",
                dir.join("allow-list").display().to_string()
            )),
            "{printed}"
        );
        // Every option is printed; the unset ones commented out.
        assert!(printed.contains("# key_file = "), "{printed}");
        assert!(printed.contains("# busy_poll_us = "), "{printed}");
        assert!(printed.contains("redial_max_ms = 60000"), "{printed}");
        let again = Config::from_toml_str(&printed).unwrap();
        again.validate().unwrap();
        // Without the allow-list next to it, the error names the resolved file.
        fs::remove_file(dir.join("allow-list")).unwrap();
        let out = check_config(&installed, std::path::Path::new("/"));
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr)
            .contains(&dir.join("allow-list").display().to_string()));
    }
}

#[test]
fn relative_paths_resolve_against_the_config_files_directory() {
    let dir = scratch("relative");
    let path = dir.join("c.toml");
    fs::write(
        &path,
        "[node]\nkey_file = \"keys/node.key\"\nallow_list = \"allow\"\ncapture = \"/abs/cap.pcap\"\n",
    )
    .unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.node.key_file, Some(dir.join("keys/node.key")));
    assert_eq!(config.node.allow_list, Some(dir.join("allow")));
    assert_eq!(config.node.capture, Some(PathBuf::from("/abs/cap.pcap")));
    // Strings parsed without a file stay as written.
    let inline = Config::from_toml_str("[node]\nkey_file = \"k\"\n").unwrap();
    assert_eq!(inline.node.key_file, Some(PathBuf::from("k")));
}

#[test]
fn an_empty_allow_list_is_refused_unless_allowed() {
    let dir = scratch("empty_allow");
    let key = dir.join("k");
    write_key_file(&key, &keypair().secret, true).unwrap();
    fs::write(dir.join("allow"), "# everyone removed\n\n").unwrap();
    let path = dir.join("c.toml");
    fs::write(&path, "[node]\nkey_file = \"k\"\nallow_list = \"allow\"\n").unwrap();
    let config = Config::load(&path).unwrap();
    let m = config.load_identity().unwrap_err().to_string();
    assert!(m.contains("node.allow_list"), "{m}");
    assert!(m.contains("no keys"), "{m}");
    assert!(m.contains("allow_list_empty_ok"), "{m}");
    assert!(!m.contains('\n'));
    fs::write(
        &path,
        "[node]\nkey_file = \"k\"\nallow_list = \"allow\"\nallow_list_empty_ok = true\n",
    )
    .unwrap();
    let identity = Config::load(&path).unwrap().load_identity().unwrap();
    assert_eq!(identity.allow_list.map(|l| l.len()), Some(0));
}

#[test]
fn log_filters_are_checked_strictly() {
    for good in [
        "info",
        "WARN",
        "off",
        "info,intentra::proto=debug",
        "intentra_daemon=trace",
    ] {
        Config::from_toml_str(&format!("[log]\nlevel = {good:?}\n"))
            .unwrap()
            .validate()
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "loud",
        "",
        "info,chatty",
        "intentra=loud",
        "=info",
        "info,[span]=x",
    ] {
        let m = invalid(&format!("[log]\nlevel = {bad:?}\n"));
        assert!(m.starts_with("log.level "), "{bad}: {m}");
    }
}

#[test]
fn errors_stay_on_one_line_whatever_the_key_contains() {
    for text in [
        "[limits]\n\"rate\\npps\" = 1\n",
        "[limits]\n\"rate\\u001b[31mpps\" = 1\n",
        "\"a\\r\\nb\" = 1\n",
    ] {
        let m = parse_err(text);
        assert!(!m.contains('\x1b'), "raw escape in: {m:?}");
        assert!(!m.contains('\r'), "raw CR in: {m:?}");
        assert!(
            m.contains("\\n") || m.contains("\\u{1b}"),
            "not escaped: {m:?}"
        );
    }
    let m = invalid("[log]\nlevel = \"info\\n\\u001b[2J\"\n");
    assert!(!m.contains('\n') && !m.contains('\x1b'), "{m:?}");
}

#[test]
fn per_peer_and_buffer_memory_is_bounded_to_fit_a_host() {
    let m = invalid("[limits]\nreliable_queue_bytes = 1073741824\n");
    assert!(
        m.starts_with(&format!(
            "limits.reliable_queue_bytes must be between 1 and {}",
            intentra::proto::MAX_QUEUE_BYTES
        )),
        "{m}"
    );
    // Each within its own range, together too much.
    let m = invalid("[limits]\nreliable_queue_bytes = 90368\nmax_peers = 100000\n");
    assert!(
        m.starts_with("limits.reliable_queue_bytes x limits.max_peers"),
        "{m}"
    );
    let m = invalid("[io]\nbuffers = 1048576\nbuffer_size = 65535\n");
    assert!(m.starts_with("io.buffers x io.buffer_size"), "{m}");
    let m = invalid("[timers]\nredial_initial_ms = 5000\nredial_max_ms = 1000\n");
    assert!(m.starts_with("timers.redial_max_ms "), "{m}");
}
