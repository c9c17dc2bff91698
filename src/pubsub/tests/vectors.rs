//! Known-answer vectors generated from PUBSUB.md alone by `vectors/gen.py` (an
//! independent reading of the text): every message layout, the topic-id derivation,
//! the drop reason of invalid messages and the subscriber's sequence verdicts.

use intentra_pubsub::wire::{self, parse, Message, Presence};
use intentra_pubsub::{
    Action, DropReason, MemberKey, PresenceReason, Role, Seq, SeqTracker, TopicId, Verdict,
};

const VECTORS: &str = include_str!("vectors/pubsub_vectors.txt");

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn key(s: &str) -> MemberKey {
    MemberKey(unhex(s).try_into().unwrap())
}

fn num(s: &str) -> u64 {
    s.parse().unwrap()
}

fn label(r: DropReason) -> &'static str {
    r.as_str()
}

#[test]
fn the_code_agrees_with_vectors_written_from_the_text() {
    let mut counts = std::collections::BTreeMap::new();
    for line in VECTORS.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        *counts.entry(f[0]).or_insert(0) += 1;
        match f[0] {
            "topic" => {
                let name = String::from_utf8(unhex(f[1])).unwrap();
                assert_eq!(TopicId::of(&name).0, num(f[2]), "{line}");
            }
            "subscribe" | "advertise" => {
                let name = String::from_utf8(unhex(f[1])).unwrap();
                let frame = if f[0] == "subscribe" {
                    wire::subscribe(&name)
                } else {
                    wire::advertise(&name)
                };
                assert_eq!(frame.as_bytes(), unhex(f[2]), "{line}");
                let topic = TopicId::of(&name);
                let want = if f[0] == "subscribe" {
                    Message::Subscribe { topic, name: &name }
                } else {
                    Message::Advertise { topic, name: &name }
                };
                assert_eq!(parse(&unhex(f[2])), Ok(want), "{line}");
            }
            "unsubscribe" | "unadvertise" => {
                let topic = TopicId(num(f[1]));
                let (frame, want) = if f[0] == "unsubscribe" {
                    (wire::unsubscribe(topic), Message::Unsubscribe { topic })
                } else {
                    (wire::unadvertise(topic), Message::Unadvertise { topic })
                };
                assert_eq!(frame.as_bytes(), unhex(f[2]), "{line}");
                assert_eq!(parse(&unhex(f[2])), Ok(want), "{line}");
            }
            "publish" => {
                let (hops, topic, origin, seq) =
                    (num(f[1]) as u8, TopicId(num(f[2])), key(f[3]), num(f[4]));
                let payload = unhex(f[5]);
                let msg = unhex(f[6]);
                let mut buf = vec![0u8; wire::PUBLISH_HEADER_LEN + payload.len()];
                wire::write_publish_header(&mut buf, hops, topic, &origin, seq).unwrap();
                buf[wire::PUBLISH_HEADER_LEN..].copy_from_slice(&payload);
                assert_eq!(buf, msg, "{line}");
                let Ok(Message::Publish(p)) = parse(&msg) else {
                    panic!("{line}")
                };
                assert_eq!(
                    (p.hops, p.topic, p.origin, p.seq, p.payload),
                    (hops, topic, origin, seq, &payload[..])
                );
            }
            "presence" => {
                let p = Presence {
                    role: Role::from_wire(num(f[1]) as u8).unwrap(),
                    reason: PresenceReason::from_wire(num(f[2]) as u8).unwrap(),
                    topic: TopicId(num(f[3])),
                    member: key(f[4]),
                    hub: key(f[5]),
                };
                let msg = unhex(f[6]);
                assert_eq!(wire::presence(&p).as_bytes(), msg, "{line}");
                let want = if p.reason == PresenceReason::Joined {
                    Message::PresenceUp(p)
                } else {
                    Message::PresenceDown(p)
                };
                assert_eq!(parse(&msg), Ok(want), "{line}");
            }
            "hello" => {
                assert_eq!(wire::hub_hello().as_bytes(), unhex(f[1]));
                assert_eq!(parse(&unhex(f[1])), Ok(Message::HubHello { version: 1 }));
            }
            "heartbeat" => {
                assert_eq!(wire::heartbeat().as_bytes(), unhex(f[1]));
                assert_eq!(parse(&unhex(f[1])), Ok(Message::Heartbeat));
            }
            "refused" => {
                let action = Action::from_wire(num(f[1]) as u8).unwrap();
                let topic = TopicId(num(f[2]));
                assert_eq!(wire::refused(action, topic).as_bytes(), unhex(f[3]));
                assert_eq!(
                    parse(&unhex(f[3])),
                    Ok(Message::Refused { action, topic }),
                    "{line}"
                );
            }
            "invalid" => {
                let bytes = unhex(f[1]);
                let got = parse(&bytes).map_err(label);
                assert_eq!(got.err(), Some(f[2]), "{line}");
            }
            "seq" => {
                let mut t = SeqTracker::new();
                let verdicts: Vec<String> = f[1]
                    .split(',')
                    .map(|s| match t.accept(Seq(num(s))) {
                        Verdict::Deliver {
                            restarted: true, ..
                        } => "r".to_owned(),
                        Verdict::Deliver { missing, .. } => format!("d{missing}"),
                        Verdict::Duplicate => "dup".to_owned(),
                        Verdict::Late => "late".to_owned(),
                    })
                    .collect();
                assert_eq!(verdicts.join(","), f[2], "{line}");
            }
            other => panic!("unknown vector kind {other}"),
        }
    }
    for kind in ["topic", "publish", "presence", "invalid", "seq", "refused"] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} vectors"
        );
    }
}
