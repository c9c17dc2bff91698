//! The crate boundaries are the architecture, so the compiler's dependency graph is checked:
//! the protocol core reaches no I/O crate, and what applications embed reaches none of the
//! daemon's dependencies.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The crate names (no versions) in `cargo tree -e normal` of `package` with `args`.
fn tree(package: &str, args: &[&str]) -> BTreeSet<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args(["tree", "-e", "normal", "--prefix", "none", "-p", package])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_none_of(package: &str, found: &BTreeSet<String>, forbidden: &[&str]) {
    let present: Vec<_> = forbidden.iter().filter(|c| found.contains(**c)).collect();
    assert!(present.is_empty(), "{package} depends on {present:?}");
}

const IO_CRATES: &[&str] = &[
    "intentra-udp",
    "intentra",
    "libc",
    "nix",
    "io-uring",
    "quanta",
    "tokio",
    "mio",
    "socket2",
    "tracing",
];

const DAEMON_CRATES: &[&str] = &[
    "intentra-daemon",
    "clap",
    "toml",
    "serde_path_to_error",
    "tracing-subscriber",
    "plotters",
    "indicatif",
    "hdrhistogram",
    "httparse",
    "signal-hook",
    "pcap-file",
    "serde_json",
];

#[test]
fn the_core_reaches_no_io_crate_and_no_os_randomness_of_its_own() {
    // ring draws on the OS for its own key generation, which the core never calls: apart
    // from what ring brings, nothing in the core's graph touches the OS.
    let default = tree("intentra-proto", &["--prune", "ring"]);
    assert!(default.contains("snow"));
    assert_none_of("intentra-proto", &default, IO_CRATES);
    assert_none_of("intentra-proto", &default, &["getrandom", "aes-gcm"]);
    assert_none_of("intentra-proto", &default, DAEMON_CRATES);

    let rustcrypto = tree(
        "intentra-proto",
        &["--no-default-features", "--features", "rustcrypto"],
    );
    assert!(rustcrypto.contains("aes-gcm"));
    assert_none_of("intentra-proto", &rustcrypto, IO_CRATES);
    assert_none_of("intentra-proto", &rustcrypto, &["getrandom", "ring"]);
}

#[test]
fn exactly_one_aead_backend_is_compiled() {
    let default = tree("intentra-proto", &[]);
    assert!(default.contains("ring") && !default.contains("aes-gcm"));
    let rustcrypto = tree(
        "intentra-proto",
        &["--no-default-features", "--features", "rustcrypto"],
    );
    assert!(rustcrypto.contains("aes-gcm") && !rustcrypto.contains("ring"));
}

#[test]
fn the_drivers_reach_no_protocol_or_daemon_crate() {
    let udp = tree("intentra-udp", &[]);
    assert!(udp.contains("libc"));
    assert_none_of(
        "intentra-udp",
        &udp,
        &["intentra-proto", "intentra", "snow", "ring", "aes-gcm"],
    );
    assert_none_of("intentra-udp", &udp, DAEMON_CRATES);
}

#[test]
fn the_embeddable_crate_reaches_none_of_the_daemons_dependencies() {
    let plain = tree("intentra", &[]);
    assert!(plain.contains("intentra-proto") && plain.contains("intentra-udp"));
    assert_none_of("intentra", &plain, DAEMON_CRATES);
    assert_none_of("intentra", &plain, &["prometheus-client"]);
    // The optional Prometheus encoder adds only itself and its own dependencies.
    let with_prometheus = tree("intentra", &["--features", "prometheus"]);
    assert!(with_prometheus.contains("prometheus-client"));
    assert_none_of("intentra", &with_prometheus, DAEMON_CRATES);
}
