//! Cross-thread access to a node: a [`Handle`] that queues commands for the event loop and
//! wakes it, and [`Events`] that hands the loop's events to an application thread.
//!
//! Owns two bounded mailboxes (commands in, events out) and the waiter slots of
//! [`Handle::send_timeout`]. A mailbox is a pair of batches allocated once, at their full
//! size, behind one mutex: a writer copies its message into the shared batch under the lock
//! (the one copy; no allocation), and the reader swaps the whole batch for its own empty one
//! under one lock per batch, then works through it without the lock. So every message queued
//! between two loop turns costs the loop one lock and one wake-up, and goes out in the same
//! send batch. A full mailbox answers at once with [`Full`] ([`Handle::send_wait`] instead
//! sleeps until the reader's next swap, which wakes it); the loop never waits on a reader:
//! an event that finds the event mailbox full is dropped and counted in [`EventDrops`].
//! It must never block the loop, allocate per message, or lose a wake-up.
//!
//! # Bounds and window sizing
//!
//! [`HandleConfig`] bounds every queue, in messages and in bytes. The commands queued
//! between two turns must fit `commands`/`command_bytes`: at a producer rate R messages/s and
//! a loop turn of T seconds (a receive batch, at most the wait), size it at least R × T.
//! A Reliable peer's send window (`EndpointConfig::reliable.max_queued_bytes`, and no more
//! than the receive window the peer advertised in its handshake) holds what is sent and not
//! yet acknowledged, so it must be at least
//! **rate × message size × round trip**: 1,000 messages/s of 512 B over a 2 ms round trip
//! need 1,000 × 512 × 0.002 ≈ 1 KiB; with less, sends answer `WouldBlock` (or wait in the
//! peer's deferred queue, `deferred_per_peer` messages) until ACKs free room, and
//! [`NodeEvent::Writable`] says when they have. Whatever the bytes, at most 1,024 Reliable
//! messages are in flight per peer (PROTOCOL.md 15), so rate × round trip (loss recovery
//! included) must stay under 1,024: 100,000 messages/s up to about 10 ms.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use intentra_proto::wire::MAX_REALTIME_PAYLOAD;
use intentra_proto::CloseReason;
use intentra_proto::PublicKey;
use intentra_proto::{ConnectError, Mode, PeerId, SendError};
use intentra_udp::Waker;

use crate::node::ShutdownHandle;

/// The bounds of a node's cross-thread queues. Every one is allocated at its full size when
/// the node is bound (the deferred slots) or when [`Node::handle`](crate::node::Node::handle)
/// and [`Node::events`](crate::node::Node::events) are first called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandleConfig {
    /// Commands (sends, publishes, connects, closes) queued between two loop turns.
    pub commands: usize,
    /// Payload bytes those commands may hold in total (a connect takes 59), at most 4 GiB
    /// (a larger value is taken as 4 GiB).
    pub command_bytes: usize,
    /// Events held for the [`Events`] reader.
    pub events: usize,
    /// Message bytes those events may hold in total, at most 4 GiB (as `command_bytes`).
    pub event_bytes: usize,
    /// Reliable messages one peer may have waiting for room in its send window (from
    /// `Context::send_when_writable`, `Handle::send`, `Handle::send_timeout`).
    pub deferred_per_peer: usize,
    /// Reliable messages all peers together may have waiting (each takes a slot of
    /// `MAX_RELIABLE_PAYLOAD` bytes).
    pub deferred_total: usize,
    /// Threads that may wait in `Handle::send_timeout` at the same time.
    pub waiters: usize,
}

impl Default for HandleConfig {
    fn default() -> Self {
        HandleConfig {
            commands: 8192,
            command_bytes: 1 << 20,
            events: 8192,
            event_bytes: 1 << 20,
            deferred_per_peer: 64,
            deferred_total: 256,
            waiters: 64,
        }
    }
}

/// Which bound a full queue hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Full {
    /// Every message slot is taken.
    Slots,
    /// The queue's bytes are used up.
    Bytes,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Full::Slots => "no free message slot",
            Full::Bytes => "no free bytes",
        })
    }
}

/// Why a [`Handle`] call did not queue (or, for `send_timeout`, did not send) a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandleError {
    /// The command queue is full (the loop is behind, or not running yet). Nothing was queued.
    QueueFull(Full),
    /// The node has been dropped.
    Closed,
    /// Longer than any message can be (`MAX_REALTIME_PAYLOAD`).
    TooLarge,
    /// `send_timeout`: no room came before the deadline. Nothing was sent.
    Timeout,
    /// `send_timeout`: every waiter slot is in use (`HandleConfig::waiters`).
    TooManyWaiters,
    /// `send_timeout`: the loop refused the message (the peer is gone, not yet up, ...;
    /// `WouldBlock` here means its deferred queue was full too).
    Send(SendError),
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::QueueFull(full) => write!(f, "command queue full ({full})"),
            HandleError::Closed => f.write_str("node closed"),
            HandleError::TooLarge => f.write_str("message too large"),
            HandleError::Timeout => f.write_str("no room in the send window before the deadline"),
            HandleError::TooManyWaiters => f.write_str("too many threads in send_timeout"),
            HandleError::Send(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for HandleError {}

/// Messages and their bytes, allocated once at their bounds.
pub(crate) struct Batch<M> {
    pub(crate) items: Vec<M>,
    pub(crate) bytes: Vec<u8>,
}

impl<M> Batch<M> {
    fn new(items: usize, bytes: usize) -> Batch<M> {
        Batch {
            items: Vec::with_capacity(items),
            bytes: Vec::with_capacity(bytes),
        }
    }

    fn clear(&mut self) {
        self.items.clear();
        self.bytes.clear();
    }

    pub(crate) fn payload(&self, at: usize, len: usize) -> &[u8] {
        self.bytes.get(at..at + len).unwrap_or(&[])
    }

    /// A command's bytes.
    pub(crate) fn span(&self, span: Span) -> &[u8] {
        self.payload(span.at as usize, span.len as usize)
    }
}

struct Shared<M> {
    batch: Batch<M>,
    reader_waiting: bool,
    /// Writers asleep in `wait_for_room`: the reader's next `take` wakes them.
    writers_waiting: usize,
}

/// A bounded many-writer, one-reader queue of messages with payloads (see the module docs).
pub(crate) struct Mailbox<M> {
    state: Mutex<Shared<M>>,
    ready: Condvar,
    room: Condvar,
    max_items: usize,
    max_bytes: usize,
    closed: AtomicBool,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Mailbox<M> {
        let max_items = max_items.max(1);
        // Commands name their bytes by u32 offsets (`Span`).
        let max_bytes = max_bytes.min(MAX_QUEUE_BYTES);
        Mailbox {
            state: Mutex::new(Shared {
                batch: Batch::new(max_items, max_bytes),
                reader_waiting: false,
                writers_waiting: 0,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            max_items,
            max_bytes,
            closed: AtomicBool::new(false),
        }
    }

    /// The reader's batch: the same bounds, swapped with the shared one.
    pub(crate) fn reader_batch(&self) -> Batch<M> {
        Batch::new(self.max_items, self.max_bytes)
    }

    fn lock(&self) -> MutexGuard<'_, Shared<M>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Copies `payload` in and queues `make(offset, len)`, or says which bound is hit.
    /// `Ok(true)` when the mailbox was empty: only the first message after a `take` needs to
    /// wake a reader that does not sleep on `ready` (the loop's eventfd), since every later
    /// one finds that wake-up already on its way.
    pub(crate) fn push(
        &self,
        payload: &[u8],
        make: impl FnOnce(usize, usize) -> M,
    ) -> Result<bool, Full> {
        let mut shared = self.lock();
        if let Some(full) = self.full_for(&shared, payload.len()) {
            return Err(full);
        }
        let first = shared.batch.items.is_empty();
        let at = shared.batch.bytes.len();
        shared.batch.bytes.extend_from_slice(payload);
        shared.batch.items.push(make(at, payload.len()));
        let notify = shared.reader_waiting;
        drop(shared);
        if notify {
            self.ready.notify_one();
        }
        Ok(first)
    }

    /// Which bound a message of `len` bytes would hit now, if any.
    fn full_for(&self, shared: &Shared<M>, len: usize) -> Option<Full> {
        if shared.batch.items.len() >= self.max_items {
            Some(Full::Slots)
        } else if shared.batch.bytes.len() + len > self.max_bytes {
            Some(Full::Bytes)
        } else {
            None
        }
    }

    /// Moves everything queued into `into` (emptied first): one lock per batch. Wakes the
    /// writers waiting for room, if any (one flag read under the lock already held).
    pub(crate) fn take(&self, into: &mut Batch<M>) -> bool {
        into.clear();
        let mut shared = self.lock();
        if shared.batch.items.is_empty() {
            return false;
        }
        std::mem::swap(&mut shared.batch, into);
        let wake_writers = shared.writers_waiting > 0;
        drop(shared);
        if wake_writers {
            self.room.notify_all();
        }
        true
    }

    /// Waits until a message of `len` bytes would fit, the mailbox is closed, or `deadline`
    /// passes; whether it would fit now. The reader's `take` (or `close`) wakes it, so the
    /// writer sleeps instead of spinning. A message larger than the whole mailbox never fits.
    fn wait_for_room(&self, len: usize, deadline: Instant) -> bool {
        if len > self.max_bytes {
            return false;
        }
        let mut shared = self.lock();
        loop {
            if self.full_for(&shared, len).is_none() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.is_closed() {
                return false;
            }
            shared.writers_waiting += 1;
            shared = self
                .room
                .wait_timeout(shared, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            shared.writers_waiting -= 1;
        }
    }

    /// Like `take`, waiting up to `timeout` (`None`: until closed) for something to arrive.
    fn take_wait(&self, into: &mut Batch<M>, timeout: Option<Duration>) -> bool {
        into.clear();
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut shared = self.lock();
        loop {
            if !shared.batch.items.is_empty() {
                std::mem::swap(&mut shared.batch, into);
                return true;
            }
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            shared.reader_waiting = true;
            shared = match deadline {
                None => self
                    .ready
                    .wait(shared)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        shared.reader_waiting = false;
                        return false;
                    }
                    self.ready
                        .wait_timeout(shared, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            shared.reader_waiting = false;
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _shared = self.lock();
        self.ready.notify_all();
        self.room.notify_all();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The most bytes a mailbox holds (`HandleConfig::command_bytes` and `event_bytes` are
/// capped here), so that a command names its bytes with u32 offsets.
const MAX_QUEUE_BYTES: usize = u32::MAX as usize;

/// Where a command's bytes lie in its batch (`Batch::span`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    at: u32,
    len: u32,
}

impl Span {
    /// The mailbox's bytes are capped at `MAX_QUEUE_BYTES`, so both always fit.
    fn new(at: usize, len: usize) -> Span {
        Span {
            at: u32::try_from(at).unwrap_or(u32::MAX),
            len: u32::try_from(len).unwrap_or(0),
        }
    }
}

/// What a [`Handle`] asks of the loop.
///
/// Small, because a flat-out producer writes one per message into memory the loop then
/// reads from another core: every byte of it crosses between the two caches beside the
/// payload's. The payloads, and a connect's address and key, lie in the batch's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Command {
    Send {
        peer: PeerId,
        mode: Mode,
        payload: Span,
        /// The `send_timeout` waiter slot to settle.
        waiter: Option<WaiterSlot>,
    },
    Publish {
        mode: Mode,
        payload: Span,
    },
    /// The target, as [`ConnectTarget::encode`] wrote it.
    Connect {
        target: Span,
    },
    Close {
        peer: PeerId,
    },
}

// A 64-byte message and its command take 88 bytes of the queue; with the connect's address
// and key inline a command alone was 72.
const _: () = assert!(std::mem::size_of::<Command>() <= 24);

impl Command {
    /// The `Send` for a payload the mailbox placed at `at..at + len`.
    fn send(
        peer: PeerId,
        mode: Mode,
        waiter: Option<WaiterSlot>,
    ) -> impl Fn(usize, usize) -> Command {
        move |at, len| Command::Send {
            peer,
            mode,
            payload: Span::new(at, len),
            waiter,
        }
    }
}

/// A connect's address and key, as a [`Command::Connect`] carries them in the queue's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectTarget {
    pub(crate) addr: SocketAddr,
    pub(crate) key: PublicKey,
}

impl ConnectTarget {
    /// Key, then a family byte (4 or 6), the address's 16 bytes (an IPv4 one in the first
    /// 4), port, flow info and scope id: every field a `SocketAddr` has.
    const LEN: usize = 32 + 1 + 16 + 2 + 4 + 4;

    fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..32].copy_from_slice(self.key.as_bytes());
        let (family, ip, flowinfo, scope_id) = match self.addr {
            SocketAddr::V4(v4) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&v4.ip().octets());
                (4, ip, 0, 0)
            }
            SocketAddr::V6(v6) => (6, v6.ip().octets(), v6.flowinfo(), v6.scope_id()),
        };
        out[32] = family;
        out[33..49].copy_from_slice(&ip);
        out[49..51].copy_from_slice(&self.addr.port().to_le_bytes());
        out[51..55].copy_from_slice(&flowinfo.to_le_bytes());
        out[55..59].copy_from_slice(&scope_id.to_le_bytes());
        out
    }

    /// The target `encode` wrote into `bytes`; `None` for anything else.
    pub(crate) fn decode(bytes: &[u8]) -> Option<ConnectTarget> {
        let bytes: &[u8; Self::LEN] = bytes.try_into().ok()?;
        let key = PublicKey(bytes[..32].try_into().ok()?);
        let ip: [u8; 16] = bytes[33..49].try_into().ok()?;
        let port = u16::from_le_bytes(bytes[49..51].try_into().ok()?);
        let flowinfo = u32::from_le_bytes(bytes[51..55].try_into().ok()?);
        let scope_id = u32::from_le_bytes(bytes[55..59].try_into().ok()?);
        let addr = match bytes[32] {
            4 => {
                let v4: [u8; 4] = ip[..4].try_into().ok()?;
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(v4), port))
            }
            6 => SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope_id,
            )),
            _ => return None,
        };
        Some(ConnectTarget { addr, key })
    }
}

/// A `send_timeout` waiter slot as commands and the deferred queue carry it: its index plus
/// one, so that `Option<WaiterSlot>` is no larger than the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaiterSlot(NonZeroU32);

impl WaiterSlot {
    fn new(index: usize) -> Option<WaiterSlot> {
        let one_based = u32::try_from(index).ok()?.checked_add(1)?;
        NonZeroU32::new(one_based).map(WaiterSlot)
    }

    fn index(self) -> usize {
        (self.0.get() - 1) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitSlot {
    Free,
    Pending,
    Done(Result<(), SendError>),
    /// The caller gave up: the loop frees the slot and drops the message, unsent.
    Abandoned,
}

/// The slots `send_timeout` callers wait in, settled by the loop.
pub(crate) struct Waiters {
    slots: Mutex<Vec<WaitSlot>>,
    done: Condvar,
}

impl Waiters {
    fn new(n: usize) -> Waiters {
        Waiters {
            slots: Mutex::new(vec![WaitSlot::Free; n.max(1)]),
            done: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<WaitSlot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire(&self) -> Option<WaiterSlot> {
        let mut slots = self.lock();
        let i = slots.iter().position(|s| *s == WaitSlot::Free)?;
        let id = WaiterSlot::new(i)?;
        if let Some(slot) = slots.get_mut(i) {
            *slot = WaitSlot::Pending;
        }
        Some(id)
    }

    fn release(&self, id: WaiterSlot) {
        if let Some(slot) = self.lock().get_mut(id.index()) {
            *slot = WaitSlot::Free;
        }
    }

    /// Runs the loop's `attempt` for waiter `i` unless its caller gave up (then the message
    /// is dropped, unsent, and `None` returned). `attempt` answers `Some(result)` when the
    /// message is settled, `None` when it still waits for room. The lock is held across the
    /// attempt, so a caller is never told "timed out" about a message that went out.
    pub(crate) fn settle(
        &self,
        id: WaiterSlot,
        attempt: impl FnOnce() -> Option<Result<(), SendError>>,
    ) -> Option<Option<Result<(), SendError>>> {
        let mut slots = self.lock();
        let slot = slots.get_mut(id.index())?;
        if *slot == WaitSlot::Abandoned {
            *slot = WaitSlot::Free;
            return None;
        }
        let outcome = attempt();
        if let Some(result) = outcome {
            *slot = WaitSlot::Done(result);
            drop(slots);
            self.done.notify_all();
        }
        Some(outcome)
    }

    fn wait(&self, id: WaiterSlot, timeout: Duration) -> Result<(), HandleError> {
        let i = id.index();
        let deadline = Instant::now() + timeout;
        let mut slots = self.lock();
        loop {
            match slots.get(i).copied() {
                Some(WaitSlot::Done(result)) => {
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = WaitSlot::Free;
                    }
                    return result.map_err(HandleError::Send);
                }
                Some(WaitSlot::Pending) => {}
                _ => return Err(HandleError::Closed),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if let Some(slot) = slots.get_mut(i) {
                    *slot = WaitSlot::Abandoned;
                }
                return Err(HandleError::Timeout);
            }
            slots = self
                .done
                .wait_timeout(slots, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Why the loop did not send a message a [`Handle`] queued, one counter per [`SendError`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendFailures {
    /// The peer was gone.
    pub unknown_peer: u64,
    /// The handshake had not completed.
    pub not_established: u64,
    /// Larger than the mode allows.
    pub too_large: u64,
    /// The Reliable window was full and so was the peer's deferred queue.
    pub would_block: u64,
    /// The loop's send buffer was too small (a configuration error).
    pub buffer_too_small: u64,
    /// The session's keys were used up before a rekey.
    pub keys_exhausted: u64,
    /// Any other refusal.
    pub other: u64,
}

impl SendFailures {
    pub(crate) fn add(&mut self, err: SendError) {
        match err {
            SendError::UnknownPeer => self.unknown_peer += 1,
            SendError::NotEstablished => self.not_established += 1,
            SendError::TooLarge => self.too_large += 1,
            SendError::WouldBlock => self.would_block += 1,
            SendError::BufferTooSmall => self.buffer_too_small += 1,
            SendError::KeysExhausted => self.keys_exhausted += 1,
            // Larger than this peer's configured bound: it can never fit, like TooLarge.
            SendError::ExceedsQueueBound => self.too_large += 1,
            _ => self.other += 1,
        }
    }

    /// Every message the loop did not send, whatever the reason.
    pub fn total(&self) -> u64 {
        self.unknown_peer
            + self.not_established
            + self.too_large
            + self.would_block
            + self.buffer_too_small
            + self.keys_exhausted
            + self.other
    }
}

/// What the loop did with the commands [`Handle`]s queued (published once per batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandleStats {
    /// Batches taken from the command queue (each one lock and at most one wake-up).
    pub batches: u64,
    /// Commands taken.
    pub commands: u64,
    /// Messages sealed and handed to the driver (a publish counts once per peer).
    pub sent: u64,
    /// Reliable messages that waited for room in the peer's window (sent later, or failed).
    pub deferred: u64,
    /// `send_timeout` messages dropped unsent because their caller had given up.
    pub abandoned: u64,
    /// Connects the endpoint refused (also reported as `NodeEvent::ConnectFailed`).
    pub connect_failed: u64,
    /// Messages the loop could not send, by reason.
    pub failed: SendFailures,
}

/// State shared by every clone of a [`Handle`] and the node.
pub(crate) struct HandleShared {
    pub(crate) commands: Mailbox<Command>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) waiters: Waiters,
    pub(crate) stats: Mutex<HandleStats>,
}

impl HandleShared {
    pub(crate) fn new(
        config: &HandleConfig,
        waker: Arc<Waker>,
        shutdown: ShutdownHandle,
    ) -> HandleShared {
        HandleShared {
            commands: Mailbox::new(config.commands, config.command_bytes),
            waker,
            shutdown,
            waiters: Waiters::new(config.waiters),
            stats: Mutex::new(HandleStats::default()),
        }
    }

    pub(crate) fn publish_stats(&self, stats: &HandleStats) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = *stats;
    }
}

/// Sends, publishes, connects and closes on a node from any thread, before and while it runs.
///
/// Every call copies the message once into the node's bounded command queue and wakes the
/// loop (at most one wake-up per loop turn, however many messages are queued); the loop
/// sends everything queued in one batch. A full queue answers at once with
/// [`HandleError::QueueFull`]; nothing is allocated per message. What the loop then did is
/// counted in [`Handle::stats`]. Reliable messages the peer's window cannot take yet wait in
/// its deferred queue ([`HandleConfig::deferred_per_peer`]); beyond that they are counted
/// as `failed.would_block`. Use [`Handle::send_timeout`] to wait for room instead.
///
/// ```
/// use intentra::{Node, NodeConfig};
/// use intentra::proto::EndpointConfig;
/// use intentra::proto::Mode;
/// use intentra::proto::Keypair;
///
/// let keys = Keypair::generate(&mut rand_core::OsRng);
/// let mut node = Node::bind(NodeConfig::new("127.0.0.1:0".parse()?, EndpointConfig::new(keys)))?;
/// let handle = node.handle();
/// let feed = std::thread::spawn(move || {
///     // No peers yet: the loop counts the publish, sent to nobody.
///     handle.publish(Mode::Realtime, b"tick").unwrap();
///     handle.shutdown();
/// });
/// node.run()?; // returns once the feed thread calls shutdown
/// feed.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<HandleShared>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    fn queue(&self, payload: &[u8], make: impl FnOnce(usize, usize) -> Command) -> QueueResult {
        if self.shared.commands.is_closed() {
            return Err(HandleError::Closed);
        }
        if payload.len() > MAX_REALTIME_PAYLOAD {
            return Err(HandleError::TooLarge);
        }
        let first = self
            .shared
            .commands
            .push(payload, make)
            .map_err(HandleError::QueueFull)?;
        // The loop resets its waker before it takes the queue, and whoever queued the first
        // command since that take wakes it after queueing: so a command that found others
        // queued is covered by that wake-up, and the writer skips an atomic swap on a cache
        // line the loop owns (one per message, at millions of messages a second).
        if first {
            self.shared.waker.wake();
        }
        Ok(())
    }

    /// Like `queue`, but a full queue makes the caller sleep until the loop takes what is
    /// queued (or `timeout` passes), then try again.
    fn queue_wait(
        &self,
        payload: &[u8],
        timeout: Duration,
        make: impl Fn(usize, usize) -> Command,
    ) -> QueueResult {
        let mut deadline = None;
        loop {
            match self.queue(payload, &make) {
                Err(HandleError::QueueFull(full)) => {
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                    if !self.shared.commands.wait_for_room(payload.len(), deadline) {
                        return Err(if self.shared.commands.is_closed() {
                            HandleError::Closed
                        } else {
                            HandleError::QueueFull(full)
                        });
                    }
                }
                done => return done,
            }
        }
    }

    /// Queues one message to one peer.
    pub fn send(&self, peer: PeerId, mode: Mode, payload: &[u8]) -> Result<(), HandleError> {
        self.queue(payload, Command::send(peer, mode, None))
    }

    /// Queues one message to one peer like [`send`](Self::send), but when the command queue
    /// is full, sleeps until the loop takes what is queued and tries again, for up to
    /// `timeout` in all, instead of answering `QueueFull` at once: back-pressure for a
    /// producer that would rather wait than drop, without spinning (a spinning producer
    /// takes the CPU the loop needs to drain it). `Err(QueueFull)` once `timeout` passed,
    /// `Err(Closed)` if the node goes away meanwhile. It waits for room in the queue only,
    /// not for the message to be sent: that is [`send_timeout`](Self::send_timeout). Never
    /// call it from inside a callback: the loop would wait on itself until the timeout.
    pub fn send_wait(
        &self,
        peer: PeerId,
        mode: Mode,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), HandleError> {
        self.queue_wait(payload, timeout, Command::send(peer, mode, None))
    }

    /// Sends one message and waits up to `timeout` for the loop to send it: for a Reliable
    /// message, until the peer's window has room. `Err(Timeout)` means it was not sent (it
    /// never will be). Blocks the calling thread; never call it from inside a callback.
    pub fn send_timeout(
        &self,
        peer: PeerId,
        mode: Mode,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), HandleError> {
        let waiter = self
            .shared
            .waiters
            .acquire()
            .ok_or(HandleError::TooManyWaiters)?;
        let queued = self.queue(payload, Command::send(peer, mode, Some(waiter)));
        if let Err(err) = queued {
            self.shared.waiters.release(waiter);
            return Err(err);
        }
        self.shared.waiters.wait(waiter, timeout)
    }

    /// Queues one message for every established peer (fan-out in the loop).
    pub fn publish(&self, mode: Mode, payload: &[u8]) -> Result<(), HandleError> {
        self.queue(payload, |at, len| Command::Publish {
            mode,
            payload: Span::new(at, len),
        })
    }

    /// [`publish`](Self::publish), waiting up to `timeout` for room in a full command queue
    /// as [`send_wait`](Self::send_wait) does.
    pub fn publish_wait(
        &self,
        mode: Mode,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), HandleError> {
        self.queue_wait(payload, timeout, |at, len| Command::Publish {
            mode,
            payload: Span::new(at, len),
        })
    }

    /// Queues a connect. The peer's id comes with [`NodeEvent::PeerUp`] (and the callback's
    /// `Event::PeerUp`); a refusal comes as [`NodeEvent::ConnectFailed`].
    pub fn connect(&self, addr: SocketAddr, public_key: PublicKey) -> Result<(), HandleError> {
        let target = ConnectTarget {
            addr,
            key: public_key,
        };
        self.queue(&target.encode(), |at, len| Command::Connect {
            target: Span::new(at, len),
        })
    }

    /// Queues an authenticated close of one session.
    pub fn close(&self, peer: PeerId) -> Result<(), HandleError> {
        self.queue(&[], |_, _| Command::Close { peer })
    }

    /// Stops the node's `run` (which then closes every session) and wakes it.
    pub fn shutdown(&self) {
        self.shared.shutdown.shutdown();
        self.shared.waker.wake();
    }

    /// Wakes the loop without queueing anything (e.g. after setting a flag it checks).
    pub fn wake(&self) {
        self.shared.waker.wake();
    }

    /// What the loop did with the queued commands, as of its last batch.
    pub fn stats(&self) -> HandleStats {
        *self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

type QueueResult = Result<(), HandleError>;

/// An event of the node, as an [`Events`] reader receives it. Message payloads are copied
/// into the reader's buffer; the first `len` bytes are the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A message from `peer`: its bytes are the first `len` of the reader's buffer.
    Message {
        /// Who sent it.
        peer: PeerId,
        /// How it travelled.
        mode: Mode,
        /// Its length.
        len: usize,
    },
    /// A session is established.
    PeerUp {
        /// The peer's handle.
        peer: PeerId,
        /// Its static public key.
        public_key: PublicKey,
        /// Where its packets come from.
        addr: SocketAddr,
    },
    /// A session ended; the handle is no longer valid.
    PeerDown {
        /// The peer's handle.
        peer: PeerId,
        /// Its static public key.
        public_key: PublicKey,
        /// Why it ended.
        reason: CloseReason,
        /// The reason the peer's own close gave, when it closed.
        peer_reason: Option<CloseReason>,
    },
    /// Reliable messages to `peer` that were never acknowledged when its session ended or
    /// was replaced: each may or may not have arrived, and none will be sent again (see
    /// `intentra_proto::Event::ReliableAbandoned`).
    ReliableAbandoned {
        /// The peer.
        peer: PeerId,
        /// Messages without an acknowledgement.
        messages: u64,
        /// Their payload bytes.
        bytes: u64,
    },
    /// The peer's Reliable window, which refused a send (`WouldBlock`), has room again
    /// (and its deferred messages have gone out).
    Writable {
        /// The peer with room.
        peer: PeerId,
    },
    /// A `Handle::connect` the endpoint refused.
    ConnectFailed {
        /// The address asked for.
        addr: SocketAddr,
        /// The key asked for.
        public_key: PublicKey,
        /// Why it was refused.
        error: ConnectError,
    },
}

/// A queued event: a message's bytes live at `at` in the batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueuedEvent {
    event: NodeEvent,
    at: usize,
}

/// Events the loop dropped because the event queue was full, by reason and kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventDrops {
    /// Messages that found every event slot taken.
    pub messages_no_slot: u64,
    /// Messages that found the event bytes used up.
    pub messages_no_bytes: u64,
    /// Peer up/down, writable and connect-failed events that found every slot taken.
    pub others_no_slot: u64,
}

impl EventDrops {
    /// Events dropped, whatever the reason.
    pub fn total(&self) -> u64 {
        self.messages_no_slot + self.messages_no_bytes + self.others_no_slot
    }
}

#[derive(Default)]
struct DropCounters {
    messages_no_slot: AtomicU64,
    messages_no_bytes: AtomicU64,
    others_no_slot: AtomicU64,
    delivered: AtomicU64,
}

/// The loop's end of the event queue.
pub(crate) struct EventSink {
    mailbox: Arc<Mailbox<QueuedEvent>>,
    counters: Arc<DropCounters>,
}

impl EventSink {
    /// Queues an event (a message with its payload), or counts it dropped. Never blocks
    /// longer than the reader's swap of a batch.
    pub(crate) fn push(&self, event: NodeEvent, payload: &[u8]) {
        match self
            .mailbox
            .push(payload, |at, _| QueuedEvent { event, at })
        {
            Ok(_) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(full) => {
                let counter = match (event, full) {
                    (NodeEvent::Message { .. }, Full::Slots) => &self.counters.messages_no_slot,
                    (NodeEvent::Message { .. }, Full::Bytes) => &self.counters.messages_no_bytes,
                    _ => &self.counters.others_no_slot,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn close(&self) {
        self.mailbox.close();
    }

    pub(crate) fn drops(&self) -> EventDrops {
        drops_of(&self.counters)
    }
}

fn drops_of(c: &DropCounters) -> EventDrops {
    EventDrops {
        messages_no_slot: c.messages_no_slot.load(Ordering::Relaxed),
        messages_no_bytes: c.messages_no_bytes.load(Ordering::Relaxed),
        others_no_slot: c.others_no_slot.load(Ordering::Relaxed),
    }
}

/// Why [`Events`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// `try_recv`: nothing queued.
    Empty,
    /// `recv_timeout`: nothing arrived in time.
    Timeout,
    /// The node is gone and every event it queued has been read.
    Closed,
    /// The next event is a message longer than the buffer; it stays queued.
    BufferTooSmall {
        /// Bytes the message needs.
        needed: usize,
    },
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvError::Empty => f.write_str("no event queued"),
            RecvError::Timeout => f.write_str("no event before the timeout"),
            RecvError::Closed => f.write_str("node closed"),
            RecvError::BufferTooSmall { needed } => {
                write!(f, "buffer too small: the next message has {needed} bytes")
            }
        }
    }
}

impl std::error::Error for RecvError {}

/// Reads a node's events on an application thread: messages (copied into the caller's
/// buffer), peers up and down, [`NodeEvent::Writable`]. The loop never waits for this
/// reader: when its queue ([`HandleConfig::events`], `event_bytes`) is full, events are
/// dropped and counted by reason in [`Events::drops`]. Takes one lock per batch of events.
pub struct Events {
    mailbox: Arc<Mailbox<QueuedEvent>>,
    counters: Arc<DropCounters>,
    local: Batch<QueuedEvent>,
    next: usize,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

/// A new event queue: the loop's sink and the application's reader.
pub(crate) fn event_queue(config: &HandleConfig) -> (EventSink, Events) {
    let mailbox = Arc::new(Mailbox::new(config.events, config.event_bytes));
    let counters = Arc::new(DropCounters::default());
    let local = mailbox.reader_batch();
    (
        EventSink {
            mailbox: mailbox.clone(),
            counters: counters.clone(),
        },
        Events {
            mailbox,
            counters,
            local,
            next: 0,
        },
    )
}

impl Events {
    /// Waits for the next event.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<NodeEvent, RecvError> {
        self.next_event(buf, Some(None))
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<NodeEvent, RecvError> {
        self.next_event(buf, None)
    }

    /// Waits at most `timeout` for the next event.
    pub fn recv_timeout(
        &mut self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<NodeEvent, RecvError> {
        self.next_event(buf, Some(Some(timeout)))
    }

    /// Events dropped so far because this reader fell behind.
    pub fn drops(&self) -> EventDrops {
        drops_of(&self.counters)
    }

    /// Events queued for this reader so far (read or not).
    pub fn queued_total(&self) -> u64 {
        self.counters.delivered.load(Ordering::Relaxed)
    }

    /// `wait`: None, don't; Some(None), without limit; Some(Some(d)), up to d.
    fn next_event(
        &mut self,
        buf: &mut [u8],
        wait: Option<Option<Duration>>,
    ) -> Result<NodeEvent, RecvError> {
        if self.next >= self.local.items.len() {
            self.next = 0;
            let got = match wait {
                None => self.mailbox.take(&mut self.local),
                Some(timeout) => self.mailbox.take_wait(&mut self.local, timeout),
            };
            if !got {
                return Err(if self.mailbox.is_closed() {
                    RecvError::Closed
                } else if wait.is_none() {
                    RecvError::Empty
                } else {
                    RecvError::Timeout
                });
            }
        }
        let Some(queued) = self.local.items.get(self.next).copied() else {
            return Err(RecvError::Empty);
        };
        if let NodeEvent::Message { len, .. } = queued.event {
            let Some(out) = buf.get_mut(..len) else {
                return Err(RecvError::BufferTooSmall { needed: len });
            };
            out.copy_from_slice(self.local.payload(queued.at, len));
        }
        self.next += 1;
        Ok(queued.event)
    }
}

#[cfg(test)]
#[path = "handle_queue_bench.rs"]
mod queue_bench;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_target_comes_back_from_its_bytes_with_every_field() {
        let key = PublicKey([0xa5; 32]);
        let targets = [
            SocketAddr::from(([127, 0, 0, 1], 9)),
            SocketAddr::from(([255, 255, 255, 255], u16::MAX)),
            SocketAddr::V6(SocketAddrV6::new(
                "fe80::dead:beef".parse().unwrap(),
                4433,
                0x000f_ffff,
                u32::MAX,
            )),
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
        ];
        for addr in targets {
            let target = ConnectTarget { addr, key };
            assert_eq!(ConnectTarget::decode(&target.encode()), Some(target));
        }
    }

    #[test]
    fn bytes_that_are_not_a_connect_target_decode_to_nothing() {
        let bytes = ConnectTarget {
            addr: SocketAddr::from(([10, 1, 2, 3], 80)),
            key: PublicKey([1; 32]),
        }
        .encode();
        assert_eq!(
            ConnectTarget::decode(&bytes[..ConnectTarget::LEN - 1]),
            None
        );
        assert_eq!(
            ConnectTarget::decode(&[bytes.as_slice(), &[0]].concat()),
            None
        );
        let mut bad_family = bytes;
        bad_family[32] = 5;
        assert_eq!(ConnectTarget::decode(&bad_family), None);
    }

    #[test]
    fn a_waiter_slot_keeps_its_index_and_none_is_free() {
        for index in [0, 1, 63, u32::MAX as usize - 1] {
            assert_eq!(WaiterSlot::new(index).map(WaiterSlot::index), Some(index));
        }
        assert_eq!(WaiterSlot::new(u32::MAX as usize), None);
        assert_eq!(
            std::mem::size_of::<Option<WaiterSlot>>(),
            std::mem::size_of::<u32>()
        );
    }
}
