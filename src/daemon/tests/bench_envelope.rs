//! Runs `scripts/envelope.sh` on one tiny point with the test build of `intentra-bench` and
//! checks it writes the JSON lines, the CSV (intentra beside raw) and the SVG; plus `--help`,
//! bad options and `bash -n`. No timing assertions.

use std::path::PathBuf;
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/envelope.sh")
}

#[test]
fn script_parses_and_explains_itself() {
    let parse = Command::new("bash")
        .arg("-n")
        .arg(script())
        .output()
        .expect("bash -n");
    assert!(
        parse.status.success(),
        "{}",
        String::from_utf8_lossy(&parse.stderr)
    );
    let help = Command::new("bash")
        .arg(script())
        .arg("--help")
        .output()
        .expect("help");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--quick"));
    let bad = Command::new("bash")
        .arg(script())
        .arg("--bogus")
        .output()
        .expect("bad");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn one_point_sweep_writes_csv_and_svg() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new("bash")
        .arg(script())
        .args(["--points", "3x100", "--duration", "0.5", "--warmup", "0.1"])
        .args(["--date", "test"])
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_intentra-bench"))
        .arg("--out-dir")
        .arg(dir.path())
        .output()
        .expect("envelope.sh runs");
    assert!(
        output.status.success(),
        "envelope.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = std::fs::read_to_string(dir.path().join("envelope-test.csv")).expect("csv");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "header, raw and intentra: {csv}");
    assert!(rows[0].starts_with("mode,"));
    assert!(rows[1].starts_with("raw,") && rows[2].starts_with("intentra,"));
    let jsonl = std::fs::read_to_string(dir.path().join("envelope-test.jsonl")).expect("jsonl");
    assert_eq!(jsonl.lines().count(), 1);
    let svg = std::fs::read_to_string(dir.path().join("envelope-test.svg")).expect("svg");
    assert!(svg.contains("<svg") && svg.contains("Delivery ratio"));
}
