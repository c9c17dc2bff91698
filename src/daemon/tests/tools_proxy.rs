//! Runs the `intentra-proxy` binary between plain UDP sockets on 127.0.0.1 and checks
//! that its loss is a deterministic function of the seed, that replies reach the right
//! client, and that it exits cleanly on `--duration` and SIGINT.
//!
//! Traffic is sent in small waves with the receiver drained in between, so the kernel
//! never has a reason to drop anything; the proxy's own counters confirm it.

// The decision logic is plain code: in-memory tests can drive it directly.
#[path = "../../../tools/proxy/impair.rs"]
mod impair;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PROXY: &str = env!("CARGO_BIN_EXE_intentra-proxy");

struct Proxy {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Proxy {
    fn start(upstream: SocketAddr, extra: &[&str]) -> Proxy {
        Proxy::start_on("127.0.0.1:0", upstream, extra)
    }

    fn start_on(listen: &str, upstream: SocketAddr, extra: &[&str]) -> Proxy {
        let mut child = Command::new(PROXY)
            .args(["--listen", listen, "--upstream"])
            .arg(upstream.to_string())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn intentra-proxy");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Proxy {
            child,
            stdout,
            addr,
        }
    }

    /// Sends SIGINT, waits (bounded) for a clean exit and returns the final report.
    fn stop(self) -> String {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("signal proxy");
        self.wait_and_report()
    }

    fn wait_and_report(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("proxy did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "proxy exited with {status}");
        let mut report = String::new();
        self.stdout
            .read_to_string(&mut report)
            .expect("read report");
        report
    }
}

/// The value of `key=` on the report line starting with `direction`.
fn counter(report: &str, direction: &str, key: &str) -> u64 {
    report
        .lines()
        .find(|l| l.starts_with(&format!("{direction} ")))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {direction} {key} in {report:?}"))
}

/// Receives until the socket has been quiet for its read timeout.
fn drain(socket: &UdpSocket, into: &mut BTreeSet<u32>, deadline: Instant) {
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(4) => {
                into.insert(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]));
            }
            Ok(n) => panic!("unexpected datagram of {n} bytes"),
            Err(_) => return,
        }
    }
}

/// Sends 2,000 numbered datagrams through a proxy with 30% loss and returns the
/// numbers that arrived.
fn delivered_with_seed(seed: u64) -> BTreeSet<u32> {
    const TOTAL: u32 = 2_000;
    const WAVE: u32 = 50;
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let proxy = Proxy::start(
        receiver.local_addr().unwrap(),
        &["--seed", &seed.to_string(), "--loss", "0.3"],
    );
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut delivered = BTreeSet::new();
    for wave_start in (0..TOTAL).step_by(WAVE as usize) {
        for seq in wave_start..wave_start + WAVE {
            sender.send_to(&seq.to_le_bytes(), proxy.addr).unwrap();
        }
        drain(&receiver, &mut delivered, deadline);
    }
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    drain(&receiver, &mut delivered, deadline);

    let report = proxy.stop();
    // Nothing was lost outside the proxy's own decisions.
    assert_eq!(counter(&report, "up", "received"), u64::from(TOTAL));
    assert_eq!(counter(&report, "up", "sent"), delivered.len() as u64);
    assert_eq!(
        counter(&report, "up", "lost") + delivered.len() as u64,
        u64::from(TOTAL)
    );
    delivered
}

#[test]
fn loss_is_a_deterministic_function_of_the_seed() {
    let first = delivered_with_seed(7);
    // 30% of 2,000 lost: 1,400 expected, five standard deviations either way.
    assert!(
        (1_300..=1_500).contains(&first.len()),
        "delivered {}",
        first.len()
    );
    let again = delivered_with_seed(7);
    assert_eq!(first, again);
    let other = delivered_with_seed(8);
    assert_ne!(first, other);
}

#[test]
fn replies_reach_the_client_that_sent_the_request() {
    replies_reach_their_clients("127.0.0.1", "127.0.0.1");
}

/// IPv6 sockets take the proxy's one-datagram-per-syscall path (its batches speak IPv4
/// only), on either side or both.
#[test]
fn replies_reach_their_clients_over_ipv6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    replies_reach_their_clients("::1", "::1");
    replies_reach_their_clients("::1", "127.0.0.1");
    replies_reach_their_clients("127.0.0.1", "::1");
}

/// Three clients on `listen_ip` exchange ten rounds with a server on `server_ip`.
fn replies_reach_their_clients(listen_ip: &str, server_ip: &str) {
    let any_port = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 0);
    let server = UdpSocket::bind(any_port(server_ip)).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let proxy = Proxy::start_on(
        &any_port(listen_ip).to_string(),
        server.local_addr().unwrap(),
        &[],
    );
    let clients: Vec<UdpSocket> = (0..3)
        .map(|_| {
            let c = UdpSocket::bind(any_port(listen_ip)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            c
        })
        .collect();
    let mut sources = BTreeSet::new();
    let mut buf = [0u8; 64];
    for round in 0..10u8 {
        for (id, client) in clients.iter().enumerate() {
            client.send_to(&[id as u8, round], proxy.addr).unwrap();
            let (n, from) = server.recv_from(&mut buf).expect("request reaches server");
            assert_eq!(&buf[..n], &[id as u8, round]);
            sources.insert(from);
            server.send_to(&buf[..n], from).unwrap();
        }
        for (id, client) in clients.iter().enumerate() {
            let n = client.recv(&mut buf).expect("reply reaches client");
            assert_eq!(
                &buf[..n],
                &[id as u8, round],
                "reply went to the wrong client"
            );
        }
    }
    // One upstream address per client, so the server can tell them apart.
    assert_eq!(sources.len(), clients.len());
    let report = proxy.stop();
    assert_eq!(counter(&report, "up", "sent"), 30);
    assert_eq!(counter(&report, "down", "sent"), 30);
    assert!(report.contains("clients=3 "), "{report}");
}

/// More datagrams at once than one `recvmmsg`/`sendmmsg` batch and one receive burst
/// take: all of them pass, in order, each counted once.
#[test]
fn a_burst_of_many_batches_passes_whole_and_in_order() {
    const TOTAL: u32 = 1_000;
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    intentra::udp::raw::set_buffers(&receiver, 4 << 20, 4 << 20);
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let proxy = Proxy::start(receiver.local_addr().unwrap(), &[]);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..TOTAL {
        sender.send_to(&seq.to_le_bytes(), proxy.addr).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 64];
    while arrivals.len() < TOTAL as usize && Instant::now() < deadline {
        match receiver.recv(&mut buf) {
            Ok(4) => arrivals.push(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])),
            Ok(n) => panic!("unexpected datagram of {n} bytes"),
            Err(_) => break,
        }
    }
    let report = proxy.stop();
    assert_eq!(arrivals, (0..TOTAL).collect::<Vec<u32>>(), "{report}");
    assert_eq!(counter(&report, "up", "received"), u64::from(TOTAL));
    assert_eq!(counter(&report, "up", "sent"), u64::from(TOTAL));
    assert_eq!(counter(&report, "up", "send_errors"), 0);
}

/// A datagram longer than the proxy's 2048-byte slots is counted and not forwarded; one
/// of exactly 2048 bytes passes.
#[test]
fn oversize_datagrams_are_counted_not_forwarded() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let proxy = Proxy::start(receiver.local_addr().unwrap(), &[]);
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    for len in [2049, 2048, 9000] {
        sender.send_to(&vec![7u8; len], proxy.addr).unwrap();
    }
    let mut buf = vec![0u8; 65536];
    let mut lengths = Vec::new();
    while let Ok(n) = receiver.recv(&mut buf) {
        lengths.push(n);
    }
    let report = proxy.stop();
    assert_eq!(lengths, [2048], "{report}");
    assert_eq!(counter(&report, "up", "received"), 3);
    assert_eq!(counter(&report, "up", "oversize"), 2);
    assert_eq!(counter(&report, "up", "sent"), 1);
}

#[test]
fn exits_by_itself_after_duration() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let proxy = Proxy::start(sink.local_addr().unwrap(), &["--duration", "0.2"]);
    let report = proxy.wait_and_report();
    assert_eq!(counter(&report, "up", "received"), 0);
}

#[test]
fn refuses_non_loopback_addresses() {
    let output = Command::new(PROXY)
        .args(["--listen", "0.0.0.0:0", "--upstream", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}

#[test]
fn duplicates_reorders_and_delays_without_losing() {
    const TOTAL: u32 = 600;
    const WAVE: u32 = 50;
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(40)))
        .unwrap();
    let proxy = Proxy::start(
        receiver.local_addr().unwrap(),
        &[
            "--seed",
            "3",
            "--duplicate",
            "0.1",
            "--reorder",
            "0.1",
            "--delay",
            "2",
            "--jitter",
            "0:0",
        ],
    );
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 64];
    let mut receive_until_quiet = |arrivals: &mut Vec<u32>| {
        while Instant::now() < deadline {
            match receiver.recv(&mut buf) {
                Ok(4) => arrivals.push(u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])),
                Ok(n) => panic!("unexpected datagram of {n} bytes"),
                Err(_) => return,
            }
        }
    };
    for wave_start in (0..TOTAL).step_by(WAVE as usize) {
        for seq in wave_start..wave_start + WAVE {
            sender.send_to(&seq.to_le_bytes(), proxy.addr).unwrap();
        }
        receive_until_quiet(&mut arrivals);
    }
    receive_until_quiet(&mut arrivals);
    let report = proxy.stop();

    let distinct: BTreeSet<u32> = arrivals.iter().copied().collect();
    assert_eq!(distinct, (0..TOTAL).collect::<BTreeSet<u32>>());
    assert_eq!(counter(&report, "up", "lost"), 0);
    assert_eq!(counter(&report, "up", "sent"), arrivals.len() as u64);
    assert_eq!(
        arrivals.len() as u64 - u64::from(TOTAL),
        counter(&report, "up", "duplicated")
    );
    assert!(counter(&report, "up", "duplicated") > 0);
    let overtaken = arrivals.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(
        overtaken > 0 && counter(&report, "up", "reordered") > 0,
        "nothing was reordered"
    );
}

#[test]
fn impairer_is_usable_without_sockets() {
    use impair::{Fate, Impairer, Impairments, Probability};
    use intentra::proto::Timestamp;

    let config = Impairments {
        loss: Probability::new(0.5).unwrap(),
        ..Impairments::NONE
    };
    let mut impairer = Impairer::new(config, 1, 64);
    let now = Timestamp::from_millis(1);
    let mut forwarded = Vec::new();
    for seq in 0..32u32 {
        if impairer.push(now, seq) != Fate::Dropped {
            forwarded.push(seq);
        }
    }
    let emitted: Vec<u32> = std::iter::from_fn(|| impairer.pop_due(now)).collect();
    assert_eq!(emitted, forwarded);
    assert!(!emitted.is_empty() && emitted.len() < 32);
}
