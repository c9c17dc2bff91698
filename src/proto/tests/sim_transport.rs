//! Transport scenarios on the in-memory network: delivery, attacks on sealed packets,
//! rate limits, strikes, liveness, rekeys and roaming.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use intentra_proto::sim::{Network, Record};
use intentra_proto::wire::{self, Header, PacketType, TransportKind};
use intentra_proto::{CloseReason, DropReason};
use intentra_proto::{EndpointConfig, MAX_ACK_DELAY};
use intentra_proto::{Mode, PeerId};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn pair(seed: u64, tweak: impl Fn(&mut EndpointConfig)) -> (Network, PeerId, PeerId) {
    Network::connected_pair(seed, tweak)
}

fn captured_of_type(net: &Network, ty: PacketType) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    net.capture
        .as_ref()
        .unwrap()
        .iter()
        .filter(|(_, _, b)| b.len() > 1 && b[1] == ty as u8)
        .cloned()
        .collect()
}

#[test]
fn realtime_is_sent_once_and_never_waits_on_loss() {
    let (mut net, pa, _) = pair(1, |_| {});
    net.link.loss_ppm = 300_000;
    net.capture = Some(Vec::new());
    for i in 0..1_000u32 {
        net.send(0, pa, Mode::Realtime, &i.to_le_bytes()).unwrap();
        net.run_for(Duration::from_millis(1), 100);
    }
    net.run_for(Duration::from_millis(10), 10_000);
    // Sent exactly once each, never retransmitted.
    assert_eq!(captured_of_type(&net, PacketType::Realtime).len(), 1_000);
    let got: Vec<u32> = net.nodes[1]
        .messages(Mode::Realtime)
        .map(|m| u32::from_le_bytes(m.try_into().unwrap()))
        .collect();
    // Roughly 70% arrive, each as soon as it arrives: what follows a loss is not held back.
    assert!((600..800).contains(&got.len()), "{}", got.len());
    assert!(got.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn exact_and_old_replays_are_rejected_and_counted() {
    let (mut net, pa, _) = pair(2, |c| c.rate_burst = 10_000);
    net.capture = Some(Vec::new());
    for i in 0..3_000u32 {
        net.send(0, pa, Mode::Realtime, &i.to_le_bytes()).unwrap();
    }
    net.run_for(Duration::from_millis(10), 100_000);
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 3_000);
    let packets = captured_of_type(&net, PacketType::Realtime);
    let (src, _, newest) = packets.last().unwrap().clone();
    let (_, _, oldest) = packets.first().unwrap().clone();
    net.inject(1, src, &newest);
    net.inject(1, src, &oldest);
    let stats = net.nodes[1].endpoint.stats();
    assert_eq!(stats.dropped(DropReason::Replay), 2);
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 3_000);
}

#[test]
fn every_corrupted_byte_is_rejected_without_delivery() {
    let (mut net, pa, _) = pair(3, |_| {});
    net.capture = Some(Vec::new());
    net.send(0, pa, Mode::Realtime, b"the real payload")
        .unwrap();
    let (src, _, packet) = captured_of_type(&net, PacketType::Realtime)[0].clone();
    net.capture = None;
    let before = net.nodes[1].endpoint.stats();
    for byte in 0..packet.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = packet.clone();
            bad[byte] ^= bit;
            // From another address, so that strikes do not close the session mid-test.
            net.inject(1, SocketAddr::from((Ipv4Addr::new(127, 66, 0, 1), 1)), &bad);
        }
    }
    let after = net.nodes[1].endpoint.stats();
    assert_eq!(after.messages_delivered, before.messages_delivered);
    assert_eq!(
        after.dropped_total() - before.dropped_total(),
        2 * packet.len() as u64
    );
    assert!(after.dropped(DropReason::Crypto) > 0 && after.dropped(DropReason::Malformed) > 0);
    // The genuine packet still opens afterwards: forgeries did not burn its counter.
    net.inject(1, src, &packet);
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 1);
}

#[test]
fn truncated_oversized_and_random_datagrams_are_malformed_never_panics() {
    let (mut net, pa, _) = pair(4, |_| {});
    net.capture = Some(Vec::new());
    net.send(0, pa, Mode::Reliable, &[7u8; 200]).unwrap();
    let (_, _, packet) = captured_of_type(&net, PacketType::Reliable)[0].clone();
    let elsewhere = SocketAddr::from((Ipv4Addr::new(127, 66, 0, 4), 4));
    let before = net.nodes[1].endpoint.stats();
    for len in 0..packet.len() {
        net.inject(1, elsewhere, &packet[..len]);
    }
    let mut huge = packet.clone();
    huge.resize(wire::MAX_DATAGRAM_LEN + 1, 0);
    net.inject(1, elsewhere, &huge);
    net.inject(1, elsewhere, &vec![0xff; 65_000]);
    let stats = net.nodes[1].endpoint.stats();
    // Too short for a Reliable packet (header + seq + tag), too long, or not ours: malformed.
    // Longer prefixes parse and then fail authentication.
    let injected = packet.len() as u64 + 2;
    assert_eq!(stats.dropped_total() - before.dropped_total(), injected);
    assert_eq!(stats.dropped(DropReason::Malformed), 40 + 2);
    assert_eq!(stats.messages_delivered, before.messages_delivered);
}

#[test]
fn a_forged_ack_is_rejected_by_authentication() {
    let (mut net, pa, _) = pair(5, |_| {});
    net.capture = Some(Vec::new());
    net.send(0, pa, Mode::Reliable, b"needs an ack").unwrap();
    net.run_for(MAX_ACK_DELAY + Duration::from_millis(5), 1_000);
    let acks = captured_of_type(&net, PacketType::Ack);
    assert!(!acks.is_empty());
    let (src, _, genuine) = acks[0].clone();
    // A forger who knows the index and a fresh counter, but not the key.
    let mut forged = genuine.clone();
    forged[8..16].copy_from_slice(&1_000u64.to_le_bytes());
    forged[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    let before = net.nodes[0].endpoint.stats().dropped(DropReason::Crypto);
    net.inject(
        0,
        SocketAddr::from((Ipv4Addr::new(127, 66, 0, 2), 9)),
        &forged,
    );
    assert_eq!(
        net.nodes[0].endpoint.stats().dropped(DropReason::Crypto),
        before + 1
    );
    let _ = src;
}

#[test]
fn every_packet_of_a_direction_has_a_fresh_counter() {
    // One nonce used twice under AES-GCM breaks authenticity: no two packets may share a counter.
    let (mut net, pa, pb) = pair(6, |_| {});
    net.capture = Some(Vec::new());
    for i in 0..200u32 {
        net.send(0, pa, Mode::Reliable, &i.to_le_bytes())
            .unwrap_or(());
        net.send(1, pb, Mode::Realtime, &i.to_le_bytes()).unwrap();
        // Past the Ack delay: every segment earns its own Ack, each with its own counter.
        net.run_for(MAX_ACK_DELAY + Duration::from_millis(1), 1_000);
    }
    let mut seen = HashSet::new();
    let mut acks = 0;
    for (_, _, bytes) in net.capture.as_ref().unwrap() {
        if let Ok(Header::Transport {
            kind,
            receiver,
            counter,
        }) = wire::parse_header(bytes)
        {
            acks += usize::from(kind == TransportKind::Ack);
            assert!(
                seen.insert((receiver, counter)),
                "nonce reused: {receiver:?} {counter:?}"
            );
        }
    }
    assert!(acks >= 200, "{acks}");
}

#[test]
fn a_peer_over_its_rate_is_dropped_before_any_aead_open() {
    let (mut net, pa, _) = pair(7, |c| {
        c.rate_pps = 1_000;
        c.rate_burst = 50;
    });
    net.capture = Some(Vec::new());
    // Let the bucket fill, then send a burst in one instant.
    net.run_for(Duration::from_secs(1), 10_000);
    let opens_before = net.nodes[1].endpoint.stats().aead_opens;
    for i in 0..500u32 {
        net.send(0, pa, Mode::Realtime, &i.to_le_bytes()).unwrap();
    }
    net.run_for(Duration::from_micros(600), 10_000);
    let stats = net.nodes[1].endpoint.stats();
    assert_eq!(stats.dropped(DropReason::RateLimit), 450);
    assert_eq!(
        stats.aead_opens - opens_before,
        50,
        "only packets with a token were opened"
    );
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 50);
}

#[test]
fn forged_packets_never_strike_or_close_a_session_whatever_their_source() {
    let (mut net, pa, _) = pair(8, |c| c.rate_burst = 100_000);
    net.capture = Some(Vec::new());
    net.send(0, pa, Mode::Realtime, b"x").unwrap();
    let (src, _, packet) = captured_of_type(&net, PacketType::Realtime)[0].clone();
    let mut bad = packet.clone();
    *bad.last_mut().unwrap() ^= 1;
    for _ in 0..50 {
        net.inject(1, SocketAddr::from((Ipv4Addr::new(127, 66, 0, 3), 3)), &bad);
    }
    // From the peer's own address too: a forged packet is evidence of nothing.
    for _ in 0..1_000 {
        net.inject(1, src, &bad);
    }
    let stats = net.nodes[1].endpoint.stats();
    assert_eq!(stats.dropped(DropReason::Crypto), 1_050);
    assert_eq!(stats.strike_events, 0);
    assert!(net.nodes[1].downs().is_empty());
    let pb = net.peer_of(1, 0).unwrap();
    assert_eq!(net.nodes[1].endpoint.peer_info(pb).unwrap().addr, src);
    net.send(0, pa, Mode::Realtime, b"still up").unwrap();
    net.run_for(Duration::from_millis(10), 1_000);
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 2);
    assert!(net.nodes[0].downs().is_empty());
}

#[test]
fn keepalives_hold_an_idle_session_and_silence_times_it_out() {
    let (mut net, _, _) = pair(9, |_| {});
    net.run_for(Duration::from_secs(60), 100_000);
    assert!(net.nodes[0].downs().is_empty() && net.nodes[1].downs().is_empty());
    net.link.loss_ppm = 1_000_000;
    net.run_for(Duration::from_secs(11), 100_000);
    assert_eq!(net.nodes[0].downs(), [CloseReason::IdleTimeout]);
    assert_eq!(net.nodes[1].downs(), [CloseReason::IdleTimeout]);
}

#[test]
fn an_authenticated_close_is_observed_by_the_peer() {
    let (mut net, pa, _) = pair(10, |_| {});
    let now = net.now;
    net.nodes[0].endpoint.close(now, pa);
    net.drain(0);
    net.run_for(Duration::from_millis(10), 1_000);
    assert_eq!(net.nodes[0].downs(), [CloseReason::Local]);
    assert_eq!(net.nodes[1].downs(), [CloseReason::Remote]);
    assert_eq!(net.nodes[1].endpoint.stats().sessions_active, 0);
}

#[test]
fn sessions_rekey_under_traffic_without_losing_realtime_messages() {
    let (mut net, pa, pb) = pair(11, |c| c.rekey_after = Duration::from_secs(2));
    let mut sent = 0u32;
    for _ in 0..10_000 {
        net.send(0, pa, Mode::Realtime, &sent.to_le_bytes())
            .unwrap();
        net.send(1, pb, Mode::Realtime, &sent.to_le_bytes())
            .unwrap();
        sent += 1;
        net.run_for(Duration::from_millis(1), 1_000);
    }
    net.run_for(Duration::from_millis(10), 10_000);
    assert!(
        net.nodes[0].endpoint.stats().rekeys >= 4,
        "{:?}",
        net.nodes[0].endpoint.stats()
    );
    assert!(net.nodes[1].endpoint.stats().rekeys >= 4);
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count() as u32, sent);
    assert_eq!(net.nodes[0].messages(Mode::Realtime).count() as u32, sent);
    assert!(net.nodes[0].downs().is_empty() && net.nodes[1].downs().is_empty());
}

#[test]
fn keys_past_reject_after_without_a_rekey_close_the_session() {
    let (mut net, pa, pb) = pair(12, |c| {
        c.rekey_after = Duration::from_secs(2);
        c.reject_after = Duration::from_secs(5);
    });
    // Handshakes never get through; transport traffic does, so only key age can end it.
    net.blackhole = Some(|bytes| matches!(bytes.get(1), Some(1..=4)));
    for _ in 0..6_000 {
        net.send(0, pa, Mode::Realtime, b"a").unwrap_or(());
        net.send(1, pb, Mode::Realtime, b"b").unwrap_or(());
        net.run_for(Duration::from_millis(1), 100);
    }
    assert_eq!(net.nodes[0].downs(), [CloseReason::KeyExpired]);
    assert!(net.nodes[0].endpoint.stats().handshakes_initiated >= 2);
}

#[test]
fn roaming_moves_the_peer_only_after_authentication() {
    let (mut net, pa, pb) = pair(13, |_| {});
    let old = net.nodes[0].addr;
    let new_addr = SocketAddr::from((Ipv4Addr::new(127, 0, 0, 99), 7100));
    // An unauthenticated packet from the new address moves nothing.
    net.inject(
        1,
        new_addr,
        &[
            1, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0,
        ],
    );
    assert_eq!(net.nodes[1].endpoint.peer_info(pb).unwrap().addr, old);
    net.nodes[0].addr = new_addr;
    net.send(0, pa, Mode::Realtime, b"from my new address")
        .unwrap();
    net.run_for(Duration::from_millis(5), 1_000);
    assert_eq!(net.nodes[1].endpoint.peer_info(pb).unwrap().addr, new_addr);
    net.send(1, pb, Mode::Realtime, b"reply").unwrap();
    net.run_for(Duration::from_millis(5), 1_000);
    assert_eq!(
        net.nodes[0].messages(Mode::Realtime).collect::<Vec<_>>(),
        [b"reply"]
    );
}

#[test]
fn a_restarted_peer_reconnects_and_is_reported_down_then_up() {
    let (mut net, _, _) = pair(14, |_| {});
    // Node 0 restarts with the same key: a new endpoint, no memory of the session.
    let key_b = net.public_key(1);
    let b_addr = net.nodes[1].addr;
    let keys = {
        // Rebuild node 0's endpoint from its config (same keypair).
        net.nodes[0].endpoint.config().clone()
    };
    let now = net.now;
    net.nodes[0].endpoint =
        intentra_proto::Endpoint::new(keys, now, rand_chacha::ChaCha20Rng::seed_from_u64(99));
    net.nodes[0].records.clear();
    net.nodes[0].endpoint.connect(now, b_addr, key_b).unwrap();
    net.drain(0);
    net.run_for(Duration::from_millis(50), 1_000);
    assert_eq!(net.nodes[0].ups(), 1);
    let b_records = &net.nodes[1].records;
    let tail: Vec<_> = b_records.iter().rev().take(2).collect();
    assert!(matches!(tail[0], Record::Up(..)));
    // Replaced, not Remote: no close packet was received.
    assert!(matches!(tail[1], Record::Down(_, _, CloseReason::Replaced)));
    assert_eq!(net.nodes[1].endpoint.stats().closes(CloseReason::Remote), 0);
    assert_eq!(net.nodes[1].endpoint.stats().sessions_active, 1);
}

#[test]
fn a_hub_fans_out_to_many_peers() {
    let mut net = Network::new(15);
    let hub = net.add_default();
    let spokes: Vec<usize> = (0..40).map(|_| net.add_default()).collect();
    for &s in &spokes {
        net.connect(s, hub);
    }
    net.run_until(100_000, |n| n.nodes[hub].ups() == 40);
    let peers: Vec<PeerId> = net.nodes[hub].endpoint.established_peers().collect();
    assert_eq!(peers.len(), 40);
    for round in 0..10u8 {
        for &p in &peers {
            net.send(hub, p, Mode::Realtime, &[round; 64]).unwrap();
        }
        net.run_for(Duration::from_millis(5), 100_000);
    }
    for &s in &spokes {
        assert_eq!(net.nodes[s].messages(Mode::Realtime).count(), 10);
    }
}

#[test]
fn duplicates_and_old_replays_are_counted_and_never_close_a_session() {
    let (mut net, pa, _) = pair(16, |c| c.rate_burst = 100_000);
    net.capture = Some(Vec::new());
    for i in 0..3_000u32 {
        net.send(0, pa, Mode::Realtime, &i.to_le_bytes()).unwrap();
    }
    net.run_for(Duration::from_millis(10), 100_000);
    let packets = captured_of_type(&net, PacketType::Realtime);
    let (src, _, newest) = packets.last().unwrap().clone();
    // Twenty exact duplicates of a recent packet, as a misbehaving switch might produce.
    for _ in 0..20 {
        net.inject(1, src, &newest);
    }
    // Packets from before the window can only be replays, sent from the peer's own address.
    for (_, _, old) in packets.iter().take(500) {
        net.inject(1, src, old);
    }
    let stats = net.nodes[1].endpoint.stats();
    assert_eq!(stats.dropped(DropReason::Replay), 520);
    assert_eq!(stats.strike_events, 0);
    assert!(net.nodes[1].downs().is_empty());
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 3_000);
}

/// `index_hint` (the first stage of the receive loop's cache hint) names the index-table
/// lines of any transport packet from its header alone: it never reads the table, so it
/// answers the same for an index that is live, unknown or gone, and never panics.
#[test]
fn the_index_hint_reads_only_the_header_and_changes_nothing() {
    let (mut net, packet) = one_realtime_packet(42);
    let receiver = &net.nodes[1].endpoint;
    let before = receiver.stats();
    let lines = |header: &[u8]| {
        receiver
            .index_hint(header)
            .map(|hint| hint.lines().collect::<Vec<_>>())
    };
    let live = lines(&packet).expect("a transport packet has a table entry");
    // The home entry and the next: a line or two, not the peer's slot.
    assert!((1..=2).contains(&live.len()), "{}", live.len());
    let slot = receiver
        .hot_state(&packet)
        .unwrap()
        .lines()
        .collect::<Vec<_>>();
    assert!(live.iter().all(|line| !slot.contains(line)));
    // The header alone, and any transport type with the same index: the same lines.
    assert_eq!(lines(&packet[..8]).as_ref(), Some(&live));
    let mut ack = packet.clone();
    ack[1] = PacketType::Ack as u8;
    assert_eq!(lines(&ack).as_ref(), Some(&live));
    // An index we never issued still has a home bucket: the hint does not look.
    let [unknown, handshake, version, zero_index] = altered(&packet);
    assert!(lines(&unknown).is_some());
    // Not a transport packet: nothing.
    for junk in [&handshake[..], &version, &zero_index, &packet[..7], &[]] {
        assert!(receiver.index_hint(junk).is_none(), "{junk:?}");
    }
    // Arbitrary bytes: never a panic.
    for bytes in random_inputs(43) {
        let _ = receiver.index_hint(&bytes);
    }
    assert_eq!(receiver.stats(), before, "a hint must change nothing");
    // Once the session is gone its index still hashes to the same lines.
    close_and_free(&mut net);
    assert!(net.nodes[1].endpoint.hot_state(&packet).is_none());
    let gone = net.nodes[1].endpoint.index_hint(&packet);
    assert_eq!(
        gone.map(|hint| hint.lines().collect::<Vec<_>>()),
        Some(live)
    );
}

/// A connected pair (from `seed`) and the bytes of one Realtime packet node 0 sent node 1.
fn one_realtime_packet(seed: u64) -> (Network, Vec<u8>) {
    let (mut net, pa, _) = pair(seed, |_| {});
    net.capture = Some(Vec::new());
    net.send(0, pa, Mode::Realtime, b"hinted").unwrap();
    net.run_for(Duration::from_millis(1), 100);
    let (_, _, packet) = captured_of_type(&net, PacketType::Realtime)[0].clone();
    (net, packet)
}

/// `packet` with its receiver index changed, as a HandshakeFinish, with a bad version, and
/// with index 0: what the cache hints must tell apart from a live session's packet.
fn altered(packet: &[u8]) -> [Vec<u8>; 4] {
    let mut unknown = packet.to_vec();
    unknown[4..8]
        .copy_from_slice(&(u32::from_le_bytes(packet[4..8].try_into().unwrap()) ^ 1).to_le_bytes());
    let mut handshake = packet.to_vec();
    handshake[1] = PacketType::HandshakeFinish as u8;
    let mut version = packet.to_vec();
    version[0] ^= 0xFF;
    let mut zero_index = packet.to_vec();
    zero_index[4..8].fill(0);
    [unknown, handshake, version, zero_index]
}

/// Node 1 closes its session and runs past the closing linger, when the peer and its
/// indexes are freed.
fn close_and_free(net: &mut Network) {
    let now = net.now;
    let peer = net.nodes[1].endpoint.established_peers().next().unwrap();
    net.nodes[1].endpoint.close(now, peer);
    net.run_for(Duration::from_secs(60), 100_000);
}

/// 64 inputs of random bytes, 0 to 63 long.
fn random_inputs(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..64)
        .map(|len| {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            bytes
        })
        .collect()
}

/// `hot_state` (the receive loop's cache hint) names state only for transport packets to a
/// session we hold, reads nothing else of the input, never panics, and changes nothing.
#[test]
fn the_cache_hint_points_only_at_live_sessions_and_changes_nothing() {
    let (mut net, packet) = one_realtime_packet(40);
    let receiver = &net.nodes[1].endpoint;
    let before = receiver.stats();
    let live = receiver
        .hot_state(&packet)
        .expect("a live session has state");
    // At least the peer's hot fields and current keys: several lines, not one.
    assert!(live.lines().count() >= 8, "{}", live.lines().count());
    // The header alone is enough.
    assert!(receiver.hot_state(&packet[..8]).is_some());
    // Same index under another transport type: the same session's state.
    let mut ack = packet.clone();
    ack[1] = PacketType::Ack as u8;
    assert!(receiver.hot_state(&ack).is_some());
    // Anything else: nothing.
    let [unknown, handshake, version, zero_index] = altered(&packet);
    for junk in [
        &unknown[..],
        &handshake,
        &version,
        &zero_index,
        &packet[..7],
        &[],
    ] {
        assert!(receiver.hot_state(junk).is_none(), "{junk:?}");
    }
    // Arbitrary bytes: never a panic.
    for bytes in random_inputs(41) {
        let _ = receiver.hot_state(&bytes);
    }
    assert_eq!(receiver.stats(), before, "a hint must change nothing");
    // Once the session is gone, so is its state.
    close_and_free(&mut net);
    assert_eq!(net.nodes[1].endpoint.established_peers().count(), 0);
    assert!(net.nodes[1].endpoint.hot_state(&packet).is_none());
}
