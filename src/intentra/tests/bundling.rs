//! Smart batching over real sockets (PROTOCOL.md 7.5): messages a `Handle` queued together
//! for one peer share datagrams and arrive one by one, in order; with bundling off each is
//! its own datagram; a node with bundling off and one with it on talk both ways. Every loop
//! is bounded in count; nothing asserts on timing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use intentra::proto::{EndpointConfig, Keypair, Mode, PeerId};
use intentra::{Node, NodeConfig};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod common;

fn node(seed: u64, bundling: bool) -> Node {
    node_with(seed, bundling, |_| {})
}

fn node_with(seed: u64, bundling: bool, tweak: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = EndpointConfig::new(Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed)));
    config.rate_pps = 1_000_000;
    config.rate_burst = 1_000_000;
    let mut node_config = NodeConfig::new("127.0.0.1:0".parse().unwrap(), config);
    node_config.socket.recv_buffer = Some(4 << 20);
    node_config.bundling = bundling;
    tweak(&mut node_config);
    Node::bind(node_config).unwrap()
}

/// An established session from `a` to `b`, settled for 50 more turns.
fn pair(a: &mut Node, b: &mut Node) -> PeerId {
    let peer = common::establish(a, b);
    for _ in 0..50 {
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
    }
    peer
}

type Log = Arc<Mutex<Vec<(Mode, Vec<u8>)>>>;

fn record(node: &mut Node) -> Log {
    let log: Log = Arc::default();
    let sink = log.clone();
    node.on_message(move |_, mode, bytes| sink.lock().unwrap().push((mode, bytes.to_vec())));
    log
}

fn message(mode: Mode, n: u16) -> Vec<u8> {
    let mut m = vec![n as u8; 64];
    m[0] = u8::from(mode == Mode::Reliable);
    m[1..3].copy_from_slice(&n.to_le_bytes());
    m
}

/// Queues `count` messages of each mode, interleaved, from `from` to `peer` through a handle
/// before the loop turns (so the loop takes them in one batch), then turns both nodes until
/// `to` has them all. Returns the datagrams `to` received meanwhile.
fn exchange(from: &mut Node, to: &mut Node, peer: PeerId, log: &Log, count: u16) -> u64 {
    let handle = from.handle();
    for n in 0..count {
        handle
            .send(peer, Mode::Realtime, &message(Mode::Realtime, n))
            .unwrap();
        handle
            .send(peer, Mode::Reliable, &message(Mode::Reliable, n))
            .unwrap();
    }
    let received_before = to.stats().packets_received;
    let want = usize::from(count) * 2;
    for _ in 0..10_000 {
        if log.lock().unwrap().len() >= want {
            break;
        }
        from.turn(Duration::from_millis(1)).unwrap();
        to.turn(Duration::from_millis(1)).unwrap();
    }
    let got = std::mem::take(&mut *log.lock().unwrap());
    for mode in [Mode::Realtime, Mode::Reliable] {
        let of_mode: Vec<Vec<u8>> = got
            .iter()
            .filter(|(m, _)| *m == mode)
            .map(|(_, b)| b.clone())
            .collect();
        let sent: Vec<Vec<u8>> = (0..count).map(|n| message(mode, n)).collect();
        let first_wrong = of_mode
            .iter()
            .zip(&sent)
            .position(|(got, want)| got != want);
        assert!(
            of_mode.len() == sent.len() && first_wrong.is_none(),
            "{mode:?}: got {} of {count}, first difference at {first_wrong:?}: {:?}",
            of_mode.len(),
            first_wrong.map(|i| (&of_mode[i][..4], &sent[i][..4]))
        );
    }
    to.stats().packets_received - received_before
}

#[test]
fn messages_queued_together_share_datagrams_and_arrive_separately() {
    let mut a = node(1, true);
    let mut b = node(2, true);
    let peer = pair(&mut a, &mut b);
    let log = record(&mut b);
    // 60 of each mode: well within one Reliable window, so all go out at once.
    let datagrams = exchange(&mut a, &mut b, peer, &log, 60);
    // 120 messages of 64 bytes, about 20 to a datagram; a keepalive may arrive meanwhile.
    assert!(
        datagrams <= 10,
        "120 messages took {datagrams} datagrams with bundling on"
    );
}

#[test]
fn with_bundling_off_each_message_is_its_own_datagram() {
    let mut a = node(3, false);
    let mut b = node(4, false);
    let peer = pair(&mut a, &mut b);
    let log = record(&mut b);
    let datagrams = exchange(&mut a, &mut b, peer, &log, 60);
    assert!(
        datagrams >= 120,
        "120 messages took {datagrams} datagrams with bundling off"
    );
}

#[test]
fn a_node_with_bundling_off_and_one_with_it_on_talk_both_ways() {
    let mut on = node(5, true);
    let mut off = node(6, false);
    let peer_of_off = pair(&mut on, &mut off);
    let log_off = record(&mut off);
    let bundled = exchange(&mut on, &mut off, peer_of_off, &log_off, 60);
    assert!(
        bundled <= 10,
        "{bundled} datagrams for 120 bundled messages"
    );
    let peer_of_on = off.peers()[0];
    let log_on = record(&mut on);
    let lone = exchange(&mut off, &mut on, peer_of_on, &log_on, 60);
    assert!(
        lone >= 120,
        "{lone} datagrams for 120 messages sent one by one"
    );
}

/// A relay: `via` forwards every Realtime message it receives to `to` from its callback
/// (as a hub does). `from` queues `count` Realtime messages at once, which arrive bundled.
/// Returns the datagrams `to` received while all `count` arrived, checked in order.
fn relay(from: &mut Node, via: &mut Node, to: &mut Node, count: u16) -> u64 {
    let peer_to = pair(via, to);
    let peer_via = pair(from, via);
    via.on_event(move |ctx, event| {
        if let intentra::proto::Event::Message(m) = event {
            if m.mode == Mode::Realtime {
                ctx.send(peer_to, Mode::Realtime, m.payload)
                    .expect("a relay to an established peer is accepted");
            }
        }
    });
    let log = record(to);
    let handle = from.handle();
    for n in 0..count {
        handle
            .send(peer_via, Mode::Realtime, &message(Mode::Realtime, n))
            .unwrap();
    }
    let received_before = to.stats().packets_received;
    for _ in 0..10_000 {
        if log.lock().unwrap().len() >= usize::from(count) {
            break;
        }
        from.turn(Duration::from_millis(1)).unwrap();
        via.turn(Duration::from_millis(1)).unwrap();
        to.turn(Duration::from_millis(1)).unwrap();
    }
    let got: Vec<Vec<u8>> = log.lock().unwrap().iter().map(|(_, b)| b.clone()).collect();
    let sent: Vec<Vec<u8>> = (0..count).map(|n| message(Mode::Realtime, n)).collect();
    assert!(
        got == sent,
        "relayed {} of {count}, or out of order",
        got.len()
    );
    to.stats().packets_received - received_before
}

#[test]
fn a_callbacks_sends_to_one_peer_leave_bundled_in_order() {
    let (mut from, mut via, mut to) = (node(7, true), node(8, true), node(9, true));
    let datagrams = relay(&mut from, &mut via, &mut to, 60);
    // 60 messages of 64 bytes relayed from about three received bundles: about three
    // datagrams (a keepalive may come too), not 60.
    assert!(
        datagrams <= 10,
        "60 relayed messages took {datagrams} datagrams"
    );
}

#[test]
fn with_bundling_off_a_callbacks_sends_go_one_by_one() {
    let (mut from, mut via, mut to) = (node(10, true), node(11, false), node(12, true));
    let datagrams = relay(&mut from, &mut via, &mut to, 60);
    assert!(
        datagrams >= 60,
        "60 relayed messages took {datagrams} datagrams"
    );
}

#[test]
fn a_batch_relaying_more_than_the_outbox_holds_keeps_every_message_in_order() {
    // 1,500 messages arrive in bundles of about 20, a receive batch of many of them relays
    // more than the outbox's 1,024 messages: it is sent out mid-batch and refilled.
    let (mut from, mut via, mut to) = (node(13, true), node(14, true), node(15, true));
    let datagrams = relay(&mut from, &mut via, &mut to, 1_500);
    assert!(
        datagrams < 1_500,
        "1,500 relayed messages took {datagrams} datagrams"
    );
}

#[test]
fn one_datagram_whose_callback_sends_more_than_the_send_queue_loses_none() {
    // A hub relaying one publish to more subscribers than `send_queue` holds: here one
    // message makes its callback send 40 datagrams through a queue of 4, which grows.
    let mut from = node(16, false);
    let mut fan = node_with(17, false, |c| c.send_queue = 4);
    fan.on_event(|ctx, event| {
        if let intentra::proto::Event::Message(m) = event {
            for copy in 0..40u8 {
                let mut echo = m.payload.to_vec();
                echo.push(copy);
                ctx.send(m.peer, Mode::Realtime, &echo)
                    .expect("room for every relay of one datagram");
            }
        }
    });
    let log = record(&mut from);
    let peer = pair(&mut from, &mut fan);
    for n in 0..10u16 {
        from.send(peer, Mode::Realtime, &message(Mode::Realtime, n))
            .unwrap();
        for _ in 0..20 {
            from.turn(Duration::from_millis(1)).unwrap();
            fan.turn(Duration::from_millis(1)).unwrap();
        }
    }
    for _ in 0..2_000 {
        if log.lock().unwrap().len() == 400 {
            break;
        }
        from.turn(Duration::from_millis(1)).unwrap();
        fan.turn(Duration::from_millis(1)).unwrap();
    }
    let got = log.lock().unwrap();
    assert_eq!(got.len(), 400, "echoes of 10 messages x 40");
    for n in 0..10u16 {
        let copies = got
            .iter()
            .filter(|(_, bytes)| bytes[..64] == message(Mode::Realtime, n)[..])
            .count();
        assert_eq!(copies, 40, "message {n}");
    }
}
