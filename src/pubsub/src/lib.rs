//! intentra-pubsub: topics, publishers and subscribers, hubs and hub-to-hub links,
//! above intentra's transport, without I/O.
//!
//! Like the transport core, this crate never reads a clock, never draws randomness and
//! never touches a socket. Its inputs are the transport's events, handed in by the
//! node: a peer session came up ([`Member::peer_up`], [`Hub::peer_up`]), went down
//! (`peer_down`), delivered a message (`handle_message`), was heard from (`peer_alive`,
//! e.g. on a transport keepalive), and the time passed (`handle_timeout`). Its outputs
//! go into a caller-provided [`Sink`]: "send these bytes to this peer in this mode" and
//! application [`Event`]s. The transport payload of every pubsub message is the bytes
//! given to [`Sink::send`]; the transport core stays unaware of topics.
//!
//! Two roles: a [`Member`] publishes and subscribes through the hubs it has sessions
//! with; a [`Hub`] relays, authorizes, tracks presence and links to other hubs.
//! The wire format is specified in `PROTOCOL.md` section 19 at the repository root.
//!
//! The drive loop, for either role:
//!
//! ```
//! use core::time::Duration;
//! use intentra_pubsub::{Event, Member, MemberConfig, MemberKey, Mode, Sink, Timestamp};
//!
//! struct Out(Vec<(u32, Mode, Vec<u8>)>);
//! impl Sink<u32> for Out {
//!     fn send(&mut self, to: u32, mode: Mode, bytes: &[u8]) {
//!         self.0.push((to, mode, bytes.to_vec())); // a real node hands these to Endpoint::send
//!     }
//!     fn event(&mut self, event: Event<'_>) {
//!         let _ = event; // a real node delivers these to the application
//!     }
//! }
//!
//! let mut m = Member::new(MemberKey([1; 32]), MemberConfig::default());
//! let mut out = Out(Vec::new());
//! let mut now = Timestamp::ZERO;
//! m.peer_up(7, MemberKey([2; 32]), now, &mut out); // the session to the hub is up
//! let topic = m.subscribe("md/btc-usd", now, &mut out).unwrap();
//! assert_eq!(out.0[0].1, Mode::Reliable); // SUBSCRIBE goes Reliable
//! # let _ = topic;
//! // ... on every transport event call the matching handle_* method, then sleep until
//! // poll_timeout() and call handle_timeout(now).
//! now = now + Duration::from_secs(1);
//! m.handle_timeout(now, &mut out);
//! assert!(m.poll_timeout().is_some());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::fmt;
use core::time::Duration;

mod auth;
mod hub;
mod member;
mod seq;
mod stats;
mod topic;
pub mod wire;

pub use auth::{is_allowed, KeyPattern, Permissions, Rule, TopicPattern};
pub use hub::{Hub, HubConfig, RemoteMember, TopicStats};
pub use member::{Member, MemberConfig, PresenceEntry, PublishError};
pub use seq::{Seq, SeqTracker, Verdict, REORDER_WINDOW};
pub use stats::{DropReason, Stats};
pub use topic::{validate_topic_name, TopicError, TopicId, TopicName, MAX_TOPIC_NAME_LEN};
pub use wire::{Action, PresenceReason, Role};

/// A member's identity: its transport static public key (32 bytes). Kept as plain
/// bytes so this crate needs nothing from the transport core.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberKey(pub [u8; 32]);

impl fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberKey({self})")
    }
}

impl fmt::Display for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 8 bytes are enough to tell peers apart in logs.
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The transport mode of a message; mirrors the transport's `Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Delivered at once, never retransmitted; may be lost, duplicated or reordered.
    Realtime,
    /// In order, exactly once, per direction of a session.
    Reliable,
}

/// A point on the caller's monotonic clock, in nanoseconds from an origin the caller picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// Nanoseconds from the origin.
    pub fn from_nanos(n: u64) -> Timestamp {
        Timestamp(n)
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl core::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// Where a pubsub instance puts its outputs. The bytes passed to `send` are borrowed
/// from the instance's own buffers: a hub relaying to N subscribers makes N calls with
/// the same slice and allocates nothing.
pub trait Sink<P> {
    /// Send `bytes` as one transport message to peer `to` in `mode`.
    fn send(&mut self, to: P, mode: Mode, bytes: &[u8]);
    /// An event for the application (or, at a hub, for the daemon's logs and metrics).
    fn event(&mut self, event: Event<'_>);
}

/// What a pubsub instance reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A publish arrived on a subscribed topic (members only).
    Message {
        /// The topic.
        topic: TopicId,
        /// The publisher that originated it.
        publisher: MemberKey,
        /// Its mode.
        mode: Mode,
        /// Its sequence number (Realtime only).
        seq: Option<Seq>,
        /// 1: relayed by the member's hub; 2: also crossed one hub-to-hub link.
        hops: u8,
        /// The application bytes.
        payload: &'a [u8],
    },
    /// Realtime sequence numbers were skipped: `missing` publishes were lost.
    Gap {
        /// The topic.
        topic: TopicId,
        /// The publisher.
        publisher: MemberKey,
        /// How many numbers were skipped.
        missing: u64,
    },
    /// A publisher's sequence numbers began again (it restarted); no gap is reported.
    StreamRestarted {
        /// The topic.
        topic: TopicId,
        /// The publisher.
        publisher: MemberKey,
    },
    /// A member of a topic came up.
    PresenceUp {
        /// The topic.
        topic: TopicId,
        /// The member.
        member: MemberKey,
        /// Its role.
        role: Role,
        /// The hub it is on.
        hub: MemberKey,
    },
    /// A member of a topic went down.
    PresenceDown {
        /// The topic.
        topic: TopicId,
        /// The member.
        member: MemberKey,
        /// Its role.
        role: Role,
        /// The hub it was on.
        hub: MemberKey,
        /// Why.
        reason: PresenceReason,
    },
    /// A request was refused. At a hub: `peer` asked and was refused (the daemon logs
    /// it, rate-limited). At a member: hub `peer` refused this member's request.
    Refused {
        /// Who asked (at a hub) or who refused (at a member).
        peer: MemberKey,
        /// What.
        action: Action,
        /// The topic (0 for [`Action::Link`]).
        topic: TopicId,
        /// The topic name, when the request named it.
        name: Option<&'a str>,
    },
    /// A hub-to-hub link came up (hubs only).
    LinkUp {
        /// The linked hub.
        hub: MemberKey,
    },
    /// A hub-to-hub link went down (hubs only).
    LinkDown {
        /// The linked hub.
        hub: MemberKey,
    },
}

/// How often a HEARTBEAT is sent on a session that has carried nothing else.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a hub waits without hearing from a member (or link) before reporting it down.
pub const DEFAULT_DETECTION_TIME: Duration = Duration::from_secs(3);
