//! The Python peer against the real Rust `Endpoint` over a loopback UDP socket.
//!
//! A minimal blocking driver (one socket, one endpoint, echo of every message in its own
//! mode, `always_cookie` so the cookie path is exercised) that starts
//! `tools/interop/intentra_peer.py` as a subprocess and requires its exit status 0: once
//! with lone packets, once with the peer sending Bundles (PROTOCOL.md 7.5) and the driver
//! echoing in Bundles. Skipped, saying so, without python3 and `cryptography`.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use intentra_proto::Endpoint;
use intentra_proto::EndpointConfig;
use intentra_proto::Keypair;
use intentra_proto::Timestamp;
use intentra_proto::{Bundled, Event, Mode, PeerId, Sent};
use intentra_proto::{CloseReason, DropReason};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn now(start: Instant) -> Timestamp {
    Timestamp::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// What one run of the Python peer against the driver produced.
struct Run {
    status: std::process::ExitStatus,
    summary: serde_json::Value,
    stderr: String,
    ups: usize,
    downs: Vec<CloseReason>,
    stats: intentra_proto::Stats,
    /// Datagrams the driver received of type 10 (Bundle), and messages delivered by all.
    bundles_in: usize,
    delivered: usize,
    /// Bundles (type 10) the driver sent back.
    bundles_out: usize,
}

fn python_with_cryptography() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `intentra_peer.py` with `peer_args` against one `Endpoint` (`always_cookie`) that
/// echoes every message in its mode: each as its own packet, or with `bundle_echoes` the
/// messages of one received datagram in one bundle (`Endpoint::bundle`).
fn run_python_peer(peer_args: &[&str], bundle_echoes: bool) -> Run {
    let start = Instant::now();
    let keypair = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(7));
    let public_hex: String = keypair
        .public
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut config = EndpointConfig::new(keypair);
    config.always_cookie = true;
    let mut endpoint = Endpoint::new(config, now(start), ChaCha20Rng::seed_from_u64(8));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();

    let root = env!("CARGO_MANIFEST_DIR");
    let mut child = Command::new("python3")
        .arg(format!("{root}/../../tools/interop/intentra_peer.py"))
        .args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--server-key", &public_hex])
        .args(peer_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");

    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 1452];
    let mut echoes: Vec<(PeerId, Mode, Vec<u8>)> = Vec::new();
    let (mut ups, mut downs) = (0, Vec::new());
    let (mut bundles_in, mut delivered, mut bundles_out) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        assert!(Instant::now() < deadline, "the peer did not finish in time");
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Ok((len, src)) = socket.recv_from(&mut buf) {
            if len > 1 && buf[1] == 10 {
                bundles_in += 1;
            }
            let t = now(start);
            for message in endpoint.handle_datagram(t, src, &mut buf[..len]) {
                echoes.push((message.peer, message.mode, message.payload.to_vec()));
            }
        }
        let t = now(start);
        endpoint.handle_timeout(t);
        while let Some(event) = endpoint.poll_event() {
            match event {
                Event::PeerUp { .. } => ups += 1,
                Event::PeerDown { reason, .. } => downs.push(reason),
                Event::Message(m) => echoes.push((m.peer, m.mode, m.payload.to_vec())),
                _ => {}
            }
        }
        delivered += echoes.len();
        if bundle_echoes {
            let mut rest = &echoes[..];
            while let Some(&(peer, _, _)) = rest.first() {
                let Ok(mut bundle) = endpoint.bundle(t, peer, &mut out) else {
                    break;
                };
                let mut taken = 0;
                for (_, mode, payload) in rest.iter().take_while(|(p, _, _)| *p == peer) {
                    match bundle.push(*mode, payload) {
                        Ok(Bundled::Full) => break,
                        // Added, Queued (sent by poll_transmit later), or refused (lost).
                        Ok(Bundled::Added | Bundled::Queued) | Err(_) => taken += 1,
                    }
                }
                let frames = bundle.len();
                if let Ok(Some(tx)) = bundle.finish() {
                    if frames > 1 {
                        bundles_out += 1;
                    }
                    socket.send_to(&out[..tx.len], tx.dst).unwrap();
                }
                rest = &rest[taken.max(1)..];
            }
            echoes.clear();
        } else {
            for (peer, mode, payload) in echoes.drain(..) {
                if let Ok(Sent::Now(tx)) = endpoint.send(t, peer, mode, &payload, &mut out) {
                    socket.send_to(&out[..tx.len], tx.dst).unwrap();
                }
            }
        }
        while let Some(tx) = endpoint.poll_transmit(t, &mut out) {
            socket.send_to(&out[..tx.len], tx.dst).unwrap();
        }
    };
    // Let the peer's Close arrive.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until && downs.is_empty() {
        if let Ok((len, src)) = socket.recv_from(&mut buf) {
            let _ = endpoint.handle_datagram(now(start), src, &mut buf[..len]);
        }
        while let Some(event) = endpoint.poll_event() {
            if let Event::PeerDown { reason, .. } = event {
                downs.push(reason);
            }
        }
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let stats = endpoint.stats();
    eprintln!("peer stdout: {stdout}\npeer stderr: {stderr}\nendpoint: {stats:?}");
    let summary = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    Run {
        status,
        summary,
        stderr,
        ups,
        downs,
        stats,
        bundles_in,
        delivered,
        bundles_out,
    }
}

/// What every run must show: success, one session, closed by the peer's authenticated
/// Close, the cookie path used, and nothing refused.
fn assert_clean(run: &Run) {
    assert!(run.status.success(), "peer failed: {}", run.stderr);
    assert_eq!(run.summary["ok"], true, "{}", run.summary);
    assert_eq!(run.ups, 1);
    assert_eq!(
        run.downs,
        [CloseReason::Remote],
        "the peer's Close authenticated"
    );
    assert!(
        run.stats.cookie_replies_sent >= 1,
        "always_cookie made the peer use mac2"
    );
    assert_eq!(run.stats.dropped(DropReason::Crypto), 0);
    assert_eq!(run.stats.dropped(DropReason::Malformed), 0);
    assert_eq!(run.stats.strike_events, 0);
}

#[test]
fn python_peer_interoperates_with_the_rust_endpoint() {
    if !python_with_cryptography() {
        // .ci/run installs it, so CI always runs this; a bare machine may not have it.
        eprintln!("skipped: python3 with the `cryptography` package is not available");
        return;
    }
    let run = run_python_peer(
        &[
            "--send-realtime",
            "200",
            "--send-reliable",
            "200",
            "--expect-echo",
            "--payload-size",
            "128",
            "--rate",
            "500",
        ],
        false,
    );
    assert_clean(&run);
    assert_eq!(
        run.bundles_in, 0,
        "the peer sends lone packets unless asked"
    );
}

/// PROTOCOL.md 7.5 both ways: the Python peer sends its messages in Bundles of up to 8,
/// Realtime and Reliable alternating; the endpoint delivers every one of them (Reliable in
/// order, exactly once) and echoes each datagram's messages in one Bundle of its own, which
/// the peer, written from the text alone, takes apart into exactly what it sent.
#[test]
fn python_peer_bundles_mixed_messages_and_gets_every_one_back() {
    if !python_with_cryptography() {
        eprintln!("skipped: python3 with the `cryptography` package is not available");
        return;
    }
    let run = run_python_peer(
        &[
            "--send-realtime",
            "120",
            "--send-reliable",
            "120",
            "--bundle",
            "8",
            "--expect-echo",
            "--payload-size",
            "100",
            "--rate",
            "200",
        ],
        true,
    );
    assert_clean(&run);
    let summary = &run.summary;
    assert_eq!(summary["sent"]["realtime"], 120, "{summary}");
    assert_eq!(summary["sent"]["reliable"], 120, "{summary}");
    // Every message arrived in a bundle of several: 240 messages, at most 8 a datagram.
    assert!(
        run.bundles_in >= 25,
        "{} bundles reached the endpoint",
        run.bundles_in
    );
    assert_eq!(
        summary["bundles_sent"].as_u64(),
        Some(run.bundles_in as u64)
    );
    // Loopback loses nothing, and the endpoint delivered each message once: 240 in all
    // (a retransmitted Reliable duplicate is never delivered twice).
    assert_eq!(run.delivered, 240);
    // Back: all 240 echoes, Realtime each once, Reliable in order; some came in bundles.
    assert_eq!(summary["received"]["realtime"], 120, "{summary}");
    assert_eq!(summary["received"]["reliable"], 120, "{summary}");
    assert_eq!(summary["echo"]["reliable_in_order"], true, "{summary}");
    assert_eq!(summary["echo"]["realtime_unknown"], 0, "{summary}");
    assert_eq!(summary["echo"]["realtime_duplicates"], 0, "{summary}");
    assert_eq!(summary["reliable_acked"], 120, "{summary}");
    assert!(run.bundles_out > 0, "the endpoint echoed in bundles");
    assert_eq!(
        summary["bundles_received"].as_u64(),
        Some(run.bundles_out as u64),
        "every bundle the endpoint sent opened and was well formed at the peer: {summary}"
    );
    assert_eq!(summary["bad_bundles"], 0, "{summary}");
    assert_eq!(summary["dropped"]["malformed"], 0, "{summary}");
}
