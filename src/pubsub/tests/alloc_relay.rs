//! A counting global allocator proves a hub relaying steady traffic allocates nothing
//! per message: two linked hubs, last-value caches on, one publisher, twelve
//! subscribers, Realtime and Reliable publishes, heartbeats and timeouts included.

use std::collections::VecDeque;
use std::time::Duration;

use intentra_pubsub::{
    Event, Hub, HubConfig, Member, MemberConfig, MemberKey, Mode, Rule, Sink, Timestamp,
};

#[path = "../../udp/tests/common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

enum Node {
    Hub(Hub<usize>),
    Member(Member<usize>),
}

/// Outputs go into buffers taken from a preallocated pool, so the harness itself
/// allocates nothing once warm either.
struct Pool {
    free: Vec<Vec<u8>>,
    queue: VecDeque<(usize, usize, Mode, Vec<u8>)>,
    from: usize,
    delivered: u64,
    gaps: u64,
}

impl Sink<usize> for Pool {
    fn send(&mut self, to: usize, mode: Mode, bytes: &[u8]) {
        let mut b = self.free.pop().expect("pool exhausted");
        b.clear();
        b.extend_from_slice(bytes);
        self.queue.push_back((self.from, to, mode, b));
    }
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Message { payload, .. } => {
                assert_eq!(payload.len(), 128);
                self.delivered += 1;
            }
            Event::Gap { .. } => self.gaps += 1,
            _ => {}
        }
    }
}

fn key(i: usize) -> MemberKey {
    MemberKey([i as u8 + 1; 32])
}

struct World {
    nodes: Vec<Node>,
    pool: Pool,
    now: Timestamp,
}

impl World {
    fn run(&mut self, i: usize, f: impl FnOnce(&mut Node, Timestamp, &mut Pool)) {
        self.pool.from = i;
        f(&mut self.nodes[i], self.now, &mut self.pool);
        self.settle();
    }

    fn settle(&mut self) {
        while let Some((from, to, mode, buf)) = self.pool.queue.pop_front() {
            self.pool.from = to;
            match &mut self.nodes[to] {
                Node::Hub(h) => h.handle_message(from, mode, &buf, self.now, &mut self.pool),
                Node::Member(m) => m.handle_message(from, mode, &buf, self.now, &mut self.pool),
            }
            self.pool.free.push(buf);
        }
    }

    /// Both sides learn of the session before either's first message is delivered,
    /// as with the transport (a node reports a peer up before its first message).
    fn connect(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            self.pool.from = x;
            match &mut self.nodes[x] {
                Node::Hub(h) => h.peer_up(y, key(y), self.now, &mut self.pool),
                Node::Member(m) => m.peer_up(y, key(y), self.now, &mut self.pool),
            }
        }
        self.settle();
    }

    fn timeouts(&mut self) {
        for i in 0..self.nodes.len() {
            self.run(i, |n, now, s| match n {
                Node::Hub(h) => h.handle_timeout(now, s),
                Node::Member(m) => m.handle_timeout(now, s),
            });
        }
    }
}

#[test]
fn a_hub_relaying_steady_traffic_allocates_nothing_per_message() {
    let hub = |i: usize, other: usize| {
        let mut c = HubConfig::new(key(i));
        c.rules.push(Rule::allow_all());
        c.links.push(key(other));
        c.last_value_cache = true;
        Node::Hub(Hub::new(c))
    };
    let mut nodes = vec![hub(0, 1), hub(1, 0)];
    let member = |i: usize| Node::Member(Member::new(key(i), MemberConfig::default()));
    nodes.push(member(2)); // the publisher, on hub 0
    for i in 3..15 {
        nodes.push(member(i)); // 3..9 on hub 0, 9..15 on hub 1
    }
    let mut w = World {
        nodes,
        pool: Pool {
            free: (0..256).map(|_| Vec::with_capacity(1500)).collect(),
            queue: VecDeque::with_capacity(256),
            from: 0,
            delivered: 0,
            gaps: 0,
        },
        now: Timestamp::from_nanos(1),
    };
    w.connect(0, 1);
    w.connect(2, 0);
    for i in 3..15 {
        w.connect(i, if i < 9 { 0 } else { 1 });
        w.run(i, |n, now, s| {
            if let Node::Member(m) = n {
                m.subscribe("md/btc-usd", now, s).unwrap();
            }
        });
    }
    let mut topic = None;
    w.run(2, |n, now, s| {
        if let Node::Member(m) = n {
            topic = Some(m.advertise("md/btc-usd", now, s).unwrap());
        }
    });
    let topic = topic.unwrap();
    let payload = [0x5au8; 128];
    let publish = |w: &mut World, k: u64| {
        // 1 kHz, with every tenth publish Reliable.
        w.now = w.now + Duration::from_millis(1);
        let mode = if k % 10 == 0 {
            Mode::Reliable
        } else {
            Mode::Realtime
        };
        w.run(2, |n, now, s| {
            if let Node::Member(m) = n {
                m.publish(topic, mode, &payload, now, s).unwrap();
            }
        });
        w.timeouts();
    };
    for k in 0..500 {
        publish(&mut w, k);
    }
    assert_eq!(w.pool.delivered, 500 * 12);
    let before = allocations();
    for k in 0..10_000 {
        publish(&mut w, k);
    }
    let allocated = allocations() - before;
    assert_eq!(w.pool.delivered, 10_500 * 12);
    assert_eq!(w.pool.gaps, 0);
    assert_eq!(allocated, 0, "allocations while relaying 10,000 publishes");
}
