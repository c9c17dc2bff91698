//! Runs the built `intentra-bench` for one second in both modes (raw UDP and intentra), and with
//! a producer thread through an `intentra::Node` with bundling off and on, and checks that its
//! JSON report carries every documented key with sane values; plus the `csv` and `plot`
//! subcommands on that output. No timing assertions: only counts, ratios and orderings.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_intentra-bench");

fn run_bench(extra: &[&str]) -> Value {
    run_bench_with(
        &[
            "--peers",
            "4",
            "--rate",
            "200",
            "--size",
            "128",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--json",
        ],
        extra,
    )
}

fn run_bench_with(base: &[&str], extra: &[&str]) -> Value {
    let output = Command::new(BIN)
        .args(base)
        .args(extra)
        .output()
        .expect("intentra-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "intentra-bench {extra:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

fn num(report: &Value, key: &str) -> f64 {
    report
        .get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("key {key:?} missing or not a number in {report}"))
}

fn check_report(report: &Value, mode: &str) {
    assert_eq!(report["mode"], mode);
    for key in ["io", "io_used"] {
        assert!(report[key].is_string(), "{key} missing in {report}");
    }
    assert_eq!(num(report, "peers"), 4.0);
    assert_eq!(num(report, "rate_hz"), 200.0);
    assert_eq!(num(report, "size"), 128.0);
    let duration = num(report, "duration_s");
    assert!((0.9..=1.1).contains(&duration), "duration_s {duration}");
    let sent = num(report, "sent");
    let received = num(report, "received");
    assert!(received > 0.0, "nothing received: {report}");
    assert!(received <= sent, "received {received} > sent {sent}");
    assert!(num(report, "offered_pps") > 0.0);
    assert!(num(report, "received_pps") > 0.0);
    let ratio = num(report, "delivery_ratio");
    assert!(ratio > 0.0 && ratio <= 1.0, "delivery_ratio {ratio}");
    let latency = &report["latency_us"];
    let (p50, p90, p99, p999, max) = (
        num(latency, "p50"),
        num(latency, "p90"),
        num(latency, "p99"),
        num(latency, "p999"),
        num(latency, "max"),
    );
    assert!(p50 > 0.0, "p50 {p50}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "latency percentiles out of order: {latency}"
    );
    assert!(report["drops"].is_object(), "drops missing in {report}");
    assert!(num(report, "receiver_cpu_s") >= 0.0);
    check_messages_and_datagrams(report);
}

/// The message and datagram figures: messages are what `received` counts, each datagram
/// delivered at least one of them, and CPU per message is at most CPU per datagram.
fn check_messages_and_datagrams(report: &Value) {
    let msgs = num(report, "received_msgs");
    let datagrams = num(report, "received_datagrams");
    assert_eq!(msgs, num(report, "received"), "received_msgs is received");
    assert!(datagrams > 0.0, "no datagram counted: {report}");
    assert!(msgs >= datagrams, "messages {msgs} < datagrams {datagrams}");
    assert!(num(report, "received_msgs_per_s") >= num(report, "received_dps"));
    assert!(num(report, "msgs_per_datagram") >= 1.0);
    let (per_msg, per_datagram) = (
        num(report, "receiver_cpu_ns_per_msg"),
        num(report, "receiver_cpu_ns_per_datagram"),
    );
    assert!(
        per_msg <= per_datagram,
        "CPU per message {per_msg} > per datagram {per_datagram}"
    );
    assert!(num(report, "handshake_s") >= 0.0);
    assert!(num(report, "max_rss_kib") >= 0.0);
}

#[test]
fn producer_thread_runs_bundling_off_and_on() {
    let pair = run_bench_with(
        &[
            "--producer-thread",
            "--bundling",
            "both",
            "--size",
            "64",
            "--rate",
            "20000",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--json",
        ],
        &[],
    );
    let order = pair["order"].as_str().expect("order");
    assert!(order == "off,on" || order == "on,off", "order {order}");
    for (key, bundling) in [("off", false), ("on", true)] {
        let report = &pair[key];
        assert!(report.is_object(), "report {key} missing in {pair}");
        assert_eq!(report["mode"], "intentra");
        assert_eq!(report["sender"], "producer-thread");
        assert_eq!(report["bundling"], bundling);
        assert!(report["sender_io_used"].is_string());
        assert_eq!(num(report, "peers_up"), 1.0);
        assert_eq!(num(report, "size"), 64.0);
        let (sent, received) = (num(report, "sent"), num(report, "received"));
        assert!(received > 0.0, "nothing received: {report}");
        assert!(received <= sent, "received {received} > sent {sent}");
        let latency = &report["latency_us"];
        assert!(num(latency, "p50") <= num(latency, "p99"));
        check_messages_and_datagrams(report);
        // The three threads' costs: the producer's, the node loop's and the receiver's.
        for key in [
            "sender_loop_cpu_s",
            "sender_loop_utilization",
            "sender_loop_cpu_ns_per_msg",
            "generator_cpu_ns_per_msg",
        ] {
            assert!(num(report, key) > 0.0, "{key} in {report}");
        }
    }
    // Without bundling every datagram is one message.
    assert_eq!(
        num(&pair["off"], "received_msgs"),
        num(&pair["off"], "received_datagrams")
    );
    let ratio = &pair["ratio"];
    for key in [
        "received_msgs_per_s",
        "received_dps",
        "p50_latency",
        "p99_latency",
        "receiver_cpu_ns_per_msg",
        "receiver_cpu_ns_per_datagram",
    ] {
        assert!(num(ratio, key) > 0.0, "ratio {key} in {ratio}");
    }
}

#[test]
fn raw_and_intentra_runs_report_every_key_and_plot() {
    let raw = run_bench(&["--raw"]);
    check_report(&raw, "raw");

    let intentra = run_bench(&[]);
    check_report(&intentra, "intentra");
    // The peers' generator has no node loop to account for.
    assert_eq!(num(&intentra, "sender_loop_cpu_s"), 0.0);
    assert!(num(&intentra, "generator_cpu_ns_per_msg") > 0.0);
    assert_eq!(num(&intentra, "peers_up"), 4.0, "every peer handshakes");
    let drops = intentra["drops"].as_object().expect("drops object");
    for label in [
        "rate_limit",
        "replay",
        "crypto",
        "unknown_session",
        "malformed",
    ] {
        assert!(drops.contains_key(label), "drop reason {label} missing");
    }
    // Nothing on a quiet loopback should be rejected by the endpoint.
    let rejected: u64 = drops.values().filter_map(Value::as_u64).sum();
    assert_eq!(rejected, 0, "endpoint dropped packets: {drops:?}");

    // The sweep's path: JSON lines -> CSV -> SVG.
    let dir = tempfile::tempdir().expect("temp dir");
    let jsonl = dir.path().join("points.jsonl");
    std::fs::write(&jsonl, format!("{raw}\n{intentra}\n")).expect("write jsonl");
    let csv = Command::new(BIN)
        .args(["csv", "--jsonl"])
        .arg(&jsonl)
        .output()
        .expect("csv runs");
    assert!(csv.status.success());
    let csv_text = String::from_utf8_lossy(&csv.stdout).to_string();
    assert_eq!(
        csv_text.lines().count(),
        3,
        "header and two rows: {csv_text}"
    );
    assert!(csv_text
        .lines()
        .next()
        .is_some_and(|h| h.contains("received_dps")));
    assert!(csv_text
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("raw,")));
    let csv_path = dir.path().join("points.csv");
    std::fs::write(&csv_path, &csv_text).expect("write csv");
    let svg_path = dir.path().join("points.svg");
    let plot = Command::new(BIN)
        .args(["plot", "--csv"])
        .arg(&csv_path)
        .arg("--out")
        .arg(&svg_path)
        .output()
        .expect("plot runs");
    assert!(
        plot.status.success(),
        "plot failed: {}",
        String::from_utf8_lossy(&plot.stderr)
    );
    let svg = std::fs::read_to_string(&svg_path).expect("svg written");
    assert!(svg.contains("<svg") && svg.contains("intentra") && svg.contains("raw"));
}

#[test]
fn bad_arguments_are_refused_without_running() {
    let output = Command::new(BIN)
        .args(["--size", "4", "--json"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--size"));
    for (args, flag) in [
        (&["--peers", "100001", "--json"][..], "--peers"),
        (&["--rate", "0", "--json"][..], "--producer-thread"),
    ] {
        let output = Command::new(BIN).args(args).output().expect("runs");
        assert!(!output.status.success(), "{args:?} accepted");
        assert!(String::from_utf8_lossy(&output.stderr).contains(flag));
    }
}
