//! The hub role: authorizes, relays, tracks presence and links to other hubs.
//!
//! Relaying is the hot path: one hash lookup for the session, one for the topic, a
//! copy of the message into a preallocated buffer with its hop count raised, then one
//! [`Sink::send`] per target with the same bytes. Subscriber lists are `Vec`s that
//! grow when someone subscribes and are reused for every message after.

use core::time::Duration;
use std::collections::HashMap;
use std::hash::Hash;

use crate::auth::{is_allowed, Rule};
use crate::stats::{DropReason, Stats};
use crate::topic::TopicId;
use crate::wire::{self, Action, Message, Presence, PresenceReason, Publish, Role};
use crate::{
    Event, MemberKey, Mode, Sink, Timestamp, DEFAULT_DETECTION_TIME, DEFAULT_HEARTBEAT_INTERVAL,
};

/// A hub's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// The hub's own key (its transport static public key), named in presence.
    pub key: MemberKey,
    /// Who may publish and subscribe on what; a request no rule allows is refused.
    pub rules: Vec<Rule>,
    /// Keys of the hubs this hub links with. A HUB_HELLO from any other key is
    /// refused. Linked hubs are trusted: their subscriptions and relays are not
    /// checked against `rules` (they enforced their own).
    pub links: Vec<MemberKey>,
    /// A member or link heard from (any message, or `peer_alive`) less recently
    /// than this is reported down with reason `Silent`.
    pub detection_time: Duration,
    /// A HEARTBEAT goes to a linked hub that has been sent nothing for this long.
    pub heartbeat_interval: Duration,
    /// Keep the last publish of each topic and send it to each new subscriber first.
    pub last_value_cache: bool,
    /// The most topics the hub tracks (topics are never forgotten, so this bounds memory).
    pub max_topics: usize,
    /// The most topics one member may subscribe to plus advertise, so one allowed
    /// member cannot take the whole topic table or make every relay scan long lists.
    pub max_memberships_per_member: usize,
}

impl HubConfig {
    /// A configuration with the defaults: no rules (everything refused), no links,
    /// 3 s detection, 1 s heartbeats, no last-value cache, 4096 topics, 256 topics per member.
    pub fn new(key: MemberKey) -> HubConfig {
        HubConfig {
            key,
            rules: Vec::new(),
            links: Vec::new(),
            detection_time: DEFAULT_DETECTION_TIME,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            last_value_cache: false,
            max_topics: 4096,
            max_memberships_per_member: 256,
        }
    }
}

/// A member of a topic known through a linked hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteMember {
    /// The member.
    pub member: MemberKey,
    /// Its role.
    pub role: Role,
    /// The hub it is on.
    pub hub: MemberKey,
    /// The peer slot of the link it was learned from.
    via: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Member,
    Link,
}

struct PeerSlot<P> {
    handle: P,
    key: MemberKey,
    kind: Kind,
    last_heard: Timestamp,
    last_sent: Timestamp,
    silent: bool,
    /// Topic indexes this member subscribed to / advertised.
    subs: Vec<usize>,
    pubs: Vec<usize>,
}

struct TopicState {
    id: TopicId,
    /// Known once a SUBSCRIBE or ADVERTISE named it; presence from a link may create
    /// a topic before anyone here names it.
    name: Option<String>,
    /// Peer slots of local subscribers and publishers.
    subs: Vec<usize>,
    pubs: Vec<usize>,
    /// Peer slots of linked hubs that have subscribers for this topic.
    link_subs: Vec<usize>,
    remote: Vec<RemoteMember>,
    /// The last publish as sent to local subscribers (hop count included), and its mode.
    last: Vec<u8>,
    last_mode: Option<Mode>,
    /// PUBLISH messages accepted on this topic, and sent on (one per target).
    published_in: u64,
    relayed: u64,
}

/// One topic's figures, for per-topic metrics ([`Hub::topic_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicStats<'a> {
    /// The topic's id.
    pub id: TopicId,
    /// Its name.
    pub name: &'a str,
    /// Members present as publishers: local ones not silent, and those behind links.
    pub publishers: usize,
    /// Members present as subscribers, counted the same way.
    pub subscribers: usize,
    /// PUBLISH messages the hub accepted on the topic (from members and links).
    pub published_in: u64,
    /// PUBLISH messages the hub sent on the topic, one per relay target.
    pub relayed: u64,
}

/// A hub.
pub struct Hub<P> {
    config: HubConfig,
    peers: Vec<Option<PeerSlot<P>>>,
    by_handle: HashMap<P, usize>,
    topics: Vec<TopicState>,
    by_id: HashMap<TopicId, usize>,
    scratch: Box<[u8; wire::MAX_REALTIME_MESSAGE]>,
    stats: Stats,
}

/// Sends `bytes` to peer slot `i`, noting the time for the heartbeat timer.
fn send_to<P: Copy>(
    peers: &mut [Option<PeerSlot<P>>],
    i: usize,
    mode: Mode,
    bytes: &[u8],
    now: Timestamp,
    sink: &mut impl Sink<P>,
) {
    if let Some(Some(p)) = peers.get_mut(i) {
        p.last_sent = now;
        sink.send(p.handle, mode, bytes);
    }
}

/// Sends a presence change to the local members of `t` other than `except`.
fn to_local_members<P: Copy>(
    peers: &mut [Option<PeerSlot<P>>],
    t: &TopicState,
    except: Option<usize>,
    bytes: &[u8],
    now: Timestamp,
    sink: &mut impl Sink<P>,
) {
    for &i in &t.subs {
        if Some(i) != except {
            send_to(peers, i, Mode::Reliable, bytes, now, sink);
        }
    }
    for &i in &t.pubs {
        // A member that both subscribes and publishes hears it once.
        if Some(i) != except && !t.subs.contains(&i) {
            send_to(peers, i, Mode::Reliable, bytes, now, sink);
        }
    }
}

fn remove_item(v: &mut Vec<usize>, x: usize) -> bool {
    match v.iter().position(|&y| y == x) {
        Some(i) => {
            v.swap_remove(i);
            true
        }
        None => false,
    }
}

impl<P: Copy + Eq + Hash> Hub<P> {
    /// A hub with `config`.
    pub fn new(config: HubConfig) -> Hub<P> {
        Hub {
            config,
            peers: Vec::new(),
            by_handle: HashMap::new(),
            topics: Vec::new(),
            by_id: HashMap::new(),
            scratch: Box::new([0; wire::MAX_REALTIME_MESSAGE]),
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Who is on `topic`: local members (on this hub) then members behind linked hubs.
    /// Silent local members are left out, as they were reported down.
    pub fn presence(&self, topic: TopicId) -> Vec<(MemberKey, Role, MemberKey)> {
        let mut out = Vec::new();
        let Some(&ti) = self.by_id.get(&topic) else {
            return out;
        };
        let t = &self.topics[ti];
        for (list, role) in [(&t.pubs, Role::Publisher), (&t.subs, Role::Subscriber)] {
            for &i in list {
                if let Some(Some(p)) = self.peers.get(i) {
                    if !p.silent {
                        out.push((p.key, role, self.config.key));
                    }
                }
            }
        }
        out.extend(t.remote.iter().map(|r| (r.member, r.role, r.hub)));
        out
    }

    /// Every topic known by name with its member counts and message counters, without
    /// allocating (the per-topic metrics read this a few times a second).
    pub fn topic_stats(&self) -> impl Iterator<Item = TopicStats<'_>> {
        self.topics.iter().filter_map(|t| {
            let name = t.name.as_deref()?;
            let present = |list: &[usize]| {
                list.iter()
                    .filter(|&&i| matches!(self.peers.get(i), Some(Some(p)) if !p.silent))
                    .count()
            };
            let remote = |role: Role| t.remote.iter().filter(|r| r.role == role).count();
            Some(TopicStats {
                id: t.id,
                name,
                publishers: present(&t.pubs) + remote(Role::Publisher),
                subscribers: present(&t.subs) + remote(Role::Subscriber),
                published_in: t.published_in,
                relayed: t.relayed,
            })
        })
    }

    /// The names of the topics this hub knows by name.
    pub fn topic_names(&self) -> impl Iterator<Item = (TopicId, &str)> {
        self.topics
            .iter()
            .filter_map(|t| t.name.as_deref().map(|n| (t.id, n)))
    }

    /// Replaces the authorization rules (a configuration reload). Every current local
    /// membership is checked again: one the new rules no longer allow ends as if the
    /// member had left (PRESENCE_DOWN with reason `left`), and the member is sent REFUSED.
    pub fn set_rules(&mut self, rules: Vec<Rule>, now: Timestamp, sink: &mut impl Sink<P>) {
        self.config.rules = rules;
        for t in 0..self.topics.len() {
            let Some(name) = self.topics[t].name.clone() else {
                continue;
            };
            let id = self.topics[t].id;
            for role in [Role::Subscriber, Role::Publisher] {
                let members = match role {
                    Role::Subscriber => self.topics[t].subs.clone(),
                    Role::Publisher => self.topics[t].pubs.clone(),
                };
                for i in members {
                    let Some(Some(p)) = self.peers.get(i) else {
                        continue;
                    };
                    let (key, silent) = (p.key, p.silent);
                    if is_allowed(&self.config.rules, &key, &name, role == Role::Publisher) {
                        continue;
                    }
                    self.leave(t, i, role, now, sink);
                    if !silent {
                        self.announce(t, i, key, role, PresenceReason::Left, now, sink);
                    }
                    let action = match role {
                        Role::Publisher => Action::Publish,
                        Role::Subscriber => Action::Subscribe,
                    };
                    self.refuse(i, action, id, Some(&name), now, sink);
                }
            }
        }
    }

    /// Replaces the keys of the hubs this hub links with. It applies to HUB_HELLOs that
    /// arrive later; links already up stay up until their sessions close.
    pub fn set_links(&mut self, links: Vec<MemberKey>) {
        self.config.links = links;
    }

    /// Whether a session to `handle` was reported up (and not down since).
    pub fn knows(&self, handle: P) -> bool {
        self.by_handle.contains_key(&handle)
    }

    /// Whether peer `handle` is a hub-to-hub link.
    pub fn is_link(&self, handle: P) -> bool {
        self.slot_of(handle)
            .is_some_and(|i| matches!(&self.peers[i], Some(p) if p.kind == Kind::Link))
    }

    fn slot_of(&self, handle: P) -> Option<usize> {
        self.by_handle.get(&handle).copied()
    }

    /// A session to `handle` (static key `key`) is up. A session to a configured
    /// link key is offered as a link with HUB_HELLO; it becomes one when the other
    /// hub's HUB_HELLO arrives.
    pub fn peer_up(&mut self, handle: P, key: MemberKey, now: Timestamp, sink: &mut impl Sink<P>) {
        if self.by_handle.contains_key(&handle) {
            self.peer_down(handle, now, sink);
        }
        // A key that comes back on a new session (a restart) replaces its old one.
        let old = self
            .peers
            .iter()
            .position(|p| matches!(p, Some(p) if p.key == key));
        if let Some(old) = old {
            if let Some(Some(p)) = self.peers.get(old) {
                let h = p.handle;
                self.peer_down(h, now, sink);
            }
        }
        let slot = PeerSlot {
            handle,
            key,
            kind: Kind::Member,
            last_heard: now,
            last_sent: now,
            silent: false,
            subs: Vec::new(),
            pubs: Vec::new(),
        };
        let i = match self.peers.iter().position(Option::is_none) {
            Some(i) => {
                self.peers[i] = Some(slot);
                i
            }
            None => {
                self.peers.push(Some(slot));
                self.peers.len() - 1
            }
        };
        self.by_handle.insert(handle, i);
        if self.config.links.contains(&key) {
            send_to(
                &mut self.peers,
                i,
                Mode::Reliable,
                wire::hub_hello().as_bytes(),
                now,
                sink,
            );
        }
    }

    /// The transport heard from `handle` at `now` (e.g. a keepalive): it is not silent.
    /// `now` may be earlier than the last input (a node that samples per-session packet
    /// counts passes the time of its previous sample); the hub keeps the later time.
    pub fn peer_alive(&mut self, handle: P, now: Timestamp, sink: &mut impl Sink<P>) {
        if let Some(i) = self.slot_of(handle) {
            self.heard(i, now, sink);
        }
    }

    fn heard(&mut self, i: usize, now: Timestamp, sink: &mut impl Sink<P>) {
        let Some(Some(p)) = self.peers.get_mut(i) else {
            return;
        };
        // `peer_alive` may report a packet at a time earlier than the last message.
        p.last_heard = p.last_heard.max(now);
        if !p.silent {
            return;
        }
        p.silent = false;
        match p.kind {
            Kind::Member => {
                let (subs, pubs, key) = (p.subs.clone(), p.pubs.clone(), p.key);
                for t in subs {
                    self.announce(
                        t,
                        i,
                        key,
                        Role::Subscriber,
                        PresenceReason::Joined,
                        now,
                        sink,
                    );
                }
                for t in pubs {
                    self.announce(
                        t,
                        i,
                        key,
                        Role::Publisher,
                        PresenceReason::Joined,
                        now,
                        sink,
                    );
                }
            }
            // Ask the other hub to repeat its state: we forgot its members when it went silent.
            Kind::Link => send_to(
                &mut self.peers,
                i,
                Mode::Reliable,
                wire::hub_hello().as_bytes(),
                now,
                sink,
            ),
        }
    }

    /// The session to `handle` closed.
    pub fn peer_down(&mut self, handle: P, now: Timestamp, sink: &mut impl Sink<P>) {
        let Some(i) = self.by_handle.remove(&handle) else {
            return;
        };
        let Some(p) = self.peers[i].take() else {
            return;
        };
        match p.kind {
            Kind::Member => {
                // Put the slot back while announcing so `except` finds it, then free it.
                let (subs, pubs, key, silent) = (p.subs.clone(), p.pubs.clone(), p.key, p.silent);
                self.peers[i] = Some(p);
                for t in subs {
                    self.leave(t, i, Role::Subscriber, now, sink);
                    if !silent {
                        self.announce(
                            t,
                            i,
                            key,
                            Role::Subscriber,
                            PresenceReason::Closed,
                            now,
                            sink,
                        );
                    }
                }
                for t in pubs {
                    self.leave(t, i, Role::Publisher, now, sink);
                    if !silent {
                        self.announce(
                            t,
                            i,
                            key,
                            Role::Publisher,
                            PresenceReason::Closed,
                            now,
                            sink,
                        );
                    }
                }
                self.peers[i] = None;
            }
            Kind::Link => {
                for t in &mut self.topics {
                    remove_item(&mut t.link_subs, i);
                }
                self.forget_remote(i, PresenceReason::Closed, now, sink);
                sink.event(Event::LinkDown { hub: p.key });
            }
        }
    }

    /// Removes slot `i` from topic `t`'s role list; the last local subscriber leaving
    /// withdraws the topic from the linked hubs.
    fn leave(&mut self, t: usize, i: usize, role: Role, now: Timestamp, sink: &mut impl Sink<P>) {
        let topic = &mut self.topics[t];
        let list = match role {
            Role::Subscriber => &mut topic.subs,
            Role::Publisher => &mut topic.pubs,
        };
        if !remove_item(list, i) {
            return;
        }
        if let Some(Some(p)) = self.peers.get_mut(i) {
            match role {
                Role::Subscriber => remove_item(&mut p.subs, t),
                Role::Publisher => remove_item(&mut p.pubs, t),
            };
        }
        if role == Role::Subscriber && topic.subs.is_empty() {
            let frame = wire::unsubscribe(topic.id);
            self.send_links(frame.as_bytes(), now, sink);
        }
    }

    fn send_links(&mut self, bytes: &[u8], now: Timestamp, sink: &mut impl Sink<P>) {
        for p in self.peers.iter_mut().flatten() {
            if p.kind == Kind::Link {
                p.last_sent = now;
                sink.send(p.handle, Mode::Reliable, bytes);
            }
        }
    }

    /// Tells the other local members of topic `t` and every linked hub that local
    /// member `i` (key `key`) changed presence, and raises the hub's own event.
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &mut self,
        t: usize,
        i: usize,
        key: MemberKey,
        role: Role,
        reason: PresenceReason,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) {
        let p = Presence {
            topic: self.topics[t].id,
            role,
            reason,
            member: key,
            hub: self.config.key,
        };
        let frame = wire::presence(&p);
        to_local_members(
            &mut self.peers,
            &self.topics[t],
            Some(i),
            frame.as_bytes(),
            now,
            sink,
        );
        self.send_links(frame.as_bytes(), now, sink);
        sink.event(presence_event(&p));
    }

    /// Forgets every member learned through link `i`, telling local members.
    fn forget_remote(
        &mut self,
        i: usize,
        reason: PresenceReason,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) {
        for t in &mut self.topics {
            let mut k = 0;
            while k < t.remote.len() {
                let r = t.remote[k];
                if r.via != i {
                    k += 1;
                    continue;
                }
                t.remote.swap_remove(k);
                let p = Presence {
                    topic: t.id,
                    role: r.role,
                    reason,
                    member: r.member,
                    hub: r.hub,
                };
                to_local_members(
                    &mut self.peers,
                    t,
                    None,
                    wire::presence(&p).as_bytes(),
                    now,
                    sink,
                );
                sink.event(presence_event(&p));
            }
        }
    }

    /// A message arrived from `handle` in `mode`.
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
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        let i = self.slot_of(handle).ok_or(DropReason::UnknownPeer)?;
        // Any authenticated message proves the peer alive, even one we then drop.
        self.heard(i, now, sink);
        let msg = wire::parse(bytes)?;
        if msg.requires_reliable() && mode != Mode::Reliable {
            return Err(DropReason::WrongMode);
        }
        let kind = match &self.peers[i] {
            Some(p) => p.kind,
            None => return Err(DropReason::UnknownPeer),
        };
        match (kind, msg) {
            (_, Message::Heartbeat) => Ok(()),
            (_, Message::HubHello { .. }) => self.on_hub_hello(i, now, sink),
            (Kind::Member, Message::Publish(p)) => {
                self.on_member_publish(i, mode, bytes, &p, now, sink)
            }
            (Kind::Link, Message::Publish(p)) => self.on_link_publish(mode, bytes, &p, now, sink),
            (Kind::Member, Message::Subscribe { topic, name }) => {
                self.on_join(i, topic, name, Role::Subscriber, now, sink)
            }
            (Kind::Member, Message::Advertise { topic, name }) => {
                self.on_join(i, topic, name, Role::Publisher, now, sink)
            }
            (Kind::Member, Message::Unsubscribe { topic }) => {
                self.on_leave(i, topic, Role::Subscriber, now, sink)
            }
            (Kind::Member, Message::Unadvertise { topic }) => {
                self.on_leave(i, topic, Role::Publisher, now, sink)
            }
            (Kind::Link, Message::Subscribe { topic, name }) => {
                let t = self.topic(topic, name)?;
                if !self.topics[t].link_subs.contains(&i) {
                    self.topics[t].link_subs.push(i);
                }
                Ok(())
            }
            (Kind::Link, Message::Unsubscribe { topic }) => {
                let t = *self.by_id.get(&topic).ok_or(DropReason::UnknownTopic)?;
                remove_item(&mut self.topics[t].link_subs, i);
                Ok(())
            }
            (Kind::Link, Message::PresenceUp(p)) => self.on_remote_presence(i, &p, now, sink),
            (Kind::Link, Message::PresenceDown(p)) => self.on_remote_presence(i, &p, now, sink),
            // A hub that refuses our HUB_HELLO never becomes a link, so a REFUSED is
            // taken from any session with a configured link key (and only from those,
            // so a member cannot fill the logs with refusals).
            (_, Message::Refused { action, topic })
                if self.peers[i]
                    .as_ref()
                    .is_some_and(|p| self.config.links.contains(&p.key)) =>
            {
                self.stats.refused += 1;
                let peer = self.peers[i].as_ref().map_or(self.config.key, |p| p.key);
                sink.event(Event::Refused {
                    peer,
                    action,
                    topic,
                    name: None,
                });
                Ok(())
            }
            _ => Err(DropReason::Unexpected),
        }
    }

    /// Finds or creates the topic `id` named `name` (already checked to hash to `id`).
    fn topic(&mut self, id: TopicId, name: &str) -> Result<usize, DropReason> {
        if let Some(&t) = self.by_id.get(&id) {
            let ts = &mut self.topics[t];
            return match &ts.name {
                Some(n) if n != name => Err(DropReason::TopicCollision),
                Some(_) => Ok(t),
                None => {
                    ts.name = Some(name.to_owned());
                    Ok(t)
                }
            };
        }
        let t = self.new_topic(id)?;
        self.topics[t].name = Some(name.to_owned());
        Ok(t)
    }

    fn new_topic(&mut self, id: TopicId) -> Result<usize, DropReason> {
        if self.topics.len() >= self.config.max_topics {
            return Err(DropReason::TooManyTopics);
        }
        self.topics.push(TopicState {
            id,
            name: None,
            subs: Vec::new(),
            pubs: Vec::new(),
            link_subs: Vec::new(),
            remote: Vec::new(),
            last: Vec::new(),
            last_mode: None,
            published_in: 0,
            relayed: 0,
        });
        let t = self.topics.len() - 1;
        self.by_id.insert(id, t);
        Ok(t)
    }

    fn refuse(
        &mut self,
        i: usize,
        action: Action,
        topic: TopicId,
        name: Option<&str>,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) {
        self.stats.refused += 1;
        let frame = wire::refused(action, topic);
        send_to(
            &mut self.peers,
            i,
            Mode::Reliable,
            frame.as_bytes(),
            now,
            sink,
        );
        if let Some(Some(p)) = self.peers.get(i) {
            sink.event(Event::Refused {
                peer: p.key,
                action,
                topic,
                name,
            });
        }
    }

    fn on_hub_hello(
        &mut self,
        i: usize,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        let Some(Some(p)) = self.peers.get_mut(i) else {
            return Err(DropReason::UnknownPeer);
        };
        if !self.config.links.contains(&p.key) {
            self.refuse(i, Action::Link, TopicId(0), None, now, sink);
            return Ok(());
        }
        if p.kind == Kind::Member {
            if !p.subs.is_empty() || !p.pubs.is_empty() {
                // A session that acted as a member cannot turn into a link midway.
                return Err(DropReason::Unexpected);
            }
            p.kind = Kind::Link;
            let key = p.key;
            sink.event(Event::LinkUp { hub: key });
        }
        self.push_state(i, now, sink);
        Ok(())
    }

    /// Tells link `i` everything it needs: the topics with local subscribers and
    /// every local member. Repeated on every HUB_HELLO, so a link that was silent
    /// resynchronises; receivers ignore what they already know.
    fn push_state(&mut self, i: usize, now: Timestamp, sink: &mut impl Sink<P>) {
        let hub = self.config.key;
        for t in &self.topics {
            if let (false, Some(name)) = (t.subs.is_empty(), &t.name) {
                send_to(
                    &mut self.peers,
                    i,
                    Mode::Reliable,
                    wire::subscribe(name).as_bytes(),
                    now,
                    sink,
                );
            }
            for (list, role) in [(&t.pubs, Role::Publisher), (&t.subs, Role::Subscriber)] {
                for &m in list {
                    let Some(Some(mp)) = self.peers.get(m) else {
                        continue;
                    };
                    if mp.silent {
                        continue;
                    }
                    let p = Presence {
                        topic: t.id,
                        role,
                        reason: PresenceReason::Joined,
                        member: mp.key,
                        hub,
                    };
                    send_to(
                        &mut self.peers,
                        i,
                        Mode::Reliable,
                        wire::presence(&p).as_bytes(),
                        now,
                        sink,
                    );
                }
            }
        }
    }

    fn on_join(
        &mut self,
        i: usize,
        id: TopicId,
        name: &str,
        role: Role,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        let key = match &self.peers[i] {
            Some(p) => p.key,
            None => return Err(DropReason::UnknownPeer),
        };
        let action = match role {
            Role::Publisher => Action::Publish,
            Role::Subscriber => Action::Subscribe,
        };
        if !is_allowed(&self.config.rules, &key, name, role == Role::Publisher) {
            self.refuse(i, action, id, Some(name), now, sink);
            return Ok(());
        }
        let t = match self.topic(id, name) {
            Ok(t) => t,
            Err(DropReason::TooManyTopics) => {
                // The member is told, or it would wait for publishes that never come.
                self.refuse(i, action, id, Some(name), now, sink);
                return Err(DropReason::TooManyTopics);
            }
            Err(e) => return Err(e),
        };
        let already = match role {
            Role::Subscriber => self.topics[t].subs.contains(&i),
            Role::Publisher => self.topics[t].pubs.contains(&i),
        };
        if already {
            return Ok(());
        }
        let held = self.peers[i]
            .as_ref()
            .map_or(0, |p| p.subs.len() + p.pubs.len());
        if held >= self.config.max_memberships_per_member {
            self.refuse(i, action, id, Some(name), now, sink);
            return Err(DropReason::TooManyTopics);
        }
        let topic = &mut self.topics[t];
        let list = match role {
            Role::Subscriber => &mut topic.subs,
            Role::Publisher => &mut topic.pubs,
        };
        list.push(i);
        let first_sub = role == Role::Subscriber && topic.subs.len() == 1;
        if let Some(Some(p)) = self.peers.get_mut(i) {
            match role {
                Role::Subscriber => p.subs.push(t),
                Role::Publisher => p.pubs.push(t),
            }
        }
        if first_sub {
            let frame = wire::subscribe(name);
            self.send_links(frame.as_bytes(), now, sink);
        }
        self.announce(t, i, key, role, PresenceReason::Joined, now, sink);
        self.snapshot(t, i, now, sink);
        if role == Role::Subscriber {
            if let (true, Some(mode)) = (self.config.last_value_cache, self.topics[t].last_mode) {
                let Hub { peers, topics, .. } = self;
                send_to(peers, i, mode, &topics[t].last, now, sink);
            }
        }
        Ok(())
    }

    /// Sends member `i`, which just joined topic `t`, a PRESENCE_UP for every other member.
    fn snapshot(&mut self, t: usize, i: usize, now: Timestamp, sink: &mut impl Sink<P>) {
        let Hub {
            peers,
            topics,
            config,
            ..
        } = self;
        let ts = &topics[t];
        for (list, role) in [(&ts.pubs, Role::Publisher), (&ts.subs, Role::Subscriber)] {
            for &m in list {
                let Some(Some(mp)) = peers.get(m) else {
                    continue;
                };
                if m == i || mp.silent {
                    continue;
                }
                let p = Presence {
                    topic: ts.id,
                    role,
                    reason: PresenceReason::Joined,
                    member: mp.key,
                    hub: config.key,
                };
                send_to(
                    peers,
                    i,
                    Mode::Reliable,
                    wire::presence(&p).as_bytes(),
                    now,
                    sink,
                );
            }
        }
        for r in &ts.remote {
            let p = Presence {
                topic: ts.id,
                role: r.role,
                reason: PresenceReason::Joined,
                member: r.member,
                hub: r.hub,
            };
            send_to(
                peers,
                i,
                Mode::Reliable,
                wire::presence(&p).as_bytes(),
                now,
                sink,
            );
        }
    }

    fn on_leave(
        &mut self,
        i: usize,
        id: TopicId,
        role: Role,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        let t = *self.by_id.get(&id).ok_or(DropReason::UnknownTopic)?;
        let (key, silent) = match &self.peers[i] {
            Some(p) => (p.key, p.silent),
            None => return Err(DropReason::UnknownPeer),
        };
        let member = match role {
            Role::Subscriber => self.topics[t].subs.contains(&i),
            Role::Publisher => self.topics[t].pubs.contains(&i),
        };
        if !member {
            return Err(DropReason::UnknownTopic);
        }
        self.leave(t, i, role, now, sink);
        if !silent {
            self.announce(t, i, key, role, PresenceReason::Left, now, sink);
        }
        Ok(())
    }

    fn on_member_publish(
        &mut self,
        i: usize,
        mode: Mode,
        bytes: &[u8],
        p: &Publish<'_>,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        // A member publishes only its own messages, straight from itself.
        if p.hops != 0 {
            return Err(DropReason::BadHops);
        }
        let Some(Some(slot)) = self.peers.get(i) else {
            return Err(DropReason::UnknownPeer);
        };
        if p.origin != slot.key {
            return Err(DropReason::SpoofedOrigin);
        }
        if mode == Mode::Realtime && p.seq == 0 {
            return Err(DropReason::BadField);
        }
        let t = *self.by_id.get(&p.topic).ok_or(DropReason::NotAdvertised)?;
        if !self.topics[t].pubs.contains(&i) {
            return Err(DropReason::NotAdvertised);
        }
        self.stats.published_in += 1;
        self.relay(t, Some(i), mode, bytes, true, now, sink);
        Ok(())
    }

    fn on_link_publish(
        &mut self,
        mode: Mode,
        bytes: &[u8],
        p: &Publish<'_>,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        // Exactly one hub (the publisher's) relayed it before us.
        if p.hops != 1 {
            return Err(DropReason::BadHops);
        }
        if mode == Mode::Realtime && p.seq == 0 {
            return Err(DropReason::BadField);
        }
        let t = *self.by_id.get(&p.topic).ok_or(DropReason::UnknownTopic)?;
        self.stats.published_in += 1;
        // One hop: what came from another hub goes to local subscribers only.
        self.relay(t, None, mode, bytes, false, now, sink);
        Ok(())
    }

    /// Relays the PUBLISH `bytes` with its hop count raised by one: to every local
    /// subscriber of topic `t` except `from`, and, when `to_links`, to every linked
    /// hub with subscribers for it.
    #[allow(clippy::too_many_arguments)]
    fn relay(
        &mut self,
        t: usize,
        from: Option<usize>,
        mode: Mode,
        bytes: &[u8],
        to_links: bool,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) {
        let Hub {
            peers,
            topics,
            scratch,
            stats,
            config,
            ..
        } = self;
        let len = bytes.len().min(scratch.len());
        let out = &mut scratch[..len];
        out.copy_from_slice(&bytes[..len]);
        out[wire::PUBLISH_HOPS_OFFSET] = out[wire::PUBLISH_HOPS_OFFSET].saturating_add(1);
        let topic = &mut topics[t];
        topic.published_in += 1;
        let before = stats.published_out;
        for &s in &topic.subs {
            if Some(s) != from {
                send_to(peers, s, mode, out, now, sink);
                stats.published_out += 1;
            }
        }
        if to_links {
            for &l in &topic.link_subs {
                send_to(peers, l, mode, out, now, sink);
                stats.published_out += 1;
            }
        }
        topic.relayed += stats.published_out - before;
        if config.last_value_cache {
            // `last` keeps its capacity, so after the first publish this copies without allocating.
            topic.last.clear();
            topic.last.extend_from_slice(out);
            topic.last_mode = Some(mode);
        }
    }

    fn on_remote_presence(
        &mut self,
        i: usize,
        p: &Presence,
        now: Timestamp,
        sink: &mut impl Sink<P>,
    ) -> Result<(), DropReason> {
        let t = match self.by_id.get(&p.topic) {
            Some(&t) => t,
            None if p.reason == PresenceReason::Joined => self.new_topic(p.topic)?,
            None => return Err(DropReason::UnknownTopic),
        };
        let ts = &mut self.topics[t];
        let pos = ts
            .remote
            .iter()
            .position(|r| r.member == p.member && r.role == p.role);
        let changed = match (p.reason, pos) {
            (PresenceReason::Joined, None) => {
                ts.remote.push(RemoteMember {
                    member: p.member,
                    role: p.role,
                    hub: p.hub,
                    via: i,
                });
                true
            }
            (PresenceReason::Joined, Some(k)) => {
                ts.remote[k].hub = p.hub;
                ts.remote[k].via = i;
                false
            }
            (_, Some(k)) => {
                ts.remote.swap_remove(k);
                true
            }
            (_, None) => false,
        };
        if changed {
            // One hop: relayed to local members only, never to another link.
            to_local_members(
                &mut self.peers,
                &self.topics[t],
                None,
                wire::presence(p).as_bytes(),
                now,
                sink,
            );
            sink.event(presence_event(p));
        }
        Ok(())
    }

    /// Reports silent members and links, and sends the heartbeats that are due.
    pub fn handle_timeout(&mut self, now: Timestamp, sink: &mut impl Sink<P>) {
        let detection = self.config.detection_time;
        let every = self.config.heartbeat_interval;
        for i in 0..self.peers.len() {
            let Some(Some(p)) = self.peers.get_mut(i) else {
                continue;
            };
            if p.kind == Kind::Link && now >= p.last_sent + every {
                p.last_sent = now;
                self.stats.heartbeats_sent += 1;
                sink.send(p.handle, Mode::Realtime, wire::heartbeat().as_bytes());
            }
            if p.silent || now < p.last_heard + detection {
                continue;
            }
            p.silent = true;
            self.stats.silent += 1;
            match p.kind {
                Kind::Member => {
                    // It stays subscribed (it may only be quiet); it is reported down.
                    let (subs, pubs, key) = (p.subs.clone(), p.pubs.clone(), p.key);
                    for t in subs {
                        self.announce(
                            t,
                            i,
                            key,
                            Role::Subscriber,
                            PresenceReason::Silent,
                            now,
                            sink,
                        );
                    }
                    for t in pubs {
                        self.announce(
                            t,
                            i,
                            key,
                            Role::Publisher,
                            PresenceReason::Silent,
                            now,
                            sink,
                        );
                    }
                }
                Kind::Link => self.forget_remote(i, PresenceReason::Silent, now, sink),
            }
        }
    }

    /// When [`Hub::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
        for p in self.peers.iter().flatten() {
            if !p.silent {
                consider(p.last_heard + self.config.detection_time);
            }
            if p.kind == Kind::Link {
                consider(p.last_sent + self.config.heartbeat_interval);
            }
        }
        next
    }
}

fn presence_event(p: &Presence) -> Event<'static> {
    if p.reason == PresenceReason::Joined {
        Event::PresenceUp {
            topic: p.topic,
            member: p.member,
            role: p.role,
            hub: p.hub,
        }
    } else {
        Event::PresenceDown {
            topic: p.topic,
            member: p.member,
            role: p.role,
            hub: p.hub,
            reason: p.reason,
        }
    }
}
