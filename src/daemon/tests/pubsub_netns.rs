//! Three "hosts" in network namespaces this test creates and removes itself: a publisher,
//! hub A, and hub B with two subscribers, joined by veth pairs with 10.x addresses that
//! exist only inside those namespaces. The publisher on host 1 publishes through hub A
//! (host 2), over the A–B link, to the subscribers on host 3, all through the CLI.
//! Needs root (`ip netns add`); skipped with a message elsewhere. The namespaces are
//! deleted by a Drop guard, so also when an assertion fails.

mod pubsub_support;

use std::process::Command;
use std::time::Duration;

use pubsub_support::*;

const T: Duration = Duration::from_secs(30);

/// The namespaces of one run; deleting a namespace deletes the veth ends in it.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn exec(&self, i: usize) -> Vec<String> {
        vec![
            "ip".to_owned(),
            "netns".to_owned(),
            "exec".to_owned(),
            self.names[i].clone(),
        ]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates the namespaces, or says why it cannot (then the test is skipped).
fn setup() -> Result<Namespaces, String> {
    let tag = format!("itps{}", std::process::id() % 100_000);
    let probe = format!("{tag}probe");
    let out = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip netns add is not allowed here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    let ns = Namespaces {
        names: vec![format!("{tag}p"), format!("{tag}a"), format!("{tag}b")],
    };
    for name in &ns.names {
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }
    // host 1 (publisher) 10.201.1.1 <-> 10.201.1.2 host 2 (hub A)
    // host 2 (hub A)     10.201.2.1 <-> 10.201.2.2 host 3 (hub B, subscribers)
    let links = [
        (0, 1, "10.201.1.1/24", "10.201.1.2/24"),
        (1, 2, "10.201.2.1/24", "10.201.2.2/24"),
    ];
    for (k, (x, y, ax, ay)) in links.iter().enumerate() {
        let (vx, vy) = (format!("{tag}v{k}x"), format!("{tag}v{k}y"));
        // Created inside namespace x, so the host's own interfaces never see them.
        ip(&[
            "-n",
            &ns.names[*x],
            "link",
            "add",
            &vx,
            "type",
            "veth",
            "peer",
            "name",
            &vy,
            "netns",
            &ns.names[*y],
        ]);
        ip(&["-n", &ns.names[*x], "addr", "add", ax, "dev", &vx]);
        ip(&["-n", &ns.names[*y], "addr", "add", ay, "dev", &vy]);
        ip(&["-n", &ns.names[*x], "link", "set", &vx, "up"]);
        ip(&["-n", &ns.names[*y], "link", "set", &vy, "up"]);
    }
    Ok(ns)
}

#[test]
fn publisher_hub_a_hub_b_two_subscribers_across_namespaces() {
    let ns = match setup() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED pubsub_netns: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (a_file, a_key) = keygen(dir.path(), "hub-a.key");
    let (b_file, b_key) = keygen(dir.path(), "hub-b.key");
    let (pub_file, pub_key) = keygen(dir.path(), "pub.key");
    let (s1_file, _) = keygen(dir.path(), "s1.key");
    let (s2_file, _) = keygen(dir.path(), "s2.key");
    let a_for_pub = "10.201.1.2:7801";
    let a_bind = "0.0.0.0:7801";
    let b_addr = "10.201.2.2:7802";
    let rules = vec![
        (pub_key.as_str(), "ns/*", "publish"),
        ("*", "ns/*", "subscribe"),
    ];
    let hub_b = start_hub(
        &ns.exec(2),
        dir.path(),
        "hub-b",
        &hub_toml(&HubSpec {
            bind: b_addr.to_owned(),
            key_file: &b_file,
            rules: rules.clone(),
            links: vec![a_key.clone()],
            dial: Vec::new(),
            detection_ms: 3000,
        }),
    );
    let hub_a = start_hub(
        &ns.exec(1),
        dir.path(),
        "hub-a",
        &hub_toml(&HubSpec {
            bind: a_bind.to_owned(),
            key_file: &a_file,
            rules,
            links: vec![b_key.clone()],
            dial: vec![(b_addr.to_owned(), b_key.clone())],
            detection_ms: 3000,
        }),
    );
    hub_a.wait_err(T, "hub link up");
    hub_b.wait_err(T, "hub link up");
    let subs: Vec<Proc> = [("s1", &s1_file), ("s2", &s2_file)]
        .into_iter()
        .map(|(name, file)| {
            let p = Proc::spawn(
                name,
                tool(
                    &ns.exec(2),
                    "subscribe",
                    b_addr,
                    &b_key,
                    "ns/state",
                    file,
                    &["--count", "5"],
                ),
            );
            p.wait_err(T, "connected to hub");
            p
        })
        .collect();
    let mut p = Proc::spawn(
        "publish",
        tool(
            &ns.exec(0),
            "publish",
            a_for_pub,
            &a_key,
            "ns/state",
            &pub_file,
            &["--rate", "100", "--count", "5", "--wait-subscribers", "2"],
        ),
    );
    assert!(p.wait_exit(T).success(), "{}", p.err_text());
    let expected: Vec<String> = (1..=5)
        .map(|i| format!("publisher={pub_key} seq={i} gap=0 hops=2 payload={i}"))
        .collect();
    for mut s in subs {
        let status = s.wait_exit(T);
        assert!(status.success(), "{}: {}", s.name, s.err_text());
        assert_eq!(s.out_lines(), expected, "{}", s.name);
    }
    drop(hub_a);
    drop(hub_b);
}
