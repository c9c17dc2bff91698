//! Runs every fuzz body of the core over its committed seeds (`fuzz/seeds/<target>/`), so
//! that `cargo test` on stable replays each target's seeds and regression inputs without
//! cargo-fuzz. A failing seed names its file; replay it with
//! `cargo +nightly fuzz run <target> fuzz/seeds/<target>/<file>`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use intentra_proto::internals::{fuzz_pair, fuzz_reliable, fuzz_responder, fuzz_wire};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            (name, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// Runs `body` over every seed of `target` but those in `skip`, and names every seed that
/// fails rather than stopping at the first.
fn run(target: &str, skip: &[&str], body: fn(&[u8])) {
    let mut failed = Vec::new();
    for (name, bytes) in seeds(target) {
        if skip.contains(&name.as_str()) {
            continue;
        }
        if catch_unwind(AssertUnwindSafe(|| body(&bytes))).is_err() {
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz/seeds/{target}: these seeds fail: {failed:?}"
    );
}

#[test]
fn wire_seeds() {
    run("wire", &[], fuzz_wire);
}

#[test]
fn responder_seeds() {
    run("responder", &[], fuzz_responder);
}

#[test]
fn reliable_seeds() {
    run("reliable", &[], fuzz_reliable);
}

#[test]
fn pair_seeds() {
    run("pair", &[], fuzz_pair);
}

#[test]
fn empty_inputs_are_fine() {
    for body in [fuzz_wire, fuzz_responder, fuzz_reliable, fuzz_pair] {
        body(&[]);
        body(&[0]);
        body(&[0xFF; 3]);
    }
}
