//! Hub mode of `intentra serve` (`[hub] enabled = true`): the glue between the hub's
//! node and an [`intentra_pubsub::Hub`].
//!
//! Owns the translation of the node's events (session up, down, message) into the hub's
//! inputs, the hub's outputs into `Context::send`, the per-peer FIFO of Reliable outputs
//! the transport refused with `WouldBlock` (retried in order on every tick and before
//! every input, so the hub's order per peer is kept), the dialling of configured peers
//! (hub links) with retries, the rate-limited WARN log of refusals, and the pubsub
//! counters the metrics endpoint exports. Realtime outputs are never queued: one the
//! node cannot take at once is dropped and counted (a later state replaces it).
//!
//! A hub runs on one node (one worker, one socket; `config::HubSection` says why and
//! `Config::validate` enforces it), so the glue needs no cross-thread hand-off: its lock
//! is only ever taken by that node's thread and the metrics scrape reads a copy.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use intentra::proto::PublicKey;
use intentra::proto::{Event, Mode as TransportMode, PeerId, SendError};
use intentra::{Context, Node, NodeConfig};
use intentra_pubsub::{
    DropReason, Event as PubsubEvent, Hub, HubConfig, KeyPattern, MemberKey, Mode, Permissions,
    Rule, Sink, Stats, Timestamp, TopicPattern,
};

use crate::config::{Config, ConfigError, HubSection};

/// How often the exported copy of the counters is refreshed.
const METRICS_EVERY: Duration = Duration::from_millis(100);
/// Refusal WARN lines per second at most; the rest are counted and summarised.
const REFUSAL_LOGS_PER_SECOND: u32 = 10;
/// Deferred sends the hub's node holds during a receive batch (a fan-out per publish). The
/// node pauses the batch before a publish could find less room than an earlier one needed,
/// so this bounds the subscribers one publish reaches (beyond it, relays fail and are
/// counted), not the publishes one batch may carry.
const HUB_SEND_QUEUE: usize = 4096;
/// First and longest wait between dials of a configured peer that is not up.
const DIAL_RETRY_FIRST: Duration = Duration::from_millis(500);
const DIAL_RETRY_MAX: Duration = Duration::from_secs(5);

/// The pubsub layer's view of a transport key.
pub fn member_key(key: &PublicKey) -> MemberKey {
    MemberKey(*key.as_bytes())
}

/// Converts the `[hub]` section into the hub's configuration. Errors name the key.
pub fn hub_config(section: &HubSection, own: &PublicKey) -> Result<HubConfig, ConfigError> {
    let invalid = |key: &'static str, message: String| ConfigError::Invalid {
        path: None,
        key,
        message,
    };
    let mut config = HubConfig::new(member_key(own));
    for rule in &section.rules {
        let key = if rule.key == "*" {
            KeyPattern::Any
        } else {
            let key: PublicKey = rule
                .key
                .parse()
                .map_err(|e| invalid("hub.rules", format!("key {:?}: {e}", rule.key)))?;
            KeyPattern::Key(member_key(&key))
        };
        config.rules.push(Rule {
            key,
            topic: TopicPattern::parse(&rule.topic),
            allow: Permissions {
                publish: rule.allow.iter().any(|a| a == "publish"),
                subscribe: rule.allow.iter().any(|a| a == "subscribe"),
            },
        });
    }
    for link in &section.links {
        let key: PublicKey = link
            .parse()
            .map_err(|e| invalid("hub.links", format!("{link:?}: {e}")))?;
        config.links.push(member_key(&key));
    }
    config.detection_time = Duration::from_millis(section.detection_time_ms);
    config.last_value_cache = section.last_value_cache;
    config.max_topics = section.max_topics;
    config.max_memberships_per_member = section.max_memberships_per_member;
    Ok(config)
}

/// Longest keepalive a hub sends: well under a member's default idle timeout (10 s), so
/// a member that only listens keeps its session however long the detection time is.
const HUB_KEEPALIVE_MAX: Duration = Duration::from_secs(3);

/// Hub mode's changes to a node's configuration: the transport's keepalive and idle
/// timeout follow the detection time (keepalive a third of it but at most 3 s, idle
/// timeout three times it, so a member is reported silent before its session is
/// closed), and the node may defer more sends per receive batch (one relay per
/// subscriber).
/// The keepalive interval and idle timeout of a hub's sessions, from its detection time: a
/// third of it (at most 3 s) and three times it (PROTOCOL.md 19.8.3).
pub(crate) fn session_timers(detection_time_ms: u64) -> (Duration, Duration) {
    let detection = Duration::from_millis(detection_time_ms);
    ((detection / 3).min(HUB_KEEPALIVE_MAX), detection * 3)
}

pub fn adjust_node_config(config: &Config, node: &mut NodeConfig) {
    if !config.hub.enabled {
        return;
    }
    let (keepalive, idle_timeout) = session_timers(config.hub.detection_time_ms);
    node.endpoint.keepalive_interval = keepalive;
    node.endpoint.idle_timeout = idle_timeout;
    node.send_queue = node.send_queue.max(HUB_SEND_QUEUE);
    // Sessions come from members and links; nothing here is a SO_REUSEPORT group.
    node.socket.reuse_port = false;
}

/// Counters of the glue itself (the hub's own are `intentra_pubsub::Stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GlueCounters {
    /// Reliable outputs put in a peer's FIFO (the transport answered WouldBlock, or
    /// earlier ones were still waiting).
    pub backlog_queued: u64,
    /// Reliable outputs that found their peer's FIFO full (the session was closed).
    pub backlog_overflow: u64,
    /// Realtime outputs the node could not take at once (dropped).
    pub realtime_send_failed: u64,
    /// Reliable outputs the transport refused for good (peer gone, too large).
    pub reliable_send_failed: u64,
    /// Refusals the hub reported (`Event::Refused`).
    pub refusals: u64,
    /// Refusal log lines suppressed by the rate limit.
    pub refusal_logs_suppressed: u64,
    /// Links up now.
    pub links_up: u64,
    /// Reliable outputs waiting in FIFOs now.
    pub backlog_now: u64,
    /// Sessions known to the hub now.
    pub sessions: u64,
}

/// What the metrics endpoint exports for the hub.
#[derive(Debug, Clone, Default)]
struct HubMetrics {
    stats: Stats,
    glue: GlueCounters,
    /// Only with `hub.per_topic_metrics`.
    topics: Option<Vec<TopicMetrics>>,
}

/// One topic's exported series.
#[derive(Debug, Clone, Default)]
struct TopicMetrics {
    name: String,
    publishers: u64,
    subscribers: u64,
    published_in: u64,
    relayed: u64,
}

static METRICS: Mutex<Option<HubMetrics>> = Mutex::new(None);

fn metrics_slot() -> MutexGuard<'static, Option<HubMetrics>> {
    METRICS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Adds the hub's series to an OpenMetrics body (before its `# EOF`); a process
/// without a hub adds nothing. Called by the metrics endpoint once per scrape.
pub fn append_metrics(mut body: String) -> String {
    let Some(m) = metrics_slot().clone() else {
        return body;
    };
    let mut extra = String::with_capacity(4096);
    let mut counter = |name: &str, help: &str, samples: &[(String, u64)]| {
        counter_family(&mut extra, name, help, samples);
    };
    let one = |v: u64| [(String::new(), v)];
    let drops: Vec<(String, u64)> = DropReason::ALL
        .iter()
        .map(|r| {
            (
                format!("{{reason=\"{}\"}}", r.as_str()),
                m.stats.dropped(*r),
            )
        })
        .collect();
    counter(
        "intentra_pubsub_dropped",
        "Pubsub messages the hub dropped, by reason (PROTOCOL.md 19.4.12).",
        &drops,
    );
    counter(
        "intentra_pubsub_published_in",
        "PUBLISH messages the hub accepted from members and links.",
        &one(m.stats.published_in),
    );
    counter(
        "intentra_pubsub_relayed",
        "PUBLISH messages the hub sent (one per relay target).",
        &one(m.stats.published_out),
    );
    counter(
        "intentra_pubsub_gap_missing",
        "Realtime sequence numbers reported missing (members only; 0 at a hub).",
        &one(m.stats.gap_missing),
    );
    counter(
        "intentra_pubsub_refused",
        "SUBSCRIBE, ADVERTISE and HUB_HELLO requests the hub refused.",
        &one(m.glue.refusals),
    );
    counter(
        "intentra_pubsub_refusal_logs_suppressed",
        "Refusal log lines left out by the rate limit.",
        &one(m.glue.refusal_logs_suppressed),
    );
    counter(
        "intentra_pubsub_silent",
        "Members and links reported down because nothing was heard from them.",
        &one(m.stats.silent),
    );
    counter(
        "intentra_pubsub_heartbeats_sent",
        "HEARTBEATs sent to linked hubs.",
        &one(m.stats.heartbeats_sent),
    );
    counter(
        "intentra_pubsub_backlog_queued",
        "Reliable hub outputs queued because the transport answered WouldBlock.",
        &one(m.glue.backlog_queued),
    );
    counter(
        "intentra_pubsub_backlog_overflow",
        "Reliable hub outputs that found the peer's queue full (the session was closed).",
        &one(m.glue.backlog_overflow),
    );
    counter(
        "intentra_pubsub_send_failed",
        "Hub outputs the node could not send, by mode.",
        &[
            (
                "{mode=\"realtime\"}".to_owned(),
                m.glue.realtime_send_failed,
            ),
            (
                "{mode=\"reliable\"}".to_owned(),
                m.glue.reliable_send_failed,
            ),
        ],
    );
    let mut gauge = |name: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(extra, "# HELP {name} {help}");
        let _ = writeln!(extra, "# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(extra, "{name}{labels} {value}");
        }
    };
    gauge(
        "intentra_pubsub_links_up",
        "Hub-to-hub links up.",
        &one(m.glue.links_up),
    );
    gauge(
        "intentra_pubsub_sessions",
        "Sessions (members and links) the hub knows.",
        &one(m.glue.sessions),
    );
    gauge(
        "intentra_pubsub_backlog_messages",
        "Reliable hub outputs waiting for the transport.",
        &one(m.glue.backlog_now),
    );
    if let Some(topics) = &m.topics {
        let mut members = Vec::with_capacity(topics.len() * 2);
        let mut published = Vec::with_capacity(topics.len());
        let mut relayed = Vec::with_capacity(topics.len());
        for t in topics {
            let name = escape_label(&t.name);
            members.push((
                format!("{{topic=\"{name}\",role=\"publisher\"}}"),
                t.publishers,
            ));
            members.push((
                format!("{{topic=\"{name}\",role=\"subscriber\"}}"),
                t.subscribers,
            ));
            published.push((format!("{{topic=\"{name}\"}}"), t.published_in));
            relayed.push((format!("{{topic=\"{name}\"}}"), t.relayed));
        }
        gauge(
            "intentra_pubsub_topic_members",
            "Members of each topic present now, local and behind links (hub.per_topic_metrics).",
            &members,
        );
        counter_family(
            &mut extra,
            "intentra_pubsub_topic_published_in",
            "PUBLISH messages the hub accepted on each topic (hub.per_topic_metrics).",
            &published,
        );
        counter_family(
            &mut extra,
            "intentra_pubsub_topic_relayed",
            "PUBLISH messages the hub sent on each topic, one per target (hub.per_topic_metrics).",
            &relayed,
        );
    }
    match body.rfind("# EOF") {
        Some(at) => body.insert_str(at, &extra),
        None => body.push_str(&extra),
    }
    body
}

/// A counter family in the OpenMetrics text format (sample names end in `_total`).
fn counter_family(out: &mut String, name: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}_total{labels} {value}");
    }
}

fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A configured peer this hub dials (and re-dials while it is not up).
struct Dial {
    addr: SocketAddr,
    key: PublicKey,
    peer: Option<PeerId>,
    next: Timestamp,
    wait: Duration,
}

/// At most `per_second` events a second; the rest counted.
struct Limiter {
    window: Timestamp,
    used: u32,
    suppressed: u64,
}

impl Limiter {
    fn allow(&mut self, now: Timestamp) -> Option<u64> {
        if now.saturating_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.used = 0;
        }
        if self.used < REFUSAL_LOGS_PER_SECOND {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

struct Glue {
    hub: Hub<PeerId>,
    /// Only peers with something waiting are in here.
    queues: HashMap<PeerId, VecDeque<Vec<u8>>>,
    backlog: usize,
    counters: GlueCounters,
    limiter: Limiter,
    dials: Vec<Dial>,
    closing: Vec<PeerId>,
    /// Authenticated packets counted from each session up, as last sampled: a count
    /// that grew means the transport heard the peer (a keepalive, an ACK, anything),
    /// which keeps it present even when its pubsub HEARTBEAT is late.
    heard: HashMap<PeerId, u64>,
    /// When `heard` was last sampled, and how often it is.
    heard_at: Timestamp,
    heard_every: Duration,
    per_topic: bool,
    next_metrics: Timestamp,
}

/// Where the hub's outputs go during one call.
struct Out<'a, 'b> {
    ctx: &'a mut Context<'b>,
    queues: &'a mut HashMap<PeerId, VecDeque<Vec<u8>>>,
    backlog: usize,
    counters: &'a mut GlueCounters,
    limiter: &'a mut Limiter,
    closing: &'a mut Vec<PeerId>,
}

impl Out<'_, '_> {
    fn queue(&mut self, to: PeerId, bytes: &[u8]) {
        let q = self.queues.entry(to).or_default();
        if q.len() >= self.backlog {
            self.counters.backlog_overflow += 1;
            if !self.closing.contains(&to) {
                self.closing.push(to);
            }
            return;
        }
        self.counters.backlog_queued += 1;
        q.push_back(bytes.to_vec());
    }
}

impl Sink<PeerId> for Out<'_, '_> {
    fn send(&mut self, to: PeerId, mode: Mode, bytes: &[u8]) {
        match mode {
            Mode::Realtime => {
                if self.ctx.send(to, TransportMode::Realtime, bytes).is_err() {
                    self.counters.realtime_send_failed += 1;
                }
            }
            Mode::Reliable => {
                if self.queues.get(&to).is_some_and(|q| !q.is_empty()) {
                    // Behind what is already waiting: the hub's order per peer is kept.
                    self.queue(to, bytes);
                    return;
                }
                match self.ctx.send(to, TransportMode::Reliable, bytes) {
                    Ok(()) => {}
                    Err(SendError::WouldBlock | SendError::BufferTooSmall) => {
                        self.queue(to, bytes);
                    }
                    Err(_) => self.counters.reliable_send_failed += 1,
                }
            }
        }
    }

    fn event(&mut self, event: PubsubEvent<'_>) {
        let now = self.ctx.now();
        match event {
            PubsubEvent::Refused {
                peer,
                action,
                topic,
                name,
            } => {
                self.counters.refusals += 1;
                match self.limiter.allow(Timestamp(now.as_nanos())) {
                    Some(suppressed) => tracing::warn!(
                        peer = %peer,
                        action = ?action,
                        topic = name.unwrap_or(""),
                        topic_id = topic.0,
                        suppressed,
                        "pubsub request refused"
                    ),
                    None => self.counters.refusal_logs_suppressed += 1,
                }
            }
            PubsubEvent::LinkUp { hub } => {
                self.counters.links_up += 1;
                tracing::info!(hub = %hub, "hub link up");
            }
            PubsubEvent::LinkDown { hub } => {
                self.counters.links_up = self.counters.links_up.saturating_sub(1);
                tracing::info!(hub = %hub, "hub link down");
            }
            PubsubEvent::PresenceUp { member, role, .. } => {
                tracing::debug!(member = %member, role = ?role, "presence up");
            }
            PubsubEvent::PresenceDown {
                member,
                role,
                reason,
                ..
            } => {
                tracing::debug!(member = %member, role = ?role, reason = ?reason, "presence down");
            }
            _ => {}
        }
    }
}

impl Glue {
    /// Runs `f` on the hub with outputs to `ctx`, after sending what was waiting.
    fn with_hub(
        &mut self,
        ctx: &mut Context<'_>,
        f: impl FnOnce(&mut Hub<PeerId>, Timestamp, &mut Out<'_, '_>),
    ) {
        self.flush(ctx);
        let now = Timestamp(ctx.now().as_nanos());
        let mut out = Out {
            ctx: &mut *ctx,
            queues: &mut self.queues,
            backlog: self.backlog,
            counters: &mut self.counters,
            limiter: &mut self.limiter,
            closing: &mut self.closing,
        };
        f(&mut self.hub, now, &mut out);
        self.close_overflowed(ctx);
    }

    /// Closes the sessions whose Reliable FIFO overflowed during the last call.
    fn close_overflowed(&mut self, ctx: &mut Context<'_>) {
        for peer in std::mem::take(&mut self.closing) {
            tracing::warn!(%peer, backlog = self.backlog, "pubsub backlog full: closing the session");
            self.queues.remove(&peer);
            ctx.close(peer);
        }
    }

    /// Sends queued Reliable outputs, oldest first, until the transport refuses again.
    fn flush(&mut self, ctx: &mut Context<'_>) {
        if self.queues.is_empty() {
            return;
        }
        let counters = &mut self.counters;
        self.queues.retain(|&peer, q| {
            while let Some(front) = q.front() {
                match ctx.send(peer, TransportMode::Reliable, front) {
                    Ok(()) => {}
                    Err(SendError::WouldBlock | SendError::BufferTooSmall) => return true,
                    Err(_) => counters.reliable_send_failed += 1,
                }
                q.pop_front();
            }
            false
        });
    }

    fn on_event(&mut self, ctx: &mut Context<'_>, event: &Event<'_>) {
        match event {
            Event::PeerUp {
                peer, public_key, ..
            } => {
                let (peer, key) = (*peer, *public_key);
                if let Some(d) = self.dials.iter_mut().find(|d| d.key == key) {
                    d.peer = Some(peer);
                    d.wait = DIAL_RETRY_FIRST;
                }
                let count = ctx.peer_info(peer).map_or(0, |i| i.packets_received);
                self.heard.insert(peer, count);
                self.with_hub(ctx, |hub, now, out| {
                    hub.peer_up(peer, member_key(&key), now, out);
                });
            }
            Event::PeerDown { peer, .. } => {
                let peer = *peer;
                self.queues.remove(&peer);
                self.heard.remove(&peer);
                let now = Timestamp(ctx.now().as_nanos());
                for d in self.dials.iter_mut().filter(|d| d.peer == Some(peer)) {
                    d.peer = None;
                    d.next = now + d.wait;
                }
                self.with_hub(ctx, |hub, now, out| hub.peer_down(peer, now, out));
            }
            Event::Message(m) => {
                let mode = match m.mode {
                    TransportMode::Realtime => Mode::Realtime,
                    TransportMode::Reliable => Mode::Reliable,
                };
                let (peer, payload) = (m.peer, m.payload);
                self.with_hub(ctx, |hub, now, out| {
                    hub.handle_message(peer, mode, payload, now, out);
                });
            }
            _ => {}
        }
    }

    fn on_tick(&mut self, ctx: &mut Context<'_>) {
        let now = Timestamp(ctx.now().as_nanos());
        if now >= self.heard_at + self.heard_every {
            self.sample_transport(ctx, now);
        }
        if self.hub.poll_timeout().is_some_and(|t| t <= now) {
            self.with_hub(ctx, |hub, now, out| hub.handle_timeout(now, out));
        } else {
            self.flush(ctx);
        }
        for d in &mut self.dials {
            if let Some(peer) = d.peer {
                // A handshake that timed out leaves no event: notice the handle is gone.
                if ctx.peer_info(peer).is_some() {
                    continue;
                }
                d.peer = None;
                d.next = now + d.wait;
            }
            if now < d.next {
                continue;
            }
            match ctx.connect(d.addr, d.key) {
                Ok(peer) => d.peer = Some(peer),
                Err(err) => tracing::warn!(addr = %d.addr, error = %err, "cannot dial hub peer"),
            }
            d.next = now + d.wait;
            d.wait = (d.wait * 2).min(DIAL_RETRY_MAX);
        }
        if now >= self.next_metrics {
            self.next_metrics = now + METRICS_EVERY;
            self.publish_metrics();
        }
    }

    /// Tells the hub about every session whose transport was heard since the last sample.
    /// The packet came after that sample, so the hub is told it was heard then: never
    /// later than it was, so a member that goes quiet is still reported within the
    /// detection time of its last packet (at most one interval early, far less than
    /// the keepalive the hub's node asks for).
    fn sample_transport(&mut self, ctx: &mut Context<'_>, now: Timestamp) {
        // Never more than half the detection time back, whatever the tick, so a silent
        // member heard again is not found silent again at once.
        let half = self.hub.config().detection_time / 2;
        let floor = Timestamp(now.0.saturating_sub(half.as_nanos() as u64));
        let since = self.heard_at.max(floor);
        self.heard_at = now;
        let Glue {
            hub,
            heard,
            queues,
            backlog,
            counters,
            limiter,
            closing,
            ..
        } = self;
        let mut out = Out {
            ctx: &mut *ctx,
            queues,
            backlog: *backlog,
            counters,
            limiter,
            closing,
        };
        for (&peer, seen) in heard.iter_mut() {
            let Some(count) = out.ctx.peer_info(peer).map(|i| i.packets_received) else {
                continue;
            };
            if count != *seen {
                *seen = count;
                hub.peer_alive(peer, since, &mut out);
            }
        }
        self.close_overflowed(ctx);
    }

    fn publish_metrics(&mut self) {
        self.counters.backlog_now = self.queues.values().map(|q| q.len() as u64).sum();
        let topics = self.per_topic.then(|| {
            self.hub
                .topic_stats()
                .map(|t| TopicMetrics {
                    name: t.name.to_owned(),
                    publishers: t.publishers as u64,
                    subscribers: t.subscribers as u64,
                    published_in: t.published_in,
                    relayed: t.relayed,
                })
                .collect()
        });
        *metrics_slot() = Some(HubMetrics {
            stats: self.hub.stats().clone(),
            glue: self.counters,
            topics,
        });
    }
}

/// How often the transport's per-session packet counts are sampled for liveness: a
/// twentieth of the detection time (150 ms at the default 3 s), at least one tick.
fn liveness_interval(section: &HubSection) -> Duration {
    (Duration::from_millis(section.detection_time_ms) / 20)
        .max(Duration::from_millis(section.tick_ms))
}

/// Makes `node` a hub: its events go to `inner` (the daemon's session log) and then to
/// the hub; it dials `config.node.peers` itself and re-dials them while they are down.
pub fn attach(
    node: &mut Node,
    config: &Config,
    mut inner: impl FnMut(&mut Context<'_>, &Event<'_>) + Send + 'static,
) -> Result<(), ConfigError> {
    let section = &config.hub;
    let hub_config = hub_config(section, &node.public_key()).map_err(|e| match e {
        ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
            path: config.source.clone(),
            key,
            message,
        },
        other => other,
    })?;
    tracing::info!(
        rules = hub_config.rules.len(),
        links = hub_config.links.len(),
        last_value_cache = hub_config.last_value_cache,
        detection_ms = section.detection_time_ms,
        "pubsub hub"
    );
    let glue = Arc::new(Mutex::new(Glue {
        hub: Hub::new(hub_config),
        queues: HashMap::new(),
        backlog: section.backlog_per_peer,
        counters: GlueCounters::default(),
        limiter: Limiter {
            window: Timestamp::ZERO,
            used: 0,
            suppressed: 0,
        },
        dials: config
            .node
            .peers
            .iter()
            .map(|p| Dial {
                addr: p.address,
                key: p.public_key,
                peer: None,
                next: Timestamp::ZERO,
                wait: DIAL_RETRY_FIRST,
            })
            .collect(),
        closing: Vec::new(),
        heard: HashMap::new(),
        heard_at: Timestamp::ZERO,
        heard_every: liveness_interval(section),
        per_topic: section.per_topic_metrics,
        next_metrics: Timestamp::ZERO,
    }));
    *metrics_slot() = Some(HubMetrics::default());
    let events = Arc::clone(&glue);
    node.on_event(move |ctx, event| {
        inner(ctx, event);
        lock(&events).on_event(ctx, event);
    });
    node.every(Duration::from_millis(section.tick_ms), move |ctx| {
        lock(&glue).on_tick(ctx);
    });
    Ok(())
}

fn lock(glue: &Mutex<Glue>) -> MutexGuard<'_, Glue> {
    glue.lock().unwrap_or_else(|p| p.into_inner())
}

/// The glue's counters as last exported (for tests and `status`).
pub fn exported_counters() -> Option<GlueCounters> {
    metrics_slot().as_ref().map(|m| m.glue)
}
