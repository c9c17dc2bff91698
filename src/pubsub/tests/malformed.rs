//! Malformed input is counted by reason and dropped, never panicked on.

mod common;

use common::Net;
use intentra_pubsub::wire::{self, parse};
use intentra_pubsub::{DropReason, Mode, TopicId};
use proptest::prelude::*;

/// A hub `h` with a member `a` (publisher and subscriber of "t") and a link `l`.
fn net() -> (Net, usize, usize, usize) {
    let mut net = Net::new();
    let h = net.add_hub(|_| {});
    let l = net.add_hub(|_| {});
    net.hub(h).set_links(vec![common::key(l)]);
    net.hub(l).set_links(vec![common::key(h)]);
    net.connect(h, l);
    let a = net.add_member();
    net.connect(a, h);
    net.advertise(a, "t");
    net.subscribe(a, "t");
    (net, h, l, a)
}

#[test]
fn each_parse_failure_has_its_reason() {
    let t = TopicId::of("t");
    let sub = wire::subscribe("t");
    let mut bad_name = sub.as_bytes().to_vec();
    bad_name[10] = 0xff;
    let mut ctrl = sub.as_bytes().to_vec();
    ctrl[10] = b'\n';
    let mut hops = vec![0u8; 50];
    wire::write_publish_header(&mut hops, 3, t, &common::key(0), 1).unwrap();
    let mut presence = wire::presence(&intentra_pubsub::wire::Presence {
        topic: t,
        role: intentra_pubsub::Role::Publisher,
        reason: intentra_pubsub::PresenceReason::Joined,
        member: common::key(0),
        hub: common::key(1),
    })
    .as_bytes()
    .to_vec();
    presence[2] = 2; // an UP with a DOWN reason
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![], DropReason::Empty),
        (vec![0x00], DropReason::UnknownType),
        (vec![0xff, 1, 2], DropReason::UnknownType),
        (sub.as_bytes()[..9].to_vec(), DropReason::BadLength),
        ([sub.as_bytes(), b"x"].concat(), DropReason::BadLength),
        (
            vec![0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            DropReason::BadTopicName,
        ),
        (bad_name, DropReason::BadTopicName),
        (ctrl, DropReason::BadTopicName),
        (vec![0x02; 8], DropReason::BadLength),
        (vec![0x05; 49], DropReason::BadLength),
        (vec![0x05; 1421], DropReason::BadLength),
        (hops, DropReason::BadHops),
        (presence, DropReason::BadField),
        (vec![0x06; 74], DropReason::BadLength),
        (vec![0x08, 2], DropReason::BadVersion),
        (vec![0x08], DropReason::BadLength),
        (vec![0x09, 0], DropReason::BadLength),
        (vec![0x0a, 9, 0, 0, 0, 0, 0, 0, 0, 0], DropReason::BadField),
    ];
    for (bytes, reason) in cases {
        assert_eq!(parse(&bytes), Err(reason), "{bytes:02x?}");
        let (mut net, h, _, a) = net();
        net.inject(a, h, Mode::Reliable, &bytes);
        assert_eq!(net.stats(h).dropped(reason), 1, "{bytes:02x?}");
        assert_eq!(net.stats(h).dropped_total(), 1);
    }
}

#[test]
fn messages_a_role_does_not_accept_are_counted() {
    let (mut net, h, l, a) = net();
    let t = TopicId::of("t");
    let p = wire::presence(&intentra_pubsub::wire::Presence {
        topic: t,
        role: intentra_pubsub::Role::Publisher,
        reason: intentra_pubsub::PresenceReason::Joined,
        member: common::key(9),
        hub: common::key(9),
    });
    // A member may not announce presence; a member may not receive a SUBSCRIBE;
    // a link may not ADVERTISE; an unknown peer is no one.
    net.inject(a, h, Mode::Reliable, p.as_bytes());
    net.inject(h, a, Mode::Reliable, wire::subscribe("t").as_bytes());
    net.inject(l, h, Mode::Reliable, wire::advertise("t").as_bytes());
    net.inject(77, h, Mode::Reliable, wire::heartbeat().as_bytes());
    net.inject(
        a,
        h,
        Mode::Reliable,
        wire::unsubscribe(TopicId(5)).as_bytes(),
    );
    assert_eq!(net.stats(h).dropped(DropReason::Unexpected), 2);
    assert_eq!(net.stats(a).dropped(DropReason::Unexpected), 1);
    assert_eq!(net.stats(h).dropped(DropReason::UnknownPeer), 1);
    assert_eq!(net.stats(h).dropped(DropReason::UnknownTopic), 1);
}

fn valid_frames() -> Vec<Vec<u8>> {
    let t = TopicId::of("t");
    let mut publish = vec![0u8; 60];
    wire::write_publish_header(&mut publish, 1, t, &common::key(0), 7).unwrap();
    vec![
        wire::subscribe("t").as_bytes().to_vec(),
        wire::advertise("t").as_bytes().to_vec(),
        wire::unsubscribe(t).as_bytes().to_vec(),
        wire::unadvertise(t).as_bytes().to_vec(),
        publish,
        wire::presence(&intentra_pubsub::wire::Presence {
            topic: t,
            role: intentra_pubsub::Role::Subscriber,
            reason: intentra_pubsub::PresenceReason::Left,
            member: common::key(9),
            hub: common::key(1),
        })
        .as_bytes()
        .to_vec(),
        wire::hub_hello().as_bytes().to_vec(),
        wire::heartbeat().as_bytes().to_vec(),
        wire::refused(intentra_pubsub::Action::Publish, t)
            .as_bytes()
            .to_vec(),
    ]
}

/// Random bytes, or a valid frame with one byte changed, truncated or extended.
fn input() -> impl Strategy<Value = Vec<u8>> {
    let frames = valid_frames();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        (
            0..frames.len(),
            any::<usize>(),
            any::<u8>(),
            0..3usize,
            proptest::collection::vec(any::<u8>(), 0..4)
        )
            .prop_map(move |(f, at, b, how, extra)| {
                let mut v = frames[f].clone();
                let at = at % v.len();
                match how {
                    0 => v[at] = b,
                    1 => v.truncate(at),
                    _ => v.extend_from_slice(&extra),
                }
                v
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_input_is_counted_never_panicked_on(
        bytes in input(),
        reliable in any::<bool>(),
        to in 0..3usize,
    ) {
        let (mut net, h, l, a) = net();
        let mode = if reliable { Mode::Reliable } else { Mode::Realtime };
        let before = [net.stats(h).dropped_total(), net.stats(a).dropped_total()];
        // To the hub from its member, to the hub from its link, to the member from its hub.
        let (from, target) = [(a, h), (l, h), (h, a)][to];
        net.inject(from, target, mode, &bytes);
        let after = net.stats(target).dropped_total();
        let idx = usize::from(target == a);
        if let Err(reason) = parse(&bytes) {
            prop_assert_eq!(after, before[idx] + 1);
            prop_assert_eq!(net.stats(target).dropped(reason), 1);
        }
        // Whatever was accepted, the network still settles and delivers.
        net.advance(std::time::Duration::from_secs(5));
    }
}
