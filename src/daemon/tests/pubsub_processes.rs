//! Hub mode and the pubsub tools as real processes over loopback: a hub relays from a
//! `publish` process to two `subscribe` processes (exact messages and sequence numbers,
//! both modes); a refused topic makes `subscribe` and `publish` exit non-zero with one
//! line; `presence` shows members appear and disappear (one is killed); two linked hubs
//! deliver a publish from hub A's member to hub B's subscriber once. Every wait is bounded.

mod pubsub_support;

use std::time::Duration;

use pubsub_support::*;

const T: Duration = Duration::from_secs(20);

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn make(&self, name: &str) -> (std::path::PathBuf, String) {
        keygen(self.dir.path(), name)
    }
}

fn one_hub(
    keys: &Keys,
    rules: Vec<(&str, &str, &str)>,
    detection_ms: u64,
) -> (Proc, String, String) {
    let (key_file, key) = keys.make("hub.key");
    let bind = format!("127.0.0.1:{}", free_udp());
    let toml = hub_toml(&HubSpec {
        bind: bind.clone(),
        key_file: &key_file,
        rules,
        links: Vec::new(),
        dial: Vec::new(),
        detection_ms,
    });
    (start_hub(&[], keys.dir.path(), "hub", &toml), bind, key)
}

#[test]
fn hub_relays_one_publisher_to_two_subscribers_exactly() {
    let keys = Keys::new();
    let (pub_file, pub_key) = keys.make("pub.key");
    let (s1_file, _) = keys.make("s1.key");
    let (s2_file, _) = keys.make("s2.key");
    let (_hub, addr, hub_key) = one_hub(
        &keys,
        vec![(&pub_key, "md/*", "publish"), ("*", "md/*", "subscribe")],
        3000,
    );
    let sub = |name: &str, file: &std::path::Path| {
        let p = Proc::spawn(
            name,
            tool(
                &[],
                "subscribe",
                &addr,
                &hub_key,
                "md/btc",
                file,
                &["--count", "7"],
            ),
        );
        p.wait_err(T, "connected to hub");
        p
    };
    let mut s1 = sub("s1", &s1_file);
    let mut s2 = sub("s2", &s2_file);
    // Realtime at a rate: 5 publishes, seq 1..=5, once both subscribers are present.
    let mut p = Proc::spawn(
        "publish",
        tool(
            &[],
            "publish",
            &addr,
            &hub_key,
            "md/btc",
            &pub_file,
            &["--rate", "200", "--count", "5", "--wait-subscribers", "2"],
        ),
    );
    assert!(p.wait_exit(T).success(), "{}", p.err_text());
    // Reliable from stdin: two lines.
    let mut p = Proc::spawn_with_input(
        "publish-stdin",
        tool(
            &[],
            "publish",
            &addr,
            &hub_key,
            "md/btc",
            &pub_file,
            &["--mode", "reliable", "--wait-subscribers", "2"],
        ),
        "alpha\nbeta gamma\n",
    );
    assert!(p.wait_exit(T).success(), "{}", p.err_text());
    let mut expected: Vec<String> = (1..=5)
        .map(|i| format!("publisher={pub_key} seq={i} gap=0 hops=1 payload={i}"))
        .collect();
    expected.push(format!(
        "publisher={pub_key} seq=- gap=0 hops=1 payload=alpha"
    ));
    expected.push(format!(
        "publisher={pub_key} seq=- gap=0 hops=1 payload=beta gamma"
    ));
    for s in [&mut s1, &mut s2] {
        let status = s.wait_exit(T);
        assert!(status.success(), "{}: {}", s.name, s.err_text());
        assert_eq!(s.out_lines(), expected, "{}", s.name);
    }
}

#[test]
fn refused_topics_exit_non_zero_with_one_line() {
    let keys = Keys::new();
    let (member_file, _) = keys.make("m.key");
    let (_hub, addr, hub_key) = one_hub(&keys, vec![("*", "md/*", "publish,subscribe")], 3000);
    let mut s = Proc::spawn(
        "subscribe",
        tool(
            &[],
            "subscribe",
            &addr,
            &hub_key,
            "secret/plans",
            &member_file,
            &[],
        ),
    );
    let status = s.wait_exit(T);
    assert_eq!(status.code(), Some(1), "{}", s.err_text());
    let err = s.err_text();
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.contains("refused subscribing to topic \"secret/plans\""),
        "{err}"
    );
    let mut p = Proc::spawn_with_input(
        "publish",
        tool(
            &[],
            "publish",
            &addr,
            &hub_key,
            "secret/plans",
            &member_file,
            &[],
        ),
        "x\n",
    );
    let status = p.wait_exit(T);
    assert_eq!(status.code(), Some(1), "{}", p.err_text());
    assert!(
        p.err_text()
            .contains("refused publishing on topic \"secret/plans\""),
        "{}",
        p.err_text()
    );
    // A handshake with the wrong hub key fails with one line too.
    let (_, wrong) = keys.make("wrong.key");
    let mut s = Proc::spawn(
        "wrong-key",
        tool(
            &[],
            "subscribe",
            &addr,
            &wrong,
            "md/x",
            &member_file,
            &["--timeout", "2"],
        ),
    );
    assert_eq!(s.wait_exit(T).code(), Some(1));
    assert!(
        s.err_text().contains("handshake with hub"),
        "{}",
        s.err_text()
    );
}

#[test]
fn presence_shows_members_appear_and_disappear() {
    let keys = Keys::new();
    let (a_file, a_key) = keys.make("a.key");
    let (b_file, b_key) = keys.make("b.key");
    let (w_file, w_key) = keys.make("w.key");
    // Members heartbeat every second: a detection time of 2.5 s keeps a loaded host from
    // reporting a live member silent.
    let (_hub, addr, hub_key) = one_hub(&keys, vec![("*", "*", "publish,subscribe")], 2500);
    let a = Proc::spawn(
        "a",
        tool(&[], "subscribe", &addr, &hub_key, "room", &a_file, &[]),
    );
    a.wait_err(T, "connected to hub");
    let watch = Proc::spawn(
        "presence",
        tool(&[], "presence", &addr, &hub_key, "room", &w_file, &[]),
    );
    watch.wait_err(T, "changes follow");
    let member_a = format!("member {a_key} subscriber hub={hub_key}");
    assert_eq!(
        watch.out_lines(),
        vec![member_a.clone()],
        "{}",
        watch.err_text()
    );
    let b = Proc::spawn(
        "b",
        tool(&[], "subscribe", &addr, &hub_key, "room", &b_file, &[]),
    );
    let up_b = format!("up {b_key} subscriber hub={hub_key}");
    watch.wait_out(T, |l| l.contains(&up_b));
    // SIGKILL: no close is sent; the hub reports it silent after the detection time.
    b.signal(9);
    let down_b = format!("down {b_key} subscriber hub={hub_key} reason=silent");
    watch.wait_out(T, |l| l.contains(&down_b));
    // A member that leaves cleanly (SIGTERM closes the session) goes down as closed.
    a.signal(15);
    let down_a = format!("down {a_key} subscriber hub={hub_key} reason=closed");
    watch.wait_out(T, |l| l.contains(&down_a));
    assert_eq!(
        watch.out_lines(),
        vec![member_a, up_b, down_b, down_a],
        "{}",
        watch.err_text()
    );
    let _ = w_key;
}

#[test]
fn two_linked_hubs_deliver_once() {
    let keys = Keys::new();
    let (a_file, a_key) = keys.make("hub-a.key");
    let (b_file, b_key) = keys.make("hub-b.key");
    let (pub_file, _) = keys.make("pub.key");
    let (sub_file, _) = keys.make("sub.key");
    let a_addr = format!("127.0.0.1:{}", free_udp());
    let b_addr = format!("127.0.0.1:{}", free_udp());
    let rules = vec![("*", "*", "publish,subscribe")];
    let hub_b = start_hub(
        &[],
        keys.dir.path(),
        "hub-b",
        &hub_toml(&HubSpec {
            bind: b_addr.clone(),
            key_file: &b_file,
            rules: rules.clone(),
            links: vec![a_key.clone()],
            dial: Vec::new(),
            detection_ms: 3000,
        }),
    );
    let hub_a = start_hub(
        &[],
        keys.dir.path(),
        "hub-a",
        &hub_toml(&HubSpec {
            bind: a_addr.clone(),
            key_file: &a_file,
            rules,
            links: vec![b_key.clone()],
            dial: vec![(b_addr.clone(), b_key.clone())],
            detection_ms: 3000,
        }),
    );
    hub_a.wait_err(T, "hub link up");
    hub_b.wait_err(T, "hub link up");
    let sub = Proc::spawn(
        "sub-on-b",
        tool(
            &[],
            "subscribe",
            &b_addr,
            &b_key,
            "t/linked",
            &sub_file,
            &[],
        ),
    );
    sub.wait_err(T, "connected to hub");
    let mut p = Proc::spawn(
        "pub-on-a",
        tool(
            &[],
            "publish",
            &a_addr,
            &a_key,
            "t/linked",
            &pub_file,
            &["--rate", "100", "--count", "4", "--wait-subscribers", "1"],
        ),
    );
    assert!(p.wait_exit(T).success(), "{}", p.err_text());
    sub.wait_out(T, |l| l.len() >= 4);
    std::thread::sleep(Duration::from_millis(500));
    let lines = sub.out_lines();
    assert_eq!(lines.len(), 4, "delivered once: {lines:?}");
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        assert!(
            line.ends_with(&format!("seq={n} gap=0 hops=2 payload={n}")),
            "{line}"
        );
    }
}

#[test]
fn subscribe_exits_cleanly_on_sigint_and_when_stdout_closes() {
    let keys = Keys::new();
    let (m_file, _) = keys.make("m.key");
    let (n_file, _) = keys.make("n.key");
    let (p_file, _) = keys.make("p.key");
    let (_hub, addr, hub_key) = one_hub(&keys, vec![("*", "*", "publish,subscribe")], 3000);
    // SIGINT: exit 0.
    let mut s = Proc::spawn(
        "sigint",
        tool(&[], "subscribe", &addr, &hub_key, "y", &m_file, &[]),
    );
    s.wait_err(T, "connected to hub");
    s.signal(2);
    let status = s.wait_exit(T);
    assert!(status.success(), "{status:?} {}", s.err_text());
    // `| head -n 2`: the reader takes two lines and goes away; the tool exits 0.
    let mut child = tool(&[], "subscribe", &addr, &hub_key, "x", &n_file, &[])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let a = lines.next().and_then(Result::ok);
        let b = lines.next().and_then(Result::ok);
        let _ = tx.send((a, b)); // the pipe's read end closes here
    });
    let mut p = Proc::spawn(
        "publish",
        tool(
            &[],
            "publish",
            &addr,
            &hub_key,
            "x",
            &p_file,
            &["--rate", "50", "--count", "40", "--wait-subscribers", "1"],
        ),
    );
    let Ok((Some(a), Some(b))) = rx.recv_timeout(T) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("no two lines; publisher: {}", p.err_text());
    };
    assert!(a.ends_with("seq=1 gap=0 hops=1 payload=1"), "{a}");
    assert!(b.ends_with("seq=2 gap=0 hops=1 payload=2"), "{b}");
    let end = std::time::Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("subscribe kept running after its stdout closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(p.wait_exit(T).success(), "{}", p.err_text());
}

#[test]
fn hub_metrics_export_relays_and_refusals() {
    let keys = Keys::new();
    let (key_file, hub_key) = keys.make("hub.key");
    let (m_file, _) = keys.make("m.key");
    let (p_file, _) = keys.make("p.key");
    let bind = format!("127.0.0.1:{}", free_udp());
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = hub_toml(&HubSpec {
        bind: bind.clone(),
        key_file: &key_file,
        rules: vec![("*", "ok/*", "publish,subscribe")],
        links: Vec::new(),
        dial: Vec::new(),
        detection_ms: 3000,
    })
    .replace(
        "[metrics]\nlisten = \"off\"\n",
        &format!("[metrics]\nlisten = \"{metrics}\"\npublish_interval_ms = 20\n"),
    )
    .replace(
        "enabled = true\n",
        "enabled = true\nper_topic_metrics = true\n",
    );
    let _hub = start_hub(&[], keys.dir.path(), "hub", &toml);
    let s = Proc::spawn(
        "sub",
        tool(&[], "subscribe", &bind, &hub_key, "ok/a", &m_file, &[]),
    );
    s.wait_err(T, "connected to hub");
    let mut p = Proc::spawn(
        "pub",
        tool(
            &[],
            "publish",
            &bind,
            &hub_key,
            "ok/a",
            &p_file,
            &["--rate", "100", "--count", "3", "--wait-subscribers", "1"],
        ),
    );
    assert!(p.wait_exit(T).success(), "{}", p.err_text());
    let mut r = Proc::spawn(
        "refused",
        tool(&[], "subscribe", &bind, &hub_key, "no/b", &m_file, &[]),
    );
    assert_eq!(r.wait_exit(T).code(), Some(1));
    let sample = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let end = std::time::Instant::now() + T;
    loop {
        let text = intentra_daemon::metrics_http::fetch_metrics(metrics).unwrap();
        let refused = sample(&text, "intentra_pubsub_refused_total");
        let relayed = sample(&text, "intentra_pubsub_published_in_total");
        if refused >= 1.0 && relayed >= 1.0 {
            assert!(
                text.contains("intentra_pubsub_dropped_total{reason=\"not_advertised\"}"),
                "{text}"
            );
            assert!(
                text.contains("intentra_pubsub_topic_members{topic=\"ok/a\",role=\"subscriber\"}"),
                "{text}"
            );
            assert!(text.trim_end().ends_with("# EOF"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < end, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_shows_topics_with_subscribers_and_rates() {
    let keys = Keys::new();
    let (key_file, hub_key) = keys.make("hub.key");
    let (s1_file, _) = keys.make("s1.key");
    let (s2_file, _) = keys.make("s2.key");
    let (p_file, _) = keys.make("p.key");
    let bind = format!("127.0.0.1:{}", free_udp());
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = hub_toml(&HubSpec {
        bind: bind.clone(),
        key_file: &key_file,
        rules: vec![("*", "md/*", "publish,subscribe")],
        links: Vec::new(),
        dial: Vec::new(),
        detection_ms: 3000,
    })
    .replace(
        "[metrics]\nlisten = \"off\"\n",
        &format!("[metrics]\nlisten = \"{metrics}\"\npublish_interval_ms = 20\n"),
    )
    .replace(
        "enabled = true\n",
        "enabled = true\nper_topic_metrics = true\n",
    );
    let _hub = start_hub(&[], keys.dir.path(), "hub", &toml);
    let subs: Vec<Proc> = [("s1", &s1_file), ("s2", &s2_file)]
        .into_iter()
        .map(|(name, file)| {
            let s = Proc::spawn(
                name,
                tool(&[], "subscribe", &bind, &hub_key, "md/eth", file, &[]),
            );
            s.wait_err(T, "connected to hub");
            s
        })
        .collect();
    // Publishes for up to 20 s; the status below is taken while it runs.
    let _p = Proc::spawn(
        "pub",
        tool(
            &[],
            "publish",
            &bind,
            &hub_key,
            "md/eth",
            &p_file,
            &[
                "--rate",
                "200",
                "--count",
                "4000",
                "--wait-subscribers",
                "2",
            ],
        ),
    );
    let end = std::time::Instant::now() + T;
    while !intentra_daemon::metrics_http::fetch_metrics(metrics)
        .unwrap()
        .contains("intentra_pubsub_topic_relayed_total{topic=\"md/eth\"}")
    {
        assert!(std::time::Instant::now() < end, "no per-topic series");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::process::Command::new(BIN)
        .args([
            "status",
            "--metrics",
            &metrics.to_string(),
            "--interval",
            "0.5",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("md/eth"))
        .unwrap_or_else(|| panic!("no topic row:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.len(), 7, "{text}");
    assert_eq!(
        &cells[1..3],
        ["1", "2"],
        "one publisher, two subscribers:\n{text}"
    );
    let per_s = |i: usize| cells[i].parse::<f64>().unwrap();
    assert!(per_s(5) > 0.0 && per_s(6) > 0.0, "rates:\n{text}");
    // Each publish goes to both subscribers.
    let total = |i: usize| cells[i].parse::<f64>().unwrap();
    assert!(total(4) >= total(3), "{text}");
    drop(subs);
}
