//! Runs the daemon's fuzz bodies (configuration and capture reader) over their committed
//! seeds in `fuzz/seeds/<target>/`, so that `cargo test` on stable replays them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use intentra_daemon::fuzz::{fuzz_config, fuzz_pcap};

fn run(target: &str, body: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut names = Vec::new();
    let mut failed = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if catch_unwind(AssertUnwindSafe(|| body(&bytes))).is_err() {
            failed.push(name.clone());
        }
        names.push(name);
    }
    assert!(!names.is_empty(), "no seeds in {}", dir.display());
    assert!(
        failed.is_empty(),
        "fuzz/seeds/{target}: these seeds fail: {failed:?}"
    );
}

#[test]
fn config_seeds() {
    run("config", fuzz_config);
}

#[test]
fn pcap_seeds() {
    run("pcap", fuzz_pcap);
}

#[test]
fn empty_inputs_are_fine() {
    for body in [fuzz_config, fuzz_pcap] {
        body(&[]);
        body(b"\n");
        body(&[0xFF; 3]);
    }
}
