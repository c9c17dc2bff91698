//! Checks `scripts/tune-host.sh` without letting it change anything: syntax, the
//! read-only report on this host and on an empty sysctl tree (as in a locked-down
//! container), `--help` and bad options. `--apply` is never run here.

use std::path::PathBuf;
use std::process::{Command, Output};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/tune-host.sh")
}

fn run(args: &[&str], sysctl_root: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args);
    if let Some(root) = sysctl_root {
        cmd.env("INTENTRA_SYSCTL_ROOT", root);
    }
    cmd.output().expect("run bash")
}

#[test]
fn script_parses() {
    let output = Command::new("bash")
        .arg("-n")
        .arg(script())
        .output()
        .expect("run bash -n");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn report_mentions_every_setting_and_changes_nothing() {
    let output = run(&[], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    for setting in [
        "net.core.rmem_max",
        "net.core.wmem_max",
        "net.core.rmem_default",
        "net.core.wmem_default",
        "net.core.netdev_max_backlog",
        "net.core.busy_poll",
        "net.core.busy_read",
        "net.ipv4.udp_mem",
        "net.ipv4.udp_rmem_min",
        "kernel.io_uring_disabled",
        "memlock",
        "governor",
        "IRQ affinity",
        "transparent huge pages",
    ] {
        assert!(
            report.contains(setting),
            "{setting} missing from:\n{report}"
        );
    }
    assert!(
        !report.contains("\nset "),
        "report-only run applied something"
    );
}

#[test]
fn missing_sysctls_are_unavailable_not_errors() {
    let empty = std::env::temp_dir().join(format!("intentra-sysctl-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let output = run(&[], Some(&empty));
    let _ = std::fs::remove_dir(&empty);
    assert!(output.status.success());
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = String::from_utf8_lossy(&output.stdout);
    let rmem = report
        .lines()
        .find(|l| l.starts_with("net.core.rmem_max"))
        .expect("rmem_max line");
    assert!(rmem.contains("unavailable"), "{rmem}");
}

#[test]
fn help_and_bad_options() {
    let help = run(&["--help"], None);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--apply"));
    assert_eq!(run(&["--bogus"], None).status.code(), Some(2));
    assert_eq!(run(&["--persist"], None).status.code(), Some(2));
}
