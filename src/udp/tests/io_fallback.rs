//! Every fallback still delivers: io_uring refused, GSO/GRO refused, buffers
//! capped or tiny. Refusals are forced through `ForceFallback`.

mod io_common;

use std::time::Duration;

use intentra_udp::{
    best_available, open_driver, DriverConfig, DriverKind, SocketWarning, UringUnavailable, Wait,
};
use io_common::*;

#[test]
fn refused_io_uring_falls_back_to_mmsg_with_a_reason() {
    let mut cfg = socket_cfg();
    cfg.force.io_uring = true;
    let opened = open_driver(DriverKind::Uring, &cfg, &DriverConfig::default()).unwrap();
    assert_eq!(opened.driver.name(), "mmsg");
    let reason = opened.fallback.expect("a fallback reason");
    assert!(matches!(reason, UringUnavailable::Forced));
    assert!(reason.to_string().contains("ForceFallback"));
    let mut a = opened.driver;
    let mut b = open(DriverKind::Mmsg, &socket_cfg());
    let payloads: Vec<_> = (0..300).map(|i| payload(i, 200)).collect();
    exchange(a.as_mut(), b.as_mut(), &payloads);
    exchange(b.as_mut(), a.as_mut(), &payloads);
}

#[test]
fn best_available_opens_and_delivers() {
    let kind = best_available();
    let opened = open_driver(kind, &socket_cfg(), &DriverConfig::default()).unwrap();
    assert!(opened.fallback.is_none());
    let mut a = opened.driver;
    let mut b = open(DriverKind::Basic, &socket_cfg());
    let payloads: Vec<_> = (0..100).map(|i| payload(i, 64)).collect();
    exchange(a.as_mut(), b.as_mut(), &payloads);
}

#[test]
fn refused_gso_probe_sends_plainly() {
    for kind in [DriverKind::Uring, DriverKind::Mmsg] {
        let mut cfg = socket_cfg();
        cfg.gso = true;
        cfg.force.gso_probe = true;
        let mut a = open(kind, &cfg);
        assert!(!a.gso_active() && !a.caps().gso);
        assert!(a.caps().warnings.iter().any(
            |w| matches!(w, SocketWarning::Unsupported { feature, .. } if feature.contains("GSO"))
        ));
        let mut b = open(DriverKind::Mmsg, &socket_cfg());
        let payloads: Vec<_> = (0..200).map(|i| payload(i, 300)).collect();
        let (sent, _) = exchange(a.as_mut(), b.as_mut(), &payloads);
        assert_eq!(sent.gso_batches, 0);
    }
}

#[test]
fn refused_gro_still_receives_gso_traffic_segmented() {
    for kind in [DriverKind::Uring, DriverKind::Mmsg] {
        let mut rx = socket_cfg();
        rx.gro = true;
        rx.force.gro = true;
        let mut b = open(kind, &rx);
        assert!(!b.caps().gro);
        let mut tx = socket_cfg();
        tx.gso = true;
        let mut a = open(DriverKind::Mmsg, &tx);
        let payloads: Vec<_> = (0..256).map(|i| payload(i, 500)).collect();
        let (sent, recvd) = exchange(a.as_mut(), b.as_mut(), &payloads);
        assert!(sent.gso_batches > 0);
        assert_eq!(recvd.gro_buffers, 0);
    }
}

#[test]
fn capped_receive_buffer_is_reported_with_the_sysctl() {
    let mut cfg = socket_cfg();
    cfg.recv_buffer = Some(1 << 30);
    cfg.send_buffer = Some(1 << 30);
    let d = open(DriverKind::Mmsg, &cfg);
    let caps = d.caps();
    assert!(caps.recv_buffer < 1 << 30);
    let sysctls: Vec<&str> = caps
        .warnings
        .iter()
        .filter_map(|w| match w {
            SocketWarning::BufferCapped {
                sysctl,
                requested,
                granted,
                ..
            } => {
                assert_eq!(*requested, 1 << 30);
                assert!(granted < requested);
                Some(*sysctl)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sysctls, vec!["net.core.rmem_max", "net.core.wmem_max"]);
    assert!(caps.warnings[0].to_string().contains("net.core.rmem_max"));
}

#[test]
fn tiny_receive_buffer_still_delivers_some_intact() {
    for kind in [DriverKind::Uring, DriverKind::Mmsg, DriverKind::Basic] {
        let mut rx = socket_cfg();
        rx.recv_buffer = Some(1);
        let mut b = open(kind, &rx);
        // The kernel rounds a tiny request up to its minimum; nothing to warn about.
        assert!(b.caps().recv_buffer >= 1);
        let mut a = open(DriverKind::Mmsg, &socket_cfg());
        let payloads: Vec<_> = (0..200).map(|i| payload(i, 1000)).collect();
        let sent = send_all(a.as_mut(), b.local_addr(), &payloads);
        assert_eq!(sent.datagrams_sent, 200);
        let mut got = Vec::new();
        // Drain whatever survived; stop after a few empty waits.
        let mut empty = 0;
        while empty < 3 {
            let s = b
                .recv_batch(Wait::Timeout(Duration::from_millis(20)), &mut |dg| {
                    got.push(dg.data.to_vec())
                })
                .unwrap();
            if s.datagrams == 0 {
                empty += 1;
            }
        }
        assert!(!got.is_empty(), "{kind}: nothing delivered");
        assert!(
            got.len() < 200,
            "{kind}: a tiny buffer should have dropped some"
        );
        let mut seqs = Vec::new();
        for p in &got {
            let seq = u32::from_le_bytes(p[..4].try_into().unwrap());
            assert_eq!(p, &payload(seq, 1000), "{kind}: corrupted datagram");
            seqs.push(seq);
        }
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), got.len(), "{kind}: duplicates");
    }
}
