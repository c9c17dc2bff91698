//! `intentra demo`: two nodes on loopback in one process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::DemoArgs;
use intentra::metrics::MetricsHub;
use intentra::node::{Node, NodeConfig};
use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::{Event, Mode};

use crate::daemon::{runtime_error, DaemonError};

/// Two nodes on loopback in one process: a handshake, messages in both modes, the metrics.
pub fn demo(args: &DemoArgs) -> Result<(), DaemonError> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().map_err(runtime_error)?;
    let mut rng = rand_core::OsRng;
    let server_keys = Keypair::generate(&mut rng);
    let client_keys = Keypair::generate(&mut rng);
    let mut server = Node::bind(NodeConfig::new(loopback, EndpointConfig::new(server_keys)))
        .map_err(runtime_error)?;
    let mut client = Node::bind(NodeConfig::new(loopback, EndpointConfig::new(client_keys)))
        .map_err(runtime_error)?;
    // Publishing keeps the batch-size and handshake-duration histograms for the printout.
    server.publish_metrics(MetricsHub::new(1), 0, Duration::from_millis(10), false);
    let say = !args.json;
    if say {
        println!("intentra demo: two nodes on loopback");
        println!(
            "  server {} key {}",
            server.local_addr(),
            server.public_key()
        );
        println!(
            "  client {} key {}",
            client.local_addr(),
            client.public_key()
        );
    }
    // The server echoes every Reliable message back, in order.
    server.on_event(|ctx, event| {
        if let Event::Message(m) = event {
            if m.mode == Mode::Reliable {
                let _ = ctx.send(m.peer, Mode::Reliable, m.payload);
            }
        }
    });
    let counts = Arc::new(std::sync::Mutex::new([0u64; 2]));
    let seen = counts.clone();
    client.on_message(move |_, mode, _| {
        if let Ok(mut c) = seen.lock() {
            c[usize::from(mode == Mode::Reliable)] += 1;
        }
    });
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
    if say {
        println!(
            "handshake: Noise XX complete in {:.2} ms",
            handshake.as_secs_f64() * 1e3
        );
    }
    let messages = args.messages.max(1);
    let mut sent = [0u64; 2];
    let mut would_block = 0u64;
    let mut realtime_to_client = 0u64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while (sent[0] < messages || sent[1] < messages) && Instant::now() < deadline {
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
                Err(intentra::proto::SendError::WouldBlock) => would_block += 1,
                Err(err) => return Err(runtime_error(err)),
            }
        }
        server.turn(Duration::ZERO).map_err(runtime_error)?;
        client.turn(Duration::ZERO).map_err(runtime_error)?;
    }
    // Let the echoes and ACKs settle.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle {
        server
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
        client
            .turn(Duration::from_millis(1))
            .map_err(runtime_error)?;
        let echoed = counts.lock().map(|c| c[1]).unwrap_or(0);
        if echoed >= messages
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
    let got = counts.lock().map(|c| *c).unwrap_or([0, 0]);
    let server_stats = server.stats();
    if args.json {
        let summary = serde_json::json!({
            "handshake_ms": handshake.as_secs_f64() * 1e3,
            "realtime_sent": sent[0],
            "reliable_sent": sent[1],
            "server_delivered": server_stats.messages_delivered,
            "reliable_echoed": got[1],
            "realtime_received_by_client": got[0],
            "realtime_published_by_server": realtime_to_client,
            "would_block": would_block,
            "server_dropped": server_stats.dropped_total(),
            "server_closes": server_stats.closes_total(),
        });
        println!("{summary}");
    } else {
        println!(
            "client -> server: {} realtime and {} reliable sent ({} times the reliable window said would-block and the client retried)",
            sent[0], sent[1], would_block
        );
        println!(
            "server delivered {} messages; echoed every reliable one back",
            server_stats.messages_delivered
        );
        println!(
            "server -> client: {} reliable echoes received in order, {} of {} realtime updates received",
            got[1], got[0], realtime_to_client
        );
        println!(
            "client closed the session; server saw {} close(s)",
            server_stats.closes_total()
        );
        println!();
        println!("# server metrics (Prometheus text format)");
        print!("{}", server.metrics_text());
    }
    if got[1] < messages {
        return Err(DaemonError::Runtime(format!(
            "demo: only {} of {messages} reliable messages came back",
            got[1]
        )));
    }
    Ok(())
}
