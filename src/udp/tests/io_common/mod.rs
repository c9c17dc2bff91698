//! Shared helpers for the I/O integration tests: loopback driver pairs, unique
//! payloads, bounded send and receive loops.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use intentra_udp::{
    open_driver, Driver, DriverConfig, DriverKind, Opened, RecvStats, SendStats, SocketConfig, Wait,
};

pub const RCVBUF: usize = 4 << 20;

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A socket config with a big receive buffer so loopback waves never drop.
pub fn socket_cfg() -> SocketConfig {
    let mut cfg = SocketConfig::new(loopback());
    cfg.recv_buffer = Some(RCVBUF);
    cfg.send_buffer = Some(RCVBUF);
    cfg
}

pub fn open(kind: DriverKind, cfg: &SocketConfig) -> Box<dyn Driver> {
    let Opened { driver, fallback } = open_driver(kind, cfg, &DriverConfig::default()).unwrap();
    assert!(fallback.is_none(), "{kind} fell back: {fallback:?}");
    assert_eq!(driver.name(), kind.name());
    driver
}

/// A payload that names its sequence number and whose every byte depends on it.
pub fn payload(seq: u32, len: usize) -> Vec<u8> {
    assert!(len >= 4);
    let mut p = vec![0u8; len];
    p[..4].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(4) {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    p
}

/// Commits and flushes every payload to `dst`, flushing whenever the send ring fills.
pub fn send_all(d: &mut dyn Driver, dst: SocketAddr, payloads: &[Vec<u8>]) -> SendStats {
    let mut total = SendStats::default();
    for p in payloads {
        if d.send_buffer().is_none() {
            total += d.flush().unwrap();
        }
        let mut slot = d.send_buffer().expect("a free slot after flush");
        slot.buf()[..p.len()].copy_from_slice(p);
        slot.commit(dst, p.len()).unwrap();
    }
    total += d.flush().unwrap();
    total
}

/// Receives until `expect` datagrams arrived or 5 s passed.
pub fn recv_n(d: &mut dyn Driver, expect: usize) -> (Vec<(SocketAddr, Vec<u8>)>, RecvStats) {
    let mut out = Vec::new();
    let mut total = RecvStats::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.len() < expect && Instant::now() < deadline {
        let s = d
            .recv_batch(Wait::Timeout(Duration::from_millis(50)), &mut |dg| {
                out.push((dg.src, dg.data.to_vec()))
            })
            .unwrap();
        total += s;
    }
    (out, total)
}

/// Sends `payloads` from `a` to `b` in waves and checks that exactly those
/// bytes arrived, each once, from `a`'s address.
pub fn exchange(
    a: &mut dyn Driver,
    b: &mut dyn Driver,
    payloads: &[Vec<u8>],
) -> (SendStats, RecvStats) {
    let dst = b.local_addr();
    let mut sent = SendStats::default();
    let mut recvd = RecvStats::default();
    let mut got = Vec::new();
    for wave in payloads.chunks(256) {
        sent += send_all(a, dst, wave);
        let (w, s) = recv_n(b, wave.len());
        assert_eq!(w.len(), wave.len(), "wave lost datagrams: {s:?}");
        recvd += s;
        got.extend(w);
    }
    assert_eq!(sent.datagrams_sent, payloads.len(), "{sent:?}");
    assert_eq!(sent.dropped(), 0, "{sent:?}");
    for (src, _) in &got {
        assert_eq!(*src, a.local_addr());
    }
    let mut got: Vec<Vec<u8>> = got.into_iter().map(|(_, p)| p).collect();
    let mut want = payloads.to_vec();
    got.sort();
    want.sort();
    assert!(got == want, "received bytes differ from the sent ones");
    assert_eq!(recvd.datagrams, payloads.len());
    (sent, recvd)
}
