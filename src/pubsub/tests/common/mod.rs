//! A tiny in-memory harness: pubsub instances wired by a "transport" that delivers
//! Reliable messages in order and can drop, duplicate and reorder Realtime ones, on a
//! virtual clock.
#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use intentra_pubsub::{
    Action, Event, Hub, HubConfig, Member, MemberConfig, MemberKey, Mode, PresenceReason, Role,
    Rule, Sink, Stats, Timestamp, TopicId,
};

/// An owned copy of an [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Msg {
        topic: TopicId,
        publisher: MemberKey,
        mode: Mode,
        seq: Option<u64>,
        hops: u8,
        payload: Vec<u8>,
    },
    Gap {
        topic: TopicId,
        publisher: MemberKey,
        missing: u64,
    },
    Restarted {
        topic: TopicId,
        publisher: MemberKey,
    },
    Up {
        topic: TopicId,
        member: MemberKey,
        role: Role,
        hub: MemberKey,
    },
    Down {
        topic: TopicId,
        member: MemberKey,
        role: Role,
        hub: MemberKey,
        reason: PresenceReason,
    },
    Refused {
        peer: MemberKey,
        action: Action,
        topic: TopicId,
    },
    LinkUp(MemberKey),
    LinkDown(MemberKey),
}

fn own(e: Event<'_>) -> Ev {
    match e {
        Event::Message {
            topic,
            publisher,
            mode,
            seq,
            hops,
            payload,
        } => Ev::Msg {
            topic,
            publisher,
            mode,
            seq: seq.map(|s| s.0),
            hops,
            payload: payload.to_vec(),
        },
        Event::Gap {
            topic,
            publisher,
            missing,
        } => Ev::Gap {
            topic,
            publisher,
            missing,
        },
        Event::StreamRestarted { topic, publisher } => Ev::Restarted { topic, publisher },
        Event::PresenceUp {
            topic,
            member,
            role,
            hub,
        } => Ev::Up {
            topic,
            member,
            role,
            hub,
        },
        Event::PresenceDown {
            topic,
            member,
            role,
            hub,
            reason,
        } => Ev::Down {
            topic,
            member,
            role,
            hub,
            reason,
        },
        Event::Refused {
            peer,
            action,
            topic,
            ..
        } => Ev::Refused {
            peer,
            action,
            topic,
        },
        Event::LinkUp { hub } => Ev::LinkUp(hub),
        Event::LinkDown { hub } => Ev::LinkDown(hub),
        other => panic!("unknown event {other:?}"),
    }
}

pub enum Node {
    Hub(Hub<usize>),
    Member(Member<usize>),
}

#[derive(Clone, Debug)]
pub struct Packet {
    pub from: usize,
    pub to: usize,
    pub mode: Mode,
    pub bytes: Vec<u8>,
}

/// A sink a test can hand to a pubsub method directly, then give to [`Net::absorb_from`].
pub type NullSink = Collect;

#[derive(Default)]
pub struct Collect {
    out: Vec<(usize, Mode, Vec<u8>)>,
    events: Vec<Ev>,
}

impl Sink<usize> for Collect {
    fn send(&mut self, to: usize, mode: Mode, bytes: &[u8]) {
        self.out.push((to, mode, bytes.to_vec()));
    }
    fn event(&mut self, event: Event<'_>) {
        self.events.push(own(event));
    }
}

/// A deterministic xorshift generator, so every run loses the same messages.
pub struct Rng(u64);

impl Rng {
    pub fn chance(&mut self, p: f64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

pub type Filter = Box<dyn FnMut(&Packet) -> bool>;

pub struct Net {
    pub nodes: Vec<Node>,
    pub now: Timestamp,
    up: HashSet<(usize, usize)>,
    /// Pairs whose traffic vanishes without the sessions closing (a silent peer).
    cut: HashSet<(usize, usize)>,
    queue: VecDeque<Packet>,
    pub events: Vec<Vec<Ev>>,
    pub rng: Rng,
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    /// Returns true to drop a packet (applied to Realtime and Reliable alike: use for
    /// Realtime only, since the real transport never loses Reliable messages).
    pub filter: Option<Filter>,
    pub realtime_lost: u64,
}

pub fn key(i: usize) -> MemberKey {
    MemberKey([i as u8 + 1; 32])
}

impl Net {
    pub fn new() -> Net {
        Net {
            nodes: Vec::new(),
            now: Timestamp::from_nanos(1_000_000_000),
            up: HashSet::new(),
            cut: HashSet::new(),
            queue: VecDeque::new(),
            events: Vec::new(),
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            filter: None,
            realtime_lost: 0,
        }
    }

    pub fn add_hub(&mut self, f: impl FnOnce(&mut HubConfig)) -> usize {
        let i = self.nodes.len();
        let mut c = HubConfig::new(key(i));
        c.rules.push(Rule::allow_all());
        f(&mut c);
        self.nodes.push(Node::Hub(Hub::new(c)));
        self.events.push(Vec::new());
        i
    }

    pub fn add_member(&mut self) -> usize {
        let i = self.nodes.len();
        self.nodes
            .push(Node::Member(Member::new(key(i), MemberConfig::default())));
        self.events.push(Vec::new());
        i
    }

    pub fn hub(&mut self, i: usize) -> &mut Hub<usize> {
        match &mut self.nodes[i] {
            Node::Hub(h) => h,
            Node::Member(_) => panic!("{i} is not a hub"),
        }
    }

    pub fn member(&mut self, i: usize) -> &mut Member<usize> {
        match &mut self.nodes[i] {
            Node::Member(m) => m,
            Node::Hub(_) => panic!("{i} is not a member"),
        }
    }

    pub fn stats(&self, i: usize) -> Stats {
        match &self.nodes[i] {
            Node::Hub(h) => h.stats().clone(),
            Node::Member(m) => m.stats().clone(),
        }
    }

    /// Takes what a directly driven instance put into `c`, as if node `from` sent it.
    pub fn absorb_from(&mut self, from: usize, c: Collect) {
        self.absorb(from, c);
    }

    fn absorb(&mut self, from: usize, c: Collect) {
        self.events[from].extend(c.events);
        for (to, mode, bytes) in c.out {
            self.enqueue(Packet {
                from,
                to,
                mode,
                bytes,
            });
        }
    }

    fn enqueue(&mut self, p: Packet) {
        if !self.up.contains(&(p.from, p.to)) || self.cut.contains(&(p.from, p.to)) {
            return;
        }
        if let Some(f) = &mut self.filter {
            if f(&p) {
                if p.mode == Mode::Realtime {
                    self.realtime_lost += 1;
                }
                return;
            }
        }
        if p.mode == Mode::Realtime {
            if self.rng.chance(self.loss) {
                self.realtime_lost += 1;
                return;
            }
            if self.rng.chance(self.dup) {
                self.queue.push_back(p.clone());
            }
            if self.rng.chance(self.reorder) {
                // Overtake the previous Realtime packet on the same path.
                let n = self.queue.len();
                if n > 0 {
                    let prev = &self.queue[n - 1];
                    if prev.mode == Mode::Realtime && prev.from == p.from && prev.to == p.to {
                        self.queue.insert(n - 1, p);
                        return;
                    }
                }
            }
        }
        self.queue.push_back(p);
    }

    fn with(&mut self, i: usize, f: impl FnOnce(&mut Node, Timestamp, &mut Collect)) {
        let mut c = Collect::default();
        let now = self.now;
        f(&mut self.nodes[i], now, &mut c);
        self.absorb(i, c);
    }

    /// Brings up the session between `a` and `b`, then delivers until quiet.
    pub fn connect(&mut self, a: usize, b: usize) {
        self.up.insert((a, b));
        self.up.insert((b, a));
        for (x, y) in [(a, b), (b, a)] {
            self.with(x, |n, now, c| match n {
                Node::Hub(h) => h.peer_up(y, key(y), now, c),
                Node::Member(m) => m.peer_up(y, key(y), now, c),
            });
        }
        self.settle();
    }

    /// Closes the session between `a` and `b` on both sides.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        self.up.remove(&(a, b));
        self.up.remove(&(b, a));
        self.queue
            .retain(|p| !((p.from == a && p.to == b) || (p.from == b && p.to == a)));
        for (x, y) in [(a, b), (b, a)] {
            self.with(x, |n, now, c| match n {
                Node::Hub(h) => h.peer_down(y, now, c),
                Node::Member(m) => m.peer_down(y, now, c),
            });
        }
        self.settle();
    }

    /// Silently loses everything between `a` and `b` (the sessions stay up).
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn heal(&mut self, a: usize, b: usize) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
    }

    /// Delivers everything in flight (and what it causes) until nothing is left.
    pub fn settle(&mut self) {
        let mut steps = 0;
        while let Some(p) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "the network never settled (a loop?)");
            self.with(p.to, |n, now, c| match n {
                Node::Hub(h) => h.handle_message(p.from, p.mode, &p.bytes, now, c),
                Node::Member(m) => m.handle_message(p.from, p.mode, &p.bytes, now, c),
            });
        }
    }

    /// Delivers a message as if `from` sent it to `to` (for malformed-input tests).
    pub fn inject(&mut self, from: usize, to: usize, mode: Mode, bytes: &[u8]) {
        self.with(to, |n, now, c| match n {
            Node::Hub(h) => h.handle_message(from, mode, bytes, now, c),
            Node::Member(m) => m.handle_message(from, mode, bytes, now, c),
        });
        self.settle();
    }

    /// Runs the virtual clock forward by `d`, firing every node's timers when due.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| match n {
                    Node::Hub(h) => h.poll_timeout(),
                    Node::Member(m) => m.poll_timeout(),
                })
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for i in 0..self.nodes.len() {
                        self.with(i, |n, now, c| match n {
                            Node::Hub(h) => h.handle_timeout(now, c),
                            Node::Member(m) => m.handle_timeout(now, c),
                        });
                    }
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    pub fn subscribe(&mut self, m: usize, name: &str) -> TopicId {
        let mut t = None;
        self.with(m, |n, now, c| {
            if let Node::Member(x) = n {
                t = Some(x.subscribe(name, now, c).unwrap());
            }
        });
        self.settle();
        t.unwrap()
    }

    pub fn unsubscribe(&mut self, m: usize, topic: TopicId) {
        self.with(m, |n, now, c| {
            if let Node::Member(x) = n {
                assert!(x.unsubscribe(topic, now, c));
            }
        });
        self.settle();
    }

    pub fn advertise(&mut self, m: usize, name: &str) -> TopicId {
        let mut t = None;
        self.with(m, |n, now, c| {
            if let Node::Member(x) = n {
                t = Some(x.advertise(name, now, c).unwrap());
            }
        });
        self.settle();
        t.unwrap()
    }

    /// Publishes without settling (so several publishes can be in flight at once).
    pub fn publish_nosettle(&mut self, m: usize, topic: TopicId, mode: Mode, payload: &[u8]) {
        self.with(m, |n, now, c| {
            if let Node::Member(x) = n {
                x.publish(topic, mode, payload, now, c).unwrap();
            }
        });
    }

    pub fn publish(&mut self, m: usize, topic: TopicId, mode: Mode, payload: &[u8]) {
        self.publish_nosettle(m, topic, mode, payload);
        self.settle();
    }

    pub fn take(&mut self, i: usize) -> Vec<Ev> {
        std::mem::take(&mut self.events[i])
    }

    /// The payloads node `i` received on `topic`, in order, consuming its events.
    pub fn payloads(&mut self, i: usize, topic: TopicId) -> Vec<Vec<u8>> {
        self.take(i)
            .into_iter()
            .filter_map(|e| match e {
                Ev::Msg {
                    topic: t, payload, ..
                } if t == topic => Some(payload),
                _ => None,
            })
            .collect()
    }
}
