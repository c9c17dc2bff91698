//! Counters. One [`DropReason`] enum names every rejection and is also the metric label.

/// Why an incoming pubsub message was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// A zero-length message.
    Empty,
    /// The first byte is not a known message type.
    UnknownType,
    /// The length does not fit the message type.
    BadLength,
    /// A role, reason or action byte has no meaning.
    BadField,
    /// A topic name that is not UTF-8, empty, longer than 128 bytes or has control characters.
    BadTopicName,
    /// A SUBSCRIBE or ADVERTISE whose topic id is not the id of its name.
    TopicIdMismatch,
    /// A name whose id is already used by a different known name (a 64-bit collision).
    TopicCollision,
    /// A HUB_HELLO with another pubsub version.
    BadVersion,
    /// A PUBLISH whose hop count does not fit the session it came on.
    BadHops,
    /// A PUBLISH from a member whose origin key is not the session's own key.
    SpoofedOrigin,
    /// A control message that arrived Realtime.
    WrongMode,
    /// A message this role does not accept (e.g. PRESENCE from a member, SUBSCRIBE at a member).
    Unexpected,
    /// A message from a peer that is not up.
    UnknownPeer,
    /// A PUBLISH on a topic this member is not subscribed to.
    NotSubscribed,
    /// A PUBLISH from a member on a topic it did not advertise (or was refused).
    NotAdvertised,
    /// An UNSUBSCRIBE/UNADVERTISE for a topic never named, or a PRESENCE for an unknown topic.
    UnknownTopic,
    /// The hub's topic table is full ([`crate::HubConfig::max_topics`]), or the member
    /// holds [`crate::HubConfig::max_memberships_per_member`] topics already.
    TooManyTopics,
    /// A Realtime PUBLISH whose sequence number was already delivered.
    Duplicate,
    /// A Realtime PUBLISH older than the newest one delivered (already reported in a gap).
    Late,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 19] = [
        DropReason::Empty,
        DropReason::UnknownType,
        DropReason::BadLength,
        DropReason::BadField,
        DropReason::BadTopicName,
        DropReason::TopicIdMismatch,
        DropReason::TopicCollision,
        DropReason::BadVersion,
        DropReason::BadHops,
        DropReason::SpoofedOrigin,
        DropReason::WrongMode,
        DropReason::Unexpected,
        DropReason::UnknownPeer,
        DropReason::NotSubscribed,
        DropReason::NotAdvertised,
        DropReason::UnknownTopic,
        DropReason::TooManyTopics,
        DropReason::Duplicate,
        DropReason::Late,
    ];

    /// A dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Empty => "empty",
            DropReason::UnknownType => "unknown_type",
            DropReason::BadLength => "bad_length",
            DropReason::BadField => "bad_field",
            DropReason::BadTopicName => "bad_topic_name",
            DropReason::TopicIdMismatch => "topic_id_mismatch",
            DropReason::TopicCollision => "topic_collision",
            DropReason::BadVersion => "bad_version",
            DropReason::BadHops => "bad_hops",
            DropReason::SpoofedOrigin => "spoofed_origin",
            DropReason::WrongMode => "wrong_mode",
            DropReason::Unexpected => "unexpected",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::NotSubscribed => "not_subscribed",
            DropReason::NotAdvertised => "not_advertised",
            DropReason::UnknownTopic => "unknown_topic",
            DropReason::TooManyTopics => "too_many_topics",
            DropReason::Duplicate => "duplicate",
            DropReason::Late => "late",
        }
    }
}

/// Counters of one pubsub instance (a [`crate::Member`] or a [`crate::Hub`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Dropped incoming messages, indexed by [`DropReason::index`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// PUBLISH messages accepted (at a member: delivered to the application).
    pub published_in: u64,
    /// PUBLISH messages sent (at a member: its own publishes, once per hub; at a hub:
    /// one per relay target).
    pub published_out: u64,
    /// Realtime sequence numbers reported missing in [`crate::Event::Gap`] events.
    pub gap_missing: u64,
    /// Publisher streams restarted (sequence numbers began again).
    pub stream_restarts: u64,
    /// Requests refused by authorization (at a hub) or reported refused (at a member).
    pub refused: u64,
    /// HEARTBEATs sent.
    pub heartbeats_sent: u64,
    /// Members (or links) reported down because nothing was heard from them.
    pub silent: u64,
}

impl Stats {
    /// Counts one drop.
    pub fn drop(&mut self, r: DropReason) {
        self.dropped[r.index()] += 1;
    }

    /// The drops counted for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.dropped[r.index()]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}
