//! The member role: an application that publishes and subscribes through its hubs.

use core::time::Duration;
use std::collections::HashMap;
use std::hash::Hash;

use crate::seq::{Seq, SeqTracker, Verdict};
use crate::stats::{DropReason, Stats};
use crate::topic::{TopicError, TopicId, TopicName};
use crate::wire::{self, Message, Presence, PresenceReason, Publish, Role};
use crate::{Event, MemberKey, Mode, Sink, Timestamp, DEFAULT_HEARTBEAT_INTERVAL};

/// A member's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberConfig {
    /// A HEARTBEAT goes to a hub that has been sent nothing for this long, so the
    /// hub's silence detection sees the member alive even when it only subscribes.
    /// `None` leaves liveness to the transport's keepalives (the node must then
    /// call the hub's `peer_alive` on each).
    pub heartbeat_interval: Option<Duration>,
}

impl Default for MemberConfig {
    fn default() -> MemberConfig {
        MemberConfig {
            heartbeat_interval: Some(DEFAULT_HEARTBEAT_INTERVAL),
        }
    }
}

/// Why a publish was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic was not advertised with [`Member::advertise`].
    NotAdvertised,
    /// The payload is longer than [`wire::MAX_REALTIME_PUBLISH`] or [`wire::MAX_RELIABLE_PUBLISH`].
    TooLarge,
    /// No hub session is up; nothing was sent and no sequence number was used.
    NotConnected,
}

impl core::fmt::Display for PublishError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PublishError::NotAdvertised => "topic not advertised",
            PublishError::TooLarge => "payload too large",
            PublishError::NotConnected => "no hub session is up",
        })
    }
}

impl std::error::Error for PublishError {}

/// Someone this member knows to be on a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The member.
    pub member: MemberKey,
    /// Its role.
    pub role: Role,
    /// The hub it is on.
    pub hub: MemberKey,
}

struct HubSlot<P> {
    handle: P,
    key: MemberKey,
    last_sent: Timestamp,
}

struct Subscription {
    name: TopicName,
    /// One tracker per Realtime publisher; grows once per new publisher, then reused.
    streams: Vec<(MemberKey, SeqTracker)>,
}

struct Advertisement {
    name: TopicName,
    /// The next Realtime sequence number (the first is 1).
    next_seq: u64,
}

struct TopicPresence {
    /// Entries and the hub session each was learned from.
    entries: Vec<(PresenceEntry, usize)>,
}

/// A publisher and/or subscriber, attached to one or more hubs.
///
/// Attach to one hub per topic: a Reliable publish relayed by two hubs arrives twice
/// (Realtime duplicates are dropped by sequence number).
pub struct Member<P> {
    key: MemberKey,
    config: MemberConfig,
    hubs: Vec<HubSlot<P>>,
    subs: HashMap<TopicId, Subscription>,
    ads: HashMap<TopicId, Advertisement>,
    presence: HashMap<TopicId, TopicPresence>,
    scratch: Box<[u8; wire::MAX_REALTIME_MESSAGE]>,
    stats: Stats,
}

impl<P: Copy + Eq + Hash> Member<P> {
    /// A member with identity `key` (its transport static public key).
    pub fn new(key: MemberKey, config: MemberConfig) -> Member<P> {
        Member {
            key,
            config,
            hubs: Vec::new(),
            subs: HashMap::new(),
            ads: HashMap::new(),
            presence: HashMap::new(),
            scratch: Box::new([0; wire::MAX_REALTIME_MESSAGE]),
            stats: Stats::default(),
        }
    }

    /// This member's key.
    pub fn key(&self) -> MemberKey {
        self.key
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The topics subscribed to.
    pub fn subscriptions(&self) -> impl Iterator<Item = &TopicName> {
        self.subs.values().map(|s| &s.name)
    }

    /// Who this member knows to be on `topic` (subscribed or advertised), itself excluded.
    pub fn presence(&self, topic: TopicId) -> impl Iterator<Item = &PresenceEntry> {
        self.presence
            .get(&topic)
            .into_iter()
            .flat_map(|t| t.entries.iter().map(|(e, _)| e))
    }

    fn slot(&self, handle: P) -> Option<usize> {
        self.hubs.iter().position(|h| h.handle == handle)
    }

    fn send_all(
        hubs: &mut [HubSlot<P>],
        mode: Mode,
        bytes: &[u8],
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) {
        for h in hubs {
            h.last_sent = now;
            sink.send(h.handle, mode, bytes);
        }
    }

    /// A session to hub `handle` (whose static key is `key`) is up: this member sends
    /// it every subscription and advertisement it holds.
    pub fn peer_up(&mut self, handle: P, key: MemberKey, now: Timestamp, sink: &mut impl Sink<P>) {
        if self.slot(handle).is_some() {
            self.peer_down(handle, now, sink);
        }
        self.hubs.push(HubSlot {
            handle,
            key,
            last_sent: now,
        });
        for s in self.subs.values() {
            sink.send(
                handle,
                Mode::Reliable,
                wire::subscribe(s.name.as_str()).as_bytes(),
            );
        }
        for a in self.ads.values() {
            sink.send(
                handle,
                Mode::Reliable,
                wire::advertise(a.name.as_str()).as_bytes(),
            );
        }
    }

    /// The session to hub `handle` closed: everyone learned through it is reported down.
    pub fn peer_down(&mut self, handle: P, _now: Timestamp, sink: &mut impl Sink<P>) {
        let Some(i) = self.slot(handle) else {
            return;
        };
        self.hubs.swap_remove(i);
        let moved_from = self.hubs.len();
        for (&topic, tp) in self.presence.iter_mut() {
            let mut k = 0;
            while k < tp.entries.len() {
                let (e, via) = tp.entries[k];
                if via == i {
                    tp.entries.swap_remove(k);
                    if let Some(s) = self.subs.get_mut(&topic) {
                        reset_stream(s, &e);
                    }
                    sink.event(Event::PresenceDown {
                        topic,
                        member: e.member,
                        role: e.role,
                        hub: e.hub,
                        reason: PresenceReason::Closed,
                    });
                    continue;
                }
                if via == moved_from {
                    // swap_remove moved the last hub slot into `i`.
                    tp.entries[k].1 = i;
                }
                k += 1;
            }
        }
    }

    /// Subscribes to `name` (sent to every hub now, and to every hub that comes up later).
    pub fn subscribe(
        &mut self,
        name: &str,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<TopicId, TopicError> {
        let name = TopicName::new(name)?;
        let id = name.id();
        if let std::collections::hash_map::Entry::Vacant(e) = self.subs.entry(id) {
            let frame = wire::subscribe(name.as_str());
            e.insert(Subscription {
                name,
                streams: Vec::new(),
            });
            Self::send_all(&mut self.hubs, Mode::Reliable, frame.as_bytes(), now, sink);
        }
        Ok(id)
    }

    /// Unsubscribes; returns whether the topic was subscribed.
    pub fn unsubscribe(&mut self, topic: TopicId, now: Timestamp, sink: &mut impl Sink<P>) -> bool {
        if self.subs.remove(&topic).is_none() {
            return false;
        }
        if !self.ads.contains_key(&topic) {
            self.presence.remove(&topic);
        }
        let frame = wire::unsubscribe(topic);
        Self::send_all(&mut self.hubs, Mode::Reliable, frame.as_bytes(), now, sink);
        true
    }

    /// Declares this member a publisher on `name`; required before [`Member::publish`],
    /// since a hub authorizes publishing by name and PUBLISH carries only the id.
    pub fn advertise(
        &mut self,
        name: &str,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<TopicId, TopicError> {
        let name = TopicName::new(name)?;
        let id = name.id();
        if let std::collections::hash_map::Entry::Vacant(e) = self.ads.entry(id) {
            let frame = wire::advertise(name.as_str());
            e.insert(Advertisement { name, next_seq: 1 });
            Self::send_all(&mut self.hubs, Mode::Reliable, frame.as_bytes(), now, sink);
        }
        Ok(id)
    }

    /// Stops publishing on `topic`; returns whether it was advertised.
    pub fn unadvertise(&mut self, topic: TopicId, now: Timestamp, sink: &mut impl Sink<P>) -> bool {
        if self.ads.remove(&topic).is_none() {
            return false;
        }
        if !self.subs.contains_key(&topic) {
            self.presence.remove(&topic);
        }
        let frame = wire::unadvertise(topic);
        Self::send_all(&mut self.hubs, Mode::Reliable, frame.as_bytes(), now, sink);
        true
    }

    /// Publishes `payload` on an advertised topic to every hub session that is up.
    /// Returns the sequence number used (Realtime) or `None` (Reliable).
    pub fn publish(
        &mut self,
        topic: TopicId,
        mode: Mode,
        payload: &[u8],
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<Option<Seq>, PublishError> {
        let ad = self
            .ads
            .get_mut(&topic)
            .ok_or(PublishError::NotAdvertised)?;
        let max = match mode {
            Mode::Realtime => wire::MAX_REALTIME_PUBLISH,
            Mode::Reliable => wire::MAX_RELIABLE_PUBLISH,
        };
        if payload.len() > max {
            return Err(PublishError::TooLarge);
        }
        if self.hubs.is_empty() {
            return Err(PublishError::NotConnected);
        }
        let seq = match mode {
            Mode::Realtime => {
                let s = ad.next_seq;
                ad.next_seq += 1;
                s
            }
            // Reliable publishes are ordered by the transport and carry no number.
            Mode::Reliable => 0,
        };
        let len = wire::PUBLISH_HEADER_LEN + payload.len();
        let buf = &mut self.scratch[..len];
        // The scratch buffer is MAX_REALTIME_MESSAGE long, so the header always fits.
        if wire::write_publish_header(buf, 0, topic, &self.key, seq).is_none() {
            return Err(PublishError::TooLarge);
        }
        buf[wire::PUBLISH_HEADER_LEN..].copy_from_slice(payload);
        Self::send_all(&mut self.hubs, mode, &self.scratch[..len], now, sink);
        self.stats.published_out += self.hubs.len() as u64;
        Ok((mode == Mode::Realtime).then_some(Seq(seq)))
    }

    /// A message arrived from hub `handle` in `mode`.
    pub fn handle_message(
        &mut self,
        handle: P,
        mode: Mode,
        bytes: &[u8],
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) {
        if let Err(r) = self.dispatch(handle, mode, bytes, now, sink) {
            self.stats.drop(r);
        }
    }

    fn dispatch(
        &mut self,
        handle: P,
        mode: Mode,
        bytes: &[u8],
        _now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        let via = self.slot(handle).ok_or(DropReason::UnknownPeer)?;
        let msg = wire::parse(bytes)?;
        if msg.requires_reliable() && mode != Mode::Reliable {
            return Err(DropReason::WrongMode);
        }
        match msg {
            Message::Publish(p) => self.on_publish(mode, &p, sink),
            Message::PresenceUp(p) => self.on_presence_up(via, &p, sink),
            Message::PresenceDown(p) => self.on_presence_down(&p, sink),
            Message::Refused { action, topic } => {
                self.stats.refused += 1;
                let name = self
                    .subs
                    .get(&topic)
                    .map(|s| &s.name)
                    .or_else(|| self.ads.get(&topic).map(|a| &a.name))
                    .map(|n| n.as_str());
                sink.event(Event::Refused {
                    peer: self.hubs[via].key,
                    action,
                    topic,
                    name,
                });
                Ok(())
            }
            // A hub's liveness is the transport's business at a member.
            Message::Heartbeat | Message::HubHello { .. } => Ok(()),
            _ => Err(DropReason::Unexpected),
        }
    }

    fn on_publish(
        &mut self,
        mode: Mode,
        p: &Publish<'_>,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        // A member receives only relayed publishes: from its hub (1) or across a link (2).
        if p.hops == 0 {
            return Err(DropReason::BadHops);
        }
        let sub = self
            .subs
            .get_mut(&p.topic)
            .ok_or(DropReason::NotSubscribed)?;
        let seq = if mode == Mode::Realtime {
            if p.seq == 0 {
                return Err(DropReason::BadField);
            }
            let t = match sub.streams.iter().position(|(k, _)| *k == p.origin) {
                Some(i) => &mut sub.streams[i].1,
                None => {
                    sub.streams.push((p.origin, SeqTracker::new()));
                    let last = sub.streams.len() - 1;
                    &mut sub.streams[last].1
                }
            };
            match t.accept(Seq(p.seq)) {
                Verdict::Duplicate => return Err(DropReason::Duplicate),
                Verdict::Late => return Err(DropReason::Late),
                Verdict::Deliver { missing, restarted } => {
                    if restarted {
                        self.stats.stream_restarts += 1;
                        sink.event(Event::StreamRestarted {
                            topic: p.topic,
                            publisher: p.origin,
                        });
                    }
                    if missing > 0 {
                        self.stats.gap_missing += missing;
                        sink.event(Event::Gap {
                            topic: p.topic,
                            publisher: p.origin,
                            missing,
                        });
                    }
                }
            }
            Some(Seq(p.seq))
        } else {
            None
        };
        self.stats.published_in += 1;
        sink.event(Event::Message {
            topic: p.topic,
            publisher: p.origin,
            mode,
            seq,
            hops: p.hops,
            payload: p.payload,
        });
        Ok(())
    }

    fn on_presence_up(
        &mut self,
        via: usize,
        p: &Presence,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        if !self.subs.contains_key(&p.topic) && !self.ads.contains_key(&p.topic) {
            return Err(DropReason::UnknownTopic);
        }
        if p.member == self.key {
            return Ok(());
        }
        let tp = self
            .presence
            .entry(p.topic)
            .or_insert_with(|| TopicPresence {
                entries: Vec::new(),
            });
        let entry = PresenceEntry {
            member: p.member,
            role: p.role,
            hub: p.hub,
        };
        if let Some(e) = tp
            .entries
            .iter_mut()
            .find(|(e, _)| e.member == p.member && e.role == p.role)
        {
            // Already known (a resync repeats it): no event, but follow a move of hub.
            *e = (entry, via);
            return Ok(());
        }
        tp.entries.push((entry, via));
        sink.event(Event::PresenceUp {
            topic: p.topic,
            member: p.member,
            role: p.role,
            hub: p.hub,
        });
        Ok(())
    }

    fn on_presence_down(
        &mut self,
        p: &Presence,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        if !self.subs.contains_key(&p.topic) && !self.ads.contains_key(&p.topic) {
            return Err(DropReason::UnknownTopic);
        }
        let Some(tp) = self.presence.get_mut(&p.topic) else {
            return Ok(());
        };
        let Some(i) = tp
            .entries
            .iter()
            .position(|(e, _)| e.member == p.member && e.role == p.role)
        else {
            return Ok(());
        };
        let (e, _) = tp.entries.swap_remove(i);
        if let Some(s) = self.subs.get_mut(&p.topic) {
            reset_stream(s, &e);
        }
        sink.event(Event::PresenceDown {
            topic: p.topic,
            member: e.member,
            role: e.role,
            hub: e.hub,
            reason: p.reason,
        });
        Ok(())
    }

    /// Sends the heartbeats that are due.
    pub fn handle_timeout(&mut self, now: Timestamp, sink: &mut impl Sink<P>) {
        let Some(every) = self.config.heartbeat_interval else {
            return;
        };
        let frame = wire::heartbeat();
        for h in &mut self.hubs {
            if now >= h.last_sent + every {
                h.last_sent = now;
                self.stats.heartbeats_sent += 1;
                sink.send(h.handle, Mode::Realtime, frame.as_bytes());
            }
        }
    }

    /// When [`Member::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let every = self.config.heartbeat_interval?;
        self.hubs.iter().map(|h| h.last_sent + every).min()
    }
}

/// A publisher that went away starts a fresh stream when it comes back.
fn reset_stream(s: &mut Subscription, e: &PresenceEntry) {
    if e.role == Role::Publisher {
        if let Some((_, t)) = s.streams.iter_mut().find(|(k, _)| *k == e.member) {
            t.reset();
        }
    }
}
