//! The Prometheus exposition of two workers' snapshots, read back with a text-format parser.

use std::collections::{BTreeMap, BTreeSet};

use intentra::metrics::{encode, BucketCounts, PeerSnapshot, WorkerSnapshot};
use intentra::proto::PublicKey;
use intentra::proto::{CloseReason, DropReason};
use prometheus_parse::{Scrape, Value};

fn key(byte: u8) -> PublicKey {
    PublicKey([byte; 32])
}

/// Two workers with distinct, known numbers in every family we check.
fn sample() -> Vec<WorkerSnapshot> {
    let mut w0 = WorkerSnapshot::new(0);
    w0.stats.packets_received = 1000;
    w0.stats.packets_sent = 900;
    w0.stats.messages_delivered = 800;
    w0.stats.bytes_received = 128_000;
    w0.stats.handshakes_completed = 3;
    w0.stats.cookie_replies_sent = 4;
    w0.stats.rekeys = 1;
    w0.stats.reliable_retransmits = 6;
    w0.stats.send_would_block = 2;
    w0.stats.strike_events = 7;
    w0.stats.handshakes_in_flight = 5;
    w0.stats.sessions_active = 10;
    w0.stats.reorder_buffer_bytes = 256;
    for _ in 0..11 {
        w0.stats.record_drop(DropReason::RateLimit);
    }
    for _ in 0..2 {
        w0.stats.record_drop(DropReason::Crypto);
    }
    w0.stats.record_drop(DropReason::Replay);
    w0.stats.record_close(CloseReason::IdleTimeout);
    w0.batch_sizes.observe(1.0);
    w0.batch_sizes.observe(64.0);
    w0.handshake_durations.observe(0.002);
    w0.peers.push(PeerSnapshot {
        public_key: key(0xaa),
        addr: "127.0.0.1:7001".parse().unwrap(),
        rtt_us: Some(1500),
        packets_received: 40,
        packets_sent: 41,
        drops: 1,
    });

    let mut w1 = WorkerSnapshot::new(1);
    w1.stats.packets_received = 500;
    w1.stats.packets_sent = 400;
    w1.stats.handshakes_in_flight = 1;
    w1.stats.sessions_active = 4;
    for _ in 0..3 {
        w1.stats.record_drop(DropReason::RateLimit);
    }
    w1.stats.record_drop(DropReason::Crypto);
    w1.stats.record_close(CloseReason::IdleTimeout);
    w1.stats.record_close(CloseReason::Strikes);
    w1.batch_sizes.observe(3.0);
    w1.peers.push(PeerSnapshot {
        public_key: key(0xbb),
        addr: "127.0.0.1:7002".parse().unwrap(),
        rtt_us: None,
        packets_received: 5,
        packets_sent: 6,
        drops: 0,
    });
    vec![w0, w1]
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

fn value(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Sum of a sample name's values over all series matching `labels`.
fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert!(!matching.is_empty(), "no sample {name} {labels:?}");
    matching.iter().map(|s| value(&s.value)).sum()
}

/// `# TYPE` families of the exposition.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|rest| {
            let mut parts = rest.split_whitespace();
            (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The family a sample name belongs to under OpenMetrics suffix rules.
fn family_of<'a>(families: &'a BTreeMap<String, String>, sample: &str) -> Option<&'a str> {
    families.iter().find_map(|(family, kind)| {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        suffixes
            .iter()
            .any(|suffix| sample == format!("{family}{suffix}"))
            .then_some(family.as_str())
    })
}

#[test]
fn exact_names_labels_and_values() {
    let text = encode(&sample(), false);
    let scrape = parse(&text);
    let w0 = [("worker", "0")];
    let w1 = [("worker", "1")];

    assert_eq!(sum(&scrape, "intentra_packets_received_total", &w0), 1000.0);
    assert_eq!(sum(&scrape, "intentra_packets_received_total", &w1), 500.0);
    assert_eq!(sum(&scrape, "intentra_packets_received_total", &[]), 1500.0);
    assert_eq!(
        sum(&scrape, "intentra_packets_dropped_rate_limit", &[]),
        14.0
    );
    assert_eq!(
        sum(&scrape, "intentra_packets_dropped_rate_limit", &w1),
        3.0
    );
    assert_eq!(sum(&scrape, "intentra_packets_dropped_crypto", &[]), 3.0);
    assert_eq!(sum(&scrape, "intentra_replay_rejections_total", &w0), 1.0);
    assert_eq!(sum(&scrape, "intentra_handshake_in_flight", &[]), 6.0);
    assert_eq!(sum(&scrape, "intentra_connections_active", &[]), 14.0);
    assert_eq!(sum(&scrape, "intentra_strike_events_total", &[]), 7.0);
    assert_eq!(sum(&scrape, "intentra_reorder_buffer_bytes", &w0), 256.0);
    assert_eq!(
        sum(
            &scrape,
            "intentra_connection_closes_total",
            &[("reason", "idle_timeout")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &scrape,
            "intentra_connection_closes_total",
            &[("reason", "strikes"), ("worker", "1")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &scrape,
            "intentra_packets_dropped_total",
            &[("reason", "rate_limit")]
        ),
        14.0
    );
    assert_eq!(sum(&scrape, "intentra_packets_dropped_total", &[]), 18.0);
    assert_eq!(sum(&scrape, "intentra_packets_sent_total", &[]), 1300.0);
    assert_eq!(
        sum(&scrape, "intentra_messages_delivered_total", &[]),
        800.0
    );
    assert_eq!(
        sum(&scrape, "intentra_bytes_received_total", &[]),
        128_000.0
    );
    assert_eq!(
        sum(&scrape, "intentra_handshakes_completed_total", &[]),
        3.0
    );
    assert_eq!(sum(&scrape, "intentra_cookie_replies_sent_total", &[]), 4.0);
    assert_eq!(sum(&scrape, "intentra_rekeys_total", &[]), 1.0);
    assert_eq!(
        sum(&scrape, "intentra_reliable_retransmits_total", &[]),
        6.0
    );
    assert_eq!(sum(&scrape, "intentra_send_would_block_total", &[]), 2.0);

    // Every drop and close reason has a series on every worker.
    for reason in DropReason::ALL {
        for worker in ["0", "1"] {
            sum(
                &scrape,
                "intentra_packets_dropped_total",
                &[("reason", reason.label()), ("worker", worker)],
            );
        }
    }
    for reason in CloseReason::ALL {
        sum(
            &scrape,
            "intentra_connection_closes_total",
            &[("reason", reason.label())],
        );
    }

    // No suffix was appended to the names that must not have one.
    assert!(!text.contains("intentra_packets_dropped_rate_limit_total"));
    assert!(!text.contains("intentra_packets_dropped_crypto_total"));
    assert!(!text.contains("_total_total"));
    // Per-peer series are off.
    assert!(!text.contains("intentra_peer_"));
}

#[test]
fn histograms_are_cumulative_with_sum_and_count() {
    let text = encode(&sample(), false);
    let scrape = parse(&text);
    let batch = scrape
        .samples
        .iter()
        .find(|s| s.metric == "intentra_receive_batch_size" && s.labels.get("worker") == Some("0"))
        .expect("batch histogram for worker 0");
    let Value::Histogram(buckets) = &batch.value else {
        panic!("not a histogram: {:?}", batch.value);
    };
    let le = |bound: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == bound)
            .map(|b| b.count)
            .unwrap()
    };
    assert_eq!(le(1.0), 1.0);
    assert_eq!(le(32.0), 1.0);
    assert_eq!(le(64.0), 2.0);
    assert_eq!(le(f64::INFINITY), 2.0);
    assert_eq!(sum(&scrape, "intentra_receive_batch_size_count", &[]), 3.0);
    assert_eq!(sum(&scrape, "intentra_receive_batch_size_sum", &[]), 68.0);
    assert_eq!(
        sum(
            &scrape,
            "intentra_handshake_duration_seconds_count",
            &[("worker", "0")]
        ),
        1.0
    );
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "intentra_handshake_duration_seconds"));
}

#[test]
fn every_family_has_help_and_type_and_every_sample_a_family() {
    let text = encode(&sample(), true);
    let families = families(&text);
    let helps: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    assert!(families.len() >= 25, "{families:?}");
    for family in families.keys() {
        assert!(helps.contains(family.as_str()), "no HELP for {family}");
    }
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            family_of(&families, name).is_some(),
            "sample {name} belongs to no declared family"
        );
    }
    assert_eq!(families["intentra_packets_dropped_rate_limit"], "unknown");
    assert_eq!(families["intentra_packets_received"], "counter");
    assert_eq!(families["intentra_connections_active"], "gauge");
    assert_eq!(families["intentra_handshake_duration_seconds"], "histogram");
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn per_peer_series_are_labelled_by_hex_key() {
    let text = encode(&sample(), true);
    let scrape = parse(&text);
    let aa = "aa".repeat(32);
    let bb = "bb".repeat(32);
    assert_eq!(
        sum(
            &scrape,
            "intentra_peer_packets_received_total",
            &[("peer", &aa)]
        ),
        40.0
    );
    assert_eq!(
        sum(
            &scrape,
            "intentra_peer_packets_sent_total",
            &[("peer", &bb)]
        ),
        6.0
    );
    assert_eq!(
        sum(&scrape, "intentra_peer_drops_total", &[("peer", &aa)]),
        1.0
    );
    assert_eq!(
        sum(&scrape, "intentra_peer_rtt_seconds", &[("peer", &aa)]),
        0.0015
    );
    // A peer without an RTT estimate has no RTT series rather than a fake zero.
    assert!(!scrape
        .samples
        .iter()
        .any(|s| s.metric == "intentra_peer_rtt_seconds" && s.labels.get("peer") == Some(&bb)));
}

#[test]
fn empty_hub_still_declares_every_family() {
    let text = encode(&[], false);
    let families = families(&text);
    assert!(families.contains_key("intentra_packets_received"));
    assert!(families.contains_key("intentra_packets_dropped_crypto"));
    assert!(!text.lines().any(|l| !l.starts_with('#') && !l.is_empty()));
}

#[test]
fn bucket_counts_accept_custom_bounds() {
    static BOUNDS: [f64; 3] = [0.5, 1.0, 2.0];
    let mut h = BucketCounts::new(&BOUNDS).unwrap();
    h.observe(0.7);
    h.observe(3.0);
    let mut w = WorkerSnapshot::new(0);
    w.handshake_durations = h;
    let text = encode(&[w], false);
    assert!(
        text.contains("intentra_handshake_duration_seconds_bucket{le=\"1.0\",worker=\"0\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("intentra_handshake_duration_seconds_bucket{le=\"+Inf\",worker=\"0\"} 2"),
        "{text}"
    );
}
