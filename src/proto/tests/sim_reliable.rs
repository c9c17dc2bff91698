//! Reliable-mode scenarios: in order and exactly once through loss, duplication and
//! reordering; across rekeys; bounded with a clear would-block; never in Realtime's way.

use std::time::Duration;

use intentra_proto::sim::Network;
use intentra_proto::EndpointConfig;
use intentra_proto::{Mode, PeerId, SendError};

fn pair(seed: u64, tweak: impl Fn(&mut EndpointConfig)) -> (Network, PeerId, PeerId) {
    Network::connected_pair(seed, tweak)
}

/// Pushes `count` numbered messages from node 0, one attempt per simulated millisecond, and
/// runs the network until node 1 has them all (bounded).
fn stream(net: &mut Network, peer: PeerId, count: u32, sim_limit: Duration) -> u64 {
    stream_paced(net, peer, count, u32::MAX, sim_limit)
}

/// As `stream`, at most `per_ms` new messages per simulated millisecond.
fn stream_paced(
    net: &mut Network,
    peer: PeerId,
    count: u32,
    per_ms: u32,
    sim_limit: Duration,
) -> u64 {
    let mut next = 0u32;
    let mut would_block = 0;
    let end = net.now + sim_limit;
    while (next < count || net.nodes[1].messages(Mode::Reliable).count() < count as usize)
        && net.now < end
    {
        let mut this_ms = 0;
        while next < count && this_ms < per_ms {
            this_ms += 1;
            match net.send(0, peer, Mode::Reliable, &next.to_le_bytes()) {
                Ok(()) => next += 1,
                Err(SendError::WouldBlock) => {
                    would_block += 1;
                    break;
                }
                Err(other) => panic!("send failed: {other:?}"),
            }
        }
        net.run_for(Duration::from_millis(1), 10_000);
    }
    would_block
}

/// Asserts node 1 received exactly 0..count in order, reporting the first difference briefly.
fn assert_exactly_in_order(net: &Network, count: u32, context: &str) {
    let got = received(net);
    if let Some(at) = (0..count as usize).find(|&i| got.get(i) != Some(&(i as u32))) {
        panic!(
            "{context}: {} of {count} received; first difference at position {at}: {:?}",
            got.len(),
            got.get(at)
        );
    }
    assert_eq!(
        got.len(),
        count as usize,
        "{context}: duplicates after the end"
    );
}

fn received(net: &Network) -> Vec<u32> {
    net.nodes[1]
        .messages(Mode::Reliable)
        .map(|m| u32::from_le_bytes(m.try_into().unwrap()))
        .collect()
}

#[test]
fn reliable_delivers_in_order_exactly_once_under_loss_duplication_and_reordering() {
    for seed in 0..5 {
        let (mut net, pa, _) = pair(seed, |c| c.reliable.max_queued_bytes = 4_096);
        net.link.loss_ppm = 100_000;
        net.link.duplicate_ppm = 50_000;
        net.link.reorder_ppm = 100_000;
        net.link.reorder_delay = Duration::from_millis(5);
        stream(&mut net, pa, 3_000, Duration::from_secs(120));
        assert_exactly_in_order(&net, 3_000, &format!("seed {seed}"));
        assert!(net.lost > 100, "the link really lost packets");
        assert!(net.nodes[0].endpoint.stats().reliable_retransmits > 0);
    }
}

#[test]
fn a_fast_stream_over_a_lossy_path_keeps_hundreds_of_segments_in_flight() {
    // 1 ms each way and 1% loss, default settings: 200 small messages per millisecond need
    // about 500 sequence numbers in flight (rate x time to acknowledge, recovery included),
    // far past the 64 of the first design, and the wide Acks describe them all.
    let (mut net, pa, _) = pair(31, |_| {});
    net.link.latency = Duration::from_millis(1);
    net.link.loss_ppm = 10_000;
    let count = 6_000u32;
    let mut next = 0u32;
    let mut widest = 0usize;
    let end = net.now + Duration::from_secs(60);
    while net.nodes[1].messages(Mode::Reliable).count() < count as usize && net.now < end {
        for _ in 0..200 {
            if next == count
                || net
                    .send(0, pa, Mode::Reliable, &next.to_le_bytes())
                    .is_err()
            {
                break;
            }
            next += 1;
        }
        let info = net.nodes[0].endpoint.peer_info(pa).unwrap();
        widest = widest.max(info.reliable_queued_bytes / 4);
        net.run_for(Duration::from_millis(1), 10_000);
    }
    assert_exactly_in_order(&net, count, "1 ms each way, 1% loss");
    assert!(
        widest > 256,
        "at most {widest} messages were ever unacknowledged"
    );
    assert!(net.lost > 10, "the link really lost packets");
    let stats = net.nodes[1].endpoint.stats();
    assert_eq!(
        stats.dropped(intentra_proto::DropReason::ReorderBufferFull),
        0
    );
}

#[test]
fn a_rekey_in_the_middle_of_reliable_traffic_loses_nothing() {
    let (mut net, pa, _) = pair(21, |c| {
        c.rekey_after = Duration::from_millis(700);
        c.reliable.max_queued_bytes = 2_048;
    });
    net.link.loss_ppm = 50_000;
    net.link.reorder_ppm = 50_000;
    // One message per millisecond for four seconds: several rekeys happen mid-stream.
    stream_paced(&mut net, pa, 4_000, 1, Duration::from_secs(120));
    assert_exactly_in_order(&net, 4_000, "rekeying");
    assert!(
        net.nodes[0].endpoint.stats().rekeys >= 3,
        "{:?}",
        net.nodes[0].endpoint.stats()
    );
    assert!(net.nodes[0].downs().is_empty() && net.nodes[1].downs().is_empty());
}

#[test]
fn a_full_reliable_queue_says_would_block_and_recovers_after_acks() {
    // The original design's 512 bytes of queued payload, still valid for a memory-constrained peer.
    let (mut net, pa, _) = pair(22, |c| c.reliable.max_queued_bytes = 512);
    let message = [9u8; 128];
    for _ in 0..4 {
        net.send(0, pa, Mode::Reliable, &message).unwrap();
    }
    assert_eq!(
        net.send(0, pa, Mode::Reliable, &message),
        Err(SendError::WouldBlock)
    );
    assert_eq!(net.nodes[0].endpoint.stats().send_would_block, 1);
    // Realtime is never held back by a full Reliable queue.
    net.send(0, pa, Mode::Realtime, b"still flows").unwrap();
    net.run_for(Duration::from_millis(10), 10_000);
    net.send(0, pa, Mode::Reliable, &message).unwrap();
    net.run_for(Duration::from_millis(10), 10_000);
    assert_eq!(net.nodes[1].messages(Mode::Reliable).count(), 5);
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 1);
    let info = net.nodes[0].endpoint.peer_info(pa).unwrap();
    assert_eq!(info.reliable_queued_bytes, 0);
}

#[test]
fn realtime_keeps_flowing_while_reliable_is_stuck() {
    let (mut net, pa, _) = pair(23, |_| {});
    // Every Reliable packet vanishes: its queue fills (1,024 segments) and stays full.
    net.blackhole = Some(|bytes| bytes.get(1) == Some(&6));
    let mut blocked = 0;
    for i in 0..1_500u32 {
        if net.send(0, pa, Mode::Reliable, &[1u8; 64]) == Err(SendError::WouldBlock) {
            blocked += 1;
        }
        net.send(0, pa, Mode::Realtime, &i.to_le_bytes()).unwrap();
        net.run_for(Duration::from_millis(2), 1_000);
    }
    assert_eq!(blocked, 1_500 - 1_024);
    assert_eq!(net.nodes[1].messages(Mode::Realtime).count(), 1_500);
    assert_eq!(net.nodes[1].messages(Mode::Reliable).count(), 0);
    assert!(
        net.nodes[0].downs().is_empty(),
        "a stuck stream does not kill the session"
    );
}

#[test]
fn reliable_streams_restart_cleanly_when_a_peer_reconnects() {
    let (mut net, pa, _) = pair(24, |_| {});
    stream(&mut net, pa, 50, Duration::from_secs(10));
    let now = net.now;
    net.nodes[0].endpoint.close(now, pa);
    net.drain(0);
    net.run_for(Duration::from_millis(10), 1_000);
    net.nodes[1].records.clear();
    let pa2 = net.connect(0, 1);
    net.run_until(1_000, |n| n.nodes[1].ups() == 1);
    net.run_for(Duration::from_millis(10), 1_000);
    stream(&mut net, pa2, 50, Duration::from_secs(10));
    assert_exactly_in_order(&net, 50, "after reconnecting");
}

#[test]
fn a_reliable_message_of_the_maximum_payload_is_sendable_with_default_settings() {
    use intentra_proto::wire::MAX_RELIABLE_PAYLOAD;
    let (mut net, pa, _) = pair(25, |_| {});
    let message = [7u8; MAX_RELIABLE_PAYLOAD];
    net.send(0, pa, Mode::Reliable, &message).unwrap();
    net.run_for(Duration::from_millis(10), 10_000);
    let got: Vec<&[u8]> = net.nodes[1].messages(Mode::Reliable).collect();
    assert_eq!(got, [&message[..]]);
    assert_eq!(
        net.send(0, pa, Mode::Reliable, &[7u8; MAX_RELIABLE_PAYLOAD + 1]),
        Err(SendError::TooLarge),
        "over the wire's maximum"
    );
}

#[test]
fn a_message_over_the_configured_bound_says_it_can_never_fit_unlike_a_full_queue() {
    let (mut net, pa, _) = pair(26, |c| c.reliable.max_queued_bytes = 512);
    assert_eq!(
        net.send(0, pa, Mode::Reliable, &[1u8; 513]),
        Err(SendError::ExceedsQueueBound)
    );
    net.send(0, pa, Mode::Reliable, &[1u8; 512]).unwrap();
    assert_eq!(
        net.send(0, pa, Mode::Reliable, &[1u8; 1]),
        Err(SendError::WouldBlock)
    );
    assert_eq!(
        net.send(0, pa, Mode::Reliable, &[1u8; 513]),
        Err(SendError::ExceedsQueueBound)
    );
    assert_ne!(
        SendError::ExceedsQueueBound.to_string(),
        SendError::WouldBlock.to_string()
    );
}

#[test]
fn a_large_sender_never_exceeds_the_window_a_small_receiver_advertised() {
    use intentra_proto::DropReason;
    for seed in 0..3 {
        let mut net = Network::new(100 + seed);
        let sender_config = EndpointConfig::new(net.keypair());
        let mut receiver_config = EndpointConfig::new(net.keypair());
        // The default (128 KiB) against the original design's 512 bytes.
        receiver_config.reliable.max_queued_bytes = 512;
        let (a, b) = (net.add(sender_config), net.add(receiver_config));
        let pa = net.connect(a, b);
        net.run_until(10_000, |n| n.nodes[a].ups() == 1 && n.nodes[b].ups() == 1);
        let info = net.nodes[a].endpoint.peer_info(pa).unwrap();
        assert_eq!(
            info.peer_receive_window, 512,
            "learnt from HandshakeResponse"
        );
        let pb = net.peer_of(b, a).unwrap();
        let back = net.nodes[b].endpoint.peer_info(pb).unwrap();
        assert_eq!(
            back.peer_receive_window,
            intentra_proto::DEFAULT_QUEUE_BYTES,
            "and from HandshakeFinish"
        );
        net.link.loss_ppm = 20_000;
        net.link.reorder_ppm = 100_000;
        net.link.reorder_delay = Duration::from_millis(3);

        const COUNT: u32 = 2_000;
        let mut next = 0u32;
        let mut queued = 0u32;
        let mut peak = 0;
        let end = net.now + Duration::from_secs(120);
        while net.nodes[b].messages(Mode::Reliable).count() < COUNT as usize && net.now < end {
            // Offer far more than the window admits: the rest waits in the sender.
            while next < COUNT {
                let mut message = [0u8; 100];
                message[..4].copy_from_slice(&next.to_le_bytes());
                match net.send(a, pa, Mode::Reliable, &message) {
                    Ok(()) => next += 1,
                    Err(SendError::WouldBlock) => break,
                    Err(other) => panic!("send failed: {other:?}"),
                }
            }
            // One event at a time, checking the invariant after each.
            for _ in 0..50 {
                if !net.step() {
                    break;
                }
                let info = net.nodes[a].endpoint.peer_info(pa).unwrap();
                peak = peak.max(info.reliable_in_flight_bytes);
                assert!(
                    info.reliable_in_flight_bytes <= 512,
                    "seed {seed}: {info:?}"
                );
                if info.reliable_queued_bytes > info.reliable_in_flight_bytes {
                    queued += 1;
                }
            }
        }
        let got: Vec<u32> = net.nodes[b]
            .messages(Mode::Reliable)
            .map(|m| u32::from_le_bytes(m[..4].try_into().unwrap()))
            .collect();
        assert_eq!(got, (0..COUNT).collect::<Vec<_>>(), "seed {seed}");
        let stats = net.nodes[b].endpoint.stats();
        assert_eq!(
            stats.dropped(DropReason::ReorderBufferFull),
            0,
            "seed {seed}"
        );
        assert_eq!(stats.dropped(DropReason::RateLimit), 0, "seed {seed}");
        assert!(peak > 400, "seed {seed}: the window was used ({peak})");
        assert!(queued > 0, "seed {seed}: messages waited beyond the window");
        assert!(net.lost > 0);
    }
}

/// Issue 9's path with default settings on both sides: 100,000 messages/s of 128 B, 1 ms
/// each way, 1% loss each way (data and ACKs). The default window holds what is in flight
/// while losses are repaired, so nothing is refused and everything arrives once, in order.
/// (With a 64 KiB window about one message in a hundred was refused here.)
#[test]
fn the_default_window_carries_100k_messages_a_second_over_a_lossy_2ms_round_trip() {
    use intentra_proto::sim::{LinkConfig, Record};
    const RATE: u64 = 100_000;
    const COUNT: u64 = 50_000;
    let (mut net, peer, _) = pair(9, |config| {
        config.rate_pps = u32::MAX;
        config.rate_burst = u32::MAX;
    });
    net.link = LinkConfig {
        loss_ppm: 10_000,
        latency: Duration::from_millis(1),
        ..LinkConfig::default()
    };
    let start = net.now;
    let mut next_delivered = 0u64;
    let mut check = |records: &mut Vec<Record>| {
        for record in records.drain(..) {
            if let Record::Message(_, Mode::Reliable, bytes) = record {
                let number = u64::from_le_bytes(bytes[..8].try_into().unwrap());
                assert_eq!(number, next_delivered, "in order, exactly once");
                next_delivered += 1;
            }
        }
    };
    for number in 0..COUNT {
        let due = start + Duration::from_nanos(number * 1_000_000_000 / RATE);
        net.run_for(due.saturating_since(net.now), 1_000_000);
        check(&mut net.nodes[1].records);
        let mut message = [0u8; 128];
        message[..8].copy_from_slice(&number.to_le_bytes());
        assert_eq!(
            net.send(0, peer, Mode::Reliable, &message),
            Ok(()),
            "{number}"
        );
    }
    net.run_for(Duration::from_secs(2), 1_000_000);
    check(&mut net.nodes[1].records);
    assert_eq!(next_delivered, COUNT);
    assert!(net.lost > 500, "the link lost {} datagrams", net.lost);
}

/// Messages held back by the peer's window leave later through the sender's retransmission
/// path, but they are first transmissions: on a clean link the retransmission count stays 0.
/// It once counted every one of them.
#[test]
fn messages_held_for_the_window_are_not_counted_as_retransmissions() {
    let mut net = Network::new(27);
    let sender_config = EndpointConfig::new(net.keypair());
    let mut receiver_config = EndpointConfig::new(net.keypair());
    receiver_config.reliable.max_queued_bytes = 200;
    let (a, b) = (net.add(sender_config), net.add(receiver_config));
    let pa = net.connect(a, b);
    net.run_until(10_000, |n| n.nodes[a].ups() == 1 && n.nodes[b].ups() == 1);
    for n in 0..50u8 {
        net.send(a, pa, Mode::Reliable, &[n; 60]).unwrap();
    }
    net.run_for(Duration::from_secs(2), 100_000);
    assert_eq!(net.nodes[b].messages(Mode::Reliable).count(), 50);
    let stats = net.nodes[a].endpoint.stats();
    assert_eq!(stats.reliable_retransmits, 0, "{stats:?}");
    // A loss still counts: the one lost segment is sent again once.
    net.link.loss_ppm = 1_000_000;
    net.send(a, pa, Mode::Reliable, b"lost once").unwrap();
    net.link.loss_ppm = 0;
    net.run_for(Duration::from_secs(2), 100_000);
    assert_eq!(net.nodes[b].messages(Mode::Reliable).count(), 51);
    assert_eq!(net.nodes[a].endpoint.stats().reliable_retransmits, 1);
}
