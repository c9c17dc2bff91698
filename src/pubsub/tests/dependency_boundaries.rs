//! The pubsub layer sits above the transport and needs nothing from it, nor any I/O,
//! clock or randomness crate: its dependency graph is checked.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn tree() -> BTreeSet<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "tree",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            "intentra-pubsub",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn pubsub_reaches_no_transport_io_clock_or_randomness_crate() {
    let found = tree();
    assert!(found.contains("sha2"));
    let forbidden = [
        "intentra-proto",
        "intentra-udp",
        "intentra",
        "libc",
        "nix",
        "io-uring",
        "quanta",
        "tokio",
        "mio",
        "rand_core",
        "rand_chacha",
        "getrandom",
        "tracing",
    ];
    let present: Vec<_> = forbidden.iter().filter(|c| found.contains(**c)).collect();
    assert!(present.is_empty(), "intentra-pubsub depends on {present:?}");
}
