//! Reproductions of three weaknesses found while writing PROTOCOL.md from the code (see its
//! section 17, "Known issues"). Not built by anything here: copy it to `tests/` to run
//! (`cargo test --test <name> -- --nocapture`). Each test PASSES while the weakness exists,
//! so a fix turns it red: invert the assertions then and keep it as a regression test.
use intentra::proto::config::EndpointConfig;
use intentra::proto::endpoint::Endpoint;
use intentra::proto::event::Event;
use intentra::proto::keys::Keypair;
use intentra::proto::stats::CloseReason;
use intentra::proto::time::Timestamp;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::net::SocketAddr;

struct Pair {
    a: Endpoint,
    b: Endpoint,
    aa: SocketAddr,
    ba: SocketAddr,
    now: Timestamp,
    a_up: bool,
    a_down: Option<CloseReason>,
    b_up: bool,
}

fn pair() -> (Pair, Keypair) {
    let ka = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(1));
    let kb = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(2));
    let a = Endpoint::new(
        EndpointConfig::new(ka),
        Timestamp::ZERO,
        ChaCha20Rng::seed_from_u64(11),
    );
    let b = Endpoint::new(
        EndpointConfig::new(kb.clone()),
        Timestamp::ZERO,
        ChaCha20Rng::seed_from_u64(12),
    );
    (
        Pair {
            a,
            b,
            aa: "127.0.0.1:1000".parse().unwrap(),
            ba: "127.0.0.1:2000".parse().unwrap(),
            now: Timestamp::ZERO,
            a_up: false,
            a_down: None,
            b_up: false,
        },
        kb,
    )
}

impl Pair {
    fn events(&mut self) {
        while let Some(e) = self.a.poll_event() {
            match e {
                Event::PeerUp { .. } => self.a_up = true,
                Event::PeerDown { reason, .. } => self.a_down = Some(reason),
                _ => {}
            }
        }
        while let Some(e) = self.b.poll_event() {
            if let Event::PeerUp { .. } = e {
                self.b_up = true
            }
        }
    }
    /// Delivers everything queued, instantly, optionally filtering; then advances time.
    fn run(&mut self, until: Timestamp, mut filter: impl FnMut(bool, &[u8]) -> bool) {
        let mut buf = vec![0u8; 1452];
        for _ in 0..100_000 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit(self.now, &mut buf) {
                moved = true;
                let mut pkt = buf[..t.len].to_vec();
                if filter(true, &pkt) {
                    self.b.handle_datagram(self.now, self.aa, &mut pkt);
                }
            }
            while let Some(t) = self.b.poll_transmit(self.now, &mut buf) {
                moved = true;
                let mut pkt = buf[..t.len].to_vec();
                if filter(false, &pkt) {
                    self.a.handle_datagram(self.now, self.ba, &mut pkt);
                }
            }
            self.events();
            if moved {
                continue;
            }
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until);
            if next > until {
                return;
            }
            self.now = next.max(self.now);
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.events();
        }
    }
}

#[test]
fn control_handshake_completes() {
    let (mut p, kb) = pair();
    p.a.connect(p.now, p.ba, kb.public).unwrap();
    p.run(Timestamp::from_millis(3000), |_, _| true);
    assert!(p.a_up && p.b_up && p.a_down.is_none());
}

#[test]
fn one_forged_response_breaks_the_handshake() {
    let (mut p, kb) = pair();
    p.a.connect(p.now, p.ba, kb.public).unwrap();
    let mut buf = vec![0u8; 1452];
    let t = p.a.poll_transmit(p.now, &mut buf).unwrap();
    let mut init = buf[..t.len].to_vec();
    let mut forged = vec![0x42u8; 108];
    forged[..4].copy_from_slice(&[1, 2, 0, 0]);
    forged[4..8].copy_from_slice(&12345u32.to_le_bytes());
    forged[8..12].copy_from_slice(&init[4..8]);
    p.a.handle_datagram(p.now, p.ba, &mut forged);
    p.b.handle_datagram(p.now, p.aa, &mut init);
    p.run(Timestamp::from_millis(20_000), |_, _| true);
    eprintln!(
        "a_up {} b_up {} a_down {:?} stats a {:?}",
        p.a_up,
        p.b_up,
        p.a_down,
        p.a.stats()
    );
    assert!(
        !p.a_up,
        "expected the stale-response loop to break the handshake"
    );
    assert_eq!(p.a_down, Some(CloseReason::HandshakeTimeout));
}

#[test]
fn forged_finish_before_the_real_one() {
    let (mut p, kb) = pair();
    p.a.connect(p.now, p.ba, kb.public).unwrap();
    let mut buf = vec![0u8; 1452];
    let t = p.a.poll_transmit(p.now, &mut buf).unwrap();
    let mut init = buf[..t.len].to_vec();
    p.b.handle_datagram(p.now, p.aa, &mut init);
    let t = p.b.poll_transmit(p.now, &mut buf).unwrap();
    let response = buf[..t.len].to_vec();
    let mut forged = vec![0x42u8; 73];
    forged[..4].copy_from_slice(&[1, 3, 0, 0]);
    forged[4..8].copy_from_slice(&response[4..8]);
    p.b.handle_datagram(p.now, "10.9.9.9:9".parse().unwrap(), &mut forged);
    let mut r = response.clone();
    p.a.handle_datagram(p.now, p.ba, &mut r);
    p.run(Timestamp::from_millis(20_000), |_, _| true);
    eprintln!(
        "a_up {} b_up {} a_down {:?} b stats {:?}",
        p.a_up,
        p.b_up,
        p.a_down,
        p.b.stats()
    );
    assert!(!p.b_up);
    assert_eq!(p.a_down, Some(CloseReason::HandshakeTimeout));
}

#[test]
fn duplicated_packets_from_the_peer_close_the_session_by_strikes() {
    let (mut p, kb) = pair();
    p.a.connect(p.now, p.ba, kb.public).unwrap();
    p.run(Timestamp::from_millis(1000), |_, _| true);
    assert!(p.a_up && p.b_up);
    let id = p.a.peer_by_key(&kb.public).unwrap();
    let mut buf = vec![0u8; 1452];
    let t =
        p.a.send(
            p.now,
            id,
            intentra::proto::event::Mode::Realtime,
            b"x",
            &mut buf,
        )
        .unwrap();
    let pkt = buf[..t.len].to_vec();
    let mut down = None;
    for _ in 0..11 {
        let mut copy = pkt.clone();
        p.b.handle_datagram(p.now, p.aa, &mut copy); // the network duplicated it
    }
    while let Some(e) = p.b.poll_event() {
        if let Event::PeerDown { reason, .. } = e {
            down = Some(reason);
        }
    }
    eprintln!("b down: {down:?}");
    assert_eq!(down, Some(CloseReason::Strikes));
}
