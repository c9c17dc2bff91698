//! Session replay: the datagrams a node received, in capture order, through a real endpoint
//! built from the node's private key and the RNG seed it logged while capturing.
//!
//! Owns the replay loop and its report. Time is synthetic (capture order, 10 µs apart):
//! the endpoint only needs the order to reproduce the node's handshakes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use intentra::capture::{keylog_path, read_keylog};
use intentra::proto::wire::MAX_DATAGRAM_LEN;
use intentra::proto::DropReason;
use intentra::proto::Endpoint;
use intentra::proto::EndpointConfig;
use intentra::proto::Timestamp;
use intentra::proto::{Event, Mode};
use intentra_daemon::config::{read_allow_list, read_key_file, Config};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::decode::{decode, Decoded, LinkType};
use crate::reader;

#[derive(Serialize)]
pub struct SessionReport {
    pub datagrams_to_local: u64,
    pub delivered_realtime: u64,
    pub delivered_reliable: u64,
    pub sessions_up: u64,
    pub sessions_down: BTreeMap<&'static str, u64>,
    pub handshakes_completed: u64,
    pub dropped: BTreeMap<&'static str, u64>,
}

pub fn replay(
    file: &Path,
    key: &Path,
    local: SocketAddr,
    keylog: Option<&Path>,
    config: Option<&Path>,
) -> Result<SessionReport, String> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|e| format!("{name}: {e}"))?;
    let keypair = read_key_file(key).map_err(|e| e.to_string())?;
    let keylog = keylog.map_or_else(|| keylog_path(file), Path::to_path_buf);
    let seed = read_keylog(&keylog).map_err(|e| e.to_string())?;
    let mut endpoint_config = match config {
        Some(path) => {
            let config = Config::load(path).map_err(|e| e.to_string())?;
            let allow = match &config.node.allow_list {
                Some(list) => Some(read_allow_list(list).map_err(|e| e.to_string())?),
                None => None,
            };
            intentra_daemon::daemon::endpoint_config(&config, keypair, allow)
        }
        None => EndpointConfig::new(keypair),
    };
    // Replay compresses time; keep timers from firing where the live node's did not.
    endpoint_config.idle_timeout = Duration::from_secs(3600);
    endpoint_config.handshake_timeout = Duration::from_secs(3600);

    let mut datagrams: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    reader::read_frames(&bytes, |frame| {
        let Some(link) = LinkType::from_linktype(frame.link_type) else {
            return;
        };
        if let Ok(Decoded::Udp(udp)) = decode(link, frame.data) {
            if udp.dst == local && udp.complete {
                datagrams.push((udp.src, udp.payload.to_vec()));
            }
        }
    })
    .map_err(|e| format!("{name}: {e}"))?;

    let mut endpoint = Endpoint::new(
        endpoint_config,
        Timestamp::ZERO,
        ChaCha20Rng::from_seed(seed),
    );
    let mut report = SessionReport {
        datagrams_to_local: datagrams.len() as u64,
        delivered_realtime: 0,
        delivered_reliable: 0,
        sessions_up: 0,
        sessions_down: BTreeMap::new(),
        handshakes_completed: 0,
        dropped: BTreeMap::new(),
    };
    let mut scratch = vec![0u8; MAX_DATAGRAM_LEN];
    let mut now = Timestamp::ZERO;
    endpoint.handle_timeout(now);
    for (src, mut payload) in datagrams {
        now += Duration::from_micros(10);
        endpoint.handle_timeout(now);
        if let Some(message) = endpoint.handle_datagram(now, src, &mut payload) {
            count(&mut report, message.mode);
        }
        loop {
            match endpoint.poll_event() {
                Some(Event::Message(m)) => count(&mut report, m.mode),
                Some(Event::PeerUp { .. }) => report.sessions_up += 1,
                Some(Event::PeerDown { reason, .. }) => {
                    *report.sessions_down.entry(reason.label()).or_default() += 1;
                }
                None => break,
            }
        }
        // What the node sent is in the capture already; draining keeps the state machine
        // (and its RNG draws) in step with the live node.
        while endpoint.poll_transmit(now, &mut scratch).is_some() {}
    }
    let stats = endpoint.stats();
    report.handshakes_completed = stats.handshakes_completed;
    for reason in DropReason::ALL {
        let n = stats.dropped(reason);
        if n > 0 {
            report.dropped.insert(reason.label(), n);
        }
    }
    Ok(report)
}

fn count(report: &mut SessionReport, mode: Mode) {
    match mode {
        Mode::Realtime => report.delivered_realtime += 1,
        Mode::Reliable => report.delivered_reliable += 1,
    }
}

pub fn print(report: &SessionReport, json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("intentra-replay: cannot encode report: {e}"),
        }
        return;
    }
    println!(
        "session replay: {} datagrams to the node",
        report.datagrams_to_local
    );
    println!("  handshakes completed  {}", report.handshakes_completed);
    println!("  sessions up           {}", report.sessions_up);
    println!("  delivered realtime    {}", report.delivered_realtime);
    println!("  delivered reliable    {}", report.delivered_reliable);
    for (reason, n) in &report.sessions_down {
        println!("  session down: {reason:<16} {n}");
    }
    for (reason, n) in &report.dropped {
        println!("  dropped: {reason:<21} {n}");
    }
}
