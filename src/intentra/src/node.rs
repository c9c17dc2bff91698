//! The event loop: one endpoint, one socket, one thread.
//!
//! Owns the clock (read once per batch with `quanta`), the receive and send
//! buffers (allocated once), the application's callbacks and the metrics
//! publication. Each turn: wait for a datagram or the next deadline, hand every
//! received datagram to the endpoint in place, run timers, drain events into
//! the callbacks, drain control packets, flush sends. It must never block on
//! anything but the socket wait, and it publishes metrics by copying counters
//! into the hub a few times a second, never per packet.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;

use crate::capture::Recorder;
use crate::handle::{
    event_queue, Batch, Command, ConnectTarget, EventDrops, EventSink, Events, Handle,
    HandleConfig, HandleShared, HandleStats, NodeEvent, WaiterSlot,
};
use crate::metrics::{BucketCounts, MetricsHub, PeerSnapshot};
use intentra_proto::wire::{MAX_DATAGRAM_LEN, MAX_RELIABLE_PAYLOAD};
use intentra_proto::{
    Bundled, ConnectError, Event, Message, Mode, PeerId, PeerInfo, SendError, Sent,
};
use intentra_proto::{
    CloseReason, DropReason, Endpoint, EndpointConfig, PublicKey, Stats, Timestamp,
};
use intentra_udp::{
    self as drivers, Datagram, Driver, DriverConfig, DriverKind, Flow, SocketConfig, Wait, Waker,
};

pub use intentra_udp::IdleStrategy;

/// How a node binds and runs.
#[derive(Clone)]
pub struct NodeConfig {
    /// The protocol core's configuration.
    pub endpoint: EndpointConfig,
    /// `Uring` falls back to `Mmsg` (and says why) where io_uring is unavailable.
    pub driver: DriverKind,
    /// What the loop does while there is nothing to do.
    pub idle: IdleStrategy,
    /// Sends made from inside a receive callback, held until the batch is done (or paused:
    /// the batch is paused and these sent before the next datagram could find less room than
    /// an earlier one asked for). Allocated at bind, `send_queue` × the largest datagram, and
    /// grown (doubling, kept once grown) when one received datagram's callbacks send more,
    /// up to `endpoint.max_peers` datagrams: a hub relaying one publish to every peer never
    /// loses a relay here.
    pub send_queue: usize,
    /// The socket: bind address, buffers, GSO/GRO, busy polling, SO_REUSEPORT.
    pub socket: SocketConfig,
    /// Batch size, ring sizes, datagram size.
    pub io: DriverConfig,
    /// Record every datagram sent and received to this pcap file.
    pub capture: Option<std::path::PathBuf>,
    /// The capture's size limit and rotation.
    pub capture_limits: crate::capture::CaptureLimits,
    /// Bounds of the cross-thread queues ([`Handle`], [`Events`]) and of the per-peer
    /// deferred Reliable sends.
    pub handle: HandleConfig,
    /// Smart batching (PROTOCOL.md 7.5): messages for one peer that [`Handle`]s queued
    /// together (consecutive sends to it, or consecutive publishes), and the Realtime
    /// messages callbacks send to it while one receive batch is handled (a hub's relays),
    /// go out in as few sealed datagrams as they fit, each delivered separately, in the
    /// order sent; a lone message is sent as its own packet, and nothing ever waits to fill
    /// a datagram (a callback's sends leave when its batch is handled). On by default. Off,
    /// every message is its own datagram. Either way the node receives bundles.
    pub bundling: bool,
}

impl NodeConfig {
    /// Defaults: the fastest driver the host allows, blocking idle, GSO and GRO on.
    pub fn new(bind: SocketAddr, endpoint: EndpointConfig) -> NodeConfig {
        NodeConfig {
            endpoint,
            driver: drivers::best_available(),
            idle: IdleStrategy::Block,
            send_queue: 256,
            socket: SocketConfig::new(bind),
            io: DriverConfig::default(),
            capture: None,
            capture_limits: Default::default(),
            handle: HandleConfig::default(),
            bundling: true,
        }
    }
}

/// Sends made while the driver is handing out received datagrams: the driver's buffers are
/// busy then, so these are sealed here (buffers allocated once) and moved over after the batch.
///
/// A batch must never ask for more than this holds: `turn` pauses the batch (see
/// [`Driver::recv_until`]) once the room left is less than the most one received datagram has
/// asked for, moves these to the driver and flushes, and takes the rest of the batch in the
/// next turn. One datagram whose own callbacks ask for more than `capacity` (a hub relaying
/// one publish to more subscribers than that) grows it, doubling up to `limit`, the most
/// peers the node may have: kept once grown, so that fan-out allocates only the first time it
/// reaches a new width. Only sends beyond `limit` for one datagram are refused (the callback
/// sees the error).
struct DeferredSends {
    buffers: Vec<u8>,
    meta: Vec<(SocketAddr, usize)>,
    capacity: usize,
    /// The most `capacity` may grow to.
    limit: usize,
    /// Slots asked for since bind, granted or not.
    asked: usize,
    /// The most slots the handling of one received datagram has asked for (at most
    /// `capacity`): the room a datagram is given before it is handed over.
    reserve: usize,
}

impl DeferredSends {
    fn new(capacity: usize, limit: usize) -> DeferredSends {
        DeferredSends {
            buffers: vec![0u8; capacity * MAX_DATAGRAM_LEN],
            meta: Vec::with_capacity(capacity),
            capacity,
            limit: limit.max(capacity),
            asked: 0,
            reserve: 0,
        }
    }

    fn slot(&mut self) -> Option<&mut [u8]> {
        self.asked = self.asked.wrapping_add(1);
        let at = self.meta.len();
        if at >= self.capacity && !self.grow() {
            return None;
        }
        self.buffers
            .get_mut(at * MAX_DATAGRAM_LEN..(at + 1) * MAX_DATAGRAM_LEN)
    }

    /// Doubles the slots, up to `limit`; false when already there.
    fn grow(&mut self) -> bool {
        if self.capacity >= self.limit {
            return false;
        }
        let capacity = self.capacity.saturating_mul(2).clamp(1, self.limit);
        self.buffers.resize(capacity * MAX_DATAGRAM_LEN, 0);
        self.meta
            .reserve_exact(capacity.saturating_sub(self.meta.len()));
        self.capacity = capacity;
        true
    }

    /// After one received datagram was handled (`asked_before` read before it): whether the
    /// batch must pause so the next datagram finds as much room as any before it needed.
    fn must_pause(&mut self, asked_before: usize) -> bool {
        let asked = self.asked.wrapping_sub(asked_before).min(self.capacity);
        self.reserve = self.reserve.max(asked);
        self.capacity - self.meta.len() < self.reserve
    }

    /// Commits every held packet to the driver, flushing it whenever its slots are all
    /// committed. Returns what those flushes did.
    fn move_to(&mut self, driver: &mut dyn Driver) -> io::Result<drivers::SendStats> {
        let mut stats = drivers::SendStats::default();
        for (i, &(dst, len)) in self.meta.iter().enumerate() {
            let packet = &self.buffers[i * MAX_DATAGRAM_LEN..i * MAX_DATAGRAM_LEN + len];
            if driver.send_buffer().is_none() {
                stats += driver.flush()?;
            }
            let Some(mut slot) = driver.send_buffer() else {
                continue;
            };
            if let Some(out) = slot.buf().get_mut(..len) {
                out.copy_from_slice(packet);
                // A refused commit (length over the slot) leaves nothing queued.
                let _ = slot.commit(dst, len);
            }
        }
        self.meta.clear();
        Ok(stats)
    }
}

/// Where a sealed packet goes: straight into the driver's buffer, or deferred; recorded on
/// the way when capturing.
struct Sink<'a> {
    target: Target<'a>,
    recorder: Option<&'a mut Recorder>,
}

enum Target<'a> {
    Driver(&'a mut dyn Driver),
    Deferred(&'a mut DeferredSends),
}

impl Target<'_> {
    fn reborrow(&mut self) -> Target<'_> {
        match self {
            Target::Driver(driver) => Target::Driver(&mut **driver),
            Target::Deferred(deferred) => Target::Deferred(deferred),
        }
    }
}

impl<'a> Sink<'a> {
    fn driver(driver: &'a mut dyn Driver, recorder: &'a mut Option<Recorder>) -> Sink<'a> {
        Sink {
            target: Target::Driver(driver),
            recorder: recorder.as_mut(),
        }
    }
}

/// No send buffer could be had, even after a flush.
struct NoBuffer;

impl Sink<'_> {
    /// Lets `fill` write one packet into a send buffer; `fill` returns where it goes and how
    /// long it is, or `None` to write nothing. Returns whether a packet was committed.
    fn write(
        &mut self,
        fill: impl FnOnce(&mut [u8]) -> Option<(SocketAddr, usize)>,
    ) -> Result<bool, NoBuffer> {
        let recorder = &mut self.recorder;
        let fill = |buf: &mut [u8]| {
            let (dst, len) = fill(buf)?;
            if let (Some(recorder), Some(packet)) = (recorder.as_deref_mut(), buf.get(..len)) {
                recorder.sent(dst, packet);
            }
            Some((dst, len))
        };
        match &mut self.target {
            Target::Driver(driver) => {
                if driver.send_buffer().is_none() {
                    // Every send slot is committed: send them, then go on.
                    if let Err(err) = driver.flush() {
                        tracing::debug!(error = %err, "send flush failed");
                    }
                }
                let mut slot = driver.send_buffer().ok_or(NoBuffer)?;
                let Some((dst, len)) = fill(slot.buf()) else {
                    return Ok(false);
                };
                slot.commit(dst, len).map_err(|_| NoBuffer)?;
                Ok(true)
            }
            Target::Deferred(deferred) => {
                let buf = deferred.slot().ok_or(NoBuffer)?;
                let Some((dst, len)) = fill(buf) else {
                    return Ok(false);
                };
                deferred.meta.push((dst, len));
                Ok(true)
            }
        }
    }
}

/// One Reliable message waiting for room in its peer's window.
#[derive(Debug, Clone, Copy)]
struct DeferredMsg {
    slot: u32,
    len: u16,
    /// The `send_timeout` waiter to settle when it goes (or fails).
    waiter: Option<WaiterSlot>,
    /// Queued by a `Handle` (counted in its stats) rather than a callback.
    from_handle: bool,
}

/// Backpressure state: the peers whose Reliable window said `WouldBlock` (for
/// `Writable`), and the Reliable messages waiting for room, in per-peer queues over
/// one pool of slots allocated at bind.
pub(crate) struct Backlog {
    /// Blocked peers and the smallest message their window refused.
    blocked: HashMap<PeerId, usize>,
    queues: HashMap<PeerId, VecDeque<DeferredMsg>>,
    slots: Vec<u8>,
    free: Vec<u32>,
    per_peer: usize,
    scratch: Vec<PeerId>,
    writable: Vec<PeerId>,
}

const DEFERRED_SLOT: usize = MAX_RELIABLE_PAYLOAD;

impl Backlog {
    fn new(config: &HandleConfig) -> Backlog {
        let total = config.deferred_total.min(u32::MAX as usize);
        Backlog {
            blocked: HashMap::with_capacity(64),
            queues: HashMap::with_capacity(64),
            slots: vec![0u8; total * DEFERRED_SLOT],
            free: (0..total as u32).rev().collect(),
            per_peer: config.deferred_per_peer,
            scratch: Vec::with_capacity(64),
            writable: Vec::with_capacity(64),
        }
    }

    fn note_would_block(&mut self, peer: PeerId, len: usize) {
        let need = self.blocked.entry(peer).or_insert(len);
        *need = (*need).min(len);
    }

    fn has_queue(&self, peer: PeerId) -> bool {
        self.queues.get(&peer).is_some_and(|q| !q.is_empty())
    }

    /// Holds a copy of `payload` behind the peer's other deferred messages; false when the
    /// peer's queue or the pool is full.
    fn defer(
        &mut self,
        peer: PeerId,
        payload: &[u8],
        waiter: Option<WaiterSlot>,
        from_handle: bool,
    ) -> bool {
        if payload.len() > DEFERRED_SLOT {
            return false;
        }
        let per_peer = self.per_peer;
        let queue = self
            .queues
            .entry(peer)
            .or_insert_with(|| VecDeque::with_capacity(per_peer));
        if queue.len() >= per_peer {
            return false;
        }
        let Some(slot) = self.free.pop() else {
            return false;
        };
        let at = slot as usize * DEFERRED_SLOT;
        let Some(out) = self.slots.get_mut(at..at + payload.len()) else {
            self.free.push(slot);
            return false;
        };
        out.copy_from_slice(payload);
        queue.push_back(DeferredMsg {
            slot,
            len: payload.len() as u16,
            waiter,
            from_handle,
        });
        self.note_would_block(peer, payload.len());
        true
    }

    /// Messages waiting for room, over every peer.
    fn deferred_len(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }
}

/// What a Reliable send that may wait for room did.
enum Outcome {
    Sent,
    Deferred,
    Failed(SendError),
}

/// Sends, and remembers a `WouldBlock` so that `Writable` fires once there is room.
fn send_noted(
    endpoint: &mut Endpoint,
    sink: &mut Sink<'_>,
    backlog: &mut Backlog,
    now: Timestamp,
    peer: PeerId,
    mode: Mode,
    payload: &[u8],
) -> Result<(), SendError> {
    let result = send_one(endpoint, sink, now, peer, mode, payload);
    if result == Err(SendError::WouldBlock) {
        backlog.note_would_block(peer, payload.len());
    }
    result
}

/// A Reliable send that waits (in the peer's deferred queue) when the window is full, and
/// goes behind whatever already waits there, so the peer's messages keep their order.
#[allow(clippy::too_many_arguments)]
fn send_or_defer(
    endpoint: &mut Endpoint,
    sink: &mut Sink<'_>,
    backlog: &mut Backlog,
    now: Timestamp,
    peer: PeerId,
    payload: &[u8],
    waiter: Option<WaiterSlot>,
    from_handle: bool,
) -> Outcome {
    if backlog.has_queue(peer) {
        return if backlog.defer(peer, payload, waiter, from_handle) {
            Outcome::Deferred
        } else {
            Outcome::Failed(SendError::WouldBlock)
        };
    }
    match send_one(endpoint, sink, now, peer, Mode::Reliable, payload) {
        Ok(()) => Outcome::Sent,
        Err(SendError::WouldBlock) => {
            backlog.note_would_block(peer, payload.len());
            if backlog.defer(peer, payload, waiter, from_handle) {
                Outcome::Deferred
            } else {
                Outcome::Failed(SendError::WouldBlock)
            }
        }
        Err(err) => Outcome::Failed(err),
    }
}

/// Realtime messages the callbacks send while one receive batch is handled, held until the
/// batch is done so that those for one peer leave in as few sealed datagrams as they fit
/// (PROTOCOL.md 7.5): a hub relaying a publisher's bundle sends each subscriber one datagram,
/// not one per message. Only with `NodeConfig::bundling`. Preallocated at bind; when full,
/// what it holds is sent (into the batch's deferred sends) and it starts over. A message's
/// refusals (unknown peer, no session yet, too large) are answered when it is held, so
/// `Context::send` answers as it would have without it.
struct Outbox {
    bytes: Vec<u8>,
    held: Vec<Held>,
}

/// One held message: its peer and where its bytes are in `Outbox::bytes` (which only grows
/// until it is emptied, so `at` also orders the messages as they were held).
#[derive(Clone, Copy)]
struct Held {
    peer: PeerId,
    at: u32,
    len: u32,
}

/// Room of the outbox: many more small messages than one datagram holds, so a batch's relays
/// to one peer are seldom split by a full outbox.
const OUTBOX_BYTES: usize = 64 * 1024;
const OUTBOX_MESSAGES: usize = 1024;

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            bytes: Vec::with_capacity(OUTBOX_BYTES),
            held: Vec::with_capacity(OUTBOX_MESSAGES),
        }
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Keeps a copy of `payload` for `peer`; false (nothing kept) when there is no room.
    fn hold(&mut self, peer: PeerId, payload: &[u8]) -> bool {
        let at = self.bytes.len();
        let fits = self.held.len() < OUTBOX_MESSAGES && at + payload.len() <= OUTBOX_BYTES;
        let (Ok(at32), Ok(len)) = (u32::try_from(at), u32::try_from(payload.len())) else {
            return false;
        };
        if !fits {
            return false;
        }
        self.bytes.extend_from_slice(payload);
        self.held.push(Held {
            peer,
            at: at32,
            len,
        });
        true
    }

    /// Sends everything held, bundled per peer in the order it was held, and empties the
    /// outbox. Returns how many messages could not be sent (their session ended meanwhile,
    /// or no send buffer was left), which the caller counts as send drops.
    fn send_all(
        &mut self,
        endpoint: &mut Endpoint,
        sink: &mut Sink<'_>,
        backlog: &mut Backlog,
        now: Timestamp,
    ) -> u64 {
        // In place and without allocating: by peer, then by position (= order held).
        self.held.sort_unstable_by_key(|h| (h.peer, h.at));
        let mut failed = 0;
        let mut rest = &self.held[..];
        while let Some(first) = rest.first() {
            let run = rest.iter().take_while(|h| h.peer == first.peer).count();
            let (same_peer, after) = rest.split_at(run);
            let bytes = &self.bytes;
            let messages = same_peer.iter().map(|h| {
                let at = h.at as usize;
                (Mode::Realtime, &bytes[at..at + h.len as usize])
            });
            send_bundled(
                endpoint,
                sink,
                backlog,
                now,
                first.peer,
                messages,
                false,
                &mut |outcome| {
                    if matches!(outcome, Outcome::Failed(_)) {
                        failed += 1;
                    }
                },
            );
            rest = after;
        }
        self.held.clear();
        self.bytes.clear();
        failed
    }
}

/// What a callback may do: send, publish, close, inspect. Borrowed for the call only.
pub struct Context<'a> {
    endpoint: &'a mut Endpoint,
    sink: Sink<'a>,
    backlog: &'a mut Backlog,
    now: Timestamp,
    /// While a receive batch is handled with bundling on: where Realtime sends wait.
    outbox: Option<&'a mut Outbox>,
}

/// What `publish` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Peers the message was sealed for.
    pub sent: usize,
    /// Peers whose Reliable window was full.
    pub would_block: usize,
    /// Peers the send failed for, any other reason.
    pub failed: usize,
}

impl Context<'_> {
    /// The loop's clock reading for this turn.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Seals and queues one message to one peer. A Reliable `WouldBlock` is remembered:
    /// the node's `on_writable` callback (and `NodeEvent::Writable`) fires for the peer
    /// once ACKs have freed room for a message that size.
    ///
    /// With bundling on, a Realtime message sent while a receive batch is handled waits until
    /// the batch is done and leaves bundled with the others for the same peer (in the order
    /// they were sent); its refusals are answered here all the same. One that cannot leave
    /// after all (its session closed later in the batch, or no send buffer was left) is
    /// counted in the endpoint's send drops, as a Realtime message the kernel refused is.
    pub fn send(&mut self, peer: PeerId, mode: Mode, payload: &[u8]) -> Result<(), SendError> {
        if mode == Mode::Realtime {
            if let Some(outbox) = self.outbox.as_deref_mut() {
                self.endpoint.check_realtime(peer, payload.len())?;
                if outbox.hold(peer, payload) {
                    return Ok(());
                }
                // Full: what it holds goes out now (still before this message), then this.
                let failed = outbox.send_all(self.endpoint, &mut self.sink, self.backlog, self.now);
                self.endpoint.record_send_drops(failed);
                if outbox.hold(peer, payload) {
                    return Ok(());
                }
            }
        }
        send_noted(
            self.endpoint,
            &mut self.sink,
            self.backlog,
            self.now,
            peer,
            mode,
            payload,
        )
    }

    /// Sends what the outbox holds, so that what follows cannot overtake it.
    fn send_held(&mut self) {
        if let Some(outbox) = self.outbox.as_deref_mut().filter(|o| !o.is_empty()) {
            let failed = outbox.send_all(self.endpoint, &mut self.sink, self.backlog, self.now);
            self.endpoint.record_send_drops(failed);
        }
    }

    /// Sends a Reliable message now, or, when the peer's window is full, holds a copy in
    /// the peer's bounded deferred queue (`HandleConfig::deferred_per_peer`, allocated at
    /// bind) and sends it, in order, as soon as ACKs free room. `Ok` means sent or held;
    /// `Err(WouldBlock)` means the deferred queue is full too and nothing was kept. A
    /// plain `send` to the same peer while messages wait would overtake them.
    pub fn send_when_writable(&mut self, peer: PeerId, payload: &[u8]) -> Result<(), SendError> {
        match send_or_defer(
            self.endpoint,
            &mut self.sink,
            self.backlog,
            self.now,
            peer,
            payload,
            None,
            false,
        ) {
            Outcome::Sent | Outcome::Deferred => Ok(()),
            Outcome::Failed(err) => Err(err),
        }
    }

    /// Reliable messages held by `send_when_writable` for `peer`, not yet sent.
    pub fn deferred(&self, peer: PeerId) -> usize {
        self.backlog.queues.get(&peer).map_or(0, VecDeque::len)
    }

    /// Sends `payload` to every established peer (fan-out); sends are flushed in batches.
    pub fn publish(&mut self, mode: Mode, payload: &[u8]) -> PublishReport {
        self.send_held();
        publish_all(
            self.endpoint,
            &mut self.sink,
            self.backlog,
            self.now,
            mode,
            payload,
        )
    }

    /// Starts a handshake with the peer `key` at `addr`, or returns the existing peer.
    pub fn connect(&mut self, addr: SocketAddr, key: PublicKey) -> Result<PeerId, ConnectError> {
        self.endpoint.connect(self.now, addr, key)
    }

    /// Closes the session with `peer`, telling it why.
    pub fn close(&mut self, peer: PeerId) {
        // What was sent to it before the close goes before the close.
        self.send_held();
        self.endpoint.close(self.now, peer);
    }

    /// Every established peer.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.endpoint.established_peers()
    }

    /// What the endpoint knows of `peer`.
    pub fn peer_info(&self, peer: PeerId) -> Option<PeerInfo> {
        self.endpoint.peer_info(peer)
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> Stats {
        self.endpoint.stats()
    }
}

/// The outcome of a Reliable message its window refused: held in the peer's deferred queue
/// (in order behind what waits there), or refused when that queue is full too.
fn defer_reliable(
    backlog: &mut Backlog,
    peer: PeerId,
    payload: &[u8],
    from_handle: bool,
) -> Outcome {
    if backlog.defer(peer, payload, None, from_handle) {
        Outcome::Deferred
    } else {
        Outcome::Failed(SendError::WouldBlock)
    }
}

/// Smart batching: sends `messages` to `peer` in as few datagrams as they fit, in order
/// (PROTOCOL.md 7.5). Reliable messages keep `send_or_defer`'s rules: behind the peer's
/// deferred queue when it has one, into it when the window refuses. `outcome` hears each
/// message's fate (not in order: a deferred one may be told before the bundle before it).
#[allow(clippy::too_many_arguments)]
fn send_bundled<'m>(
    endpoint: &mut Endpoint,
    sink: &mut Sink<'_>,
    backlog: &mut Backlog,
    now: Timestamp,
    peer: PeerId,
    messages: impl Iterator<Item = (Mode, &'m [u8])>,
    from_handle: bool,
    outcome: &mut dyn FnMut(Outcome),
) {
    let mut messages = messages.peekable();
    while messages.peek().is_some() {
        let mut added = 0;
        let mut taken = 0;
        let mut sealed = Ok(());
        let written = sink.write(|buf| {
            let mut bundle = match endpoint.bundle(now, peer, buf) {
                Ok(bundle) => bundle,
                Err(err) => {
                    sealed = Err(err);
                    return None;
                }
            };
            while let Some(&(mode, payload)) = messages.peek() {
                if mode == Mode::Reliable && backlog.has_queue(peer) {
                    outcome(defer_reliable(backlog, peer, payload, from_handle));
                } else {
                    match bundle.push(mode, payload) {
                        Ok(Bundled::Full) => break,
                        Ok(Bundled::Added) => added += 1,
                        // Held beyond the peer's window; the endpoint sends it.
                        Ok(Bundled::Queued) => outcome(Outcome::Sent),
                        Err(SendError::WouldBlock) if mode == Mode::Reliable => {
                            backlog.note_would_block(peer, payload.len());
                            outcome(defer_reliable(backlog, peer, payload, from_handle));
                        }
                        Err(err) => outcome(Outcome::Failed(err)),
                    }
                }
                messages.next();
                taken += 1;
            }
            match bundle.finish() {
                Ok(transmit) => transmit.map(|t| (t.dst, t.len)),
                Err(err) => {
                    sealed = Err(err);
                    None
                }
            }
        });
        let result = match written {
            Ok(_) => sealed,
            Err(NoBuffer) => Err(SendError::BufferTooSmall),
        };
        for _ in 0..added {
            outcome(match result {
                Ok(()) => Outcome::Sent,
                Err(err) => Outcome::Failed(err),
            });
        }
        if taken == 0 {
            // No bundle could be started (no such peer, no send buffer): every message
            // left fails the same way, as each would alone.
            let err = result.err().unwrap_or(SendError::BufferTooSmall);
            for _ in messages.by_ref() {
                outcome(Outcome::Failed(err));
            }
        }
    }
}

fn send_one(
    endpoint: &mut Endpoint,
    sink: &mut Sink<'_>,
    now: Timestamp,
    peer: PeerId,
    mode: Mode,
    payload: &[u8],
) -> Result<(), SendError> {
    // The payload is copied once, into the buffer it is sealed in; nothing else is copied.
    let mut outcome = Ok(());
    let written = sink.write(|buf| match endpoint.send(now, peer, mode, payload, buf) {
        Ok(Sent::Now(transmit)) => Some((transmit.dst, transmit.len)),
        // Accepted and stored beyond what may be in flight now: the endpoint sends it
        // when ACKs open the window, so for the caller it is sent.
        Ok(Sent::Queued) => None,
        Err(err) => {
            outcome = Err(err);
            None
        }
    });
    match written {
        Ok(_) => outcome,
        Err(NoBuffer) => Err(SendError::BufferTooSmall),
    }
}

fn publish_all(
    endpoint: &mut Endpoint,
    sink: &mut Sink<'_>,
    backlog: &mut Backlog,
    now: Timestamp,
    mode: Mode,
    payload: &[u8],
) -> PublishReport {
    let mut report = PublishReport::default();
    let mut next = next_recipient(endpoint, None);
    while let Some(peer) = next {
        next = next_recipient(endpoint, Some(peer));
        match send_noted(endpoint, sink, backlog, now, peer, mode, payload) {
            Ok(()) => report.sent += 1,
            Err(SendError::WouldBlock) => report.would_block += 1,
            Err(_) => report.failed += 1,
        }
    }
    report
}

/// The established peer after `after` (the first with `None`), for a walk that sends to
/// every peer in turn, with its send state ([`Endpoint::send_state`]) already on its way into
/// the cache: asked for before sending to the current one, it arrives while that packet is
/// sealed. With thousands of peers each is otherwise a run of cache misses (bench/core.rs,
/// `fan_out`: 1.4–2.6x faster at 10,000 peers on the host of perf/host-epyc-2026-12-07g.md;
/// on the one of perf/README.md the walk costs about the same either way). Sending to one
/// peer moves no other in the slab, so the answer is the same before the send as after it.
fn next_recipient(endpoint: &Endpoint, after: Option<PeerId>) -> Option<PeerId> {
    let next = endpoint.next_established(after);
    if let Some(state) = next.and_then(|next| endpoint.send_state(next)) {
        state.lines().for_each(drivers::prefetch);
    }
    next
}

type EventHandler = Box<dyn FnMut(&mut Context<'_>, &Event<'_>) + Send>;
type TickHandler = Box<dyn FnMut(&mut Context<'_>) + Send>;
type WritableHandler = Box<dyn FnMut(&mut Context<'_>, PeerId) + Send>;

/// Smart batching of the handles' commands from `inbox.items[start..]`: a run of sends to one
/// peer (without a `send_timeout` waiter), or a run of publishes, goes out through
/// `send_bundled`. Returns how many commands it carried out, 0 when `start` begins no run (a
/// lone command, a waiter, anything else: handled one by one).
fn bundle_run(
    endpoint: &mut Endpoint,
    sink: &mut Sink<'_>,
    backlog: &mut Backlog,
    now: Timestamp,
    inbox: &Batch<Command>,
    start: usize,
    stats: &mut HandleStats,
) -> usize {
    let items = inbox.items.get(start..).unwrap_or(&[]);
    let mut record = |outcome| match outcome {
        Outcome::Sent => stats.sent += 1,
        Outcome::Deferred => stats.deferred += 1,
        Outcome::Failed(err) => stats.failed.add(err),
    };
    let run = match items.first() {
        Some(&Command::Send {
            peer, waiter: None, ..
        }) => {
            let run = items
                .iter()
                .take_while(
                    |c| matches!(c, Command::Send { peer: p, waiter: None, .. } if *p == peer),
                )
                .count();
            if run < 2 {
                return 0;
            }
            let messages = items[..run].iter().filter_map(|c| match *c {
                Command::Send { mode, payload, .. } => Some((mode, inbox.span(payload))),
                _ => None,
            });
            send_bundled(
                endpoint,
                sink,
                backlog,
                now,
                peer,
                messages,
                true,
                &mut record,
            );
            run
        }
        Some(Command::Publish { .. }) => {
            let run = items
                .iter()
                .take_while(|c| matches!(c, Command::Publish { .. }))
                .count();
            if run < 2 {
                return 0;
            }
            let mut next = next_recipient(endpoint, None);
            while let Some(peer) = next {
                next = next_recipient(endpoint, Some(peer));
                let messages = items[..run].iter().filter_map(|c| match *c {
                    Command::Publish { mode, payload } => Some((mode, inbox.span(payload))),
                    _ => None,
                });
                send_bundled(
                    endpoint,
                    sink,
                    backlog,
                    now,
                    peer,
                    messages,
                    true,
                    &mut record,
                );
            }
            run
        }
        _ => return 0,
    };
    stats.commands += run as u64;
    run
}

/// The loop's side of the handles: the shared queues, the batch it swaps in, its counts.
struct HandleState {
    shared: Arc<HandleShared>,
    inbox: Batch<Command>,
    stats: HandleStats,
}

struct Tick {
    every: Duration,
    next: Timestamp,
    handler: TickHandler,
}

/// Where and how often a node publishes its counters.
struct Publication {
    hub: MetricsHub,
    worker: usize,
    every: Duration,
    next: Timestamp,
    per_peer: bool,
    batch_sizes: BucketCounts,
    handshake_durations: BucketCounts,
}

/// Stops a running node from another thread (or a signal handler's flag).
#[derive(Clone, Default)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    /// A handle not yet told to stop.
    pub fn new() -> ShutdownHandle {
        ShutdownHandle::default()
    }

    /// Tells the node to close every peer and return from `run`.
    pub fn shutdown(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether `shutdown` was called.
    pub fn is_shutdown(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for a signal handler to set.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// An intentra node: an endpoint on a UDP socket, driven by one thread.
///
/// ```no_run
/// use intentra::proto::EndpointConfig;
/// use intentra::proto::{Event, Mode};
/// use intentra::proto::Keypair;
/// use intentra::{Node, NodeConfig};
///
/// let keys = Keypair::generate(&mut rand_core::OsRng);
/// let mut node = Node::bind(NodeConfig::new("127.0.0.1:7700".parse()?, EndpointConfig::new(keys)))?;
/// node.on_event(|ctx, event| {
///     if let Event::Message(m) = event {
///         println!("{} bytes from {}", m.payload.len(), m.peer);
///         let _ = ctx.send(m.peer, Mode::Realtime, b"ack");
///     }
/// });
/// node.every(std::time::Duration::from_millis(1), |ctx| {
///     ctx.publish(Mode::Realtime, b"state");
/// });
/// node.run()?;
/// print!("{}", node.metrics_text());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Node {
    endpoint: Endpoint,
    driver: Box<dyn Driver>,
    deferred: DeferredSends,
    clock: quanta::Clock,
    epoch: u64,
    idle: drivers::Idler,
    on_event: Option<EventHandler>,
    ticks: Vec<Tick>,
    publication: Option<Publication>,
    shutdown: ShutdownHandle,
    scratch: Box<[u8; MAX_DATAGRAM_LEN]>,
    /// Realtime sends of the callbacks during one receive batch, bundled when it is done.
    outbox: Outbox,
    driver_note: Option<String>,
    recorder: Option<Recorder>,
    handle_config: HandleConfig,
    waker: Arc<Waker>,
    /// The last receive batch ended because the waker fired.
    woken: bool,
    handles: Option<HandleState>,
    events: Option<EventSink>,
    backlog: Backlog,
    on_writable: Option<WritableHandler>,
    bundling: bool,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(handles) = &self.handles {
            handles.shared.commands.close();
        }
        if let Some(events) = &self.events {
            events.close();
        }
    }
}

impl Node {
    /// Binds the socket and creates the endpoint. The error names the address on failure.
    pub fn bind(config: NodeConfig) -> io::Result<Node> {
        let opened = drivers::open_driver(config.driver, &config.socket, &config.io)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", config.socket.bind)))?;
        for warning in &opened.driver.caps().warnings {
            tracing::warn!(%warning, "socket");
        }
        let note = opened
            .fallback
            .map(|reason| format!("io_uring unavailable, using mmsg: {reason}"));
        let driver = opened.driver;
        let recorder = match &config.capture {
            Some(path) => Some(Recorder::create(
                path,
                driver.local_addr(),
                config.capture_limits,
            )?),
            None => None,
        };
        // When capturing, the endpoint hands out each session's transport keys for the
        // capture's key log (like SSLKEYLOGFILE); `flush` writes them.
        let max_peers = config.endpoint.max_peers;
        let mut endpoint_config = config.endpoint;
        endpoint_config.export_session_keys |= recorder.is_some();
        let rng: Box<dyn rand_core::CryptoRngCore + Send> = Box::new(OsRng);
        let clock = quanta::Clock::new();
        let epoch = clock.raw();
        let mut node = Node {
            endpoint: Endpoint::with_boxed_rng(endpoint_config, Timestamp::ZERO, rng),
            driver,
            deferred: DeferredSends::new(config.send_queue.max(1), max_peers),
            clock,
            epoch,
            idle: drivers::Idler::new(config.idle),
            on_event: None,
            ticks: Vec::new(),
            publication: None,
            shutdown: ShutdownHandle::new(),
            scratch: Box::new([0u8; MAX_DATAGRAM_LEN]),
            outbox: Outbox::new(),
            driver_note: note,
            recorder,
            handle_config: config.handle,
            waker: Arc::new(Waker::new()?),
            woken: false,
            handles: None,
            events: None,
            backlog: Backlog::new(&config.handle),
            on_writable: None,
            bundling: config.bundling,
        };
        // Before any peer touches the slab; advice only, so a refusal changes nothing else.
        match advise_huge_pages(&node.endpoint) {
            Ok(bytes) => tracing::debug!(bytes, "peer table: huge pages advised"),
            Err(error) => tracing::debug!(%error, "peer table: no huge pages"),
        }
        let now = node.now();
        node.endpoint.handle_timeout(now);
        Ok(node)
    }

    /// Why the requested driver was replaced by another, if it was.
    pub fn driver_note(&self) -> Option<&str> {
        self.driver_note.as_deref()
    }

    /// The driver that runs (after any fallback).
    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.driver.local_addr()
    }

    /// This node's static public key.
    pub fn public_key(&self) -> PublicKey {
        self.endpoint.public_key()
    }

    /// The single callback for every event: peers up and down, and messages in both modes.
    pub fn on_event(&mut self, handler: impl FnMut(&mut Context<'_>, &Event<'_>) + Send + 'static) {
        self.on_event = Some(Box::new(handler));
    }

    /// Delivery callback only: `(peer, mode, payload)`.
    pub fn on_message(&mut self, mut handler: impl FnMut(PeerId, Mode, &[u8]) + Send + 'static) {
        self.on_event(move |_, event| {
            if let Event::Message(m) = event {
                handler(m.peer, m.mode, m.payload);
            }
        });
    }

    /// Runs `handler` every `every`, inside the loop (for publishing state at a fixed rate).
    pub fn every(
        &mut self,
        every: Duration,
        handler: impl FnMut(&mut Context<'_>) + Send + 'static,
    ) {
        let next = self.now() + every;
        self.ticks.push(Tick {
            every,
            next,
            handler: Box::new(handler),
        });
    }

    /// Publishes this node's counters to `hub` as `worker` every `every` (with one series per
    /// peer when `per_peer`). The hub's lock is taken once per interval, never per packet.
    pub fn publish_metrics(
        &mut self,
        hub: MetricsHub,
        worker: usize,
        every: Duration,
        per_peer: bool,
    ) {
        self.publication = Some(Publication {
            hub,
            worker,
            every,
            next: Timestamp::ZERO,
            per_peer,
            batch_sizes: BucketCounts::batch_sizes(),
            handshake_durations: BucketCounts::handshake_seconds(),
        });
    }

    /// A handle that stops `run` from another thread or a signal handler.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// A [`Handle`] to this node for other threads (the same queue for every call and
    /// clone). The first call allocates the command queue (`NodeConfig::handle`) and has
    /// the driver watch the handle's wake-up eventfd.
    pub fn handle(&mut self) -> Handle {
        if let Some(handles) = &self.handles {
            return Handle {
                shared: handles.shared.clone(),
            };
        }
        let shared = Arc::new(HandleShared::new(
            &self.handle_config,
            self.waker.clone(),
            self.shutdown.clone(),
        ));
        self.driver.set_waker(Some(self.waker.clone()));
        let inbox = shared.commands.reader_batch();
        self.handles = Some(HandleState {
            shared: shared.clone(),
            inbox,
            stats: HandleStats::default(),
        });
        Handle { shared }
    }

    /// The node's events for an application thread: messages, peers up and down,
    /// `Writable`. Callbacks still run. A second call starts a new queue and closes the
    /// previous reader's.
    pub fn events(&mut self) -> Events {
        let (sink, events) = event_queue(&self.handle_config);
        if let Some(old) = self.events.replace(sink) {
            old.close();
        }
        events
    }

    /// Events dropped because the `Events` reader fell behind, by reason.
    pub fn event_drops(&self) -> EventDrops {
        self.events
            .as_ref()
            .map(EventSink::drops)
            .unwrap_or_default()
    }

    /// What the loop did with the commands `Handle`s queued.
    pub fn handle_stats(&self) -> HandleStats {
        self.handles.as_ref().map(|h| h.stats).unwrap_or_default()
    }

    /// Called for a peer whose Reliable window said `WouldBlock` once ACKs have freed room
    /// for a message that size (and its `send_when_writable` messages have gone out).
    pub fn on_writable(&mut self, handler: impl FnMut(&mut Context<'_>, PeerId) + Send + 'static) {
        self.on_writable = Some(Box::new(handler));
    }

    /// Reliable messages waiting for room in their peer's window, over every peer.
    pub fn deferred(&self) -> usize {
        self.backlog.deferred_len()
    }

    /// Starts a handshake with the peer `key` at `addr`, or returns the existing peer.
    pub fn connect(&mut self, addr: SocketAddr, key: PublicKey) -> Result<PeerId, ConnectError> {
        let now = self.now();
        let id = self.endpoint.connect(now, addr, key)?;
        self.pump(now);
        Ok(id)
    }

    /// Seals `payload` for `peer` and queues it for the driver; Reliable ones are kept until acknowledged.
    pub fn send(&mut self, peer: PeerId, mode: Mode, payload: &[u8]) -> Result<(), SendError> {
        let now = self.now();
        let mut sink = Sink::driver(self.driver.as_mut(), &mut self.recorder);
        send_noted(
            &mut self.endpoint,
            &mut sink,
            &mut self.backlog,
            now,
            peer,
            mode,
            payload,
        )?;
        self.flush();
        Ok(())
    }

    /// Sends `payload` to every established peer.
    pub fn publish(&mut self, mode: Mode, payload: &[u8]) -> PublishReport {
        let now = self.now();
        let mut sink = Sink::driver(self.driver.as_mut(), &mut self.recorder);
        let report = publish_all(
            &mut self.endpoint,
            &mut sink,
            &mut self.backlog,
            now,
            mode,
            payload,
        );
        self.flush();
        report
    }

    /// Every established peer.
    pub fn peers(&self) -> Vec<PeerId> {
        self.endpoint.established_peers().collect()
    }

    /// What the endpoint knows of `peer`.
    pub fn peer_info(&self, peer: PeerId) -> Option<PeerInfo> {
        self.endpoint.peer_info(peer)
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> Stats {
        self.endpoint.stats()
    }

    /// Hands every handshake refused since the last call to `refused`, with the source
    /// address it claimed (see `Endpoint::drain_refusals`).
    pub fn drain_refused_handshakes(&mut self, refused: impl FnMut(SocketAddr, DropReason)) {
        self.endpoint.drain_refusals(refused);
    }

    /// The protocol core, for queries the node does not wrap.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Replaces the allow-list: peers no longer on it are closed, the others keep their sessions.
    pub fn set_allow_list(&mut self, allow: Option<std::collections::HashSet<PublicKey>>) {
        let now = self.now();
        self.endpoint.set_allow_list(now, allow);
        self.pump(now);
    }

    /// This node's counters in the Prometheus text format (the `prometheus` feature).
    #[cfg(feature = "prometheus")]
    pub fn metrics_text(&self) -> String {
        let mut snapshot = crate::metrics::WorkerSnapshot::new(0);
        snapshot.stats = self.endpoint.stats();
        if let Some(publication) = &self.publication {
            snapshot.worker = publication.worker;
            snapshot.batch_sizes.clone_from(&publication.batch_sizes);
            snapshot
                .handshake_durations
                .clone_from(&publication.handshake_durations);
        }
        crate::metrics::encode(&[snapshot], false)
    }

    /// Runs until the shutdown handle fires; then closes every peer and flushes the closes.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.shutdown.is_shutdown() {
            self.turn(Duration::from_millis(100))?;
        }
        self.close_all(CloseReason::Shutdown);
        Ok(())
    }

    /// Runs for `duration` (bounded loops in tests and tools), without closing peers.
    pub fn run_for(&mut self, duration: Duration) -> io::Result<()> {
        let end = self.now() + duration;
        while !self.shutdown.is_shutdown() {
            let now = self.now();
            if now >= end {
                break;
            }
            let left = end.saturating_since(now);
            self.turn(left.min(Duration::from_millis(100)))?;
        }
        Ok(())
    }

    /// Runs until `done` holds or `limit` passes; returns whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Node) -> bool,
    ) -> io::Result<bool> {
        let end = self.now() + limit;
        while !done(self) {
            let now = self.now();
            if now >= end || self.shutdown.is_shutdown() {
                return Ok(false);
            }
            self.turn(end.saturating_since(now).min(Duration::from_millis(20)))?;
        }
        Ok(true)
    }

    /// Sends an authenticated close to every peer and flushes it.
    pub fn close_all(&mut self, reason: CloseReason) {
        let now = self.now();
        self.endpoint.close_all(now, reason);
        self.pump(now);
    }

    /// One turn of the loop: wait at most `max_wait` (less if a timer is due), receive a
    /// batch, run timers and callbacks, send.
    pub fn turn(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = self.now();
        let wait = self.wait_for(now, max_wait);
        let Node {
            endpoint,
            driver,
            deferred,
            on_event,
            recorder,
            events,
            backlog,
            scratch,
            outbox,
            bundling,
            ..
        } = self;
        // Realtime sends from the batch's callbacks wait in the outbox to be bundled.
        let mut outbox = bundling.then_some(outbox);
        let clock = &self.clock;
        let epoch = self.epoch;
        let mut batch_now = None;
        let received = driver.recv_until(wait, &mut |datagram: Datagram<'_>| {
            // The clock is read once per batch, when its first datagram is handed over.
            let now = *batch_now.get_or_insert_with(|| since(clock, epoch));
            if let Some(recorder) = recorder.as_mut() {
                recorder.received(datagram.src, datagram.data);
            }
            // Slots asked for by the handling of this one datagram (all of a bundle's
            // messages): the pause below keeps room for the most any datagram asked.
            let asked_before = deferred.asked;
            prefetch_ahead(
                endpoint,
                datagram.data,
                datagram.next_header,
                datagram.later_header,
            );
            for message in endpoint.handle_datagram(now, datagram.src, datagram.data) {
                // What the endpoint queued first happened first: above all the PeerUp of a
                // handshake whose last packet came earlier in this batch, which must reach
                // the application before this message from that peer. Released Reliable
                // messages wait: this one comes before them (the endpoint returns a message
                // directly only when nothing of its peer is waiting).
                dispatch_queued(
                    Dispatch::PeerEvents,
                    endpoint,
                    events.as_ref(),
                    on_event.as_mut(),
                    scratch,
                    backlog,
                    Target::Deferred(&mut *deferred),
                    outbox.as_deref_mut(),
                    recorder,
                    now,
                );
                if let Some(events) = events.as_ref() {
                    let event = NodeEvent::Message {
                        peer: message.peer,
                        mode: message.mode,
                        len: message.payload.len(),
                    };
                    events.push(event, message.payload);
                }
                if let Some(handler) = on_event.as_mut() {
                    let mut ctx = Context {
                        endpoint,
                        sink: Sink {
                            target: Target::Deferred(deferred),
                            recorder: recorder.as_mut(),
                        },
                        backlog,
                        now,
                        outbox: outbox.as_deref_mut(),
                    };
                    handler(&mut ctx, &Event::Message(message));
                }
            }
            // Stop handing out the batch while the next datagram might not find room for
            // its sends: they are moved to the driver and flushed below, and the driver
            // hands out the rest of the batch (already read, in order) next turn.
            if deferred.must_pause(asked_before) {
                Flow::Pause
            } else {
                Flow::Continue
            }
        })?;
        self.woken |= received.woken;
        for _ in 0..received.truncated {
            self.endpoint.record_external_drop(DropReason::Truncated);
        }
        match self.deferred.move_to(self.driver.as_mut()) {
            Ok(sent) => {
                let dropped = sent.dropped() as u64;
                if dropped > 0 {
                    self.endpoint.record_send_drops(dropped);
                }
            }
            Err(err) => tracing::debug!(error = %err, "deferred sends failed"),
        }
        if !self.outbox.is_empty() {
            let now = batch_now.unwrap_or_else(|| self.now());
            let mut sink = Sink::driver(self.driver.as_mut(), &mut self.recorder);
            let failed =
                self.outbox
                    .send_all(&mut self.endpoint, &mut sink, &mut self.backlog, now);
            self.endpoint.record_send_drops(failed);
        }
        if let Some(publication) = self.publication.as_mut() {
            if received.datagrams > 0 {
                publication.batch_sizes.observe(received.datagrams as f64);
            }
        }
        // A busy batch already read the clock when its first datagram arrived: timers run on
        // that reading. Only an empty (waited-out) batch needs a new one.
        let now = match batch_now {
            Some(now) => {
                self.idle.reset();
                now
            }
            None => {
                let now = self.now();
                self.idle.idle_at_most(self.wait_limit(now, max_wait));
                self.now()
            }
        };
        self.pump(now);
        Ok(())
    }

    /// How long the loop may wait before a timer, tick or publication is due.
    fn wait_limit(&self, now: Timestamp, max_wait: Duration) -> Duration {
        let mut wait = max_wait;
        let deadlines = self
            .endpoint
            .poll_timeout()
            .into_iter()
            .chain(self.ticks.iter().map(|t| t.next))
            .chain(self.publication.as_ref().map(|p| p.next));
        for deadline in deadlines {
            wait = wait.min(deadline.saturating_since(now));
        }
        wait
    }

    fn wait_for(&self, now: Timestamp, max_wait: Duration) -> Wait {
        if self.endpoint.has_transmit() || (self.handles.is_some() && self.waker.is_signalled()) {
            return Wait::NoWait;
        }
        self.idle.wait(Some(self.wait_limit(now, max_wait)))
    }

    /// Timers, ticks, events, control packets, flush: everything after an input.
    fn pump(&mut self, now: Timestamp) {
        self.endpoint.handle_timeout(now);
        for tick in &mut self.ticks {
            if tick.next <= now {
                tick.next = now + tick.every;
                let mut ctx = Context {
                    endpoint: &mut self.endpoint,
                    sink: Sink::driver(self.driver.as_mut(), &mut self.recorder),
                    backlog: &mut self.backlog,
                    now,
                    outbox: None,
                };
                (tick.handler)(&mut ctx);
            }
        }
        dispatch_queued(
            Dispatch::All,
            &mut self.endpoint,
            self.events.as_ref(),
            self.on_event.as_mut(),
            &mut self.scratch,
            &mut self.backlog,
            Target::Driver(self.driver.as_mut()),
            None,
            &mut self.recorder,
            now,
        );
        self.run_commands(now);
        self.service_backlog(now);
        while self.endpoint.has_transmit() {
            let mut sink = Sink::driver(self.driver.as_mut(), &mut self.recorder);
            let endpoint = &mut self.endpoint;
            let written = sink.write(|buf| {
                endpoint
                    .poll_transmit(now, buf)
                    .map(|transmit| (transmit.dst, transmit.len))
            });
            if written.is_err() {
                break;
            }
        }
        self.flush();
        if let Some(publication) = self.publication.as_mut() {
            if publication.next <= now {
                publication.next = now + publication.every;
                let durations = &mut publication.handshake_durations;
                self.endpoint
                    .drain_handshake_durations(|took| durations.observe(took.as_secs_f64()));
                let stats = self.endpoint.stats();
                let endpoint = &self.endpoint;
                let Publication {
                    hub,
                    worker,
                    per_peer,
                    batch_sizes,
                    handshake_durations,
                    ..
                } = publication;
                hub.update(*worker, |snapshot| {
                    snapshot.stats = stats;
                    snapshot.batch_sizes.clone_from(batch_sizes);
                    snapshot.handshake_durations.clone_from(handshake_durations);
                    snapshot.peers.clear();
                    if *per_peer {
                        snapshot
                            .peers
                            .extend(endpoint.established_peers().filter_map(|id| {
                                let info = endpoint.peer_info(id)?;
                                Some(PeerSnapshot {
                                    public_key: info.public_key,
                                    addr: info.addr,
                                    rtt_us: info.srtt.map(|d| d.as_micros() as u64),
                                    packets_received: info.packets_received,
                                    packets_sent: info.packets_sent,
                                    drops: info.drops,
                                })
                            }));
                    }
                });
            }
        }
    }

    /// Takes every command the handles queued since the last turn (one lock) and carries
    /// them out. The waker is reset first, so a command queued after the take wakes the
    /// next wait.
    fn run_commands(&mut self, now: Timestamp) {
        let Some(handles) = self.handles.as_mut() else {
            return;
        };
        handles.shared.waker.reset(self.woken);
        self.woken = false;
        if !handles.shared.commands.take(&mut handles.inbox) {
            return;
        }
        let HandleState {
            shared,
            inbox,
            stats,
        } = handles;
        stats.batches += 1;
        let Node {
            endpoint,
            driver,
            recorder,
            backlog,
            events,
            bundling,
            ..
        } = self;
        let mut next = 0;
        while let Some(&command) = inbox.items.get(next) {
            let mut sink = Sink::driver(driver.as_mut(), recorder);
            let bundled = if *bundling {
                bundle_run(endpoint, &mut sink, backlog, now, inbox, next, stats)
            } else {
                0
            };
            if bundled > 0 {
                next += bundled;
                continue;
            }
            next += 1;
            stats.commands += 1;
            match command {
                Command::Send {
                    peer,
                    mode,
                    payload,
                    waiter,
                } => {
                    let payload = inbox.span(payload);
                    let mut attempt = |backlog: &mut Backlog| match mode {
                        Mode::Realtime => {
                            match send_one(endpoint, &mut sink, now, peer, mode, payload) {
                                Ok(()) => Outcome::Sent,
                                Err(err) => Outcome::Failed(err),
                            }
                        }
                        Mode::Reliable => send_or_defer(
                            endpoint, &mut sink, backlog, now, peer, payload, waiter, true,
                        ),
                    };
                    let outcome = match waiter {
                        None => Some(attempt(backlog)),
                        Some(w) => {
                            let mut outcome = None;
                            let settled = shared.waiters.settle(w, || {
                                let o = attempt(backlog);
                                let result = match o {
                                    Outcome::Sent => Some(Ok(())),
                                    Outcome::Deferred => None,
                                    Outcome::Failed(err) => Some(Err(err)),
                                };
                                outcome = Some(o);
                                result
                            });
                            if settled.is_none() {
                                stats.abandoned += 1;
                            }
                            outcome
                        }
                    };
                    match outcome {
                        Some(Outcome::Sent) => stats.sent += 1,
                        Some(Outcome::Deferred) => stats.deferred += 1,
                        Some(Outcome::Failed(err)) => stats.failed.add(err),
                        None => {}
                    }
                }
                Command::Publish { mode, payload } => {
                    let payload = inbox.span(payload);
                    let mut next = next_recipient(endpoint, None);
                    while let Some(peer) = next {
                        next = next_recipient(endpoint, Some(peer));
                        let outcome = match mode {
                            Mode::Realtime => {
                                match send_one(endpoint, &mut sink, now, peer, mode, payload) {
                                    Ok(()) => Outcome::Sent,
                                    Err(err) => Outcome::Failed(err),
                                }
                            }
                            Mode::Reliable => send_or_defer(
                                endpoint, &mut sink, backlog, now, peer, payload, None, true,
                            ),
                        };
                        match outcome {
                            Outcome::Sent => stats.sent += 1,
                            Outcome::Deferred => stats.deferred += 1,
                            Outcome::Failed(err) => stats.failed.add(err),
                        }
                    }
                }
                Command::Connect { target } => {
                    // Only `Handle::connect` writes a connect, so the bytes always decode.
                    let Some(ConnectTarget { addr, key }) =
                        ConnectTarget::decode(inbox.span(target))
                    else {
                        continue;
                    };
                    if let Err(error) = endpoint.connect(now, addr, key) {
                        stats.connect_failed += 1;
                        tracing::debug!(%addr, %error, "handle connect refused");
                        if let Some(events) = events.as_ref() {
                            let event = NodeEvent::ConnectFailed {
                                addr,
                                public_key: key,
                                error,
                            };
                            events.push(event, &[]);
                        }
                    }
                }
                Command::Close { peer } => endpoint.close(now, peer),
            }
        }
        shared.publish_stats(stats);
    }

    /// For every peer whose window said `WouldBlock`: sends its deferred messages while
    /// there is room, then, once none wait and the window has room for the smallest message
    /// it refused, fires `Writable`.
    fn service_backlog(&mut self, now: Timestamp) {
        if self.backlog.blocked.is_empty() {
            return;
        }
        let Node {
            endpoint,
            driver,
            recorder,
            backlog,
            handles,
            ..
        } = self;
        let mut handle_changed = false;
        backlog.scratch.clear();
        backlog.scratch.extend(backlog.blocked.keys().copied());
        for i in 0..backlog.scratch.len() {
            let Some(&peer) = backlog.scratch.get(i) else {
                break;
            };
            while let Some(head) = backlog.queues.get(&peer).and_then(|q| q.front().copied()) {
                let at = head.slot as usize * DEFERRED_SLOT;
                let payload = backlog
                    .slots
                    .get(at..at + usize::from(head.len))
                    .unwrap_or(&[]);
                let mut sink = Sink::driver(driver.as_mut(), recorder);
                let mut attempt =
                    || match send_one(endpoint, &mut sink, now, peer, Mode::Reliable, payload) {
                        Err(SendError::WouldBlock) => None,
                        result => Some(result),
                    };
                // None: blocked still; Some(None): abandoned; Some(Some(r)): done.
                let step = match (head.waiter, handles.as_ref()) {
                    (Some(w), Some(h)) => match h.shared.waiters.settle(w, attempt) {
                        None => Some(None),
                        Some(None) => None,
                        Some(Some(result)) => Some(Some(result)),
                    },
                    _ => attempt().map(Some),
                };
                let Some(done) = step else {
                    break;
                };
                if let Some(queue) = backlog.queues.get_mut(&peer) {
                    queue.pop_front();
                }
                backlog.free.push(head.slot);
                if let (true, Some(h)) = (head.from_handle, handles.as_mut()) {
                    handle_changed = true;
                    match done {
                        None => h.stats.abandoned += 1,
                        Some(Ok(())) => h.stats.sent += 1,
                        Some(Err(err)) => h.stats.failed.add(err),
                    }
                }
            }
            if backlog.has_queue(peer) {
                if let Some(head) = backlog.queues.get(&peer).and_then(|q| q.front()) {
                    let len = usize::from(head.len);
                    backlog.note_would_block(peer, len);
                }
                continue;
            }
            let need = backlog.blocked.get(&peer).copied().unwrap_or(0);
            match endpoint.reliable_room(peer) {
                None => {
                    backlog.blocked.remove(&peer);
                    backlog.queues.remove(&peer);
                }
                Some(room) if room >= need => {
                    backlog.blocked.remove(&peer);
                    backlog.writable.push(peer);
                }
                Some(_) => {}
            }
        }
        if handle_changed {
            if let Some(h) = handles.as_ref() {
                h.shared.publish_stats(&h.stats);
            }
        }
        if backlog.writable.is_empty() {
            return;
        }
        let mut writable = std::mem::take(&mut backlog.writable);
        for &peer in &writable {
            if let Some(events) = self.events.as_ref() {
                events.push(NodeEvent::Writable { peer }, &[]);
            }
            if let Some(handler) = self.on_writable.as_mut() {
                let mut ctx = Context {
                    endpoint: &mut self.endpoint,
                    sink: Sink::driver(self.driver.as_mut(), &mut self.recorder),
                    backlog: &mut self.backlog,
                    now,
                    outbox: None,
                };
                handler(&mut ctx, peer);
            }
        }
        writable.clear();
        self.backlog.writable = writable;
    }

    fn flush(&mut self) {
        if let Some(recorder) = self.recorder.as_mut() {
            while let Some(keys) = self.endpoint.poll_session_keys() {
                recorder.session_keys(&keys);
            }
            recorder.flush();
        }
        if self.driver.pending_sends() == 0 {
            return;
        }
        match self.driver.flush() {
            Ok(sent) => {
                let dropped = sent.dropped() as u64;
                if dropped > 0 {
                    self.endpoint.record_send_drops(dropped);
                }
            }
            Err(err) => tracing::debug!(error = %err, "send flush failed"),
        }
    }

    fn now(&self) -> Timestamp {
        since(&self.clock, self.epoch)
    }
}

/// Hands every event the endpoint has queued (peers up and down, Reliable messages
/// released in order) to the `Events` queue and the callback, oldest first. `target` is
/// where the callback's sends go: the driver, or the deferred buffers while the driver is
/// handing out a receive batch.
#[allow(clippy::too_many_arguments)]
fn dispatch_queued(
    which: Dispatch,
    endpoint: &mut Endpoint,
    events: Option<&EventSink>,
    mut on_event: Option<&mut EventHandler>,
    scratch: &mut [u8; MAX_DATAGRAM_LEN],
    backlog: &mut Backlog,
    mut target: Target<'_>,
    mut outbox: Option<&mut Outbox>,
    recorder: &mut Option<Recorder>,
    now: Timestamp,
) {
    loop {
        // Reliable messages released from the reorder buffer borrow the endpoint, which the
        // callback's context also needs: copy them to a scratch buffer first.
        let polled = match which {
            Dispatch::PeerEvents => endpoint.poll_peer_event(),
            Dispatch::All => endpoint.poll_event(),
        };
        let event = match polled {
            None => return,
            Some(Event::Message(m)) => {
                let len = m.payload.len().min(MAX_DATAGRAM_LEN);
                scratch[..len].copy_from_slice(&m.payload[..len]);
                OwnedEvent::Message(m.peer, m.mode, len)
            }
            Some(Event::PeerUp {
                peer,
                public_key,
                addr,
            }) => OwnedEvent::Other(Event::PeerUp {
                peer,
                public_key,
                addr,
            }),
            Some(Event::PeerDown {
                peer,
                public_key,
                reason,
                peer_reason,
            }) => OwnedEvent::Other(Event::PeerDown {
                peer,
                public_key,
                reason,
                peer_reason,
            }),
            Some(Event::ReliableAbandoned {
                peer,
                messages,
                bytes,
            }) => OwnedEvent::Other(Event::ReliableAbandoned {
                peer,
                messages,
                bytes,
            }),
            // An event this loop does not know yet carries nothing it must act on.
            Some(_) => continue,
        };
        if let Some(events) = events {
            match event {
                OwnedEvent::Message(peer, mode, len) => {
                    events.push(NodeEvent::Message { peer, mode, len }, &scratch[..len])
                }
                OwnedEvent::Other(Event::PeerUp {
                    peer,
                    public_key,
                    addr,
                }) => events.push(
                    NodeEvent::PeerUp {
                        peer,
                        public_key,
                        addr,
                    },
                    &[],
                ),
                OwnedEvent::Other(Event::PeerDown {
                    peer,
                    public_key,
                    reason,
                    peer_reason,
                }) => events.push(
                    NodeEvent::PeerDown {
                        peer,
                        public_key,
                        reason,
                        peer_reason,
                    },
                    &[],
                ),
                OwnedEvent::Other(Event::ReliableAbandoned {
                    peer,
                    messages,
                    bytes,
                }) => events.push(
                    NodeEvent::ReliableAbandoned {
                        peer,
                        messages,
                        bytes,
                    },
                    &[],
                ),
                OwnedEvent::Other(Event::Message(_)) => {}
                _ => {}
            }
        }
        let Some(handler) = on_event.as_deref_mut() else {
            continue;
        };
        let mut ctx = Context {
            endpoint: &mut *endpoint,
            sink: Sink {
                target: target.reborrow(),
                recorder: recorder.as_mut(),
            },
            backlog: &mut *backlog,
            now,
            outbox: outbox.as_deref_mut(),
        };
        match event {
            OwnedEvent::Message(peer, mode, len) => {
                let message = Event::Message(Message {
                    peer,
                    mode,
                    payload: &scratch[..len],
                });
                handler(&mut ctx, &message);
            }
            OwnedEvent::Other(event) => handler(&mut ctx, &event),
        }
    }
}

/// Which of the endpoint's queued events `dispatch_queued` hands out.
#[derive(Clone, Copy)]
enum Dispatch {
    /// Peers up and down and abandoned Reliable messages only.
    PeerEvents,
    /// Those and released Reliable messages.
    All,
}

enum OwnedEvent {
    Message(PeerId, Mode, usize),
    Other(Event<'static>),
}

fn since(clock: &quanta::Clock, epoch: u64) -> Timestamp {
    Timestamp::from_nanos(clock.delta_as_nanos(epoch, clock.raw()))
}

/// Asks the kernel to back the endpoint's peer slab ([`Endpoint::peer_table_memory`]) with
/// transparent huge pages, and returns the bytes advised (0 for a slab under about 4 MiB,
/// `max_peers` below ~2,000). The node does this when it binds; call it from a receive loop
/// of your own around an [`Endpoint`] right after creating it, before peers join: pages
/// already touched keep their size.
///
/// With thousands of peers the slab spans more 4 KiB pages than the TLB holds, so each
/// datagram's peer costs a page walk besides its cache misses; in the receive bench at 10,000
/// peers (two-stage hint) huge pages took 5–34% off in eight runs of twelve and were 5–10%
/// slower in four, on a noisy host (perf/core-bench-2026-12-07f.txt). The cost: the slab
/// becomes resident in 2 MiB steps as peers fill it. The machine's
/// `/sys/kernel/mm/transparent_hugepage/enabled` set to `never` turns this off.
pub fn advise_huge_pages(endpoint: &Endpoint) -> io::Result<usize> {
    let table = endpoint.peer_table_memory();
    drivers::advise_huge_pages(table.start, table.len)
}

/// Has the state of the next datagram of a receive batch (`next`, from
/// [`Datagram::next_header`]) fetched into the cache while `current` is handled, unless both
/// name the same session (its state is hot already). The node does this for every datagram;
/// call it from a receive loop of your own around an [`Endpoint`] before `handle_datagram`.
///
/// With thousands of peers each datagram's peer is otherwise a run of cache misses on the
/// critical path; the receive bench shows the hint taking a third or more off at 10,000 peers
/// (perf/README.md). A hint only: it changes no state and costs a comparison when the next
/// datagram is from the same session.
pub fn prefetch_next(endpoint: &Endpoint, current: &[u8], next: Option<drivers::NextHeader>) {
    let Some(next) = next else {
        return;
    };
    if same_session(current, &next) {
        return;
    }
    if let Some(state) = endpoint.hot_state(&next) {
        state.lines().for_each(drivers::prefetch);
    }
}

/// [`prefetch_next`] with a first stage two datagrams ahead: also has the session-index
/// table's line for the datagram after next (`later`, from [`Datagram::later_header`])
/// fetched, unless it names the same session as `current` or `next`. The node does this
/// for every datagram.
///
/// `prefetch_next` has to read the next datagram's table entry before it can name that
/// datagram's peer, and with thousands of sessions that entry is a cache miss of its own,
/// so the peer's prefetch starts late; fetched one datagram earlier, the entry is there when
/// it is read. The receive bench measures this (perf/core-bench-2stage-2026-12-07.txt).
/// A hint only: it reads nothing but the headers and changes no state.
pub fn prefetch_ahead(
    endpoint: &Endpoint,
    current: &[u8],
    next: Option<drivers::NextHeader>,
    later: Option<drivers::NextHeader>,
) {
    if let Some(later) = later {
        let repeated =
            same_session(current, &later) || next.is_some_and(|next| same_session(&next, &later));
        if !repeated {
            if let Some(entry) = endpoint.index_hint(&later) {
                entry.lines().for_each(drivers::prefetch);
            }
        }
    }
    prefetch_next(endpoint, current, next);
}

/// Whether two datagrams name the same receiver index (bytes 4..8 of a transport header,
/// PROTOCOL.md): the second's state is then hot already, or on its way.
fn same_session(a: &[u8], b: &[u8]) -> bool {
    a.get(4..8) == b.get(4..8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use intentra_proto::{EndpointConfig, Keypair, Timestamp};
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    /// Only the first command queued after the loop took the queue wakes it; the ones queued
    /// behind it ride on that wake-up, and the loop's next turn takes them all. A lost
    /// wake-up would leave them waiting for the next timer (a keepalive, a second away).
    #[test]
    fn the_first_command_after_a_take_wakes_the_loop_and_the_rest_ride_on_it() {
        let keys = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(11));
        let config = NodeConfig::new(([127, 0, 0, 1], 0).into(), EndpointConfig::new(keys));
        let mut node = Node::bind(config).unwrap();
        let handle = node.handle();
        assert!(!node.waker.is_signalled());
        handle.publish(Mode::Realtime, b"one").unwrap();
        assert!(node.waker.is_signalled());
        node.turn(Duration::ZERO).unwrap();
        assert!(!node.waker.is_signalled());
        assert_eq!(node.handle_stats().commands, 1);
        for round in 1..=3u64 {
            handle.publish(Mode::Realtime, b"first").unwrap();
            assert!(node.waker.is_signalled());
            node.waker.reset(false);
            handle.publish(Mode::Realtime, b"behind").unwrap();
            // Behind a queued command: no wake of its own...
            assert!(!node.waker.is_signalled(), "round {round}");
            // ...and the turn, woken by the first (here: woken already), takes both.
            node.turn(Duration::ZERO).unwrap();
            assert_eq!(node.handle_stats().commands, 1 + 2 * round);
        }
    }

    /// The receive loop's hints take whatever the batch holds (junk, short datagrams, no
    /// look-ahead) without a panic and without changing the endpoint.
    #[test]
    fn the_prefetch_hints_take_any_bytes_and_change_nothing() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let keys = Keypair::generate(&mut rng);
        let endpoint = Endpoint::new(EndpointConfig::new(keys), Timestamp::from_nanos(0), rng);
        let before = endpoint.stats();
        let mut junk = ChaCha20Rng::seed_from_u64(8);
        for len in 0..24 {
            let mut current = vec![0u8; len];
            junk.fill_bytes(&mut current);
            let mut next = [0u8; drivers::NEXT_HEADER_LEN];
            junk.fill_bytes(&mut next);
            let mut later = drivers::header_of(&current);
            later[1] = junk.next_u32() as u8;
            for (n, l) in [(None, None), (Some(next), None), (Some(next), Some(later))] {
                prefetch_ahead(&endpoint, &current, n, l);
                prefetch_next(&endpoint, &current, n);
            }
        }
        assert_eq!(endpoint.stats(), before);
        assert!(same_session(
            &[1, 2, 3, 4, 5, 6, 7, 8, 9],
            &[0, 0, 0, 0, 5, 6, 7, 8]
        ));
        assert!(!same_session(
            &[0, 0, 0, 0, 5, 6, 7, 8],
            &[0, 0, 0, 0, 5, 6, 7, 9]
        ));
    }
}
