//! The cold parts of peers, kept out of line and recycled.
//!
//! The data path of one datagram touches a peer's current keys, its token buckets,
//! counters and timers: those stay in `Peer`. What only some peers need, only some of
//! the time, lives in boxes that a peer holds while it uses them: the key sets around a
//! rekey (`SpareKeys`), and the two halves of a Reliable stream. An established idle
//! peer that never used Reliable holds none of them.
//!
//! A box a peer gives back goes to the endpoint's free list and is handed to the next
//! peer that needs one, so rekeys and sessions coming and going allocate no boxes once
//! the lists have reached their working size. Each free list holds at most `max_peers`
//! boxes (each live peer holds at most one box of each kind, so no more were ever made),
//! and its room for a box is reserved when the box is made, so returning one never
//! allocates.

use crate::keyset::KeySet;
use crate::reliable::{ReliableConfig, ReliableReceiver, ReliableSender};

/// The key sets a peer holds only around a rekey. Boxed and held by the peer while
/// either is in use; both are `None` in a box on the free list, so no retired key
/// outlives its use there.
pub(super) struct SpareKeys {
    /// The keys a rekey replaced, kept briefly for packets still in flight.
    pub(super) previous: Option<KeySet>,
    /// Rekeyed keys we derived as initiator and send on only once the peer confirms them.
    pub(super) next: Option<KeySet>,
}

impl SpareKeys {
    pub(super) fn is_empty(&self) -> bool {
        self.previous.is_none() && self.next.is_none()
    }
}

/// Free lists of the boxes peers hold only while they use them.
// Boxes, not values: a part moves between a peer and its list by its pointer, with no
// allocation and no copy of kilobytes.
#[allow(clippy::vec_box)]
pub(super) struct ColdPools {
    spare_keys: Vec<Box<SpareKeys>>,
    senders: Vec<Box<ReliableSender>>,
    receivers: Vec<Box<ReliableReceiver>>,
    /// What a reused Reliable half starts from.
    reliable: ReliableConfig,
    /// The most boxes of one kind a free list keeps (`max_peers`).
    limit: usize,
}

impl ColdPools {
    pub(super) fn new(reliable: ReliableConfig, max_peers: usize) -> ColdPools {
        ColdPools {
            spare_keys: Vec::new(),
            senders: Vec::new(),
            receivers: Vec::new(),
            reliable,
            limit: max_peers,
        }
    }

    pub(super) fn take_spare_keys(&mut self) -> Box<SpareKeys> {
        self.spare_keys.pop().unwrap_or_else(|| {
            reserve_one(&mut self.spare_keys);
            Box::new(SpareKeys {
                previous: None,
                next: None,
            })
        })
    }

    pub(super) fn put_spare_keys(&mut self, mut spare: Box<SpareKeys>) {
        // Dropped here, not on reuse: retired keys must not linger in the free list.
        spare.previous = None;
        spare.next = None;
        keep(&mut self.spare_keys, spare, self.limit);
    }

    /// A sender at sequence 0, as `ReliableSender::new` makes it.
    // Never inlined: the reset state is built on the stack (kilobytes), and inlined into
    // the per-message send path that frame would be probed on every call.
    #[inline(never)]
    pub(super) fn take_sender(&mut self) -> Box<ReliableSender> {
        match self.senders.pop() {
            Some(mut sender) => {
                sender.restart(self.reliable);
                sender
            }
            None => {
                reserve_one(&mut self.senders);
                Box::new(ReliableSender::new(self.reliable))
            }
        }
    }

    pub(super) fn put_sender(&mut self, sender: Box<ReliableSender>) {
        keep(&mut self.senders, sender, self.limit);
    }

    /// A receiver at sequence 0, as `ReliableReceiver::new` makes it.
    // Never inlined: the reset state is built on the stack (kilobytes), and inlined into
    // the per-message send path that frame would be probed on every call.
    #[inline(never)]
    pub(super) fn take_receiver(&mut self) -> Box<ReliableReceiver> {
        match self.receivers.pop() {
            Some(mut receiver) => {
                receiver.restart(self.reliable);
                receiver
            }
            None => {
                reserve_one(&mut self.receivers);
                Box::new(ReliableReceiver::new(self.reliable))
            }
        }
    }

    pub(super) fn put_receiver(&mut self, receiver: Box<ReliableReceiver>) {
        keep(&mut self.receivers, receiver, self.limit);
    }

    /// Boxes waiting in the free lists: spare key sets, senders, receivers.
    #[cfg(test)]
    pub(super) fn free(&self) -> (usize, usize, usize) {
        (
            self.spare_keys.len(),
            self.senders.len(),
            self.receivers.len(),
        )
    }
}

/// Makes room in `list` for one more box than exist now, when a box is made: with one
/// place per box ever made, putting every box back never grows the list.
fn reserve_one<T>(list: &mut Vec<T>) {
    list.reserve(list.len().saturating_add(1).saturating_sub(list.capacity()));
}

fn keep<T>(list: &mut Vec<T>, item: T, limit: usize) {
    if list.len() < limit {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::super::peers::Peer;
    use super::super::Endpoint;
    use crate::config::EndpointConfig;
    use crate::event::{Mode, PeerId, Sent};
    use crate::keys::Keypair;
    use crate::keyset::KeySet;
    use crate::reliable::{ReliableReceiver, ReliableSender};
    use crate::time::Timestamp;
    use crate::wire::{Counter, MAX_DATAGRAM_LEN};

    const ADDR_A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
    const ADDR_B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 2);

    /// Two endpoints in memory; `a` connected to `b`.
    struct Pair {
        a: Endpoint,
        b: Endpoint,
        now: Timestamp,
        buf: Vec<u8>,
    }

    impl Pair {
        fn new(seed: u64, configure: impl Fn(&mut EndpointConfig)) -> (Pair, PeerId) {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut config_a = EndpointConfig::new(Keypair::generate(&mut rng));
            let mut config_b = EndpointConfig::new(Keypair::generate(&mut rng));
            configure(&mut config_a);
            configure(&mut config_b);
            let key_b = config_b.keypair.public;
            let now = Timestamp::from_millis(1_000);
            let mut pair = Pair {
                a: Endpoint::new(config_a, now, ChaCha20Rng::seed_from_u64(seed + 1)),
                b: Endpoint::new(config_b, now, ChaCha20Rng::seed_from_u64(seed + 2)),
                now,
                buf: vec![0u8; MAX_DATAGRAM_LEN],
            };
            let peer = pair.a.connect(now, ADDR_B, key_b).unwrap();
            pair.settle();
            (pair, peer)
        }

        /// Delivers everything both sides want to send, until both are quiet.
        fn settle(&mut self) {
            for _ in 0..100 {
                let mut moved = false;
                while let Some(t) = self.a.poll_transmit(self.now, &mut self.buf) {
                    self.b
                        .handle_datagram(self.now, ADDR_A, &mut self.buf[..t.len]);
                    moved = true;
                }
                while let Some(t) = self.b.poll_transmit(self.now, &mut self.buf) {
                    self.a
                        .handle_datagram(self.now, ADDR_B, &mut self.buf[..t.len]);
                    moved = true;
                }
                while self.a.poll_event().is_some() {}
                while self.b.poll_event().is_some() {}
                if !moved {
                    break;
                }
            }
        }

        fn run_for(&mut self, duration: Duration) {
            let end = self.now + duration;
            while self.now < end {
                self.now += Duration::from_millis(50);
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
                self.settle();
            }
        }
    }

    fn only_peer(endpoint: &Endpoint) -> &Peer {
        let id = endpoint.established_peers().next().expect("one peer");
        endpoint.peer(id).expect("live")
    }

    /// (spare key sets, sender, receiver) a peer holds.
    fn cold_parts(peer: &Peer) -> (bool, bool, bool) {
        (
            peer.spare.is_some(),
            peer.sender.is_some(),
            peer.receiver.is_some(),
        )
    }

    #[test]
    fn the_hot_part_of_a_peer_stays_small() {
        // Before the cold parts moved out a peer was 12,704 bytes (ring): three key sets,
        // a sender and a receiver inline. Now the current key set is most of it.
        // `--nocapture` shows the sizes perf/peer-memory.md records.
        println!(
            "Peer {} (current KeySet {}), SpareKeys {}, ReliableSender {}, ReliableReceiver {}",
            size_of::<Peer>(),
            size_of::<Option<KeySet>>(),
            size_of::<super::SpareKeys>(),
            size_of::<ReliableSender>(),
            size_of::<ReliableReceiver>(),
        );
        // The slab's `Option<Peer>` keeps its tag in a niche of the peer (`Live`), not beside it.
        assert_eq!(size_of::<Option<Peer>>(), size_of::<Peer>());
        let besides_current_keys = size_of::<Peer>() - size_of::<Option<KeySet>>();
        assert!(
            besides_current_keys <= 640,
            "Peer is {} bytes, {besides_current_keys} besides its current keys",
            size_of::<Peer>()
        );
        #[cfg(not(feature = "rustcrypto"))]
        assert!(size_of::<Peer>() <= 2_048, "{}", size_of::<Peer>());
        // The Reliable halves keep their slots and payloads on the heap, grown with use
        // (reliable/ring.rs, storage.rs); what is inline stays small.
        assert!(size_of::<ReliableSender>() <= 256);
        assert!(size_of::<ReliableReceiver>() <= 256);
    }

    #[test]
    fn the_hot_state_covers_what_a_received_packet_reads() {
        let (mut pair, peer) = Pair::new(23, |_| {});
        let toward_a = pair.b.established_peers().next().expect("b knows a");
        let sent = pair
            .b
            .send(pair.now, toward_a, Mode::Realtime, b"hint", &mut pair.buf)
            .expect("send");
        assert!(matches!(sent, Sent::Now(_)));
        // A counter far into the window, so its bitmap word lies away from the run.
        let counter = 1_000u64;
        pair.buf[8..16].copy_from_slice(&counter.to_le_bytes());
        let hint = pair
            .a
            .hot_state(&pair.buf[..16])
            .expect("a transport packet");
        let lines: Vec<usize> = hint.lines().map(|line| line as usize / 64).collect();
        let entry = &pair.a.peers[peer.slot as usize];
        let peer_state = entry.peer.as_ref().expect("live");
        let keys = peer_state.current.as_ref().expect("keys");
        let (start, receive_end, send) = keys.layout();
        let (highest, word) = keys.replay_layout(Counter(counter));
        // The slot's generation, the peer's hot fields, the receive key, the window's highest
        // counter and the counter's bitmap word are named ...
        for address in [
            std::ptr::from_ref(&entry.generation) as usize,
            std::ptr::from_ref(peer_state) as usize,
            std::ptr::from_ref(&peer_state.bucket) as usize,
            std::ptr::from_ref(&peer_state.addr) as usize,
            std::ptr::from_ref(&peer_state.packets_received) as usize,
            std::ptr::from_ref(&peer_state.handshake) as usize,
            start,
            receive_end - 1,
            highest,
            word,
        ] {
            assert!(
                lines.contains(&(address / 64)),
                "{address:#x} not in the hint {lines:x?} (entry {:#x}, keys {start:#x}, receive end {receive_end:#x}, send {send:#x})",
                std::ptr::from_ref(entry) as usize
            );
        }
        // ... and not the send key, which receiving never reads, nor the timer table, which a
        // Realtime packet never arms, nor the rest of the bitmap: the run and one more line,
        // under half the slot's.
        assert!(
            !lines.contains(&((send + 64) / 64)),
            "the hint runs into the send key"
        );
        let timers = std::ptr::from_ref(&peer_state.timers) as usize;
        assert!(!lines.contains(&(timers / 64)) && !lines.contains(&((timers + 79) / 64)));
        assert!(lines.len() < size_of::<super::super::peers::PeerEntry>() / 64);
        // With ring's key (544 bytes): 11 lines of run (688 bytes of 704) and the word's.
        #[cfg(not(feature = "rustcrypto"))]
        assert!(lines.len() <= 12, "{} lines", lines.len());
        // With only the first 8 bytes, the run alone.
        let short = pair
            .a
            .hot_state(&pair.buf[..8])
            .expect("a transport packet");
        assert_eq!(short.lines().count(), lines.len() - 1);
    }

    /// A packet reads the timer table only when it arms a timer, and then the wake-up moves:
    /// a Reliable segment's delayed Ack is due within the Ack delay, so the endpoint must ask
    /// to be woken by then; a Realtime message arms nothing and leaves the wake-up alone.
    #[test]
    fn a_packet_that_arms_a_timer_moves_the_wake_up_and_a_realtime_one_leaves_it() {
        let (mut pair, _) = Pair::new(25, |_| {});
        pair.run_for(Duration::from_millis(200));
        let toward_a = pair.b.established_peers().next().expect("b knows a");
        let idle_wake = pair.a.poll_timeout().expect("a keepalive is due some time");
        let ack_delay = pair.a.config().reliable.ack_delay;
        assert!(
            idle_wake > pair.now + ack_delay,
            "nothing due soon on an idle pair"
        );
        for (mode, wake_within_ack_delay) in [(Mode::Realtime, false), (Mode::Reliable, true)] {
            let sent = pair
                .b
                .send(pair.now, toward_a, mode, b"timer", &mut pair.buf)
                .expect("send");
            let Sent::Now(transmit) = sent else {
                panic!("{mode:?} not sent at once");
            };
            let delivered = pair
                .a
                .handle_datagram(pair.now, ADDR_B, &mut pair.buf[..transmit.len])
                .count();
            assert_eq!(delivered, 1);
            let wake = pair.a.poll_timeout().expect("still some wake-up");
            assert_eq!(
                wake <= pair.now + ack_delay,
                wake_within_ack_delay,
                "{mode:?}"
            );
            if !wake_within_ack_delay {
                assert_eq!(wake, idle_wake);
            }
        }
    }

    /// The sending side of the same rule: a Reliable message arms its retransmission timer,
    /// so the endpoint must ask to be woken by that deadline, which is long before the next
    /// keepalive; a Realtime message arms nothing and leaves the wake-up alone.
    #[test]
    fn a_reliable_send_moves_the_wake_up_to_its_retransmission_deadline() {
        let (mut pair, peer) = Pair::new(26, |config| {
            config.keepalive_interval = Duration::from_secs(10);
            config.idle_timeout = Duration::from_secs(60);
        });
        // Long enough for the first timer visit, after which the next wake-up is seconds away.
        pair.run_for(Duration::from_millis(500));
        let idle_wake = pair.a.poll_timeout().expect("a keepalive is due some time");
        assert!(idle_wake > pair.now + Duration::from_secs(1));
        for (mode, moves) in [(Mode::Realtime, false), (Mode::Reliable, true)] {
            let sent = pair
                .a
                .send(pair.now, peer, mode, b"timer", &mut pair.buf)
                .expect("send");
            assert!(matches!(sent, Sent::Now(_)), "{mode:?} not sent at once");
            let wake = pair.a.poll_timeout().expect("still some wake-up");
            assert_eq!(
                wake < idle_wake,
                moves,
                "{mode:?}: {wake:?} against {idle_wake:?}"
            );
        }
        // The wake-up it moved to is the retransmission's: with the segment lost (never
        // delivered), that wake-up sends it again.
        let wake = pair.a.poll_timeout().expect("a wake-up");
        pair.a.handle_timeout(wake);
        assert!(pair.a.poll_transmit(wake, &mut pair.buf).is_some());
        assert_eq!(pair.a.stats().reliable_retransmits, 1);
    }

    #[test]
    fn the_send_state_covers_what_sealing_reads_and_not_the_receive_half() {
        let (pair, peer) = Pair::new(24, |_| {});
        let state = pair.a.send_state(peer).expect("a slot");
        let named: Vec<usize> = state.lines().map(|line| line as usize).collect();
        let in_hint = |address: usize| named.contains(&(address - address % 64));
        let entry = &pair.a.peers[peer.slot as usize];
        let peer_state = entry.peer.as_ref().expect("live");
        let current = peer_state.current.as_ref().expect("keys");
        let mut read = vec![
            std::ptr::from_ref(&entry.generation) as usize,
            std::ptr::from_ref(peer_state) as usize,
            std::ptr::from_ref(&peer_state.last_sent) as usize,
            std::ptr::from_ref(&peer_state.packets_sent) as usize,
            std::ptr::from_ref(&peer_state.addr) as usize,
        ];
        read.extend(current.send_layout());
        for address in read {
            assert!(in_hint(address), "{address:#x} not in the hint");
        }
        // The receive key between them is not named, beyond the lines it shares.
        let (_, receive_end, _) = current.layout();
        let receive_key_middle = receive_end - 256;
        assert!(!in_hint(receive_key_middle));
    }

    #[test]
    fn an_idle_peer_holds_no_cold_parts() {
        let (mut pair, peer) = Pair::new(21, |_| {});
        assert!(pair.a.peer_info(peer).unwrap().established);
        // Keepalives both ways for a few seconds, no Reliable traffic.
        pair.run_for(Duration::from_secs(3));
        for endpoint in [&pair.a, &pair.b] {
            assert_eq!(cold_parts(only_peer(endpoint)), (false, false, false));
            assert_eq!(endpoint.pools.free(), (0, 0, 0), "no box was ever made");
        }
        let info = pair.a.peer_info(peer).unwrap();
        assert_eq!(
            info.peer_receive_window,
            pair.a.config().reliable.queue_bound()
        );
        assert_eq!(info.srtt, None);

        // One Reliable message: the sender appears on `a`, the receiver on `b`, and the
        // ACK coming back makes no receiver on `a`.
        let sent = pair
            .a
            .send(pair.now, peer, Mode::Reliable, b"hello", &mut pair.buf)
            .unwrap();
        let Sent::Now(t) = sent else {
            panic!("the window is open")
        };
        pair.b
            .handle_datagram(pair.now, ADDR_A, &mut pair.buf[..t.len]);
        // Past the ACK delay, within the first RTO: the ACK gives an RTT sample.
        pair.now += crate::MAX_ACK_DELAY + Duration::from_millis(1);
        pair.a.handle_timeout(pair.now);
        pair.b.handle_timeout(pair.now);
        pair.settle();
        assert_eq!(cold_parts(only_peer(&pair.a)), (false, true, false));
        assert_eq!(cold_parts(only_peer(&pair.b)), (false, false, true));
        assert_eq!(only_peer(&pair.a).sender.as_deref().unwrap().in_flight(), 0);
        assert!(pair.a.peer_info(peer).unwrap().srtt.is_some());
    }

    #[test]
    fn rekeys_borrow_one_spare_box_and_give_it_back() {
        let (mut pair, _) = Pair::new(31, |c| {
            c.rekey_after = Duration::from_secs(2);
            c.previous_keys_linger = Duration::from_millis(500);
        });
        let rekeys_before = pair.a.stats().rekeys;
        let mut saw_spare = false;
        for _ in 0..60 {
            pair.run_for(Duration::from_millis(50));
            saw_spare |= only_peer(&pair.a).spare.is_some();
        }
        let first = pair.a.stats().rekeys;
        assert!(first > rekeys_before, "a rekey happened");
        assert!(saw_spare, "the old keys lingered in a spare box");
        // Between rekeys, once the old keys expired, the box is back in the pool.
        for _ in 0..100 {
            if only_peer(&pair.a).spare.is_none() && only_peer(&pair.b).spare.is_none() {
                break;
            }
            pair.run_for(Duration::from_millis(50));
        }
        for endpoint in [&pair.a, &pair.b] {
            assert!(only_peer(endpoint).spare.is_none());
            assert_eq!(endpoint.pools.free().0, 1);
        }
        // Later rekeys reuse that box: the free list never holds a second one.
        pair.run_for(Duration::from_secs(8));
        assert!(pair.a.stats().rekeys >= first + 2);
        for endpoint in [&pair.a, &pair.b] {
            assert!(endpoint.pools.free().0 <= 1);
            assert_eq!(endpoint.established_peers().count(), 1);
        }
    }

    #[test]
    fn a_removed_peer_returns_its_reliable_boxes_for_the_next_one() {
        let (mut pair, peer) = Pair::new(41, |_| {});
        for _ in 0..3 {
            let sent = pair
                .a
                .send(pair.now, peer, Mode::Reliable, b"x", &mut pair.buf)
                .unwrap();
            if let Sent::Now(t) = sent {
                pair.b
                    .handle_datagram(pair.now, ADDR_A, &mut pair.buf[..t.len]);
            }
        }
        pair.run_for(Duration::from_millis(200));
        pair.a.close(pair.now, peer);
        pair.settle();
        assert_eq!(pair.a.pools.free(), (0, 1, 0));
        assert_eq!(pair.b.pools.free(), (0, 0, 1));
        // A new session from the same pair of keys takes the pooled boxes back, and its
        // streams start at sequence 0.
        let key_b = pair.b.public_key();
        let again = pair.a.connect(pair.now, ADDR_B, key_b).unwrap();
        pair.settle();
        let sent = pair
            .a
            .send(pair.now, again, Mode::Reliable, b"y", &mut pair.buf)
            .unwrap();
        let Sent::Now(t) = sent else {
            panic!("the window is open")
        };
        let delivered: Vec<_> = pair
            .b
            .handle_datagram(pair.now, ADDR_A, &mut pair.buf[..t.len])
            .map(|m| m.payload.to_vec())
            .collect();
        assert_eq!(delivered, vec![b"y".to_vec()]);
        assert_eq!(pair.a.pools.free(), (0, 0, 0));
        assert_eq!(pair.b.pools.free(), (0, 0, 0));
        assert_eq!(only_peer(&pair.a).sender.as_deref().unwrap().next_seq(), 1);
    }
}
