//! Checks `scripts/tune-host.sh` without letting it change anything: syntax, the
//! read-only report on this host and on an empty sysctl tree (as in a locked-down
//! container), `--help` and bad options. `--apply` runs only against a scratch sysctl tree.

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

/// Fails with the script's stderr unless it exited 0.
fn assert_succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn script_parses() {
    let output = Command::new("bash")
        .arg("-n")
        .arg(script())
        .output()
        .expect("run bash -n");
    assert_succeeded(&output);
}

#[test]
fn report_mentions_every_setting_and_changes_nothing() {
    let output = run(&[], None);
    assert_succeeded(&output);
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

/// A scratch sysctl tree holding `values`, removed on drop.
struct ScratchSysctls(PathBuf);

impl ScratchSysctls {
    fn new(tag: &str, values: &[(&str, &str)]) -> ScratchSysctls {
        let root =
            std::env::temp_dir().join(format!("intentra-sysctl-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, value) in values {
            let path = root.join(name.replace('.', "/"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{value}\n")).unwrap();
        }
        ScratchSysctls(root)
    }

    fn get(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name.replace('.', "/")))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for ScratchSysctls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const UNTUNED: [(&str, &str); 8] = [
    ("net.core.rmem_max", "212992"),
    // Above the recommendation: --apply must leave it.
    ("net.core.wmem_max", "33554432"),
    ("net.core.rmem_default", "212992"),
    ("net.core.wmem_default", "212992"),
    ("net.core.netdev_max_backlog", "1000"),
    ("net.core.busy_poll", "0"),
    ("net.core.busy_read", "0"),
    ("net.ipv4.udp_rmem_min", "4096"),
];

/// `--apply` raises what is below its recommendation, never lowers anything, and leaves busy
/// polling alone unless asked: on a host with few cores it costs more CPU than it saves.
#[test]
fn apply_raises_buffers_and_leaves_busy_polling_unless_asked() {
    let tree = ScratchSysctls::new("apply", &UNTUNED);
    let root = tree.0.as_path();
    let output = run(&["--apply"], Some(root));
    assert_succeeded(&output);
    assert_eq!(tree.get("net.core.rmem_max"), "16777216");
    assert_eq!(tree.get("net.core.wmem_max"), "33554432");
    assert_eq!(tree.get("net.core.netdev_max_backlog"), "16384");
    assert_eq!(tree.get("net.ipv4.udp_rmem_min"), "16384");
    assert_eq!(tree.get("net.core.busy_poll"), "0");
    assert_eq!(tree.get("net.core.busy_read"), "0");

    let output = run(&["--apply", "--busy-poll"], Some(root));
    assert_succeeded(&output);
    assert_eq!(tree.get("net.core.busy_poll"), "50");
    assert_eq!(tree.get("net.core.busy_read"), "50");
    assert_eq!(run(&["--busy-poll"], Some(root)).status.code(), Some(2));
}

#[test]
fn persist_writes_busy_polling_only_when_asked() {
    let tree = ScratchSysctls::new("persist", &UNTUNED);
    let file = tree.0.join("90-intentra.conf");
    let persist = |args: &[&str]| {
        let output = Command::new("bash")
            .arg(script())
            .args(args)
            .env("INTENTRA_SYSCTL_ROOT", &tree.0)
            .env("INTENTRA_PERSIST_FILE", &file)
            .output()
            .expect("run bash");
        assert_succeeded(&output);
        std::fs::read_to_string(&file).unwrap()
    };
    let written = persist(&["--apply", "--persist"]);
    assert!(
        written.contains("net.core.rmem_max = 16777216"),
        "{written}"
    );
    assert!(
        written.contains("net.core.wmem_max = 33554432"),
        "{written}"
    );
    assert!(!written.contains("busy_poll"), "{written}");
    let written = persist(&["--apply", "--persist", "--busy-poll"]);
    assert!(written.contains("net.core.busy_poll = 50"), "{written}");
    assert!(written.contains("net.core.busy_read = 50"), "{written}");
}
