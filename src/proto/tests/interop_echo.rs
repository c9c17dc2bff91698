//! The Python peer against the real Rust `Endpoint` over a loopback UDP socket.
//!
//! Owns nothing in the build: copy it to `tests/` to run it (`cargo test --test <name>`).
//! It is a minimal blocking driver (one socket, one endpoint, echo of every message in
//! its own mode, `always_cookie` so the cookie path is exercised) that starts
//! `tools/interop/intentra_peer.py` as a subprocess and requires its exit status 0. The
//! lead's test against the `intentra` binary replaces it once the runtime exists.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use intentra_proto::Endpoint;
use intentra_proto::EndpointConfig;
use intentra_proto::Keypair;
use intentra_proto::Timestamp;
use intentra_proto::{CloseReason, DropReason};
use intentra_proto::{Event, Mode, PeerId, Sent};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn now(start: Instant) -> Timestamp {
    Timestamp::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

#[test]
fn python_peer_interoperates_with_the_rust_endpoint() {
    let has_cryptography = Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_cryptography {
        // .ci/run installs it, so CI always runs this; a bare machine may not have it.
        eprintln!("skipped: python3 with the `cryptography` package is not available");
        return;
    }
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
        .args([
            "--send-realtime",
            "200",
            "--send-reliable",
            "200",
            "--expect-echo",
        ])
        .args(["--payload-size", "128", "--rate", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");

    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 1452];
    let mut echoes: Vec<(PeerId, Mode, Vec<u8>)> = Vec::new();
    let (mut ups, mut downs) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        assert!(Instant::now() < deadline, "the peer did not finish in time");
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Ok((len, src)) = socket.recv_from(&mut buf) {
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
        for (peer, mode, payload) in echoes.drain(..) {
            if let Ok(Sent::Now(tx)) = endpoint.send(t, peer, mode, &payload, &mut out) {
                socket.send_to(&out[..tx.len], tx.dst).unwrap();
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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stats = endpoint.stats();
    eprintln!("peer stdout: {stdout}\npeer stderr: {stderr}\nendpoint: {stats:?}");
    assert!(status.success(), "peer failed: {stderr}");
    assert_eq!(ups, 1);
    assert_eq!(
        downs,
        [CloseReason::Remote],
        "the peer's Close authenticated"
    );
    assert!(
        stats.cookie_replies_sent >= 1,
        "always_cookie made the peer use mac2"
    );
    assert_eq!(stats.dropped(DropReason::Crypto), 0);
    assert_eq!(stats.dropped(DropReason::Malformed), 0);
    assert_eq!(stats.strike_events, 0);
}
