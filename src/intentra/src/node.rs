//! The event loop: one endpoint, one socket, one thread.
//!
//! Owns the clock (read once per batch with `quanta`), the receive and send
//! buffers (allocated once), the application's callbacks and the metrics
//! publication. Each turn: wait for a datagram or the next deadline, hand every
//! received datagram to the endpoint in place, run timers, drain events into
//! the callbacks, drain control packets, flush sends. It must never block on
//! anything but the socket wait, and it publishes metrics by copying counters
//! into the hub a few times a second, never per packet.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;

use crate::capture::Recorder;
use crate::metrics::{BucketCounts, MetricsHub, PeerSnapshot, WorkerSnapshot};
use intentra_proto::wire::MAX_DATAGRAM_LEN;
use intentra_proto::Endpoint;
use intentra_proto::EndpointConfig;
use intentra_proto::PublicKey;
use intentra_proto::Timestamp;
use intentra_proto::{CloseReason, DropReason, Stats};
use intentra_proto::{ConnectError, Event, Message, Mode, PeerId, PeerInfo, SendError};
use intentra_udp::{
    self as drivers, Datagram, Driver, DriverConfig, DriverKind, SocketConfig, Wait,
};

pub use intentra_udp::IdleStrategy;

/// How a node binds and runs.
#[derive(Clone)]
pub struct NodeConfig {
    pub endpoint: EndpointConfig,
    /// `Uring` falls back to `Mmsg` (and says why) where io_uring is unavailable.
    pub driver: DriverKind,
    pub idle: IdleStrategy,
    /// Sends made from inside a receive callback, held until the batch is done.
    pub send_queue: usize,
    /// The socket: bind address, buffers, GSO/GRO, busy polling, SO_REUSEPORT.
    pub socket: SocketConfig,
    /// Batch size, ring sizes, datagram size.
    pub io: DriverConfig,
    /// Record every datagram sent and received to this pcap file.
    pub capture: Option<std::path::PathBuf>,
    /// The capture's size limit and rotation.
    pub capture_limits: crate::capture::CaptureLimits,
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
        }
    }
}

/// Sends made while the driver is handing out received datagrams: the driver's buffers are
/// busy then, so these are sealed here (buffers allocated once) and moved over after the batch.
struct DeferredSends {
    buffers: Vec<u8>,
    meta: Vec<(SocketAddr, usize)>,
    capacity: usize,
}

impl DeferredSends {
    fn new(capacity: usize) -> DeferredSends {
        DeferredSends {
            buffers: vec![0u8; capacity * MAX_DATAGRAM_LEN],
            meta: Vec::with_capacity(capacity),
            capacity,
        }
    }

    fn slot(&mut self) -> Option<&mut [u8]> {
        let at = self.meta.len();
        if at >= self.capacity {
            return None;
        }
        self.buffers
            .get_mut(at * MAX_DATAGRAM_LEN..(at + 1) * MAX_DATAGRAM_LEN)
    }

    fn move_to(&mut self, driver: &mut dyn Driver) -> io::Result<()> {
        for (i, &(dst, len)) in self.meta.iter().enumerate() {
            let packet = &self.buffers[i * MAX_DATAGRAM_LEN..i * MAX_DATAGRAM_LEN + len];
            if driver.send_buffer().is_none() {
                driver.flush()?;
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
        Ok(())
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

/// What a callback may do: send, publish, close, inspect. Borrowed for the call only.
pub struct Context<'a> {
    endpoint: &'a mut Endpoint,
    sink: Sink<'a>,
    now: Timestamp,
}

/// What `publish` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    pub sent: usize,
    pub would_block: usize,
    pub failed: usize,
}

impl Context<'_> {
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Seals and queues one message to one peer.
    pub fn send(&mut self, peer: PeerId, mode: Mode, payload: &[u8]) -> Result<(), SendError> {
        send_one(self.endpoint, &mut self.sink, self.now, peer, mode, payload)
    }

    /// Sends `payload` to every established peer (fan-out); sends are flushed in batches.
    pub fn publish(&mut self, mode: Mode, payload: &[u8]) -> PublishReport {
        publish_all(self.endpoint, &mut self.sink, self.now, mode, payload)
    }

    pub fn connect(&mut self, addr: SocketAddr, key: PublicKey) -> Result<PeerId, ConnectError> {
        self.endpoint.connect(self.now, addr, key)
    }

    pub fn close(&mut self, peer: PeerId) {
        self.endpoint.close(self.now, peer);
    }

    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.endpoint.established_peers()
    }

    pub fn peer_info(&self, peer: PeerId) -> Option<PeerInfo> {
        self.endpoint.peer_info(peer)
    }

    pub fn stats(&self) -> Stats {
        self.endpoint.stats()
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
        Ok(transmit) => Some((transmit.dst, transmit.len)),
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
    now: Timestamp,
    mode: Mode,
    payload: &[u8],
) -> PublishReport {
    let mut report = PublishReport::default();
    let mut next = endpoint.next_established(None);
    while let Some(peer) = next {
        match send_one(endpoint, sink, now, peer, mode, payload) {
            Ok(()) => report.sent += 1,
            Err(SendError::WouldBlock) => report.would_block += 1,
            Err(_) => report.failed += 1,
        }
        next = endpoint.next_established(Some(peer));
    }
    report
}

type EventHandler = Box<dyn FnMut(&mut Context<'_>, &Event<'_>) + Send>;
type TickHandler = Box<dyn FnMut(&mut Context<'_>) + Send>;

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
    pub fn new() -> ShutdownHandle {
        ShutdownHandle::default()
    }

    pub fn shutdown(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_shutdown(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

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
/// use intentra::node::{Node, NodeConfig};
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
    driver_note: Option<String>,
    recorder: Option<Recorder>,
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
        let mut endpoint_config = config.endpoint;
        endpoint_config.export_session_keys |= recorder.is_some();
        let rng: Box<dyn rand_core::CryptoRngCore + Send> = Box::new(OsRng);
        let clock = quanta::Clock::new();
        let epoch = clock.raw();
        let mut node = Node {
            endpoint: Endpoint::with_boxed_rng(endpoint_config, Timestamp::ZERO, rng),
            driver,
            deferred: DeferredSends::new(config.send_queue.max(1)),
            clock,
            epoch,
            idle: drivers::Idler::new(config.idle),
            on_event: None,
            ticks: Vec::new(),
            publication: None,
            shutdown: ShutdownHandle::new(),
            scratch: Box::new([0u8; MAX_DATAGRAM_LEN]),
            driver_note: note,
            recorder,
        };
        let now = node.now();
        node.endpoint.handle_timeout(now);
        Ok(node)
    }

    /// Why the requested driver was replaced by another, if it was.
    pub fn driver_note(&self) -> Option<&str> {
        self.driver_note.as_deref()
    }

    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.driver.local_addr()
    }

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

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    pub fn connect(&mut self, addr: SocketAddr, key: PublicKey) -> Result<PeerId, ConnectError> {
        let now = self.now();
        let id = self.endpoint.connect(now, addr, key)?;
        self.pump(now);
        Ok(id)
    }

    pub fn send(&mut self, peer: PeerId, mode: Mode, payload: &[u8]) -> Result<(), SendError> {
        let now = self.now();
        let mut sink = Sink::driver(self.driver.as_mut(), &mut self.recorder);
        send_one(&mut self.endpoint, &mut sink, now, peer, mode, payload)?;
        self.flush();
        Ok(())
    }

    pub fn publish(&mut self, mode: Mode, payload: &[u8]) -> PublishReport {
        let now = self.now();
        let mut sink = Sink::driver(self.driver.as_mut(), &mut self.recorder);
        let report = publish_all(&mut self.endpoint, &mut sink, now, mode, payload);
        self.flush();
        report
    }

    pub fn peers(&self) -> Vec<PeerId> {
        self.endpoint.established_peers().collect()
    }

    pub fn peer_info(&self, peer: PeerId) -> Option<PeerInfo> {
        self.endpoint.peer_info(peer)
    }

    pub fn stats(&self) -> Stats {
        self.endpoint.stats()
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn set_allow_list(&mut self, allow: Option<std::collections::HashSet<PublicKey>>) {
        let now = self.now();
        self.endpoint.set_allow_list(now, allow);
        self.pump(now);
    }

    /// This node's counters in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut snapshot = WorkerSnapshot::new(0);
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
            ..
        } = self;
        let clock = &self.clock;
        let epoch = self.epoch;
        let mut batch_now = None;
        let received = driver.recv_batch(wait, &mut |datagram: Datagram<'_>| {
            // The clock is read once per batch, when its first datagram is handed over.
            let now = *batch_now.get_or_insert_with(|| since(clock, epoch));
            if let Some(recorder) = recorder.as_mut() {
                recorder.received(datagram.src, datagram.data);
            }
            let message = endpoint.handle_datagram(now, datagram.src, datagram.data);
            if let (Some(message), Some(handler)) = (message, on_event.as_mut()) {
                let mut ctx = Context {
                    endpoint,
                    sink: Sink {
                        target: Target::Deferred(deferred),
                        recorder: recorder.as_mut(),
                    },
                    now,
                };
                handler(&mut ctx, &Event::Message(message));
            }
        })?;
        for _ in 0..received.truncated {
            self.endpoint.record_external_drop(DropReason::Truncated);
        }
        if let Err(err) = self.deferred.move_to(self.driver.as_mut()) {
            tracing::debug!(error = %err, "deferred sends failed");
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
        if self.endpoint.has_transmit() {
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
                    now,
                };
                (tick.handler)(&mut ctx);
            }
        }
        self.drain_events(now);
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

    fn drain_events(&mut self, now: Timestamp) {
        loop {
            // Reliable messages released from the reorder buffer borrow the endpoint, which the
            // callback's context also needs: copy them to a scratch buffer first.
            let event = match self.endpoint.poll_event() {
                None => return,
                Some(Event::Message(m)) => {
                    let len = m.payload.len().min(MAX_DATAGRAM_LEN);
                    self.scratch[..len].copy_from_slice(&m.payload[..len]);
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
                // An event this loop does not know yet carries nothing it must act on.
                Some(_) => continue,
            };
            let Some(handler) = self.on_event.as_mut() else {
                continue;
            };
            let mut ctx = Context {
                endpoint: &mut self.endpoint,
                sink: Sink::driver(self.driver.as_mut(), &mut self.recorder),
                now,
            };
            match event {
                OwnedEvent::Message(peer, mode, len) => {
                    let message = Event::Message(Message {
                        peer,
                        mode,
                        payload: &self.scratch[..len],
                    });
                    handler(&mut ctx, &message);
                }
                OwnedEvent::Other(event) => handler(&mut ctx, &event),
            }
        }
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

enum OwnedEvent {
    Message(PeerId, Mode, usize),
    Other(Event<'static>),
}

fn since(clock: &quanta::Clock, epoch: u64) -> Timestamp {
    Timestamp::from_nanos(clock.delta_as_nanos(epoch, clock.raw()))
}
