//! scripts/intentra-alerts.yml and scripts/intentra.service: structure, metric
//! names that a running daemon exports, help texts, and the external checkers
//! (promtool check/test rules, systemd-analyze verify) when they are installed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use intentra::metrics::{encode, PeerSnapshot, WorkerSnapshot};
use intentra::proto::PublicKey;
use yaml_rust2::{Yaml, YamlLoader};

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join("scripts")
        .join(name)
}

/// Every sample name `encode` writes, with per-peer series and histograms included.
fn emitted_names() -> BTreeSet<String> {
    let mut w = WorkerSnapshot::new(0);
    w.peers.push(PeerSnapshot {
        public_key: PublicKey([7; 32]),
        addr: "127.0.0.1:1".parse().unwrap(),
        rtt_us: Some(10),
        packets_received: 1,
        packets_sent: 1,
        drops: 0,
    });
    encode(&[w], true)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// Identifiers in a PromQL expression that name intentra metrics.
fn referenced_metrics(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut current = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
        } else {
            if current.starts_with("intentra_") {
                names.insert(current.clone());
            }
            current.clear();
        }
    }
    names
}

fn load_rules() -> Yaml {
    let text = std::fs::read_to_string(script("intentra-alerts.yml")).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

/// Sample names in a scrape.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// Every sample name two running daemons export: B listens, A keeps B as a
/// configured peer with per-peer series on, so every family has samples.
fn names_from_running_daemons() -> BTreeSet<String> {
    use common::{config, free_tcp, free_udp, keygen, scratch, wait_until, Daemon};
    use std::time::Duration;
    let dir = scratch("ops_alerts_daemons");
    keygen(&dir, "a.key");
    let b_key = keygen(&dir, "b.key");
    let (a_udp, b_udp) = (free_udp(), free_udp());
    let (a_metrics, b_metrics) = (free_tcp(), free_tcp());
    let b = Daemon::start(
        &dir,
        "b",
        &config(b_udp, "b.key", "", b_metrics, ""),
        b_metrics,
    );
    let peer = format!("peers = [{{ address = \"{b_udp}\", public_key = \"{b_key}\" }}]");
    let a = Daemon::start(
        &dir,
        "a",
        &config(a_udp, "a.key", &peer, a_metrics, "per_peer = true"),
        a_metrics,
    );
    wait_until(Duration::from_secs(15), "A up with B", || {
        a.metric("intentra_configured_peer_up", &[]) == 1.0
            && a.metric("intentra_peer_last_seen_timestamp_seconds", &[]) > 0.0
    });
    let mut names = sample_names(&a.scrape());
    names.extend(sample_names(&b.scrape()));
    names
}

#[test]
fn alert_rules_are_well_formed_and_use_metrics_a_running_daemon_exports() {
    let doc = load_rules();
    let emitted = names_from_running_daemons();
    for name in [
        "intentra_packets_dropped_rate_limit",
        "intentra_packets_dropped_crypto",
    ] {
        assert!(emitted.contains(name), "legacy {name} is still exported");
    }
    let groups = doc["groups"].as_vec().expect("groups is a list");
    assert!(!groups.is_empty());
    let mut alerts = BTreeSet::new();
    for group in groups {
        assert!(group["name"].as_str().is_some(), "group without a name");
        let rules = group["rules"].as_vec().expect("rules is a list");
        for rule in rules {
            let name = rule["alert"].as_str().expect("alert name").to_owned();
            assert!(alerts.insert(name.clone()), "duplicate alert {name}");
            let expr = rule["expr"].as_str().expect("expr is a string");
            let duration = rule["for"].as_str().expect("for is a duration string");
            assert!(
                duration.ends_with('s') || duration.ends_with('m'),
                "{name}: for = {duration}"
            );
            let severity = rule["labels"]["severity"].as_str().expect("severity label");
            assert!(
                ["info", "warning", "critical"].contains(&severity),
                "{name}"
            );
            for key in ["summary", "description"] {
                let text = rule["annotations"][key].as_str().unwrap_or("");
                assert!(!text.trim().is_empty(), "{name}: no {key} annotation");
            }
            let used = referenced_metrics(expr);
            // Target health is Prometheus's own `up` series for the intentra job.
            let target_health = expr.contains("up{job=\"intentra\"}");
            assert!(
                !used.is_empty() || target_health,
                "{name} uses no intentra metric: {expr}"
            );
            for metric in used {
                assert!(
                    emitted.contains(&metric),
                    "{name} uses {metric}, which a running daemon does not export"
                );
                assert!(
                    !["intentra_packets_dropped_rate_limit", "intentra_packets_dropped_crypto"]
                        .contains(&metric.as_str()),
                    "{name} uses the legacy untyped {metric}; use intentra_packets_dropped_total{{reason=...}}"
                );
            }
        }
    }
    for expected in [
        "IntentraTargetDown",
        "IntentraTargetAbsent",
        "IntentraNoSessions",
        "IntentraConfiguredPeerDown",
        "IntentraAllowListReloadFailed",
        "IntentraHandshakesRefused",
        "IntentraRateLimitDrops",
        "IntentraCryptoDrops",
        "IntentraHandshakesInFlightHigh",
        "IntentraStrikesRising",
        "IntentraSessionsCollapsing",
    ] {
        assert!(alerts.contains(expected), "{expected} missing");
    }
}

#[test]
fn help_texts_say_what_is_counted() {
    let text = encode(&[WorkerSnapshot::new(0)], false);
    let help = |family: &str| -> String {
        let prefix = format!("# HELP {family} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no help for {family}"))
            .to_owned()
    };
    // Replays are rejected by the window check before the AEAD opens anything.
    let replay = help("intentra_replay_rejections");
    assert!(
        !replay.to_lowercase().contains("authenticated packets"),
        "{replay}"
    );
    assert!(replay.contains("before authentication"), "{replay}");
    for legacy in [
        "intentra_packets_dropped_rate_limit",
        "intentra_packets_dropped_crypto",
    ] {
        assert!(
            help(legacy).contains("intentra_packets_dropped_total"),
            "{legacy}"
        );
    }
}

#[test]
fn the_name_check_can_fail() {
    let emitted = emitted_names();
    assert!(emitted.contains("intentra_packets_dropped_rate_limit"));
    assert!(!emitted.contains("intentra_packets_dropped_rate_limit_total"));
    let used = referenced_metrics("increase(intentra_nope_total[1m]) > rate(intentra_x[5m])");
    assert_eq!(
        used,
        BTreeSet::from(["intentra_nope_total".to_owned(), "intentra_x".to_owned()])
    );
}

/// Runs a checker if it is installed; `None` means it is not.
fn run_if_present(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("{program} not installed; skipping its check");
            None
        }
        Err(err) => panic!("cannot run {program}: {err}"),
    }
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass_when_installed() {
    let rules = script("intentra-alerts.yml");
    let tests = script("intentra-alerts.test.yml");
    for args in [
        ["check", "rules", rules.to_str().unwrap()],
        ["test", "rules", tests.to_str().unwrap()],
    ] {
        let Some(out) = run_if_present("promtool", &args) else {
            eprintln!(
                "SKIPPED: promtool not installed (apt-get install -y prometheus provides it); \
                 the rules and their unit tests were not checked"
            );
            return;
        };
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `[Section]` -> key -> values (a key may repeat).
fn parse_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            sections.entry(current.clone()).or_default();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value line");
        assert!(!current.is_empty(), "{key} outside a section");
        sections
            .get_mut(&current)
            .unwrap()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn systemd_unit_is_hardened() {
    let text = std::fs::read_to_string(script("intentra.service")).unwrap();
    let unit = parse_unit(&text);
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service.get(key).unwrap_or_else(|| panic!("{key} missing"));
        values.last().unwrap()
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("StateDirectory", "intentra"),
        ("ConfigurationDirectory", "intentra"),
        ("RestartPreventExitStatus", "2"),
    ] {
        assert_eq!(one(key), value, "[Service] {key}");
    }
    assert!(one("LimitMEMLOCK").ends_with('M'));
    // The path README's Deploying section installs the binary to.
    assert!(one("ExecStart").starts_with("/usr/local/bin/intentra serve "));
    let readme = std::fs::read_to_string(script("../README.md")).unwrap();
    assert!(
        readme.contains("/usr/local/bin/intentra"),
        "README installs elsewhere"
    );
    assert!(unit["Install"].contains_key("WantedBy"));
}

#[test]
fn systemd_analyze_verifies_the_unit_when_installed() {
    // verify insists that ExecStart exists: point it at the binary just built.
    let text = std::fs::read_to_string(script("intentra.service")).unwrap();
    let text = text.replace("/usr/local/bin/intentra", env!("CARGO_BIN_EXE_intentra"));
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ops_unit_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("intentra.service");
    std::fs::write(&unit, text).unwrap();
    let Some(out) = run_if_present("systemd-analyze", &["verify", unit.to_str().unwrap()]) else {
        eprintln!("SKIPPED: systemd-analyze not installed; the unit was not verified");
        return;
    };
    {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze verify: {stderr}");
        // verify exits 0 on unknown keys, but prints them against the file.
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("intentra.service"))
            .collect();
        assert!(complaints.is_empty(), "{complaints:#?}");
    }
}
