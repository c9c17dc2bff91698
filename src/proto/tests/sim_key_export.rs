//! `EndpointConfig::export_session_keys`: every key set installed (both roles, rekeys too)
//! is handed out once by `poll_session_keys`, and those keys open the session's packets.

use std::time::Duration;

use intentra_proto::internals::{PacketCipher, PacketKey};
use intentra_proto::sim::Network;
use intentra_proto::wire::{parse_header, Header};
use intentra_proto::Mode;
use intentra_proto::SessionSecrets;

fn drain(net: &mut Network, node: usize) -> Vec<SessionSecrets> {
    std::iter::from_fn(|| net.nodes[node].endpoint.poll_session_keys()).collect()
}

#[test]
fn exported_keys_mirror_each_other_cover_rekeys_and_open_captured_packets() {
    let (mut net, pa, _) = Network::connected_pair(21, |c| {
        c.export_session_keys = true;
        c.rekey_after = Duration::from_secs(2);
    });
    net.capture = Some(Vec::new());
    for i in 0..5_000u32 {
        net.send(0, pa, Mode::Realtime, &i.to_le_bytes()).unwrap();
        net.run_for(Duration::from_millis(1), 1_000);
    }
    let initiator = drain(&mut net, 0);
    let responder = drain(&mut net, 1);
    assert!(initiator.len() >= 3, "{initiator:?}");
    assert_eq!(initiator.len(), responder.len());
    assert!(!initiator[0].rekey && initiator[1..].iter().all(|k| k.rekey));
    for (i, r) in initiator.iter().zip(&responder) {
        assert!(i.initiator && !r.initiator);
        assert_eq!(
            (i.local_index, i.remote_index),
            (r.remote_index, r.local_index)
        );
        assert!(i.send == r.recv && i.recv == r.send && i.send != i.recv);
        assert_eq!(i.peer, net.public_key(1));
        assert_eq!(r.peer, net.public_key(0));
    }
    // Each one only once.
    assert!(net.nodes[0].endpoint.poll_session_keys().is_none());

    let mut opened = 0;
    for (_, _, datagram) in net.capture.take().unwrap() {
        let Ok(Header::Transport {
            receiver, counter, ..
        }) = parse_header(&datagram)
        else {
            continue;
        };
        let key = responder
            .iter()
            .find_map(|k| (k.local_index == receiver).then_some(k.recv))
            .or_else(|| {
                initiator
                    .iter()
                    .find_map(|k| (k.local_index == receiver).then_some(k.recv))
            })
            .expect("every transport packet names a logged index");
        let mut packet = datagram.clone();
        PacketKey::new(&key)
            .open_in_place(counter, &mut packet)
            .expect("logged keys open the packet");
        opened += 1;
    }
    assert!(opened >= 5_000);
}

#[test]
fn nothing_is_exported_by_default() {
    let (mut net, pa, _) = Network::connected_pair(22, |_| {});
    net.send(0, pa, Mode::Realtime, b"x").unwrap();
    net.run_for(Duration::from_millis(10), 1_000);
    assert!(net.nodes[0].endpoint.poll_session_keys().is_none());
    assert!(net.nodes[1].endpoint.poll_session_keys().is_none());
}
