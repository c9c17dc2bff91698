//! Handshake scenarios on the in-memory network: establishment, loss, cookies, budgets, identity.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use intentra_proto::internals::{FinishIntent, Initiator};
use intentra_proto::sim::{Network, Record};
use intentra_proto::wire::{self, init, PacketType, SessionIndex};
use intentra_proto::EndpointConfig;
use intentra_proto::Mode;
use intentra_proto::{CloseReason, DropReason};

fn up(net: &Network, a: usize, b: usize) -> bool {
    net.nodes[a].ups() >= 1 && net.nodes[b].ups() >= 1
}

#[test]
fn two_peers_complete_a_handshake_and_name_each_other() {
    let mut net = Network::new(1);
    let (a, b) = (net.add_default(), net.add_default());
    net.connect(a, b);
    net.run_until(1_000, |n| up(n, a, b));
    let key_a = net.public_key(a);
    let key_b = net.public_key(b);
    assert!(matches!(net.nodes[a].records[0], Record::Up(_, k) if k == key_b));
    assert!(matches!(net.nodes[b].records[0], Record::Up(_, k) if k == key_a));
    assert_eq!(net.nodes[a].endpoint.stats().sessions_active, 1);
    assert_eq!(net.nodes[b].endpoint.stats().sessions_active, 1);
    assert_eq!(net.nodes[b].endpoint.stats().handshakes_in_flight, 0);
}

#[test]
fn messages_flow_both_ways_in_both_modes() {
    let mut net = Network::new(2);
    let (a, b) = (net.add_default(), net.add_default());
    let pa = net.connect(a, b);
    net.run_until(1_000, |n| up(n, a, b));
    let pb = net.peer_of(b, a).unwrap();
    net.send(a, pa, Mode::Realtime, b"tick 1").unwrap();
    net.send(a, pa, Mode::Reliable, b"order 1").unwrap();
    net.send(b, pb, Mode::Realtime, b"tock 1").unwrap();
    net.send(b, pb, Mode::Reliable, b"fill 1").unwrap();
    net.run_for(Duration::from_millis(50), 10_000);
    assert_eq!(
        net.nodes[b].messages(Mode::Realtime).collect::<Vec<_>>(),
        [b"tick 1"]
    );
    assert_eq!(
        net.nodes[b].messages(Mode::Reliable).collect::<Vec<_>>(),
        [b"order 1"]
    );
    assert_eq!(
        net.nodes[a].messages(Mode::Realtime).collect::<Vec<_>>(),
        [b"tock 1"]
    );
    assert_eq!(
        net.nodes[a].messages(Mode::Reliable).collect::<Vec<_>>(),
        [b"fill 1"]
    );
}

#[test]
fn lost_handshake_messages_are_retransmitted() {
    for seed in 0..20 {
        let mut net = Network::new(100 + seed);
        net.link.loss_ppm = 250_000;
        let (a, b) = (net.add_default(), net.add_default());
        net.connect(a, b);
        net.run_until(20_000, |n| up(n, a, b));
        net.link.loss_ppm = 0;
        // Both sides confirm: keepalives flow and nothing times out.
        net.run_for(Duration::from_secs(15), 100_000);
        assert!(
            net.nodes[a].downs().is_empty(),
            "seed {seed}: {:?}",
            net.nodes[a].downs()
        );
        assert!(
            net.nodes[b].downs().is_empty(),
            "seed {seed}: {:?}",
            net.nodes[b].downs()
        );
    }
}

#[test]
fn a_handshake_to_nobody_times_out() {
    let mut net = Network::new(3);
    let (a, b) = (net.add_default(), net.add_default());
    net.link.loss_ppm = 1_000_000;
    net.connect(a, b);
    net.run_for(Duration::from_secs(11), 100_000);
    assert_eq!(net.nodes[a].downs(), [CloseReason::HandshakeTimeout]);
    let stats = net.nodes[a].endpoint.stats();
    assert!(stats.handshake_retransmits >= 4, "{stats:?}");
    assert_eq!(stats.handshakes_in_flight, 0);
}

#[test]
fn a_key_not_on_the_allow_list_is_refused() {
    let mut net = Network::new(4);
    let a = net.add_default();
    let friend = net.keypair();
    let keys = net.keypair();
    let mut config = EndpointConfig::new(keys);
    config.allow_list = Some([friend.public].into_iter().collect());
    let b = net.add(config);
    net.connect(a, b);
    net.run_for(Duration::from_secs(1), 10_000);
    assert_eq!(net.nodes[b].ups(), 0);
    assert!(
        net.nodes[b]
            .endpoint
            .stats()
            .dropped(DropReason::NotAllowed)
            >= 1
    );
    assert_eq!(net.nodes[b].endpoint.stats().sessions_active, 0);
    // The refusal is handed out with the source it came from, for the operator's log.
    let a_addr = net.nodes[a].addr;
    let mut refusals = Vec::new();
    net.nodes[b]
        .endpoint
        .drain_refusals(|addr, reason| refusals.push((addr, reason)));
    assert!(!refusals.is_empty());
    assert!(refusals
        .iter()
        .all(|&(addr, reason)| addr == a_addr && reason == DropReason::NotAllowed));
    let mut again = 0;
    net.nodes[b].endpoint.drain_refusals(|_, _| again += 1);
    assert_eq!(again, 0, "drained once");
}

#[test]
fn an_initiator_refuses_a_responder_with_another_key() {
    let mut net = Network::new(5);
    let (a, b) = (net.add_default(), net.add_default());
    let impostor_key = net.keypair().public;
    let b_addr = net.nodes[b].addr;
    let now = net.now;
    // a believes b's address belongs to another key: mac1 fails at b, nothing is established.
    net.nodes[a]
        .endpoint
        .connect(now, b_addr, impostor_key)
        .unwrap();
    net.drain(a);
    net.run_for(Duration::from_secs(1), 10_000);
    assert_eq!(net.nodes[a].ups() + net.nodes[b].ups(), 0);
    assert!(net.nodes[b].endpoint.stats().dropped(DropReason::BadMac) >= 1);
}

fn spoofed(i: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0x7f10_0000 + i), 40_000))
}

/// A HandshakeInit with a valid mac1 for `responder`, as an attacker who knows its public key makes.
fn flood_packet(net: &mut Network, responder: usize, sender: u32) -> Vec<u8> {
    let attacker = net.keypair();
    let mut initiator = intentra_proto::internals::Initiator::start(
        &attacker,
        &net.public_key(responder),
        wire::SessionIndex::new(sender).unwrap(),
        [sender as u8; 32],
    )
    .unwrap();
    initiator.init_packet(None).to_vec()
}

#[test]
fn a_spoofed_handshake_flood_gets_only_cookie_replies_and_a_real_peer_still_connects() {
    let mut net = Network::new(6);
    let keys = net.keypair();
    let mut config = EndpointConfig::new(keys);
    config.always_cookie = true;
    let b = net.add(config);
    let a = net.add_default();
    net.capture = Some(Vec::new());
    let packet = flood_packet(&mut net, b, 77);
    for i in 0..5_000 {
        net.inject(b, spoofed(i), &packet);
    }
    let stats = net.nodes[b].endpoint.stats();
    assert_eq!(
        stats.handshakes_in_flight, 0,
        "no state for unproven sources"
    );
    assert_eq!(stats.cookie_replies_sent, 5_000);
    assert_eq!(stats.dropped(DropReason::BadCookie), 5_000);
    let replies = net.capture.take().unwrap();
    assert!(replies.iter().all(|(_, _, bytes)| {
        bytes[1] == PacketType::CookieReply as u8 && bytes.len() < init::LEN
    }));
    // The honest peer receives its cookie at its real address and gets in.
    net.connect(a, b);
    // Every cookie reply to a spoofed source is a datagram in flight: allow steps for them.
    net.run_until(20_000, |n| up(n, a, b));
    assert_eq!(net.nodes[b].endpoint.stats().sessions_active, 1);
}

#[test]
fn under_load_handshake_work_is_bounded_by_the_handshake_rate() {
    let mut net = Network::new(7);
    let b = net.add_default();
    let a = net.add_default();
    let burst = u64::from(net.nodes[b].endpoint.config().handshake_burst);
    net.capture = Some(Vec::new());
    for i in 0..2_000 {
        let packet = flood_packet(&mut net, b, 1_000 + i);
        net.inject(b, spoofed(i), &packet);
    }
    // Every spoofed source is new, yet only the endpoint's burst of unproven handshakes got
    // Diffie-Hellman work (a HandshakeResponse); every other one was asked for a cookie.
    let sent = net.capture.take().unwrap();
    let responses = sent
        .iter()
        .filter(|(_, _, bytes)| bytes[1] == PacketType::HandshakeResponse as u8)
        .count() as u64;
    let stats = net.nodes[b].endpoint.stats();
    assert_eq!(responses, burst);
    assert_eq!(stats.handshakes_in_flight, burst);
    assert_eq!(stats.cookie_replies_sent, 2_000 - burst);
    net.connect(a, b);
    net.run_until(20_000, |n| up(n, a, b));
}

#[test]
fn the_per_ip_budget_counts_handshakes_in_flight_not_handshakes_ever() {
    // A budget of handshakes ever made, rather than in flight, would lock a peer out for good.
    let mut net = Network::new(8);
    let b = net.add_default();
    let per_ip = net.nodes[b].endpoint.config().handshakes_per_ip;
    for round in 0..(per_ip * 3) {
        let a = net.add_default();
        // Same source IP for all of them: only the port differs.
        net.nodes[a].addr = SocketAddr::from((Ipv4Addr::new(127, 9, 9, 9), 10_000 + round as u16));
        net.connect(a, b);
        net.run_until(2_000, |n| n.nodes[a].ups() == 1);
    }
    net.run_for(Duration::from_millis(100), 10_000);
    assert_eq!(
        net.nodes[b].endpoint.stats().sessions_active as usize,
        per_ip * 3
    );
    assert_eq!(
        net.nodes[b]
            .endpoint
            .stats()
            .dropped(DropReason::HandshakeBudget),
        0
    );
}

#[test]
fn in_flight_handshakes_from_one_ip_are_capped() {
    let mut net = Network::new(9);
    let b = net.add_default();
    let per_ip = net.nodes[b].endpoint.config().handshakes_per_ip as u64;
    for i in 0..(per_ip as u32 + 3) {
        let packet = flood_packet(&mut net, b, 500 + i);
        net.inject(
            b,
            SocketAddr::from((Ipv4Addr::new(127, 5, 5, 5), 1000 + i as u16)),
            &packet,
        );
    }
    let stats = net.nodes[b].endpoint.stats();
    assert_eq!(stats.handshakes_in_flight, per_ip);
    // Past its in-flight budget a source is asked to prove its address, not refused: spoofed
    // inits from a peer's IP must not lock the peer out.
    assert_eq!(stats.dropped(DropReason::HandshakeBudget), 0);
    assert_eq!(stats.dropped(DropReason::BadCookie), 3);
    assert_eq!(stats.cookie_replies_sent, 3);
    // They expire, and the budget frees up.
    net.run_for(Duration::from_secs(11), 10_000);
    assert_eq!(net.nodes[b].endpoint.stats().handshakes_in_flight, 0);
}

#[test]
fn responder_keys_are_never_all_zero() {
    let mut net = Network::new(10);
    let b = net.add_default();
    assert_ne!(net.public_key(b).0, [0u8; 32]);
    assert!(intentra_proto::SecretKey::from_bytes([0; 32]).is_err());
}

#[test]
fn handshakes_without_a_valid_mac1_create_no_state_and_get_no_answer() {
    // State for a source that has not proven it knows our key would let anyone exhaust memory.
    let mut net = Network::new(11);
    let b = net.add_default();
    net.capture = Some(Vec::new());
    let other = net.add_default();
    // Valid for `other`, so mac1 is wrong for `b`.
    let packet = flood_packet(&mut net, other, 9);
    for i in 0..10_000 {
        net.inject(b, spoofed(i), &packet);
    }
    let stats = net.nodes[b].endpoint.stats();
    assert_eq!(stats.dropped(DropReason::BadMac), 10_000);
    assert_eq!(stats.handshakes_in_flight, 0);
    assert_eq!(stats.cookie_replies_sent, 0);
    assert!(
        net.capture.as_ref().unwrap().is_empty(),
        "nothing is sent back"
    );
}

#[test]
fn a_retransmitted_init_gets_the_same_response_not_new_state() {
    let mut net = Network::new(12);
    let b = net.add_default();
    net.capture = Some(Vec::new());
    let packet = flood_packet(&mut net, b, 42);
    let src = spoofed(1);
    for _ in 0..5 {
        net.inject(b, src, &packet);
    }
    assert_eq!(net.nodes[b].endpoint.stats().handshakes_in_flight, 1);
    let responses: Vec<_> = net
        .capture
        .take()
        .unwrap()
        .into_iter()
        .map(|(_, _, bytes)| bytes)
        .collect();
    assert_eq!(responses.len(), 5);
    assert!(responses.windows(2).all(|w| w[0] == w[1]));
}

fn forged(len: usize, ty: PacketType, fields: &[(usize, u32)]) -> Vec<u8> {
    let mut packet = vec![0x5a; len];
    wire::write_prefix(&mut packet, ty);
    for &(at, value) in fields {
        packet[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }
    packet
}

#[test]
fn one_forged_handshake_response_does_not_break_the_handshake() {
    let mut net = Network::new(13);
    let (a, b) = (net.add_default(), net.add_default());
    net.capture = Some(Vec::new());
    net.connect(a, b);
    // An on-path attacker saw the HandshakeInit and answers first with garbage.
    let init_packet = net.capture.as_ref().unwrap()[0].2.clone();
    let sender = wire::read_u32(&init_packet, init::SENDER);
    let b_addr = net.nodes[b].addr;
    let fake = forged(
        wire::response::LEN,
        PacketType::HandshakeResponse,
        &[(4, 0x0101_0001), (8, sender)],
    );
    net.inject(a, b_addr, &fake);
    assert_eq!(
        net.nodes[a]
            .endpoint
            .stats()
            .dropped(DropReason::HandshakeFailed),
        1
    );
    net.run_until(20_000, |n| up(n, a, b));
    net.run_for(Duration::from_secs(12), 100_000);
    assert!(
        net.nodes[a].downs().is_empty(),
        "{:?}",
        net.nodes[a].downs()
    );
    assert!(net.nodes[b].downs().is_empty());
}

#[test]
fn a_forged_handshake_finish_costs_a_restart_not_the_session() {
    let mut net = Network::new(14);
    let (a, b) = (net.add_default(), net.add_default());
    net.capture = Some(Vec::new());
    net.connect(a, b);
    // Deliver the HandshakeInit; b's HandshakeResponse is now on the wire.
    net.step();
    let response = net
        .capture
        .as_ref()
        .unwrap()
        .iter()
        .find(|(_, _, p)| p[1] == PacketType::HandshakeResponse as u8)
        .map(|(_, _, p)| p.clone())
        .unwrap();
    let responder_index = wire::read_u32(&response, wire::response::SENDER);
    // From any address: the responder's pending state is consumed by the failed read.
    let fake = forged(
        wire::finish::LEN,
        PacketType::HandshakeFinish,
        &[(4, responder_index)],
    );
    net.inject(b, spoofed(77), &fake);
    assert_eq!(
        net.nodes[b]
            .endpoint
            .stats()
            .dropped(DropReason::HandshakeFailed),
        1
    );
    net.run_until(50_000, |n| up(n, a, b));
    net.run_for(Duration::from_secs(15), 100_000);
    // b never had the session, so it saw one come up. a cannot tell whether b had it (and
    // delivered what a sent under it): its restart replaced the unconfirmed session, which it
    // reports, so no Reliable message can be delivered twice.
    assert!(net.nodes[b].downs().is_empty());
    assert_eq!(net.nodes[b].ups(), 1);
    assert_eq!(net.nodes[a].downs(), vec![CloseReason::Replaced]);
    assert_eq!(net.nodes[a].ups(), 2);
    let pa = net.peer_of(a, b).unwrap();
    net.send(a, pa, intentra_proto::Mode::Realtime, b"works")
        .unwrap();
    net.run_for(Duration::from_millis(5), 1_000);
    assert_eq!(
        net.nodes[b]
            .messages(intentra_proto::Mode::Realtime)
            .count(),
        1
    );
}

/// The HandshakeInits `node` has put on the wire so far.
fn inits_sent(net: &Network, node: usize) -> usize {
    sent_of_type(net, node, PacketType::HandshakeInit).len()
}

/// Anyone who saw a HandshakeInit can forge a CookieReply for it (the cookie key comes from
/// the responder's public key, the associated data is the Init's mac1) or replay the real
/// one. Neither may turn us into a reflector: a reply is taken only from the address the
/// Init went to, and only one per retransmission interval resends the Init at once.
#[test]
fn cookie_replies_resend_the_init_once_per_retry_interval_and_only_from_the_responder() {
    let mut net = Network::new(16);
    let keys = net.keypair();
    let mut config = EndpointConfig::new(keys);
    config.always_cookie = true;
    let b = net.add(config);
    let a = net.add_default();
    net.capture = Some(Vec::new());
    // Inits are lost from now on: the handshake stays waiting for its response.
    net.blackhole = Some(|p| p[1] == PacketType::HandshakeInit as u8);
    net.connect(a, b);
    assert_eq!(inits_sent(&net, a), 1);
    // b's CookieReply to that Init, as an attacker on the path saw it.
    let init_packet = net.capture.as_ref().unwrap()[0].2.clone();
    let b_addr = net.nodes[b].addr;
    net.blackhole = None;
    net.inject(b, net.nodes[a].addr, &init_packet);
    net.blackhole = Some(|p| p[1] == PacketType::HandshakeInit as u8);
    let reply = net
        .capture
        .as_ref()
        .unwrap()
        .iter()
        .find(|(_, _, p)| p[1] == PacketType::CookieReply as u8)
        .map(|(_, _, p)| p.clone())
        .unwrap();
    let unknown = |net: &Network| {
        net.nodes[a]
            .endpoint
            .stats()
            .dropped(DropReason::UnknownSession)
    };

    // From any other address: no Init, counted.
    for i in 0..50 {
        net.inject(a, spoofed(i), &reply);
    }
    assert_eq!(inits_sent(&net, a), 1);
    assert_eq!(unknown(&net), 50);

    // From the responder's address, 50 times: one immediate resend, carrying the cookie.
    for _ in 0..50 {
        net.inject(a, b_addr, &reply);
    }
    assert_eq!(inits_sent(&net, a), 2);
    let resent = net
        .capture
        .as_ref()
        .unwrap()
        .iter()
        .rev()
        .find(|(src, _, p)| *src == net.nodes[a].addr && p[1] == PacketType::HandshakeInit as u8);
    let resent = &resent.unwrap().2;
    assert_eq!(resent[..init::MAC2], init_packet[..init::MAC2]);
    assert_ne!(resent[init::MAC2..], [0u8; 16]);

    // The scheduled retransmission opens the next interval: one more immediate resend.
    net.run_for(Duration::from_millis(1_100), 1_000);
    let after_retry = inits_sent(&net, a);
    assert!(after_retry > 2, "no scheduled retransmission");
    for _ in 0..50 {
        net.inject(a, b_addr, &reply);
    }
    assert_eq!(inits_sent(&net, a), after_retry + 1);
}

/// A responder that answers every HandshakeInit but never confirms (it swallows each
/// Finish, or a forger keeps consuming its state) makes the initiator start over; those
/// restarts still end at `handshake_timeout` after the first Init, never run forever.
#[test]
fn handshake_restarts_end_at_the_handshake_timeout_of_the_first_init() {
    let mut net = Network::new(17);
    let (a, b) = (net.add_default(), net.add_default());
    net.blackhole = Some(|p| p[1] == PacketType::HandshakeFinish as u8);
    let started = net.now;
    net.connect(a, b);
    net.run_until(100_000, |n| {
        n.nodes[a].downs().contains(&CloseReason::HandshakeTimeout)
            || n.now > started + Duration::from_secs(60)
    });
    let timeout = EndpointConfig::new(net.keypair()).handshake_timeout;
    assert!(
        net.now <= started + timeout + Duration::from_millis(1),
        "gave up at {:?}, {:?} after the first Init",
        net.now,
        net.now.saturating_since(started)
    );
    assert_eq!(
        net.nodes[a].downs().last(),
        Some(&CloseReason::HandshakeTimeout)
    );
    // It did restart meanwhile (the rule the timeout bounds).
    assert!(
        net.nodes[a].downs().len() >= 2,
        "{:?}",
        net.nodes[a].downs()
    );
}

/// An endpoint that dials a key (its handshake in flight, nothing established) and meets a
/// Rekey HandshakeFinish from that key: there is no session to renew (PROTOCOL.md 4.6), so
/// it is refused. Taking it once left the dial neither up nor timed out, and never redialled.
#[test]
fn a_rekey_from_a_key_we_only_dial_is_refused_and_the_dial_still_times_out() {
    let mut net = Network::new(18);
    let b_keys = net.keypair();
    let a = net.add_default();
    let b = net.add(EndpointConfig::new(b_keys.clone()));
    net.capture = Some(Vec::new());
    // a's HandshakeInits never arrive.
    net.blackhole = Some(|p| p[1] == PacketType::HandshakeInit as u8);
    net.connect(a, b);
    // b's key, driven by hand: a handshake to a whose Finish claims a Rekey.
    let index = SessionIndex::new(0x0bad_cafe).unwrap();
    let mut initiator = Initiator::start(&b_keys, &net.public_key(a), index, [7; 32]).unwrap();
    let b_addr = net.nodes[b].addr;
    let init_packet = initiator.init_packet(None).to_vec();
    net.inject(a, b_addr, &init_packet);
    let response = net
        .capture
        .as_ref()
        .unwrap()
        .iter()
        .rfind(|(_, _, p)| p[1] == PacketType::HandshakeResponse as u8)
        .map(|(_, _, p)| p.clone())
        .expect("a answered");
    let responder = SessionIndex::new(wire::read_u32(&response, wire::response::SENDER)).unwrap();
    let (finish, _, _) = initiator
        .finish(&response, responder, FinishIntent::Rekey, 0)
        .unwrap();
    net.inject(a, b_addr, &finish);
    let stats = net.nodes[a].endpoint.stats();
    assert_eq!(stats.dropped(DropReason::HandshakeFailed), 1);
    assert_eq!(stats.rekeys, 0);
    net.run_for(Duration::from_secs(11), 100_000);
    assert_eq!(net.nodes[a].downs(), [CloseReason::HandshakeTimeout]);
}

/// The packets of type `ty` from `node` so far.
fn sent_of_type(net: &Network, node: usize, ty: PacketType) -> Vec<Vec<u8>> {
    let addr = net.nodes[node].addr;
    net.capture
        .as_ref()
        .unwrap()
        .iter()
        .filter(|(src, _, p)| *src == addr && p[1] == ty as u8)
        .map(|(_, _, p)| p.clone())
        .collect()
}

/// `genuine` with every byte after the indexes changed: what someone who learned the index
/// (it travels in clear) can send without any key.
fn junk_like(genuine: &[u8], from: usize, seed: u8) -> Vec<u8> {
    let mut junk = genuine.to_vec();
    for (i, byte) in junk.iter_mut().enumerate().skip(from) {
        *byte = byte.wrapping_add(seed).wrapping_add(i as u8) | 1;
    }
    junk
}

/// While the responder's new keys are unconfirmed, a repeat of the very HandshakeFinish that
/// made them gets another confirming Keepalive; junk of the same type at the same index
/// (from anywhere, the peer's own address included) gets nothing and is counted. It once got
/// a Keepalive each, uncounted.
#[test]
fn only_the_genuine_finish_repeated_is_answered_while_the_keys_are_unconfirmed() {
    let mut net = Network::new(19);
    let (a, b) = (net.add_default(), net.add_default());
    net.capture = Some(Vec::new());
    net.connect(a, b);
    net.run_until(100, |n| n.nodes[b].endpoint.stats().sessions_active == 1);
    let finish = sent_of_type(&net, a, PacketType::HandshakeFinish)[0].clone();
    let a_addr = net.nodes[a].addr;
    let keepalives = |net: &Network| sent_of_type(net, b, PacketType::Keepalive).len();
    let before = keepalives(&net);
    for seed in 0..20u8 {
        let src = if seed % 2 == 0 {
            a_addr
        } else {
            spoofed(u32::from(seed))
        };
        net.inject(b, src, &junk_like(&finish, wire::finish::NOISE, seed));
    }
    assert_eq!(keepalives(&net), before, "junk answered");
    let stats = net.nodes[b].endpoint.stats();
    assert_eq!(stats.dropped(DropReason::HandshakeFailed), 20);
    net.inject(b, a_addr, &finish);
    assert_eq!(keepalives(&net), before + 1, "the genuine repeat answered");
}

/// The initiator's side of the same rule: while its HandshakeFinish is unconfirmed, the
/// responder's HandshakeResponse arriving again (it answered a retransmitted Init, byte for
/// byte the same) makes it resend the Finish; junk of that type at its index does not.
#[test]
fn only_the_genuine_response_repeated_makes_the_initiator_resend_its_finish() {
    let mut net = Network::new(20);
    let (a, b) = (net.add_default(), net.add_default());
    net.capture = Some(Vec::new());
    // The Finish never arrives: a stays waiting for its confirmation.
    net.blackhole = Some(|p| p[1] == PacketType::HandshakeFinish as u8);
    net.connect(a, b);
    net.run_until(100, |n| {
        !sent_of_type(n, a, PacketType::HandshakeFinish).is_empty()
    });
    let response = sent_of_type(&net, b, PacketType::HandshakeResponse)[0].clone();
    let b_addr = net.nodes[b].addr;
    let finishes = |net: &Network| sent_of_type(net, a, PacketType::HandshakeFinish).len();
    let before = finishes(&net);
    for seed in 0..20u8 {
        net.inject(
            a,
            b_addr,
            &junk_like(&response, wire::response::NOISE, seed),
        );
    }
    assert_eq!(finishes(&net), before, "junk answered");
    let stats = net.nodes[a].endpoint.stats();
    assert_eq!(stats.dropped(DropReason::HandshakeFailed), 20);
    net.inject(a, b_addr, &response);
    assert_eq!(finishes(&net), before + 1, "the genuine repeat answered");
}

#[test]
fn a_new_allow_list_closes_removed_peers_and_keeps_the_others() {
    let mut net = Network::new(15);
    let hub = net.add_default();
    let (kept, removed) = (net.add_default(), net.add_default());
    net.connect(kept, hub);
    net.connect(removed, hub);
    net.run_until(10_000, |n| n.nodes[hub].ups() == 2);
    let keep_key = net.public_key(kept);
    let now = net.now;
    net.nodes[hub]
        .endpoint
        .set_allow_list(now, Some([keep_key].into_iter().collect()));
    net.drain(hub);
    net.run_for(Duration::from_secs(2), 10_000);
    assert_eq!(net.nodes[hub].downs(), [CloseReason::NotAllowed]);
    assert!(
        net.nodes[kept].downs().is_empty(),
        "the kept peer's session goes on"
    );
    assert_eq!(net.nodes[removed].downs(), [CloseReason::Remote]);
    let pk = net.peer_of(kept, hub).unwrap();
    net.send(kept, pk, intentra_proto::Mode::Realtime, b"still here")
        .unwrap();
    net.run_for(Duration::from_millis(5), 1_000);
    assert_eq!(
        net.nodes[hub]
            .messages(intentra_proto::Mode::Realtime)
            .count(),
        1
    );
    // The removed key cannot come back.
    net.connect(removed, hub);
    net.run_for(Duration::from_secs(1), 10_000);
    assert!(
        net.nodes[hub]
            .endpoint
            .stats()
            .dropped(DropReason::NotAllowed)
            >= 1
    );
}
