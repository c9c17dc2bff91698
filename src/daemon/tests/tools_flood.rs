//! `intentra-flood` end to end, briefly: it starts a server, runs its legitimate peers and
//! a few short attacks, reports every phase, and never leaves its server running (neither
//! on a normal exit nor when it is interrupted). Behaviour only: no figure is asserted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLOOD: &str = env!("CARGO_BIN_EXE_intentra-flood");
const SERVER: &str = env!("CARGO_BIN_EXE_intentra");

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

/// Whether `pid` is still an `intentra` process (a reused pid would be another program).
fn server_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() == "intentra")
        .unwrap_or(false)
}

fn wait_gone(pid: u32) {
    let end = Instant::now() + Duration::from_secs(5);
    while server_running(pid) {
        assert!(
            Instant::now() < end,
            "server {pid} still running after the tool exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_short_suite_reports_every_phase_and_stops_its_server() {
    let dir = scratch("flood_suite");
    // Raw-socket attacks need root; the others run anywhere.
    let attacks = if is_root() {
        "init-churn,junk,garbage,idle-tcp"
    } else {
        "garbage,idle-tcp"
    };
    let out = Command::new(FLOOD)
        .args([
            "--json",
            "--peers",
            "2",
            "--rate",
            "50",
            "--duration",
            "2",
            "--settle",
            "0.5",
            "--init-rate",
            "300",
            "--junk-rate",
            "100",
            "--garbage-rate",
            "2000",
            "--idle-conns",
            "3",
            "--attacks",
            attacks,
            "--server-bin",
            SERVER,
            "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "intentra-flood failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let rows = report["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().map(|r| r["phase"].as_str().unwrap()).collect();
    let mut expected = vec!["baseline"];
    expected.extend(attacks.split(','));
    assert_eq!(names, expected);
    // The legitimate peers exchanged messages through the server in the baseline.
    assert!(rows[0]["received"].as_u64().unwrap() > 0, "{report}");
    for row in rows {
        for field in [
            "server_cpu",
            "delivery",
            "p99_us",
            "rss_before",
            "rss_after",
            "rekeys",
            "drops",
            "server",
            "sessions_closed",
            "missed",
        ] {
            assert!(!row[field].is_null(), "{field} missing in {row}");
        }
    }
    for row in &rows[1..] {
        assert!(row["attack"]["packets"].as_u64().unwrap() > 0, "{row}");
    }
    // The garbage was seen and dropped by the server, by reason.
    let garbage = rows.iter().find(|r| r["phase"] == "garbage").unwrap();
    assert!(
        !garbage["drops"].as_object().unwrap().is_empty(),
        "{garbage}"
    );
    wait_gone(report["server_pid"].as_u64().unwrap() as u32);
}

#[test]
fn an_interrupted_suite_stops_its_server() {
    let dir = scratch("flood_interrupt");
    let mut child = Command::new(FLOOD)
        .args([
            "--peers",
            "2",
            "--rate",
            "20",
            "--duration",
            "60",
            "--attacks",
            "garbage",
            "--garbage-rate",
            "1000",
            "--server-bin",
            SERVER,
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let pid: u32 = first
        .split("server pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {first:?}"));
    assert!(server_running(pid));
    // Interrupt during the baseline phase.
    let _ = lines.next();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("intentra-flood did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_gone(pid);
}
