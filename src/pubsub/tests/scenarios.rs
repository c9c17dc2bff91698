//! Scenario tests, one behaviour each, on the in-memory harness.

mod common;

use std::time::Duration;

use common::{key, Ev, Net, Node};
use intentra_pubsub::{
    Action, DropReason, KeyPattern, Member, MemberConfig, Mode, Permissions, PresenceReason, Role,
    Rule, Timestamp, TopicPattern,
};

fn seqs(evs: &[Ev]) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::Msg { seq: Some(s), .. } => Some(*s),
            _ => None,
        })
        .collect()
}

fn gaps(evs: &[Ev]) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::Gap { missing, .. } => Some(*missing),
            _ => None,
        })
        .collect()
}

/// A hub with members: returns (net, hub, members...).
fn star(n: usize) -> (Net, usize, Vec<usize>) {
    let mut net = Net::new();
    let h = net.add_hub(|_| {});
    let ms: Vec<usize> = (0..n).map(|_| net.add_member()).collect();
    for &m in &ms {
        net.connect(m, h);
    }
    (net, h, ms)
}

#[test]
fn publish_reaches_exactly_the_subscribers_of_a_topic() {
    let (mut net, _h, ms) = star(4);
    let (a, b, c, d) = (ms[0], ms[1], ms[2], ms[3]);
    let t1 = net.advertise(a, "md/btc-usd");
    assert_eq!(net.subscribe(b, "md/btc-usd"), t1);
    let t2 = net.subscribe(c, "md/eth-usd");
    net.subscribe(d, "md/btc-usd");
    for i in 0..3u8 {
        net.publish(a, t1, Mode::Realtime, &[i; 64]);
    }
    let want: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 64]).collect();
    assert_eq!(net.payloads(b, t1), want);
    assert_eq!(net.payloads(d, t1), want);
    assert!(net.payloads(c, t1).is_empty());
    assert!(net.payloads(c, t2).is_empty());
    assert!(
        net.payloads(a, t1).is_empty(),
        "a publisher does not hear its own publish"
    );
}

#[test]
fn unsubscribe_stops_delivery() {
    let (mut net, _h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    net.publish(a, t, Mode::Realtime, b"one");
    net.unsubscribe(b, t);
    net.publish(a, t, Mode::Realtime, b"two");
    assert_eq!(net.payloads(b, t), vec![b"one".to_vec()]);
    assert_eq!(net.stats(b).dropped(DropReason::NotSubscribed), 0);
}

#[test]
fn reliable_publish_stays_reliable_and_in_order() {
    let (mut net, _h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "cmd");
    net.subscribe(b, "cmd");
    net.loss = 0.5; // Realtime only: Reliable is never lost by the transport.
    for i in 0..50u8 {
        net.publish_nosettle(a, t, Mode::Reliable, &[i]);
    }
    net.settle();
    let evs = net.take(b);
    let got: Vec<(Mode, Option<u64>, Vec<u8>)> = evs
        .into_iter()
        .filter_map(|e| match e {
            Ev::Msg {
                mode, seq, payload, ..
            } => Some((mode, seq, payload)),
            _ => None,
        })
        .collect();
    let want: Vec<(Mode, Option<u64>, Vec<u8>)> =
        (0..50u8).map(|i| (Mode::Reliable, None, vec![i])).collect();
    assert_eq!(got, want);
}

#[test]
fn gaps_are_reported_exactly() {
    let (mut net, h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    // Lose seqs 3, 7, 8 on the hub → subscriber leg and 15 on the publisher → hub leg.
    net.filter = Some(Box::new(move |p| {
        if p.mode != Mode::Realtime || p.bytes.len() < 50 {
            return false;
        }
        let seq = u64::from_le_bytes(p.bytes[42..50].try_into().unwrap());
        (p.from == h && p.to == b && matches!(seq, 3 | 7 | 8)) || (p.to == h && seq == 15)
    }));
    for i in 1..=20u8 {
        net.publish(a, t, Mode::Realtime, &[i]);
    }
    let evs = net.take(b);
    assert_eq!(gaps(&evs), vec![1, 2, 1]);
    assert_eq!(
        seqs(&evs),
        (1..=20)
            .filter(|s| ![3, 7, 8, 15].contains(s))
            .collect::<Vec<_>>()
    );
    // Each gap event comes just before the message that revealed it.
    let i = evs
        .iter()
        .position(|e| matches!(e, Ev::Gap { missing: 2, .. }))
        .unwrap();
    assert!(matches!(evs[i + 1], Ev::Msg { seq: Some(9), .. }));
    assert!(matches!(evs[i], Ev::Gap { publisher, .. } if publisher == key(a)));
    assert_eq!(net.stats(b).gap_missing, 4);
}

#[test]
fn loss_duplication_and_reordering_account_for_every_number() {
    let (mut net, _h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    net.loss = 0.1;
    net.dup = 0.1;
    net.reorder = 0.2;
    for i in 0..3000u32 {
        net.publish_nosettle(a, t, Mode::Realtime, &i.to_le_bytes());
        if i % 4 == 3 {
            net.settle();
        }
    }
    net.settle();
    let evs = net.take(b);
    let s = seqs(&evs);
    assert!(
        s.windows(2).all(|w| w[0] < w[1]),
        "delivered in increasing order, never twice"
    );
    let st = net.stats(b);
    let first = s[0];
    let last = *s.last().unwrap();
    // Every number in the span is either delivered once or reported missing once.
    assert_eq!(s.len() as u64 + st.gap_missing, last - first + 1);
    assert_eq!(gaps(&evs).iter().sum::<u64>(), st.gap_missing);
    assert!(st.dropped(DropReason::Duplicate) > 0);
    assert!(st.dropped(DropReason::Late) > 0);
    assert!(st.gap_missing > 0);
}

#[test]
fn gaps_under_random_loss_equal_the_publishes_lost() {
    let (mut net, _h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    net.loss = 0.2; // on both legs; no heartbeats run, so every loss is a publish
    const N: u64 = 2000;
    for i in 0..N {
        net.publish(a, t, Mode::Realtime, &i.to_le_bytes());
    }
    let evs = net.take(b);
    let s = seqs(&evs);
    let (first, last) = (s[0], *s.last().unwrap());
    let st = net.stats(b);
    // Lost before the first delivered or after the last cannot be seen as gaps.
    assert_eq!(st.gap_missing + (first - 1) + (N - last), net.realtime_lost);
    assert_eq!(s.len() as u64 + net.realtime_lost, N);
    assert_eq!(st.dropped_total(), 0);
}

#[test]
fn publisher_restart_starts_a_fresh_stream() {
    let (mut net, h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    for i in 0..100u8 {
        net.publish(a, t, Mode::Realtime, &[i]);
    }
    // The publisher's process restarts: a new instance with the same key, seq from 1.
    net.disconnect(a, h);
    net.nodes[a] = Node::Member(Member::new(key(a), MemberConfig::default()));
    net.connect(a, h);
    net.advertise(a, "t");
    net.take(b);
    for i in 0..5u8 {
        net.publish(a, t, Mode::Realtime, &[i]);
    }
    let evs = net.take(b);
    assert_eq!(seqs(&evs), vec![1, 2, 3, 4, 5]);
    assert!(gaps(&evs).is_empty());

    // A restart the hub never saw as a close (the new session simply replaced the old
    // one): the subscriber sees seq jump back by more than the reorder window.
    for i in 0..95u8 {
        net.publish(a, t, Mode::Realtime, &[i]);
    }
    net.nodes[a] = Node::Member(Member::new(key(a), MemberConfig::default()));
    net.advertise(a, "t"); // queued for the hub when the session comes up
    net.connect(a, h);
    net.take(b);
    net.publish(a, t, Mode::Realtime, b"again");
    let evs = net.take(b);
    assert_eq!(seqs(&evs), vec![1]);
    assert!(gaps(&evs).is_empty());
}

#[test]
fn hub_relays_between_publishers_and_subscribers_on_different_topics() {
    let (mut net, _h, ms) = star(4);
    let (p1, p2, s1, s2) = (ms[0], ms[1], ms[2], ms[3]);
    let t1 = net.advertise(p1, "a");
    let t2 = net.advertise(p2, "b");
    net.subscribe(s1, "a");
    net.subscribe(s2, "b");
    net.subscribe(s2, "a");
    net.publish(p1, t1, Mode::Realtime, b"a1");
    net.publish(p2, t2, Mode::Reliable, b"b1");
    let s1_evs = net.take(s1);
    let s2_evs = net.take(s2);
    let msgs = |evs: &[Ev]| -> Vec<(intentra_pubsub::TopicId, Vec<u8>, u8)> {
        evs.iter()
            .filter_map(|e| match e {
                Ev::Msg {
                    topic,
                    payload,
                    hops,
                    ..
                } => Some((*topic, payload.clone(), *hops)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(msgs(&s1_evs), vec![(t1, b"a1".to_vec(), 1)]);
    assert_eq!(
        msgs(&s2_evs),
        vec![(t1, b"a1".to_vec(), 1), (t2, b"b1".to_vec(), 1)]
    );
}

/// `n` hubs in a full mesh, each with one subscriber to "t"; one publisher on hub 0.
fn mesh(n: usize) -> (Net, Vec<usize>, Vec<usize>, usize) {
    let mut net = Net::new();
    let hubs: Vec<usize> = (0..n).map(|_| net.add_hub(|_| {})).collect();
    for &h in &hubs {
        let links = hubs.iter().filter(|&&o| o != h).map(|&o| key(o)).collect();
        net.hub(h).set_links(links);
    }
    for (i, &x) in hubs.iter().enumerate() {
        for &y in &hubs[i + 1..] {
            net.connect(x, y);
        }
    }
    let subs: Vec<usize> = hubs
        .iter()
        .map(|&h| {
            let m = net.add_member();
            net.connect(m, h);
            net.subscribe(m, "t");
            m
        })
        .collect();
    let p = net.add_member();
    net.connect(p, hubs[0]);
    net.advertise(p, "t");
    (net, hubs, subs, p)
}

#[test]
fn two_linked_hubs_deliver_across_without_duplicates() {
    let (mut net, hubs, subs, p) = mesh(2);
    assert!(net.take(hubs[0]).contains(&Ev::LinkUp(key(hubs[1]))));
    let t = intentra_pubsub::TopicId::of("t");
    for i in 0..10u8 {
        net.publish(p, t, Mode::Realtime, &[i]);
    }
    net.publish(p, t, Mode::Reliable, b"r");
    for (k, &s) in subs.iter().enumerate() {
        let evs = net.take(s);
        let hops: Vec<u8> = evs
            .iter()
            .filter_map(|e| match e {
                Ev::Msg { hops, .. } => Some(*hops),
                _ => None,
            })
            .collect();
        assert_eq!(hops, vec![if k == 0 { 1 } else { 2 }; 11], "subscriber {k}");
        let modes: Vec<Mode> = evs
            .iter()
            .filter_map(|e| match e {
                Ev::Msg { mode, .. } => Some(*mode),
                _ => None,
            })
            .collect();
        let mut want = vec![Mode::Realtime; 10];
        want.push(Mode::Reliable);
        assert_eq!(modes, want, "a relay keeps the mode");
        assert_eq!(seqs(&evs), (1..=10).collect::<Vec<_>>());
    }
}

#[test]
fn three_hub_full_mesh_delivers_once_and_never_loops() {
    let (mut net, hubs, subs, p) = mesh(3);
    let t = intentra_pubsub::TopicId::of("t");
    // A second publisher on hub 2.
    let q = net.add_member();
    net.connect(q, hubs[2]);
    net.advertise(q, "t");
    for &s in &subs {
        net.take(s);
    }
    for i in 0..20u8 {
        net.publish(p, t, Mode::Realtime, &[i]);
        net.publish(q, t, Mode::Reliable, &[i]);
    }
    for (k, &s) in subs.iter().enumerate() {
        let evs = net.take(s);
        let from = |who: usize| {
            evs.iter()
                .filter(|e| matches!(e, Ev::Msg { publisher, .. } if *publisher == key(who)))
                .count()
        };
        assert_eq!(from(p), 20, "subscriber {k} from p");
        assert_eq!(from(q), 20, "subscriber {k} from q");
    }
    // Each hub received each publish exactly once (locally or over one link).
    for &h in &hubs {
        assert_eq!(net.stats(h).published_in, 40, "hub {h}");
        assert_eq!(net.stats(h).dropped_total(), 0, "hub {h}");
    }
}

#[test]
fn a_hub_without_subscribers_gets_no_relays() {
    let mut net = Net::new();
    let h1 = net.add_hub(|_| {});
    let h2 = net.add_hub(|_| {});
    net.hub(h1).set_links(vec![key(h2)]);
    net.hub(h2).set_links(vec![key(h1)]);
    net.connect(h1, h2);
    let p = net.add_member();
    let s = net.add_member();
    net.connect(p, h1);
    net.connect(s, h2);
    let t = net.advertise(p, "t");
    net.publish(p, t, Mode::Realtime, b"nobody");
    assert_eq!(net.stats(h2).published_in, 0);
    net.subscribe(s, "t");
    net.publish(p, t, Mode::Realtime, b"s");
    assert_eq!(net.payloads(s, t), vec![b"s".to_vec()]);
    net.unsubscribe(s, t);
    net.publish(p, t, Mode::Realtime, b"gone");
    assert_eq!(net.stats(h2).published_in, 1);
}

#[test]
fn presence_reports_join_snapshot_leave_and_close() {
    let (mut net, h, ms) = star(3);
    let (a, b, c) = (ms[0], ms[1], ms[2]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    let up_b = Ev::Up {
        topic: t,
        member: key(b),
        role: Role::Subscriber,
        hub: key(h),
    };
    let up_a = Ev::Up {
        topic: t,
        member: key(a),
        role: Role::Publisher,
        hub: key(h),
    };
    assert_eq!(net.take(a), vec![up_b.clone()]);
    assert_eq!(
        net.take(b),
        vec![up_a.clone()],
        "the snapshot for a new member"
    );
    net.subscribe(c, "t");
    let mut snap = net.take(c);
    snap.sort_by_key(|e| format!("{e:?}"));
    let mut want = vec![up_a, up_b];
    want.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(snap, want);
    net.take(a);
    net.unsubscribe(b, t);
    let down = |m, reason| Ev::Down {
        topic: t,
        member: key(m),
        role: Role::Subscriber,
        hub: key(h),
        reason,
    };
    assert_eq!(net.take(a), vec![down(b, PresenceReason::Left)]);
    net.disconnect(c, h);
    assert_eq!(net.take(a), vec![down(c, PresenceReason::Closed)]);
    let st = net.member(a).presence(t).count();
    assert_eq!(st, 0);
    assert_eq!(
        net.hub(h).presence(t),
        vec![(key(a), Role::Publisher, key(h))]
    );
}

#[test]
fn silence_is_reported_within_the_detection_time_and_recovery_too() {
    let (mut net, h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    net.advance(Duration::from_secs(10)); // heartbeats keep everyone up
    net.take(a);
    net.cut(b, h);
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    let down_at = loop {
        net.advance(step);
        waited += step;
        let evs = net.take(a);
        if let Some(e) = evs.iter().find(|e| matches!(e, Ev::Down { .. })) {
            assert_eq!(
                *e,
                Ev::Down {
                    topic: t,
                    member: key(b),
                    role: Role::Subscriber,
                    hub: key(h),
                    reason: PresenceReason::Silent,
                }
            );
            break waited;
        }
        assert!(waited < Duration::from_secs(10));
    };
    // Detection time 3 s after the last heartbeat (sent at most 1 s before the cut).
    assert!(down_at >= Duration::from_secs(2), "{down_at:?}");
    assert!(down_at <= Duration::from_secs(3) + step, "{down_at:?}");
    net.heal(b, h);
    net.advance(Duration::from_millis(1100));
    assert!(net.take(a).iter().any(|e| matches!(
        e,
        Ev::Up { member, .. } if *member == key(b)
    )));
    assert_eq!(net.stats(h).silent, 1);
}

#[test]
fn transport_liveness_keeps_a_member_present_and_never_moves_its_time_back() {
    let (mut net, h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    net.advertise(a, "t");
    net.subscribe(b, "t");
    net.advance(Duration::from_secs(2));
    net.take(a);
    // b's HEARTBEATs are lost, but its transport is heard (keepalives) every 500 ms.
    net.cut(b, h);
    for _ in 0..20 {
        net.advance(Duration::from_millis(500));
        let now = net.now;
        let mut c = common::Collect::default();
        net.hub(h).peer_alive(b, now, &mut c);
        net.absorb_from(h, c);
    }
    assert!(
        !net.take(a).iter().any(|e| matches!(e, Ev::Down { .. })),
        "heard at the transport level, so present"
    );
    // A report of a packet older than the last one heard changes nothing: b is still
    // reported down 3 s after the last real report, not earlier.
    let last = net.now;
    let mut c = common::Collect::default();
    net.hub(h)
        .peer_alive(b, Timestamp(last.0 - 2_500_000_000), &mut c);
    net.absorb_from(h, c);
    net.advance(Duration::from_millis(2900));
    assert!(!net.take(a).iter().any(|e| matches!(e, Ev::Down { .. })));
    net.advance(Duration::from_millis(200));
    assert!(net
        .take(a)
        .iter()
        .any(|e| matches!(e, Ev::Down { member, reason: PresenceReason::Silent, .. } if *member == key(b))));
}

#[test]
fn presence_crosses_linked_hubs_and_follows_link_loss() {
    let mut net = Net::new();
    let h1 = net.add_hub(|_| {});
    let h2 = net.add_hub(|_| {});
    net.hub(h1).set_links(vec![key(h2)]);
    net.hub(h2).set_links(vec![key(h1)]);
    net.connect(h1, h2);
    let a = net.add_member();
    let b = net.add_member();
    net.connect(a, h1);
    net.connect(b, h2);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    let up_b = Ev::Up {
        topic: t,
        member: key(b),
        role: Role::Subscriber,
        hub: key(h2),
    };
    assert_eq!(net.take(a), vec![up_b.clone()]);
    assert!(net.take(b).contains(&Ev::Up {
        topic: t,
        member: key(a),
        role: Role::Publisher,
        hub: key(h1),
    }));
    // The link goes silent: members behind it are reported down within the detection
    // time, and come back when the link is heard again (HUB_HELLO resync).
    net.cut(h1, h2);
    net.advance(Duration::from_millis(3100));
    assert!(net.take(a).contains(&Ev::Down {
        topic: t,
        member: key(b),
        role: Role::Subscriber,
        hub: key(h2),
        reason: PresenceReason::Silent,
    }));
    net.heal(h1, h2);
    net.advance(Duration::from_millis(1100));
    assert!(net.take(a).contains(&up_b));
    // The link closes.
    net.disconnect(h1, h2);
    assert!(net.take(a).contains(&Ev::Down {
        topic: t,
        member: key(b),
        role: Role::Subscriber,
        hub: key(h2),
        reason: PresenceReason::Closed,
    }));
    assert!(net.take(h1).contains(&Ev::LinkDown(key(h2))));
}

#[test]
fn a_peer_not_allowed_to_publish_or_subscribe_is_refused() {
    let mut net = Net::new();
    let a_key = key(1);
    let h = net.add_hub(|c| {
        c.rules = vec![
            Rule {
                key: KeyPattern::Key(a_key),
                topic: TopicPattern::parse("md/*"),
                allow: Permissions {
                    publish: true,
                    subscribe: false,
                },
            },
            Rule {
                key: KeyPattern::Any,
                topic: TopicPattern::parse("md/btc-usd"),
                allow: Permissions {
                    publish: false,
                    subscribe: true,
                },
            },
        ];
    });
    let a = net.add_member();
    let b = net.add_member();
    assert_eq!(key(a), a_key);
    net.connect(a, h);
    net.connect(b, h);
    let t = net.advertise(a, "md/btc-usd");
    net.subscribe(b, "md/btc-usd");
    let secret = net.subscribe(b, "secret");
    let other = net.advertise(b, "md/btc-usd");
    let refused_b: Vec<Ev> = net
        .take(b)
        .into_iter()
        .filter(|e| matches!(e, Ev::Refused { .. }))
        .collect();
    assert_eq!(
        refused_b,
        vec![
            Ev::Refused {
                peer: key(h),
                action: Action::Subscribe,
                topic: secret
            },
            Ev::Refused {
                peer: key(h),
                action: Action::Publish,
                topic: other
            },
        ]
    );
    let at_hub: Vec<Ev> = net
        .take(h)
        .into_iter()
        .filter(|e| matches!(e, Ev::Refused { .. }))
        .collect();
    assert_eq!(at_hub.len(), 2);
    assert!(matches!(at_hub[0], Ev::Refused { peer, .. } if peer == key(b)));
    assert_eq!(net.stats(h).refused, 2);
    // b publishes anyway: the hub drops it and nobody receives it.
    net.publish(b, other, Mode::Realtime, b"forged");
    net.publish(a, t, Mode::Realtime, b"real");
    assert_eq!(net.payloads(b, t), vec![b"real".to_vec()]);
    assert_eq!(net.stats(h).dropped(DropReason::NotAdvertised), 1);
    // a may not subscribe even to a topic it may publish on: only b's subscription counts.
    net.subscribe(a, "md/eth");
    assert_eq!(net.stats(h).refused, 3);
}

#[test]
fn a_hub_hello_from_an_unconfigured_key_is_refused() {
    let (mut net, h, ms) = star(1);
    net.inject(ms[0], h, Mode::Reliable, &[0x08, 1]);
    assert_eq!(net.stats(h).refused, 1);
    assert!(!net.hub(h).is_link(ms[0]));
    assert!(net.take(h).iter().any(|e| matches!(
        e,
        Ev::Refused {
            action: Action::Link,
            ..
        }
    )));
}

#[test]
fn a_hub_that_is_not_configured_to_link_refuses_and_the_other_hears_it() {
    let mut net = Net::new();
    let h1 = net.add_hub(|_| {});
    let h2 = net.add_hub(|_| {});
    net.hub(h1).set_links(vec![key(h2)]);
    net.connect(h1, h2);
    assert!(!net.hub(h1).is_link(h2) && !net.hub(h2).is_link(h1));
    assert_eq!(net.stats(h2).refused, 1);
    assert!(net.take(h1).contains(&Ev::Refused {
        peer: key(h2),
        action: Action::Link,
        topic: intentra_pubsub::TopicId(0)
    }));
    assert_eq!(net.stats(h1).dropped_total(), 0);
}

#[test]
fn last_value_cache_gives_a_new_subscriber_the_current_value_first() {
    let mut net = Net::new();
    let h = net.add_hub(|c| c.last_value_cache = true);
    let a = net.add_member();
    let b = net.add_member();
    net.connect(a, h);
    net.connect(b, h);
    let t = net.advertise(a, "state");
    net.publish(a, t, Mode::Realtime, b"v1");
    net.publish(a, t, Mode::Realtime, b"v2");
    net.subscribe(b, "state");
    net.publish(a, t, Mode::Realtime, b"v3");
    let evs = net.take(b);
    assert_eq!(seqs(&evs), vec![2, 3]);
    assert!(gaps(&evs).is_empty());
}

#[test]
fn spoofed_origin_and_bad_hops_are_dropped() {
    let (mut net, h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    let mut msg = vec![0u8; 52];
    intentra_pubsub::wire::write_publish_header(&mut msg, 0, t, &key(b), 1).unwrap();
    net.inject(a, h, Mode::Realtime, &msg);
    assert_eq!(net.stats(h).dropped(DropReason::SpoofedOrigin), 1);
    intentra_pubsub::wire::write_publish_header(&mut msg, 1, t, &key(a), 1).unwrap();
    net.inject(a, h, Mode::Realtime, &msg);
    assert_eq!(net.stats(h).dropped(DropReason::BadHops), 1);
    // A control message must not arrive Realtime.
    net.inject(
        b,
        h,
        Mode::Realtime,
        intentra_pubsub::wire::unsubscribe(t).as_bytes(),
    );
    assert_eq!(net.stats(h).dropped(DropReason::WrongMode), 1);
    assert!(net.payloads(b, t).is_empty());
}

#[test]
fn a_rules_reload_revokes_what_it_no_longer_allows() {
    let (mut net, h, ms) = star(3);
    let (a, b, c) = (ms[0], ms[1], ms[2]);
    let t = net.advertise(a, "md/x");
    net.subscribe(b, "md/x");
    net.subscribe(c, "md/x");
    net.take(a);
    // Only c may still subscribe; a may still publish.
    let rules = vec![
        Rule {
            key: KeyPattern::Key(key(c)),
            topic: TopicPattern::parse("md/*"),
            allow: Permissions {
                publish: false,
                subscribe: true,
            },
        },
        Rule {
            key: KeyPattern::Key(key(a)),
            topic: TopicPattern::parse("md/x"),
            allow: Permissions {
                publish: true,
                subscribe: false,
            },
        },
    ];
    let mut sink = common::NullSink::default();
    let now = net.now;
    net.hub(h).set_rules(rules, now, &mut sink);
    net.absorb_from(h, sink);
    net.settle();
    assert!(net.take(b).contains(&Ev::Refused {
        peer: key(h),
        action: Action::Subscribe,
        topic: t
    }));
    assert!(net.take(a).contains(&Ev::Down {
        topic: t,
        member: key(b),
        role: Role::Subscriber,
        hub: key(h),
        reason: PresenceReason::Left,
    }));
    net.publish(a, t, Mode::Realtime, b"after");
    assert!(net.payloads(b, t).is_empty());
    assert_eq!(net.payloads(c, t).len(), 1);
}

#[test]
fn a_member_over_its_topic_limit_is_refused() {
    let mut net = Net::new();
    let h = net.add_hub(|c| {
        c.max_memberships_per_member = 2;
        c.max_topics = 3;
    });
    let a = net.add_member();
    let b = net.add_member();
    net.connect(a, h);
    net.connect(b, h);
    net.subscribe(a, "t1");
    net.advertise(a, "t2");
    let t3 = net.subscribe(a, "t3");
    assert!(net.take(a).contains(&Ev::Refused {
        peer: key(h),
        action: Action::Subscribe,
        topic: t3
    }));
    // t3 was created before the limit applied: the table is full for b's fourth topic.
    net.subscribe(b, "t1");
    let t4 = net.subscribe(b, "t4");
    assert!(net.take(b).contains(&Ev::Refused {
        peer: key(h),
        action: Action::Subscribe,
        topic: t4
    }));
    assert_eq!(net.stats(h).dropped(DropReason::TooManyTopics), 2);
}

#[test]
fn a_restarted_hub_gets_its_state_back_from_its_members() {
    let (mut net, h, ms) = star(2);
    let (a, b) = (ms[0], ms[1]);
    let t = net.advertise(a, "t");
    net.subscribe(b, "t");
    net.publish(a, t, Mode::Realtime, b"before");
    net.disconnect(a, h);
    net.disconnect(b, h);
    let config = net.hub(h).config().clone();
    net.nodes[h] = Node::Hub(intentra_pubsub::Hub::new(config));
    net.connect(a, h);
    net.connect(b, h);
    net.take(b);
    net.publish(a, t, Mode::Realtime, b"after");
    let evs = net.take(b);
    // The stream continues (seq 2) but is new to b after the close: no gap, no restart.
    assert_eq!(seqs(&evs), vec![2]);
    assert!(gaps(&evs).is_empty());
    assert_eq!(
        net.hub(h).presence(t),
        vec![
            (key(a), Role::Publisher, key(h)),
            (key(b), Role::Subscriber, key(h))
        ]
    );
}
