//! The peer table: a slab with generations, so stale handles are refused. Session indexes
//! route to it through `indexes`.

use std::net::SocketAddr;

use super::handshake::InitiatorHandshake;
use super::pools::{ColdPools, SpareKeys};
use super::timers::{Timer, TimerTable};
use super::{Endpoint, QueuedEvent};
use crate::event::PeerId;
use crate::keys::PublicKey;
use crate::keyset::KeySet;
use crate::ratelimit::TokenBucket;
use crate::reliable::{ReliableReceiver, ReliableSender, MAX_QUEUE_BYTES};
use crate::stats::CloseReason;
use crate::strikes::Strikes;
use crate::time::Timestamp;
use crate::wire::{
    read_u32, read_u64, Counter, PacketType, SessionIndex, COOKIE_LEN, TAG_LEN, VERSION,
};

/// Stray-counter packets opened per second and in a burst, per peer (PROTOCOL.md 8).
pub(super) const STRAY_RATE: u32 = 100;
pub(super) const STRAY_BURST: u32 = 20;

/// What a session index routes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotTarget {
    Free,
    /// Our HandshakeInit is out; the response will name this index.
    Initiator(PeerId),
    /// A responder handshake in flight, by position in `responders`.
    Responder(usize),
    /// One of the peer's key sets.
    Keys(PeerId),
}

/// Which of a peer's key sets a packet opened under.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyRole {
    Current,
    Previous,
    Next,
}

/// Where the state lies that [`Endpoint::handle_datagram`] reads for one transport packet:
/// the slot of its peer, hot fields and current keys first, and one word of the replay
/// window away from them ([`Endpoint::hot_state`]), or the index-table entries that lead to
/// it ([`Endpoint::index_hint`]). Only addresses, for a cache hint.
#[derive(Debug, Clone, Copy)]
pub struct HotState {
    start: *const u8,
    end: *const u8,
    /// A lone word outside `start..end`, if the state has one.
    word: Option<*const u8>,
}

/// Where the state lies that sending to one peer reads and writes
/// ([`Endpoint::send_state`]): the slot's hot fields and the current keys' send half, two
/// ranges with the receive half between them. Only addresses, for a cache hint.
#[derive(Debug, Clone, Copy)]
pub struct SendState {
    hot: HotState,
    keys: HotState,
}

impl SendState {
    /// One address in every cache line of both ranges. For a prefetch hint, never to be
    /// read through: they dangle as soon as the endpoint changes.
    pub fn lines(&self) -> impl Iterator<Item = *const u8> {
        self.hot.lines().chain(self.keys.lines())
    }
}

/// A block of memory an endpoint reserved for one of its tables
/// ([`Endpoint::peer_table_memory`]): where it starts and how many bytes it spans.
#[derive(Debug, Clone, Copy)]
pub struct TableMemory {
    /// The first byte.
    pub start: *const u8,
    /// Its length in bytes.
    pub len: usize,
}

/// The cache line size the hint steps by (x86-64 and most ARM cores).
const CACHE_LINE: usize = 64;

impl HotState {
    /// The bytes `start..end` and nothing else.
    fn range(start: *const u8, end: *const u8) -> HotState {
        HotState {
            start,
            end,
            word: None,
        }
    }

    /// One address in every cache line of the state. They are for a prefetch hint, never
    /// to be read through: they dangle as soon as the endpoint changes.
    pub fn lines(&self) -> impl Iterator<Item = *const u8> {
        // From the line that holds `start`: a range that does not begin on a line boundary
        // still ends in the line that holds its last byte.
        let offset = (self.start as usize) % CACHE_LINE;
        let start = self.start.wrapping_sub(offset);
        let len = (self.end as usize)
            .saturating_sub(self.start as usize)
            .saturating_add(offset);
        let lines = len.div_ceil(CACHE_LINE);
        let range_end = start as usize + lines * CACHE_LINE;
        // The word's line, unless the range names it already.
        let word = self
            .word
            .filter(|&word| !(start as usize..range_end).contains(&(word as usize)));
        (0..lines)
            .map(move |line| start.wrapping_add(line * CACHE_LINE))
            .chain(word)
    }
}

/// Held by every peer and by nothing else: a type with a single valid `u64` value, whose
/// niche (every other value) is larger than any other in `Peer`, so `Option<Peer>` in the
/// slab keeps its tag here, in the slot's first line, which every packet reads anyway.
/// Without it the compiler picked the last of many equal one-byte niches, at the far end of
/// the slot: one more cache miss for every packet of a cold peer (perf/investigations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(super) enum Live {
    Yes = 0x4c49_5645,
}

/// Everything one endpoint knows about one peer. What the data path and the timers touch
/// for every datagram is inline; what only some peers need some of the time (the key sets
/// around a rekey, Reliable streams) is boxed, taken from the endpoint's `ColdPools` when
/// first needed and given back when no longer, so an established idle peer that never used
/// Reliable costs little more than this struct (`an_idle_peer_holds_no_cold_parts`).
///
/// `repr(C)`, hot first: what every received datagram reads or writes (closing, bucket,
/// receive counters, address, whether a handshake is under way) sits in the first lines,
/// followed by the current key set (itself ordered for the receive path) and what sending
/// writes besides it; what only timers, handshakes, rekeys and Reliable touch comes last.
/// With thousands of peers each datagram finds a cold peer, and adjacent lines cost far less
/// than scattered ones.
#[repr(C)]
pub(super) struct Peer {
    pub(super) live: Live,
    pub(super) closing: Option<CloseReason>,
    /// The reason given in the peer's own close packet.
    pub(super) peer_reason: Option<CloseReason>,
    pub(super) established: bool,
    /// Whether we initiated the current session: its initiator is the side that rekeys.
    pub(super) we_initiated: bool,
    pub(super) ack_queued: bool,
    pub(super) keepalive_queued: bool,
    pub(super) retransmit_queued: bool,
    /// A timer was armed since the peer's wake-up was last asked for (`arm_timer`): in the
    /// first line, so that a path that armed none (every Realtime packet) learns it without
    /// reading the timer table.
    pub(super) timers_armed: bool,
    pub(super) bucket: TokenBucket,
    pub(super) last_received: Timestamp,
    pub(super) packets_received: u64,
    /// The earliest wake-up of this peer in the endpoint's heap (`NEVER` if none).
    pub(super) scheduled: Timestamp,
    pub(super) addr: SocketAddr,
    /// Whether it is set is asked of every packet under the current keys, so the pointer is
    /// here; the handshake itself, held only while one is in flight, is not.
    pub(super) handshake: Option<Box<InitiatorHandshake>>,
    pub(super) current: Option<KeySet>,
    /// What sending writes besides the keys, right after them: in the send state's run
    /// (`Endpoint::send_state`), out of the receive run, which then ends a line earlier.
    pub(super) last_sent: Timestamp,
    pub(super) packets_sent: u64,
    /// Authenticated packets dropped (replays, stray counters, bad frames): the receive path
    /// writes it only for such a packet, so it stays out of the lines every packet reads.
    pub(super) drops: u64,
    /// Deadlines by concern; the peer's next wake-up is their minimum. Out of the lines every
    /// packet reads: a packet needs the table only when it arms a timer (a Reliable segment,
    /// an Ack, a rekey); timer visits read it whole.
    pub(super) timers: TimerTable,
    /// The budget of packets with stray counters (far ahead of anything accepted), so that
    /// junk with made-up counters cannot spend `bucket`, which the genuine packets need.
    /// Past the current keys: a genuine packet never touches it.
    pub(super) stray: TokenBucket,
    /// The previous and next key sets, held only around a rekey.
    pub(super) spare: Option<Box<SpareKeys>>,
    /// The Reliable stream we send, from our first Reliable message on.
    pub(super) sender: Option<Box<ReliableSender>>,
    /// The Reliable stream we receive, from the peer's first Reliable segment on.
    pub(super) receiver: Option<Box<ReliableReceiver>>,
    /// The peer's receive window (from its handshake) for our sender, kept here so that a
    /// sender made later starts with it; the sender's own copy is the same whenever it exists.
    pub(super) peer_window: usize,
    pub(super) strikes: Strikes,
    pub(super) public_key: PublicKey,
    pub(super) previous_expires: Timestamp,
    pub(super) cookie: Option<([u8; COOKIE_LEN], Timestamp)>,
    /// The tag of the HandshakeFinish that made our newest responder-side keys: only that
    /// Finish, repeated, is answered with another confirming Keepalive (PROTOCOL.md 11.2).
    pub(super) finish_tag: [u8; TAG_LEN],
}

impl Peer {
    /// Makes `timer` fire no later than `at`, and notes that the peer's wake-up must be asked
    /// for again (`Endpoint::schedule`, which clears the note).
    pub(super) fn arm_timer(&mut self, timer: Timer, at: Timestamp) {
        self.timers.arm(timer, at);
        self.timers_armed = true;
    }

    pub(super) fn keys_for(&mut self, index: SessionIndex) -> Option<(&mut KeySet, KeyRole)> {
        if let Some(keys) = self.current.as_mut().filter(|k| k.local_index == index) {
            return Some((keys, KeyRole::Current));
        }
        let spare = self.spare.as_deref_mut()?;
        if let Some(keys) = spare.next.as_mut().filter(|k| k.local_index == index) {
            return Some((keys, KeyRole::Next));
        }
        if let Some(keys) = spare.previous.as_mut().filter(|k| k.local_index == index) {
            return Some((keys, KeyRole::Previous));
        }
        None
    }

    pub(super) fn session_indexes(&self) -> impl Iterator<Item = SessionIndex> + '_ {
        let spare = self.spare.as_deref();
        [
            self.current.as_ref(),
            spare.and_then(|s| s.previous.as_ref()),
            spare.and_then(|s| s.next.as_ref()),
        ]
        .into_iter()
        .flatten()
        .map(|k| k.local_index)
        .chain(self.handshake.as_ref().map(|h| h.local_index))
    }

    pub(super) fn previous_keys(&self) -> Option<&KeySet> {
        self.spare.as_deref().and_then(|s| s.previous.as_ref())
    }

    pub(super) fn next_keys(&self) -> Option<&KeySet> {
        self.spare.as_deref().and_then(|s| s.next.as_ref())
    }

    /// The previous and next key sets, with a box from `pools` if the peer holds none.
    pub(super) fn spare_keys(&mut self, pools: &mut ColdPools) -> &mut SpareKeys {
        self.spare.get_or_insert_with(|| pools.take_spare_keys())
    }

    /// Gives the spare key sets' box back once neither is in use.
    pub(super) fn release_spare_if_empty(&mut self, pools: &mut ColdPools) {
        if self.spare.as_deref().is_some_and(SpareKeys::is_empty) {
            if let Some(spare) = self.spare.take() {
                pools.put_spare_keys(spare);
            }
        }
    }

    /// Drops the unconfirmed rekeyed keys, if any; their index, for the caller to free.
    pub(super) fn retire_next(&mut self, pools: &mut ColdPools) -> Option<SessionIndex> {
        let index = self
            .spare
            .as_deref_mut()
            .and_then(|s| s.next.take())
            .map(|k| k.local_index);
        self.release_spare_if_empty(pools);
        index
    }

    /// Drops the keys a rekey replaced, if any; their index, for the caller to free.
    pub(super) fn retire_previous(&mut self, pools: &mut ColdPools) -> Option<SessionIndex> {
        let index = self
            .spare
            .as_deref_mut()
            .and_then(|s| s.previous.take())
            .map(|k| k.local_index);
        self.release_spare_if_empty(pools);
        index
    }

    /// The Reliable sender, made (from `pools`) by the first Reliable message.
    pub(super) fn sender_mut(&mut self, pools: &mut ColdPools) -> &mut ReliableSender {
        let peer_window = self.peer_window;
        self.sender.get_or_insert_with(|| {
            let mut sender = pools.take_sender();
            sender.set_peer_window(peer_window);
            sender
        })
    }

    /// The Reliable receiver, made (from `pools`) by the first Reliable segment.
    pub(super) fn receiver_mut(&mut self, pools: &mut ColdPools) -> &mut ReliableReceiver {
        self.receiver.get_or_insert_with(|| pools.take_receiver())
    }

    /// Records the receive window the peer advertised in a handshake.
    pub(super) fn set_peer_window(&mut self, bytes: usize) {
        // The sender's own rule, so `peer_info` reads the same with or without a sender.
        self.peer_window = bytes.min(MAX_QUEUE_BYTES);
        if let Some(sender) = self.sender.as_deref_mut() {
            sender.set_peer_window(bytes);
        }
    }

    /// Ends both Reliable streams: the next message or segment starts new ones at 0.
    pub(super) fn release_reliable(&mut self, pools: &mut ColdPools) {
        if let Some(sender) = self.sender.take() {
            pools.put_sender(sender);
        }
        if let Some(receiver) = self.receiver.take() {
            pools.put_receiver(receiver);
        }
    }

    /// Gives back every cold part, as the peer is removed.
    pub(super) fn release_cold(&mut self, pools: &mut ColdPools) {
        self.release_reliable(pools);
        if let Some(spare) = self.spare.take() {
            pools.put_spare_keys(spare);
        }
    }
}

/// The receiver index of a transport packet (Realtime, Reliable, Ack, Keepalive, Close,
/// Bundle) from its first 8 bytes, for the cache hints; `None` for a short header, another
/// version, a handshake or unknown type, or the never-issued index 0. Looks at nothing else.
fn transport_index(header: &[u8]) -> Option<SessionIndex> {
    let (Some(&version), Some(&kind), Some(index)) =
        (header.first(), header.get(1), header.get(4..8))
    else {
        return None;
    };
    let transport = matches!(
        PacketType::from_byte(kind),
        Some(
            PacketType::Realtime
                | PacketType::Reliable
                | PacketType::Ack
                | PacketType::Keepalive
                | PacketType::Close
                | PacketType::Bundle
        )
    );
    if version != VERSION || !transport {
        return None;
    }
    SessionIndex::new(read_u32(index, 0))
}

/// Bytes from the start of a slab slot to the end of the current keys' receive half: the
/// part of a slot [`Endpoint::hot_state`] names. This and the two offsets below assume
/// `Option<Peer>` and `Option<KeySet>` hold their value at offset 0 (both have niches);
/// `the_hot_state_covers_what_a_received_packet_reads` and
/// `the_send_state_covers_what_sealing_reads_and_not_the_receive_half` check it on a live
/// peer.
const RECEIVE_EXTENT: usize = std::mem::offset_of!(PeerEntry, peer)
    + std::mem::offset_of!(Peer, current)
    + KeySet::RECEIVE_EXTENT;

/// Where, from the start of a slab slot, the current keys' replay bitmap word for `counter`
/// lies: outside the run above, so named on its own.
fn replay_word_offset(counter: Counter) -> usize {
    HOT_FIELDS_END + KeySet::replay_word_offset(counter)
}

/// Bytes from the start of a slab slot to the end of the peer's hot fields, where the current
/// key set begins: the first part of what [`Endpoint::send_state`] names.
const HOT_FIELDS_END: usize =
    std::mem::offset_of!(PeerEntry, peer) + std::mem::offset_of!(Peer, current);

/// Where, from the start of a slab slot, the current keys' send half and the send counters
/// after it lie: the second part.
const SEND_KEYS: (usize, usize) = (
    HOT_FIELDS_END + KeySet::SEND_START,
    std::mem::offset_of!(PeerEntry, peer) + std::mem::offset_of!(Peer, drops),
);

/// A slot of the peer slab; the generation changes on removal, so stale `PeerId`s miss.
/// The peer is inline, not boxed: a packet's slot number is then enough to know where its
/// state lies, without loading a pointer first (`Endpoint::hot_state`). `repr(C)`: the
/// generation, checked for every packet, leads, in the peer's first line. Aligned to a
/// cache line, so that every slot's hot run spans the fewest lines, whatever its number.
#[repr(C, align(64))]
pub(super) struct PeerEntry {
    pub(super) generation: u32,
    pub(super) peer: Option<Peer>,
}

impl Endpoint {
    pub(super) fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers
            .get(id.slot as usize)
            .filter(|e| e.generation == id.generation)
            .and_then(|e| e.peer.as_ref())
    }

    pub(super) fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        peer_in(&mut self.peers, id)
    }

    /// Handles of all live peers. Allocates: only for rare, whole-endpoint operations.
    pub(super) fn peer_ids(&self) -> Vec<PeerId> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, e)| e.peer.is_some())
            .map(|(slot, e)| PeerId {
                slot: slot as u32,
                generation: e.generation,
            })
            .collect()
    }

    pub(super) fn live_peers(&self) -> usize {
        self.peers.len() - self.free_peers.len()
    }

    pub(super) fn insert_peer(
        &mut self,
        now: Timestamp,
        public_key: PublicKey,
        addr: SocketAddr,
    ) -> Option<PeerId> {
        if self.live_peers() >= self.config.max_peers {
            return None;
        }
        let peer = Peer {
            live: Live::Yes,
            public_key,
            addr,
            established: false,
            we_initiated: false,
            current: None,
            spare: None,
            previous_expires: now,
            handshake: None,
            cookie: None,
            finish_tag: [0; TAG_LEN],
            bucket: TokenBucket::new(self.config.rate_pps, self.config.rate_burst, now),
            stray: TokenBucket::new(STRAY_RATE, STRAY_BURST, now),
            strikes: Strikes::new(),
            sender: None,
            receiver: None,
            // Until told otherwise, the peer is assumed to be configured like us (as
            // `ReliableSender::new` assumes).
            peer_window: self.config.reliable.queue_bound(),
            last_received: now,
            last_sent: now,
            ack_queued: false,
            keepalive_queued: false,
            retransmit_queued: false,
            timers_armed: false,
            closing: None,
            peer_reason: None,
            packets_received: 0,
            packets_sent: 0,
            drops: 0,
            timers: TimerTable::default(),
            scheduled: Timestamp::NEVER,
        };
        let id = match self.free_peers.pop() {
            Some(slot) => {
                let entry = self.peers.get_mut(slot as usize)?;
                entry.peer = Some(peer);
                PeerId {
                    slot,
                    generation: entry.generation,
                }
            }
            None => {
                let slot = u32::try_from(self.peers.len()).ok()?;
                self.peers.push(PeerEntry {
                    generation: 1,
                    peer: Some(peer),
                });
                PeerId {
                    slot,
                    generation: 1,
                }
            }
        };
        self.by_key.insert(public_key, id);
        self.arm(id, Timer::Keepalive, now + self.config.keepalive_interval);
        Some(id)
    }

    /// Installs `keyset` as a new session in place of one the peer had (it restarted, or
    /// one side started over after its handshake went unconfirmed). The old session ends as
    /// `Replaced`: both directions of Reliable delivery start again from sequence 0 on both
    /// sides (the peer does the same), what was unacknowledged is reported abandoned, and the
    /// application sees `PeerDown` then `PeerUp`.
    pub(super) fn replace_session(
        &mut self,
        now: Timestamp,
        id: PeerId,
        keyset: KeySet,
        src: SocketAddr,
        we_initiated: bool,
    ) {
        let was_established = self.peer(id).is_some_and(|p| p.established);
        if was_established {
            self.abandon_reliable(id);
        }
        let window = self.config.reliable.queue_bound();
        let Some(public_key) = self.install_keys(now, id, keyset, src, we_initiated) else {
            return;
        };
        if let Some(peer) = peer_in(&mut self.peers, id) {
            // New streams are made, from sequence 0, by the next Reliable traffic.
            peer.release_reliable(&mut self.pools);
            peer.peer_window = window;
            peer.strikes = Strikes::new();
            peer.ack_queued = false;
            peer.retransmit_queued = false;
        }
        if was_established {
            self.stats.record_close(CloseReason::Replaced);
            self.events.push_back(QueuedEvent::Down {
                peer: id,
                public_key,
                reason: CloseReason::Replaced,
                peer_reason: None,
            });
        }
        self.events.push_back(QueuedEvent::Up {
            peer: id,
            public_key,
            addr: src,
        });
    }

    /// Simultaneous open, the side that lost: the peer's handshake completed while ours was
    /// still unconfirmed, so ours is dropped and the peer's keys become the session. Nothing
    /// was ever delivered under our keys (the peer refused them), so Reliable streams go on
    /// as they are, and `PeerUp` is reported only if it was not already.
    pub(super) fn adopt_session(
        &mut self,
        now: Timestamp,
        id: PeerId,
        keyset: KeySet,
        src: SocketAddr,
    ) {
        let came_up = self.peer(id).is_some_and(|p| !p.established);
        let Some(public_key) = self.install_keys(now, id, keyset, src, false) else {
            return;
        };
        if came_up {
            self.events.push_back(QueuedEvent::Up {
                peer: id,
                public_key,
                addr: src,
            });
        }
    }

    /// What a new session and an adopted one share: `keyset` becomes the only key set, at
    /// `src`, every other index of the peer is freed, and a handshake of ours is forgotten
    /// unless we initiated this session (its HandshakeFinish is still being confirmed).
    /// Returns the peer's key, or `None` for a stale handle.
    fn install_keys(
        &mut self,
        now: Timestamp,
        id: PeerId,
        keyset: KeySet,
        src: SocketAddr,
        we_initiated: bool,
    ) -> Option<PublicKey> {
        let keep = keyset.local_index;
        let peer = peer_in(&mut self.peers, id)?;
        // At most three key sets and one handshake: no allocation needed to free them.
        let mut old = [None; 4];
        for (slot, index) in old
            .iter_mut()
            .zip(peer.session_indexes().filter(|&i| i != keep))
        {
            *slot = Some(index);
        }
        peer.current = Some(keyset);
        if let Some(spare) = peer.spare.take() {
            self.pools.put_spare_keys(spare);
        }
        if !we_initiated {
            peer.handshake = None;
        }
        peer.established = true;
        peer.we_initiated = we_initiated;
        peer.addr = src;
        peer.last_received = now;
        let public_key = peer.public_key;
        for index in old.into_iter().flatten() {
            self.free_index(index);
        }
        Some(public_key)
    }

    /// Reports (and counts) the Reliable messages of `id` that were never acknowledged, as
    /// its session ends or is replaced.
    pub(super) fn abandon_reliable(&mut self, id: PeerId) {
        let Some(peer) = self.peer(id) else {
            return;
        };
        let Some((messages, bytes)) = peer.sender.as_deref().map(|s| s.unacknowledged()) else {
            return;
        };
        if messages == 0 {
            return;
        }
        self.stats.reliable_abandoned += messages;
        self.events.push_back(QueuedEvent::Abandoned {
            peer: id,
            messages,
            bytes: bytes as u64,
        });
    }

    pub(super) fn remove_peer(&mut self, id: PeerId) {
        let Some(entry) = self
            .peers
            .get_mut(id.slot as usize)
            .filter(|e| e.generation == id.generation)
        else {
            return;
        };
        let Some(mut peer) = entry.peer.take() else {
            return;
        };
        entry.generation = entry.generation.wrapping_add(1).max(1);
        self.free_peers.push(id.slot);
        if self.by_key.get(&peer.public_key) == Some(&id) {
            self.by_key.remove(&peer.public_key);
        }
        for index in peer.session_indexes() {
            self.free_index(index);
        }
        // After the indexes: the spare key sets hold some of them.
        peer.release_cold(&mut self.pools);
    }

    /// Where the state lies that `handle_datagram` will read for a transport packet whose
    /// first bytes are `header`; `None` for anything else (handshake packets, junk, an index
    /// we did not issue). 8 bytes are enough to name the peer's hot run; with the whole
    /// 16-byte header the counter also names the replay window's word the packet reads
    /// (without it that word is not named). Reads the header and the index table, changes
    /// nothing, never fails on any input.
    ///
    /// A receive loop that knows the next datagram of its batch asks for it while handling
    /// the current one and prefetches the lines: with thousands of peers, each packet's
    /// peer is otherwise a run of cache misses on the critical path (perf/README.md).
    pub fn hot_state(&self, header: &[u8]) -> Option<HotState> {
        let index = transport_index(header)?;
        let Some(SlotTarget::Keys(id)) = self.lookup(index) else {
            return None;
        };
        // The slot, found from its number alone: reading anything of the peer here would
        // wait for the very cache misses the hint is meant to hide. Only what a received
        // packet reads, the hot fields and the current keys' receive half: prefetching the
        // send key and the cold tail too would queue lines the packet never touches ahead of
        // those it waits for.
        let entry = self.peers.get(id.slot as usize)?;
        let start = std::ptr::from_ref(entry).cast::<u8>();
        let word = header
            .get(8..16)
            .map(|counter| start.wrapping_add(replay_word_offset(Counter(read_u64(counter, 0)))));
        Some(HotState {
            start,
            end: start.wrapping_add(RECEIVE_EXTENT),
            word,
        })
    }

    /// Where the state lies that sending to `peer` reads and writes: the slot's hot fields
    /// and the current keys' send half (the receive half between them is not needed).
    /// `None` for a slot number out of range. Reads nothing of the peer, not even whether
    /// the handle is stale: a hint for memory, never to be read through.
    ///
    /// A loop that sends one message to many peers (a publish, a hub's relay) asks for the
    /// next peer's state while it seals for the current one: with thousands of peers each
    /// is otherwise a run of cache misses on the critical path (`intentra::Node` does this in
    /// `publish`).
    pub fn send_state(&self, peer: PeerId) -> Option<SendState> {
        let entry = self.peers.get(peer.slot as usize)?;
        let start = std::ptr::from_ref(entry).cast::<u8>();
        Some(SendState {
            hot: HotState::range(start, start.wrapping_add(HOT_FIELDS_END)),
            keys: HotState::range(
                start.wrapping_add(SEND_KEYS.0),
                start.wrapping_add(SEND_KEYS.1),
            ),
        })
    }

    /// Where the peer slab lies: the `max_peers` slots reserved when the endpoint was made,
    /// which hold every peer's state for as long as the endpoint lives (the slab never moves).
    /// For memory advice before the slots are first touched, such as huge pages
    /// (`intentra::advise_huge_pages`): with thousands of peers each packet's slot is
    /// otherwise a TLB miss on top of its cache misses. Addresses only, never to be read
    /// through.
    pub fn peer_table_memory(&self) -> TableMemory {
        TableMemory {
            start: self.peers.as_ptr().cast(),
            len: self
                .peers
                .capacity()
                .saturating_mul(std::mem::size_of::<PeerEntry>()),
        }
    }

    /// Where the index-table entry lies that [`Endpoint::hot_state`] (and then
    /// `handle_datagram`) will read first for a transport packet whose first bytes are
    /// `header` (8 are enough): the line or two holding the entries a lookup of its receiver
    /// index probes first. `None` for anything that is not a transport packet. Reads only
    /// the header and the table's base, key and size, never an entry, so it costs no cache
    /// miss; changes nothing, never fails on any input. The range is there whether or not
    /// the index is live: finding out would take the very read this hint is meant to hide.
    ///
    /// The first stage of a two-stage hint: `hot_state` itself waits for this entry before
    /// it can name the peer's slot, so with random indexes over thousands of sessions the
    /// slot's prefetch starts late. A receive loop that can see two datagrams ahead
    /// prefetches these lines for the datagram after next and the `hot_state` lines for the
    /// next one, whose table entry is then already on its way in.
    pub fn index_hint(&self, header: &[u8]) -> Option<HotState> {
        let index = transport_index(header)?;
        let (entry, end) = self.indexes.home_range(index.get());
        // The entries straddle cache lines; starting at the line boundary lets `lines` name
        // every line they touch.
        let start = entry.wrapping_sub(entry as usize % CACHE_LINE);
        Some(HotState::range(start, end))
    }

    pub(super) fn lookup(&self, index: SessionIndex) -> Option<SlotTarget> {
        self.indexes.get(index)
    }

    pub(super) fn alloc_index(&mut self, target: SlotTarget) -> Option<SessionIndex> {
        self.indexes.insert(target, &mut *self.rng)
    }

    pub(super) fn free_index(&mut self, index: SessionIndex) {
        self.indexes.remove(index);
    }
}

/// A peer by handle, borrowing only the peer table so other fields stay usable.
pub(super) fn peer_in(peers: &mut [PeerEntry], id: PeerId) -> Option<&mut Peer> {
    peers
        .get_mut(id.slot as usize)
        .filter(|e| e.generation == id.generation)
        .and_then(|e| e.peer.as_mut())
}

#[cfg(test)]
mod tests {
    use super::{HotState, CACHE_LINE};

    #[test]
    fn the_hint_names_every_line_a_range_touches_even_off_a_line_boundary() {
        let bytes = [0u8; 4 * CACHE_LINE];
        let base = bytes.as_ptr();
        let aligned = base.wrapping_add(CACHE_LINE - (base as usize) % CACHE_LINE);
        // 70 bytes from 60 bytes into a line span that line and the next two.
        let start = aligned.wrapping_add(60);
        let hint = HotState::range(start, start.wrapping_add(70));
        let lines: Vec<usize> = hint.lines().map(|line| line as usize).collect();
        let first = aligned as usize;
        assert_eq!(lines, [first, first + CACHE_LINE, first + 2 * CACHE_LINE]);
        let empty = HotState::range(start, start);
        assert_eq!(empty.lines().count(), 1, "the line holding `start`");
    }

    #[test]
    fn a_lone_word_adds_its_line_once() {
        let bytes = [0u8; 6 * CACHE_LINE];
        let base = bytes.as_ptr();
        let aligned = base.wrapping_add(CACHE_LINE - (base as usize) % CACHE_LINE);
        let first = aligned as usize;
        let with_word = |word: usize| {
            HotState {
                start: aligned,
                end: aligned.wrapping_add(CACHE_LINE + 8),
                word: Some(aligned.wrapping_add(word)),
            }
            .lines()
            .map(|line| line as usize)
            .collect::<Vec<_>>()
        };
        // Beyond the range: its own line, the one that holds it.
        let far = with_word(4 * CACHE_LINE + 40);
        assert_eq!(
            far,
            [first, first + CACHE_LINE, first + 4 * CACHE_LINE + 40]
        );
        assert_eq!(far[2] / CACHE_LINE, (first + 4 * CACHE_LINE) / CACHE_LINE);
        // Within a line the range names already (even past `end`): not again.
        assert_eq!(with_word(CACHE_LINE + 32), [first, first + CACHE_LINE]);
    }
}
