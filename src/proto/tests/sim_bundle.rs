//! Bundles (PROTOCOL.md 7.5) on the in-memory network: several messages in one sealed
//! datagram, delivered one by one; lone messages as their own packets; loss, duplication and
//! reordering; framing that lies; retransmission of a bundled Reliable segment.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use intentra_proto::internals::{PacketCipher, PacketKey};
use intentra_proto::sim::{LinkConfig, Network};
use intentra_proto::wire::{self, Counter, PacketType, TransportKind};
use intentra_proto::{Bundled, CloseReason, DropReason, Mode, SendError, SessionSecrets};

fn captured(net: &Network, ty: PacketType) -> Vec<Vec<u8>> {
    net.capture
        .as_ref()
        .expect("capture on")
        .iter()
        .filter(|(_, _, b)| b.get(1) == Some(&(ty as u8)))
        .map(|(_, _, b)| b.clone())
        .collect()
}

/// A message whose bytes say which it is: `mode` tag, then its number, padded to `len`.
fn numbered(mode: Mode, n: u32, len: usize) -> Vec<u8> {
    let mut m = vec![(n % 251) as u8; len.max(5)];
    m[0] = match mode {
        Mode::Realtime => b'r',
        Mode::Reliable => b'R',
    };
    m[1..5].copy_from_slice(&n.to_le_bytes());
    m
}

fn number_of(message: &[u8]) -> u32 {
    u32::from_le_bytes(message[1..5].try_into().unwrap())
}

#[test]
fn small_messages_queued_together_go_out_in_one_datagram_and_arrive_one_by_one() {
    let (mut net, pa, _) = Network::connected_pair(1, |_| {});
    net.capture = Some(Vec::new());
    let messages: Vec<Vec<u8>> = (0..20).map(|n| numbered(Mode::Realtime, n, 64)).collect();
    let batch: Vec<(Mode, &[u8])> = messages
        .iter()
        .map(|m| (Mode::Realtime, m.as_slice()))
        .collect();
    // 20 frames of 3 + 64 bytes: 1,340 bytes of plaintext, one datagram.
    assert_eq!(net.send_bundle(0, pa, &batch).unwrap(), 1);
    net.run_for(Duration::from_millis(5), 1_000);
    assert_eq!(captured(&net, PacketType::Bundle).len(), 1);
    assert!(captured(&net, PacketType::Realtime).is_empty());
    let got: Vec<Vec<u8>> = net.nodes[1]
        .messages(Mode::Realtime)
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(got, messages, "every message, separately, in order");
    let stats = net.nodes[1].endpoint.stats();
    assert_eq!(stats.messages_delivered, 20);
    assert_eq!(stats.dropped_total(), 0);
}

#[test]
fn a_full_bundle_is_finished_and_the_rest_go_in_the_next() {
    let (mut net, pa, _) = Network::connected_pair(2, |_| {});
    net.capture = Some(Vec::new());
    let messages: Vec<Vec<u8>> = (0..100).map(|n| numbered(Mode::Realtime, n, 128)).collect();
    let batch: Vec<(Mode, &[u8])> = messages
        .iter()
        .map(|m| (Mode::Realtime, m.as_slice()))
        .collect();
    // 131 bytes a frame: 10 fit in 1,420 bytes, so 100 messages take 10 datagrams.
    assert_eq!(net.send_bundle(0, pa, &batch).unwrap(), 10);
    net.run_for(Duration::from_millis(5), 1_000);
    let bundles = captured(&net, PacketType::Bundle);
    assert_eq!(bundles.len(), 10);
    assert!(bundles.iter().all(|b| b.len() <= wire::MAX_DATAGRAM_LEN));
    let got: Vec<u32> = net.nodes[1]
        .messages(Mode::Realtime)
        .map(number_of)
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_lone_message_goes_as_its_own_packet() {
    let (mut net, pa, _) = Network::connected_pair(3, |_| {});
    net.capture = Some(Vec::new());
    let realtime = numbered(Mode::Realtime, 1, 200);
    let reliable = numbered(Mode::Reliable, 0, 200);
    assert_eq!(
        net.send_bundle(0, pa, &[(Mode::Realtime, &realtime)])
            .unwrap(),
        1
    );
    assert_eq!(
        net.send_bundle(0, pa, &[(Mode::Reliable, &reliable)])
            .unwrap(),
        1
    );
    net.run_for(Duration::from_millis(20), 1_000);
    assert!(captured(&net, PacketType::Bundle).is_empty());
    let realtime_packets = captured(&net, PacketType::Realtime);
    assert_eq!(realtime_packets.len(), 1);
    assert_eq!(realtime_packets[0].len(), wire::TRANSPORT_OVERHEAD + 200);
    let reliable_packets = captured(&net, PacketType::Reliable);
    assert_eq!(reliable_packets.len(), 1);
    assert_eq!(
        reliable_packets[0].len(),
        wire::TRANSPORT_OVERHEAD + wire::RELIABLE_SEQ_LEN + 200
    );
    assert_eq!(
        net.nodes[1].messages(Mode::Realtime).collect::<Vec<_>>(),
        vec![realtime.as_slice()]
    );
    assert_eq!(
        net.nodes[1].messages(Mode::Reliable).collect::<Vec<_>>(),
        vec![reliable.as_slice()]
    );
}

#[test]
fn a_message_too_large_to_share_a_datagram_is_full_not_an_error() {
    let (mut net, pa, _) = Network::connected_pair(4, |_| {});
    let mut buf = [0u8; wire::MAX_DATAGRAM_LEN];
    let now = net.now;
    let endpoint = &mut net.nodes[0].endpoint;
    let mut bundle = endpoint.bundle(now, pa, &mut buf).unwrap();
    assert_eq!(bundle.push(Mode::Realtime, &[1; 100]), Ok(Bundled::Added));
    // The largest Realtime message fits only alone.
    let big = [2u8; wire::MAX_REALTIME_PAYLOAD];
    assert_eq!(bundle.push(Mode::Realtime, &big), Ok(Bundled::Full));
    assert_eq!(
        bundle.push(Mode::Realtime, &[3; wire::MAX_REALTIME_PAYLOAD + 1]),
        Err(SendError::TooLarge)
    );
    assert_eq!(bundle.len(), 1);
    let transmit = bundle.finish().unwrap().expect("one message to send");
    assert_eq!(transmit.len, wire::TRANSPORT_OVERHEAD + 100);
    // Alone, it fits exactly.
    let mut bundle = endpoint.bundle(now, pa, &mut buf).unwrap();
    assert_eq!(bundle.push(Mode::Realtime, &big), Ok(Bundled::Added));
    let transmit = bundle.finish().unwrap().unwrap();
    assert_eq!(transmit.len, wire::MAX_DATAGRAM_LEN);
}

#[test]
fn bundles_under_loss_duplication_and_reordering_deliver_reliable_once_in_order_and_realtime_at_most_once(
) {
    for seed in 10..16 {
        let (mut net, pa, _) = Network::connected_pair(seed, |c| c.rate_burst = 100_000);
        net.link = LinkConfig {
            loss_ppm: 50_000,
            duplicate_ppm: 50_000,
            reorder_ppm: 100_000,
            reorder_delay: Duration::from_millis(3),
            latency: Duration::from_millis(1),
        };
        let mut next = [0u32; 2];
        let mut sent_reliable = 0;
        let mut sent_realtime = 0;
        for round in 0..400u32 {
            // A varying number of messages of both modes, queued together.
            let count = 1 + (round * 7 + seed as u32) % 8;
            let messages: Vec<(Mode, Vec<u8>)> = (0..count)
                .map(|i| {
                    let mode = if (round + i) % 3 == 0 {
                        Mode::Realtime
                    } else {
                        Mode::Reliable
                    };
                    let slot = usize::from(mode == Mode::Reliable);
                    let n = next[slot];
                    next[slot] += 1;
                    (mode, numbered(mode, n, 20 + (n as usize * 13) % 300))
                })
                .collect();
            let batch: Vec<(Mode, &[u8])> =
                messages.iter().map(|(m, b)| (*m, b.as_slice())).collect();
            match net.send_bundle(0, pa, &batch) {
                Ok(_) => {}
                Err(SendError::WouldBlock) => panic!("the test stays within the window"),
                Err(other) => panic!("{other}"),
            }
            sent_reliable = next[1];
            sent_realtime = next[0];
            net.run_for(Duration::from_millis(5), 10_000);
        }
        net.run_for(Duration::from_secs(3), 1_000_000);
        let reliable: Vec<u32> = net.nodes[1]
            .messages(Mode::Reliable)
            .map(number_of)
            .collect();
        assert_eq!(
            reliable,
            (0..sent_reliable).collect::<Vec<_>>(),
            "seed {seed}: every Reliable message once, in order"
        );
        let realtime: Vec<u32> = net.nodes[1]
            .messages(Mode::Realtime)
            .map(number_of)
            .collect();
        let distinct: HashSet<u32> = realtime.iter().copied().collect();
        assert_eq!(distinct.len(), realtime.len(), "seed {seed}: no duplicate");
        assert!(distinct.iter().all(|&n| n < sent_realtime));
        // About 95% of the datagrams arrive; Realtime is never retransmitted.
        assert!(
            realtime.len() as u32 > sent_realtime * 8 / 10,
            "seed {seed}: {} of {sent_realtime}",
            realtime.len()
        );
        assert!(net.nodes[1].downs().is_empty() && net.nodes[0].downs().is_empty());
    }
}

#[test]
fn a_bundled_reliable_segment_lost_is_retransmitted_alone_and_delivered_once() {
    let (mut net, pa, _) = Network::connected_pair(20, |_| {});
    net.capture = Some(Vec::new());
    // Every bundle is lost; lone packets pass.
    net.blackhole = Some(|b: &[u8]| b.get(1) == Some(&(PacketType::Bundle as u8)));
    let messages: Vec<Vec<u8>> = (0..5).map(|n| numbered(Mode::Reliable, n, 40)).collect();
    let batch: Vec<(Mode, &[u8])> = messages
        .iter()
        .map(|m| (Mode::Reliable, m.as_slice()))
        .collect();
    assert_eq!(net.send_bundle(0, pa, &batch).unwrap(), 1);
    net.run_for(Duration::from_secs(2), 100_000);
    let got: Vec<u32> = net.nodes[1]
        .messages(Mode::Reliable)
        .map(number_of)
        .collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    // The bundle never arrived: all five came as lone Reliable packets (retransmissions are
    // never bundled), at least one each.
    assert!(captured(&net, PacketType::Reliable).len() >= 5);
    assert_eq!(captured(&net, PacketType::Bundle).len(), 1);
}

// ----- framing that lies ----------------------------------------------------------------

/// Seals `plaintext` as a Bundle under the keys `secrets` sends with: what the holder of
/// those keys could send, so an authenticated packet.
fn sealed_bundle(secrets: &SessionSecrets, counter: u64, plaintext: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; wire::TRANSPORT_OVERHEAD + plaintext.len()];
    let header: &mut [u8; wire::TRANSPORT_HEADER_LEN] = (&mut packet[..wire::TRANSPORT_HEADER_LEN])
        .try_into()
        .unwrap();
    wire::write_transport_header(
        header,
        TransportKind::Bundle,
        secrets.remote_index,
        Counter(counter),
    );
    packet[wire::TRANSPORT_HEADER_LEN..wire::TRANSPORT_HEADER_LEN + plaintext.len()]
        .copy_from_slice(plaintext);
    PacketKey::new(&secrets.send)
        .seal_in_place(Counter(counter), &mut packet)
        .unwrap();
    packet
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&(body.len() as u16).to_le_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn a_bundle_whose_framing_lies_is_dropped_whole_counted_malformed_and_struck() {
    let (mut net, _, _) = Network::connected_pair(30, |c| c.export_session_keys = true);
    let secrets = net.nodes[0].endpoint.poll_session_keys().unwrap();
    let src: SocketAddr = net.nodes[0].addr;
    let good = frame(5, b"a good frame");
    let mut reliable_seq0 = 0u64.to_le_bytes().to_vec();
    reliable_seq0.extend_from_slice(b"reliable");
    let mut lies: Vec<(&str, Vec<u8>)> = Vec::new();
    // The last frame's length runs past the end.
    let mut past_end = good.clone();
    past_end.extend_from_slice(&[5, 50, 0, 1, 2, 3]);
    lies.push(("length past the end", past_end));
    // Two bytes left: not even a frame header.
    let mut short_header = good.clone();
    short_header.extend_from_slice(&[5, 0]);
    lies.push(("truncated frame header", short_header));
    // A kind that is not a message.
    let mut bad_kind = good.clone();
    bad_kind.extend(frame(7, &[0; 16]));
    lies.push(("kind 7", bad_kind));
    // A Reliable body without room for its seq.
    let mut short_reliable = frame(6, &reliable_seq0);
    short_reliable.extend(frame(6, &[1, 2, 3]));
    lies.push(("short reliable body", short_reliable));
    // 65 empty Realtime frames.
    lies.push(("65 frames", (0..65).flat_map(|_| frame(5, &[])).collect()));
    for (i, (what, plaintext)) in lies.iter().enumerate() {
        let before = net.nodes[1].endpoint.stats();
        let packet = sealed_bundle(&secrets, 1_000 + i as u64, plaintext);
        net.inject(1, src, &packet);
        let after = net.nodes[1].endpoint.stats();
        assert_eq!(
            after.dropped(DropReason::Malformed),
            before.dropped(DropReason::Malformed) + 1,
            "{what}: counted as malformed"
        );
        assert_eq!(after.strike_events, before.strike_events + 1, "{what}");
        assert_eq!(
            after.messages_delivered, before.messages_delivered,
            "{what}: not even its good frames are delivered"
        );
    }
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 0);
    assert_eq!(net.nodes[1].messages(Mode::Reliable).count(), 0);
    // 64 frames is the most a bundle may carry, and is accepted.
    let most: Vec<u8> = (0..64).flat_map(|_| frame(5, &[])).collect();
    net.inject(1, src, &sealed_bundle(&secrets, 2_000, &most));
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 64);
    // The same lie unauthenticated (a flipped bit) is a crypto drop and no strike.
    let strikes = net.nodes[1].endpoint.stats().strike_events;
    let mut forged = sealed_bundle(&secrets, 2_001, &lies[0].1);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    net.inject(1, src, &forged);
    assert_eq!(net.nodes[1].endpoint.stats().strike_events, strikes);
    assert!(net.nodes[1].downs().is_empty());
}

#[test]
fn a_peer_that_keeps_sending_malformed_bundles_is_closed_for_strikes() {
    let (mut net, _, _) = Network::connected_pair(31, |c| {
        c.export_session_keys = true;
        c.rate_burst = 100_000;
    });
    let secrets = net.nodes[0].endpoint.poll_session_keys().unwrap();
    let src = net.nodes[0].addr;
    let threshold = net.nodes[1].endpoint.config().strikes.threshold;
    for counter in 0..u64::from(threshold) {
        net.inject(1, src, &sealed_bundle(&secrets, 500 + counter, &[9, 0, 0]));
    }
    assert_eq!(net.nodes[1].downs(), vec![CloseReason::Strikes]);
}

#[test]
fn the_protocol_example_bundle_delivers_its_two_messages() {
    let (mut net, _, _) = Network::connected_pair(32, |c| c.export_session_keys = true);
    let secrets = net.nodes[0].endpoint.poll_session_keys().unwrap();
    // PROTOCOL.md 7.5: Realtime "hi", then Reliable seq 0 "ok" (7.5's example uses seq 7;
    // a fresh session expects 0 first).
    let plaintext = [
        0x05, 0x02, 0x00, b'h', b'i', 0x06, 0x0a, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, b'o', b'k',
    ];
    let packet = sealed_bundle(&secrets, 100, &plaintext);
    assert_eq!(packet.len(), 50);
    net.inject(1, net.nodes[0].addr, &packet);
    assert_eq!(
        net.nodes[1].messages(Mode::Realtime).collect::<Vec<_>>(),
        vec![b"hi".as_slice()]
    );
    assert_eq!(
        net.nodes[1].messages(Mode::Reliable).collect::<Vec<_>>(),
        vec![b"ok".as_slice()]
    );
}
