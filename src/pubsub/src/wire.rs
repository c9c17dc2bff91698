//! The pubsub messages, byte by byte (PUBSUB.md section 4). Every pubsub message is
//! one transport message; its first byte is the message type.
//!
//! Parsing matches on the type and the length before it reads a field, borrows the
//! input instead of copying it, and never panics: every rejection is a [`DropReason`].

use crate::stats::DropReason;
use crate::topic::{validate_topic_name, TopicId, MAX_TOPIC_NAME_LEN};
use crate::MemberKey;

/// SUBSCRIBE: `type | topic id (8) | name length (1) | name`.
pub const TYPE_SUBSCRIBE: u8 = 0x01;
/// UNSUBSCRIBE: `type | topic id (8)`.
pub const TYPE_UNSUBSCRIBE: u8 = 0x02;
/// ADVERTISE ("I publish on this topic"): same layout as SUBSCRIBE.
pub const TYPE_ADVERTISE: u8 = 0x03;
/// UNADVERTISE: same layout as UNSUBSCRIBE.
pub const TYPE_UNADVERTISE: u8 = 0x04;
/// PUBLISH: `type | hops (1) | topic id (8) | origin (32) | seq (8) | payload`.
pub const TYPE_PUBLISH: u8 = 0x05;
/// PRESENCE_UP: `type | role (1) | reason (1) | topic id (8) | member (32) | hub (32)`.
pub const TYPE_PRESENCE_UP: u8 = 0x06;
/// PRESENCE_DOWN: same layout as PRESENCE_UP.
pub const TYPE_PRESENCE_DOWN: u8 = 0x07;
/// HUB_HELLO: `type | version (1)`; marks the session as a hub-to-hub link.
pub const TYPE_HUB_HELLO: u8 = 0x08;
/// HEARTBEAT: `type`; proves liveness when there is nothing else to send.
pub const TYPE_HEARTBEAT: u8 = 0x09;
/// REFUSED: `type | action (1) | topic id (8)`; a hub tells a peer it refused a request.
pub const TYPE_REFUSED: u8 = 0x0a;

/// The pubsub protocol version carried in HUB_HELLO.
pub const PUBSUB_VERSION: u8 = 1;

/// Bytes of a PUBLISH before its payload.
pub const PUBLISH_HEADER_LEN: usize = 1 + 1 + 8 + 32 + 8;
/// Bytes of a PRESENCE_UP or PRESENCE_DOWN.
pub const PRESENCE_LEN: usize = 1 + 1 + 1 + 8 + 32 + 32;
/// The longest control message (SUBSCRIBE or ADVERTISE with a 128-byte name).
pub const MAX_CONTROL_LEN: usize = 1 + 8 + 1 + MAX_TOPIC_NAME_LEN;

/// The largest Realtime transport payload; mirrors `intentra_proto::wire::MAX_REALTIME_PAYLOAD`.
pub const MAX_REALTIME_MESSAGE: usize = 1420;
/// The largest Reliable transport payload; mirrors `intentra_proto::wire::MAX_RELIABLE_PAYLOAD`.
pub const MAX_RELIABLE_MESSAGE: usize = 1412;
/// The largest application payload of a Realtime publish.
pub const MAX_REALTIME_PUBLISH: usize = MAX_REALTIME_MESSAGE - PUBLISH_HEADER_LEN;
/// The largest application payload of a Reliable publish.
pub const MAX_RELIABLE_PUBLISH: usize = MAX_RELIABLE_MESSAGE - PUBLISH_HEADER_LEN;

/// The highest hop count a valid PUBLISH carries: publisher (0) → its hub (1) → one
/// linked hub (2). Anything higher means someone forwarded twice.
pub const MAX_HOPS: u8 = 2;

/// A member's role on a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// It advertised the topic: it publishes.
    Publisher,
    /// It subscribed to the topic.
    Subscriber,
}

impl Role {
    /// The wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            Role::Publisher => 1,
            Role::Subscriber => 2,
        }
    }

    /// Parses the wire value.
    pub fn from_wire(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Publisher),
            2 => Some(Role::Subscriber),
            _ => None,
        }
    }
}

/// Why a member is reported up or down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PresenceReason {
    /// It subscribed or advertised (PRESENCE_UP only), or was already there when the
    /// receiver joined (a snapshot), or was heard again after silence.
    Joined,
    /// It unsubscribed or unadvertised.
    Left,
    /// Its session (or the link to its hub) closed.
    Closed,
    /// Nothing was heard from it (or from the link to its hub) for the detection time.
    Silent,
}

impl PresenceReason {
    /// The wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            PresenceReason::Joined => 0,
            PresenceReason::Left => 1,
            PresenceReason::Closed => 2,
            PresenceReason::Silent => 3,
        }
    }

    /// Parses the wire value.
    pub fn from_wire(b: u8) -> Option<PresenceReason> {
        match b {
            0 => Some(PresenceReason::Joined),
            1 => Some(PresenceReason::Left),
            2 => Some(PresenceReason::Closed),
            3 => Some(PresenceReason::Silent),
            _ => None,
        }
    }
}

/// What a hub refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Publishing on a topic (an ADVERTISE, or a PUBLISH on a topic not advertised).
    Publish,
    /// Subscribing to a topic.
    Subscribe,
    /// Acting as a linked hub (a HUB_HELLO from a key not configured as a link).
    Link,
}

impl Action {
    /// The wire value.
    pub fn to_wire(self) -> u8 {
        match self {
            Action::Publish => 1,
            Action::Subscribe => 2,
            Action::Link => 3,
        }
    }

    /// Parses the wire value.
    pub fn from_wire(b: u8) -> Option<Action> {
        match b {
            1 => Some(Action::Publish),
            2 => Some(Action::Subscribe),
            3 => Some(Action::Link),
            _ => None,
        }
    }
}

/// A parsed PUBLISH, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    /// 0 from the publisher, 1 relayed by its hub, 2 relayed by a linked hub.
    pub hops: u8,
    /// The topic.
    pub topic: TopicId,
    /// The publisher that originated it.
    pub origin: MemberKey,
    /// The publisher's per-topic sequence number (Realtime); 0 on Reliable publishes.
    pub seq: u64,
    /// The application bytes.
    pub payload: &'a [u8],
}

/// A parsed PRESENCE_UP or PRESENCE_DOWN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    /// The topic.
    pub topic: TopicId,
    /// The member's role.
    pub role: Role,
    /// Why.
    pub reason: PresenceReason,
    /// The member.
    pub member: MemberKey,
    /// The hub the member is attached to.
    pub hub: MemberKey,
}

/// One parsed pubsub message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// SUBSCRIBE.
    Subscribe {
        /// The topic id (already checked to be the name's).
        topic: TopicId,
        /// The topic name.
        name: &'a str,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// The topic id.
        topic: TopicId,
    },
    /// ADVERTISE.
    Advertise {
        /// The topic id (already checked to be the name's).
        topic: TopicId,
        /// The topic name.
        name: &'a str,
    },
    /// UNADVERTISE.
    Unadvertise {
        /// The topic id.
        topic: TopicId,
    },
    /// PUBLISH.
    Publish(Publish<'a>),
    /// PRESENCE_UP.
    PresenceUp(Presence),
    /// PRESENCE_DOWN.
    PresenceDown(Presence),
    /// HUB_HELLO.
    HubHello {
        /// The sender's pubsub version.
        version: u8,
    },
    /// HEARTBEAT.
    Heartbeat,
    /// REFUSED.
    Refused {
        /// What was refused.
        action: Action,
        /// The topic (0 for [`Action::Link`]).
        topic: TopicId,
    },
}

impl Message<'_> {
    /// Whether the message must travel Reliable (control messages do; a control message
    /// that arrives Realtime is dropped, since its loss would desynchronise state).
    pub fn requires_reliable(&self) -> bool {
        !matches!(self, Message::Publish(_) | Message::Heartbeat)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn key_at(b: &[u8], at: usize) -> MemberKey {
    let mut k = [0u8; 32];
    k.copy_from_slice(&b[at..at + 32]);
    MemberKey(k)
}

/// Parses one pubsub message.
pub fn parse(b: &[u8]) -> Result<Message<'_>, DropReason> {
    let Some(&ty) = b.first() else {
        return Err(DropReason::Empty);
    };
    match ty {
        TYPE_SUBSCRIBE | TYPE_ADVERTISE => {
            if b.len() < 10 {
                return Err(DropReason::BadLength);
            }
            let topic = TopicId(u64_at(b, 1));
            let n = usize::from(b[9]);
            if b.len() != 10 + n {
                return Err(DropReason::BadLength);
            }
            let name = core::str::from_utf8(&b[10..]).map_err(|_| DropReason::BadTopicName)?;
            validate_topic_name(name).map_err(|_| DropReason::BadTopicName)?;
            if TopicId::of(name) != topic {
                return Err(DropReason::TopicIdMismatch);
            }
            Ok(if ty == TYPE_SUBSCRIBE {
                Message::Subscribe { topic, name }
            } else {
                Message::Advertise { topic, name }
            })
        }
        TYPE_UNSUBSCRIBE | TYPE_UNADVERTISE => {
            if b.len() != 9 {
                return Err(DropReason::BadLength);
            }
            let topic = TopicId(u64_at(b, 1));
            Ok(if ty == TYPE_UNSUBSCRIBE {
                Message::Unsubscribe { topic }
            } else {
                Message::Unadvertise { topic }
            })
        }
        TYPE_PUBLISH => {
            if b.len() < PUBLISH_HEADER_LEN || b.len() > MAX_REALTIME_MESSAGE {
                return Err(DropReason::BadLength);
            }
            let hops = b[1];
            if hops > MAX_HOPS {
                return Err(DropReason::BadHops);
            }
            Ok(Message::Publish(Publish {
                hops,
                topic: TopicId(u64_at(b, 2)),
                origin: key_at(b, 10),
                seq: u64_at(b, 42),
                payload: &b[PUBLISH_HEADER_LEN..],
            }))
        }
        TYPE_PRESENCE_UP | TYPE_PRESENCE_DOWN => {
            if b.len() != PRESENCE_LEN {
                return Err(DropReason::BadLength);
            }
            let role = Role::from_wire(b[1]).ok_or(DropReason::BadField)?;
            let reason = PresenceReason::from_wire(b[2]).ok_or(DropReason::BadField)?;
            // An UP says "joined"; a DOWN never does.
            if (ty == TYPE_PRESENCE_UP) != (reason == PresenceReason::Joined) {
                return Err(DropReason::BadField);
            }
            let p = Presence {
                topic: TopicId(u64_at(b, 3)),
                role,
                reason,
                member: key_at(b, 11),
                hub: key_at(b, 43),
            };
            Ok(if ty == TYPE_PRESENCE_UP {
                Message::PresenceUp(p)
            } else {
                Message::PresenceDown(p)
            })
        }
        TYPE_HUB_HELLO => {
            if b.len() != 2 {
                return Err(DropReason::BadLength);
            }
            if b[1] != PUBSUB_VERSION {
                return Err(DropReason::BadVersion);
            }
            Ok(Message::HubHello { version: b[1] })
        }
        TYPE_HEARTBEAT => {
            if b.len() != 1 {
                return Err(DropReason::BadLength);
            }
            Ok(Message::Heartbeat)
        }
        TYPE_REFUSED => {
            if b.len() != 10 {
                return Err(DropReason::BadLength);
            }
            let action = Action::from_wire(b[1]).ok_or(DropReason::BadField)?;
            Ok(Message::Refused {
                action,
                topic: TopicId(u64_at(b, 2)),
            })
        }
        _ => Err(DropReason::UnknownType),
    }
}

/// A control message encoded on the stack, so sending one allocates nothing.
#[derive(Clone, Copy)]
pub struct Frame {
    buf: [u8; MAX_CONTROL_LEN],
    len: usize,
}

impl Frame {
    fn new() -> Frame {
        Frame {
            buf: [0; MAX_CONTROL_LEN],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl core::fmt::Debug for Frame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Frame").field(&self.as_bytes()).finish()
    }
}

fn named(ty: u8, name: &str) -> Frame {
    // Callers hold validated names (1..=128 bytes), so the length fits a byte and
    // the frame; truncating defensively keeps this total even if one did not.
    let n = &name.as_bytes()[..name.len().min(MAX_TOPIC_NAME_LEN)];
    let mut f = Frame::new();
    f.put(&[ty]);
    f.put(&TopicId::of(name).0.to_le_bytes());
    f.put(&[n.len() as u8]);
    f.put(n);
    f
}

fn id_only(ty: u8, topic: TopicId) -> Frame {
    let mut f = Frame::new();
    f.put(&[ty]);
    f.put(&topic.0.to_le_bytes());
    f
}

/// Encodes a SUBSCRIBE for a validated topic name.
pub fn subscribe(name: &str) -> Frame {
    named(TYPE_SUBSCRIBE, name)
}

/// Encodes an ADVERTISE for a validated topic name.
pub fn advertise(name: &str) -> Frame {
    named(TYPE_ADVERTISE, name)
}

/// Encodes an UNSUBSCRIBE.
pub fn unsubscribe(topic: TopicId) -> Frame {
    id_only(TYPE_UNSUBSCRIBE, topic)
}

/// Encodes an UNADVERTISE.
pub fn unadvertise(topic: TopicId) -> Frame {
    id_only(TYPE_UNADVERTISE, topic)
}

/// Encodes a PRESENCE_UP (when `p.reason` is [`PresenceReason::Joined`]) or a PRESENCE_DOWN.
pub fn presence(p: &Presence) -> Frame {
    let ty = if p.reason == PresenceReason::Joined {
        TYPE_PRESENCE_UP
    } else {
        TYPE_PRESENCE_DOWN
    };
    let mut f = Frame::new();
    f.put(&[ty, p.role.to_wire(), p.reason.to_wire()]);
    f.put(&p.topic.0.to_le_bytes());
    f.put(&p.member.0);
    f.put(&p.hub.0);
    f
}

/// Encodes a HUB_HELLO.
pub fn hub_hello() -> Frame {
    let mut f = Frame::new();
    f.put(&[TYPE_HUB_HELLO, PUBSUB_VERSION]);
    f
}

/// Encodes a HEARTBEAT.
pub fn heartbeat() -> Frame {
    let mut f = Frame::new();
    f.put(&[TYPE_HEARTBEAT]);
    f
}

/// Encodes a REFUSED.
pub fn refused(action: Action, topic: TopicId) -> Frame {
    let mut f = Frame::new();
    f.put(&[TYPE_REFUSED, action.to_wire()]);
    f.put(&topic.0.to_le_bytes());
    f
}

/// Writes a PUBLISH header into `buf[..PUBLISH_HEADER_LEN]`; the payload follows it.
/// Returns `None` if `buf` is shorter than the header.
pub fn write_publish_header(
    buf: &mut [u8],
    hops: u8,
    topic: TopicId,
    origin: &MemberKey,
    seq: u64,
) -> Option<()> {
    let h = buf.get_mut(..PUBLISH_HEADER_LEN)?;
    h[0] = TYPE_PUBLISH;
    h[1] = hops;
    h[2..10].copy_from_slice(&topic.0.to_le_bytes());
    h[10..42].copy_from_slice(&origin.0);
    h[42..50].copy_from_slice(&seq.to_le_bytes());
    Some(())
}

/// Offset of the hop count in a PUBLISH, which a hub rewrites when it relays.
pub const PUBLISH_HOPS_OFFSET: usize = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_round_trip() {
        let name = "md/btc-usd";
        let id = TopicId::of(name);
        assert_eq!(
            parse(subscribe(name).as_bytes()),
            Ok(Message::Subscribe { topic: id, name })
        );
        assert_eq!(
            parse(advertise(name).as_bytes()),
            Ok(Message::Advertise { topic: id, name })
        );
        assert_eq!(
            parse(unsubscribe(id).as_bytes()),
            Ok(Message::Unsubscribe { topic: id })
        );
        assert_eq!(
            parse(unadvertise(id).as_bytes()),
            Ok(Message::Unadvertise { topic: id })
        );
        let p = Presence {
            topic: id,
            role: Role::Subscriber,
            reason: PresenceReason::Silent,
            member: MemberKey([7; 32]),
            hub: MemberKey([9; 32]),
        };
        assert_eq!(parse(presence(&p).as_bytes()), Ok(Message::PresenceDown(p)));
        assert_eq!(
            parse(hub_hello().as_bytes()),
            Ok(Message::HubHello { version: 1 })
        );
        assert_eq!(parse(heartbeat().as_bytes()), Ok(Message::Heartbeat));
        assert_eq!(
            parse(refused(Action::Subscribe, id).as_bytes()),
            Ok(Message::Refused {
                action: Action::Subscribe,
                topic: id
            })
        );
    }

    #[test]
    fn publish_round_trips() {
        let mut buf = [0u8; 60];
        let id = TopicId::of("t");
        write_publish_header(&mut buf, 1, id, &MemberKey([3; 32]), 42).unwrap();
        buf[50..].copy_from_slice(b"0123456789");
        let Ok(Message::Publish(p)) = parse(&buf) else {
            panic!("not a publish")
        };
        assert_eq!(
            (p.hops, p.topic, p.seq, p.payload),
            (1, id, 42, &b"0123456789"[..])
        );
        assert_eq!(p.origin, MemberKey([3; 32]));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn worked_examples_match_pubsub_md() {
        // PUBSUB.md section 9 quotes these bytes; a change here is a wire change.
        assert_eq!(
            hex(subscribe("md/btc-usd").as_bytes()),
            "01163e93f5942d82fb0a6d642f6274632d757364"
        );
        let mut buf = [0u8; PUBLISH_HEADER_LEN + 2];
        write_publish_header(
            &mut buf,
            1,
            TopicId::of("md/btc-usd"),
            &MemberKey([0x11; 32]),
            258,
        )
        .unwrap();
        buf[PUBLISH_HEADER_LEN..].copy_from_slice(b"hi");
        assert_eq!(
            hex(&buf),
            format!(
                "0501163e93f5942d82fb{}02010000000000006869",
                "11".repeat(32)
            )
        );
        let p = Presence {
            topic: TopicId::of("md/btc-usd"),
            role: Role::Subscriber,
            reason: PresenceReason::Silent,
            member: MemberKey([0x22; 32]),
            hub: MemberKey([0x33; 32]),
        };
        assert_eq!(
            hex(presence(&p).as_bytes()),
            format!(
                "070203163e93f5942d82fb{}{}",
                "22".repeat(32),
                "33".repeat(32)
            )
        );
    }

    #[test]
    fn wrong_id_for_name_is_refused() {
        let mut f = subscribe("a").as_bytes().to_vec();
        f[1] ^= 1;
        assert_eq!(parse(&f), Err(DropReason::TopicIdMismatch));
    }
}
