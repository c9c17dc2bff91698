//! `intentra demo`: two nodes on loopback in one process.
//!
//! Shows a handshake, both delivery modes each way, backpressure handled without a loss (the
//! server echoes every Reliable message with `send_when_writable`, which holds what its
//! window cannot take yet), and explains every loss by the drop counter that saw it. It
//! sends at a rate the default limits admit unless `--rate 0` asks it to exceed them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::DemoArgs;
use intentra::metrics::MetricsHub;
use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::{DropReason, Stats};
use intentra::proto::{Event, Mode, SendError};
use intentra::{Node, NodeConfig};

use crate::daemon::{runtime_error, DaemonError};

/// Messages received, by mode: [realtime, reliable].
#[derive(Default)]
struct Counts([AtomicU64; 2]);

impl Counts {
    fn add(&self, mode: Mode) {
        self.0[usize::from(mode == Mode::Reliable)].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, mode: Mode) -> u64 {
        self.0[usize::from(mode == Mode::Reliable)].load(Ordering::Relaxed)
    }
}

/// "rate_limit 626, replay 1" from an endpoint's drop counters, or None if it dropped nothing.
fn drop_reasons(stats: &Stats) -> Option<String> {
    let parts: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| stats.dropped(**r) > 0)
        .map(|r| format!("{} {}", r.label(), stats.dropped(*r)))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn drops_json(stats: &Stats) -> serde_json::Value {
    DropReason::ALL
        .iter()
        .filter(|r| stats.dropped(**r) > 0)
        .map(|r| (r.label().to_string(), serde_json::json!(stats.dropped(*r))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// One direction's loss line: how many of `sent` arrived, and why the rest did not.
fn loss_line(what: &str, sent: u64, got: u64, receiver: &str, drops: &Stats) -> String {
    if got >= sent {
        return format!("{what}: {got} of {sent} received, none lost");
    }
    let lost = sent - got;
    let reasons = match drop_reasons(drops) {
        Some(r) => format!(
            "{receiver}'s drop counters (packets of both modes; dropped Reliable ones were retransmitted): {r}"
        ),
        None => format!("{receiver} counted no drop (lost in the kernel's socket buffer)"),
    };
    format!("{what}: {got} of {sent} received, {lost} lost; {reasons}")
}

/// Two nodes on loopback in one process: a handshake, messages in both modes, the losses.
pub fn demo(args: &DemoArgs) -> Result<(), DaemonError> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().map_err(runtime_error)?;
    let mut rng = rand_core::OsRng;
    let server_config = EndpointConfig::new(Keypair::generate(&mut rng));
    let client_config = EndpointConfig::new(Keypair::generate(&mut rng));
    let (limit_pps, limit_burst) = (server_config.rate_pps, server_config.rate_burst);
    let window = client_config.reliable.max_queued_bytes;
    let mut server_node = NodeConfig::new(loopback, server_config);
    // The echo may have to hold every message while the client's rate limit drops its ACKs
    // (with --rate 0): room for all of them, so none is refused. Bounded by --messages.
    let echo_backlog = usize::try_from(args.messages)
        .unwrap_or(usize::MAX)
        .clamp(64, 100_000);
    server_node.handle.deferred_per_peer = echo_backlog;
    server_node.handle.deferred_total = echo_backlog;
    let mut server = Node::bind(server_node).map_err(runtime_error)?;
    let mut client = Node::bind(NodeConfig::new(loopback, client_config)).map_err(runtime_error)?;
    // Publishing keeps the batch-size and handshake-duration histograms for the printout.
    server.publish_metrics(MetricsHub::new(1), 0, Duration::from_millis(10), false);
    let say = !args.json;
    if say {
        outln!("intentra demo: two nodes on loopback");
        outln!(
            "  server {} key {}",
            server.local_addr(),
            server.public_key()
        );
        outln!(
            "  client {} key {}",
            client.local_addr(),
            client.public_key()
        );
    }
    // The server echoes every Reliable message back, in order. When its window is full the
    // echo waits in the peer's deferred queue and goes once ACKs free room: none is lost.
    let at_server = Arc::new(Counts::default());
    let echo_refused = Arc::new(AtomicU64::new(0));
    let (seen, refused) = (at_server.clone(), echo_refused.clone());
    server.on_event(move |ctx, event| {
        if let Event::Message(m) = event {
            seen.add(m.mode);
            if m.mode == Mode::Reliable {
                if let Err(err) = ctx.send_when_writable(m.peer, m.payload) {
                    refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%err, "demo echo refused");
                }
            }
        }
    });
    let at_client = Arc::new(Counts::default());
    let seen = at_client.clone();
    client.on_message(move |_, mode, _| seen.add(mode));
    let started = Instant::now();
    let peer = client
        .connect(server.local_addr(), server.public_key())
        .map_err(runtime_error)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client.peer_info(peer).is_some_and(|p| p.established) || server.peers().is_empty() {
        if Instant::now() > deadline {
            return Err(DaemonError::Runtime(
                "demo: handshake did not complete in 10 s".into(),
            ));
        }
        client
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
        server
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
    }
    let handshake = started.elapsed();
    let messages = args.messages.max(1);
    // Each step: one Realtime and one Reliable message client -> server, one Realtime
    // update and one echo server -> client, plus ACKs: about 3 packets per peer per step.
    let packets_per_peer = u64::from(args.rate) * 3;
    if say {
        outln!(
            "handshake: Noise XX complete in {:.2} ms",
            handshake.as_secs_f64() * 1e3
        );
        if args.rate == 0 {
            outln!(
                "sending {messages} realtime and {messages} reliable messages each way as fast as the loops go: deliberately above the receivers' limit of {limit_pps} packets/s per peer (burst {limit_burst}), so expect rate_limit drops"
            );
        } else {
            let verdict = if packets_per_peer <= u64::from(limit_pps) {
                "within".to_string()
            } else {
                // Over the sustained rate, a short run still fits in the bucket's burst
                // plus what refills meanwhile.
                let seconds = messages as f64 / f64::from(args.rate);
                let needed = packets_per_peer as f64 * seconds;
                let available = f64::from(limit_burst) + f64::from(limit_pps) * seconds;
                let expect = if needed <= available {
                    "a run this short fits in the burst plus the refill, so expect no rate_limit drops"
                } else {
                    "so expect rate_limit drops"
                };
                format!(
                    "{:.1}x above the sustained limit; {expect}",
                    packets_per_peer as f64 / f64::from(limit_pps)
                )
            };
            outln!(
                "sending {messages} realtime and {messages} reliable messages each way at {} per second (about {packets_per_peer} packets/s per peer, {verdict}; the default limit is {limit_pps}/s with a burst of {limit_burst})",
                args.rate
            );
        }
    }
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    let mut sent = [0u64; 2];
    let mut would_block = 0u64;
    let mut realtime_to_client = 0u64;
    let begin = Instant::now();
    let deadline = begin + Duration::from_secs(60);
    while (sent[0] < messages || sent[1] < messages) && Instant::now() < deadline {
        let step = sent[0].max(sent[1]);
        if let Some(interval) = interval {
            let due = begin + interval.mul_f64(step as f64);
            let now = Instant::now();
            if now < due {
                server.turn(Duration::ZERO).map_err(runtime_error)?;
                client
                    .turn((due - now).min(Duration::from_millis(1)))
                    .map_err(runtime_error)?;
                continue;
            }
        }
        if sent[0] < messages {
            let payload = format!("realtime {}", sent[0]);
            if client
                .send(peer, Mode::Realtime, payload.as_bytes())
                .is_ok()
            {
                sent[0] += 1;
            }
            realtime_to_client += server.publish(Mode::Realtime, b"server state").sent as u64;
        }
        if sent[1] < messages {
            let payload = format!("reliable {}", sent[1]);
            match client.send(peer, Mode::Reliable, payload.as_bytes()) {
                Ok(()) => sent[1] += 1,
                Err(SendError::WouldBlock) => would_block += 1,
                Err(err) => return Err(runtime_error(err)),
            }
        }
        server.turn(Duration::ZERO).map_err(runtime_error)?;
        client.turn(Duration::ZERO).map_err(runtime_error)?;
    }
    // Let the echoes and ACKs settle.
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle {
        server
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
        client
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
        if at_client.get(Mode::Reliable) >= messages
            && client
                .peer_info(peer)
                .is_some_and(|p| p.reliable_queued_bytes == 0)
        {
            break;
        }
    }
    client.close_all(intentra::proto::CloseReason::Local);
    for _ in 0..10 {
        server
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
    }
    let echoed = at_client.get(Mode::Reliable);
    let server_stats = server.stats();
    let client_stats = client.stats();
    if args.json {
        let summary = serde_json::json!({
            // Microsecond resolution: more digits are float noise, not information.
            "handshake_ms": (handshake.as_secs_f64() * 1e6).round() / 1e3,
            "rate": args.rate,
            "realtime_sent": sent[0],
            "reliable_sent": sent[1],
            "server_delivered": server_stats.messages_delivered,
            "realtime_received_by_server": at_server.get(Mode::Realtime),
            "reliable_received_by_server": at_server.get(Mode::Reliable),
            "reliable_echoed": echoed,
            "realtime_received_by_client": at_client.get(Mode::Realtime),
            "realtime_published_by_server": realtime_to_client,
            "would_block": would_block,
            "server_would_block": server_stats.send_would_block,
            "echo_refused": echo_refused.load(Ordering::Relaxed),
            "server_dropped": server_stats.dropped_total(),
            "server_drops": drops_json(&server_stats),
            "client_dropped": client_stats.dropped_total(),
            "client_drops": drops_json(&client_stats),
            "server_closes": server_stats.closes_total(),
        });
        outln!("{summary}");
    } else {
        outln!(
            "{}",
            loss_line(
                "client -> server realtime",
                sent[0],
                at_server.get(Mode::Realtime),
                "the server",
                &server_stats
            )
        );
        outln!(
            "client -> server reliable: {} of {} delivered in order (lost packets are retransmitted)",
            at_server.get(Mode::Reliable),
            sent[1]
        );
        outln!(
            "{}",
            loss_line(
                "server -> client realtime",
                realtime_to_client,
                at_client.get(Mode::Realtime),
                "the client",
                &client_stats
            )
        );
        outln!("server -> client: {echoed} reliable echoes received in order");
        outln!(
            "backpressure: the client's {window}-byte reliable window said would-block {would_block} times (the client retried); the server's said it {} times and its echo waited for room in the window (Context::send_when_writable), so none was lost",
            server_stats.send_would_block
        );
        outln!(
            "  (a window must hold rate x message size x round trip; for more in flight raise limits.reliable_queue_bytes in the daemon's configuration, ReliableConfig::max_queued_bytes in the library)"
        );
        outln!(
            "client closed the session; server saw {} close(s)",
            server_stats.closes_total()
        );
        if args.metrics {
            outln!();
            outln!("# server metrics (Prometheus text format)");
            out!("{}", server.metrics_text());
        } else {
            outln!("(--metrics prints the server's full metrics)");
        }
    }
    if echoed < messages {
        return Err(DaemonError::Runtime(format!(
            "demo: only {echoed} of {messages} reliable messages came back"
        )));
    }
    Ok(())
}
