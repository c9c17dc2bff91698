//! Session replay: the datagrams a node received, in capture order, opened with the
//! per-session transport keys the node wrote to its key log while capturing.
//!
//! Owns the replay loop, its report and the verdict on it. Transport packets are found by
//! their receiver index in the key log and opened with that key set's keys behind a replay
//! window, as the endpoint would; Reliable messages are counted once per sequence number
//! per session (a rekey continues the session, a new handshake starts it over). The node's
//! private key checks the mac1 of HandshakeInits: it proves the capture and the key belong
//! together. Nothing here re-runs a handshake, and the key log never holds what would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use intentra::capture::{keylog_path, read_keylog, LoggedSession};
use intentra::proto::internals::ReplayWindow;
use intentra::proto::internals::{mac1_key, verify_init_mac1};
use intentra::proto::internals::{PacketCipher, PacketKey};
use intentra::proto::wire::{self, parse_header, FrameKind, Header, TransportKind};
use intentra::proto::CloseReason;
use intentra_daemon::config::read_key_file;
use serde::Serialize;

use crate::decode::{decode, Decoded, LinkType, Reassembler};
use crate::reader;

#[derive(Serialize, Default)]
pub struct SessionReport {
    pub datagrams_to_local: u64,
    /// Datagrams to the node the capture cut short at its snapshot length: not replayed, as
    /// nothing can be made of part of a sealed packet.
    pub truncated: u64,
    /// Frames on link types the decoder does not walk, by LINKTYPE_ value.
    pub unsupported_link_types: BTreeMap<u32, u64>,
    /// IP fragments in the capture (any destination), and the datagrams they made or not.
    pub ip_fragments: u64,
    pub reassembled: u64,
    pub fragments_incomplete: u64,
    pub fragments_conflicting: u64,
    pub sessions_in_key_log: u64,
    /// HandshakeInits to the node, and how many of them carry a mac1 for its key.
    pub handshake_inits: u64,
    pub handshake_inits_for_key: u64,
    /// Handshakes whose last message to the node names a logged session.
    pub handshakes_completed: u64,
    /// Of those, the ones that started a session (not rekeys).
    pub sessions_up: u64,
    /// Close packets opened, by the reason the node reports (`remote`).
    pub sessions_down: BTreeMap<&'static str, u64>,
    /// Transport packets to the node, and how many opened with a logged key.
    pub transport_packets: u64,
    pub opened: u64,
    pub delivered_realtime: u64,
    pub delivered_reliable: u64,
    pub acks: u64,
    pub keepalives: u64,
    pub dropped: BTreeMap<&'static str, u64>,
    /// Where the datagrams not to the node went (shown when none was to it).
    #[serde(skip)]
    pub other_destinations: BTreeMap<SocketAddr, u64>,
    #[serde(skip)]
    pub keylog: PathBuf,
}

struct KeyState {
    recv: PacketKey,
    window: ReplayWindow,
    /// Index into the session chains (a new session and its rekeys).
    chain: usize,
    rekey: bool,
    completed: bool,
}

/// FILE.keylog; for a rotated FILE.N without one of its own, the key log of FILE.
pub fn default_keylog(file: &Path) -> PathBuf {
    let own = keylog_path(file);
    if own.exists() {
        return own;
    }
    let name = file.as_os_str().to_string_lossy();
    match name.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let base = keylog_path(Path::new(base));
            if base.exists() {
                base
            } else {
                own
            }
        }
        _ => own,
    }
}

pub fn replay(
    file: &Path,
    key: &Path,
    local: SocketAddr,
    keylog: Option<&Path>,
    mut warn: impl FnMut(reader::Warning),
) -> Result<SessionReport, String> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).map_err(|e| format!("{name}: {e}"))?;
    let keypair = read_key_file(key).map_err(|e| e.to_string())?;
    let keylog = keylog.map_or_else(|| default_keylog(file), Path::to_path_buf);
    let logged = read_keylog(&keylog).map_err(|e| keylog_error(&e, &keylog))?;

    let mut report = SessionReport {
        sessions_in_key_log: logged.len() as u64,
        keylog: keylog.clone(),
        ..SessionReport::default()
    };
    let (mut keys, chains) = key_table(&logged);
    let mut delivered: Vec<HashSet<u64>> = vec![HashSet::new(); chains];
    let mac1 = mac1_key(&keypair.public);

    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    let mut reassembler = Reassembler::default();
    reader::read_frames(
        &bytes,
        |frame| {
            let Some(link) = LinkType::from_linktype(frame.link_type) else {
                *report
                    .unsupported_link_types
                    .entry(frame.link_type)
                    .or_default() += 1;
                return;
            };
            match decode(link, frame.data) {
                Ok(Decoded::Udp(udp)) => {
                    if udp.dst != local {
                        *report.other_destinations.entry(udp.dst).or_default() += 1;
                    } else if !crate::whole(&udp, &frame) {
                        report.truncated += 1;
                    } else {
                        datagrams.push(udp.payload.to_vec());
                    }
                }
                // Reassembled datagrams take the normal path, in the order they completed.
                Ok(Decoded::Fragment(fragment)) => {
                    let Some(datagram) = reassembler.push(fragment, frame.timestamp) else {
                        return;
                    };
                    if let Ok(Decoded::Udp(udp)) = datagram.decode() {
                        if udp.dst != local {
                            *report.other_destinations.entry(udp.dst).or_default() += 1;
                        } else if udp.complete {
                            datagrams.push(udp.payload.to_vec());
                        }
                    }
                }
                _ => {}
            }
        },
        &mut warn,
    )
    .map_err(|e| format!("{name}: {e}"))?;
    reassembler.finish();
    report.ip_fragments = reassembler.stats.fragments;
    report.reassembled = reassembler.stats.reassembled;
    report.fragments_incomplete = reassembler.stats.incomplete;
    report.fragments_conflicting = reassembler.stats.conflicting;
    report.datagrams_to_local = datagrams.len() as u64;

    let count_drop = |report: &mut SessionReport, reason: &'static str| {
        *report.dropped.entry(reason).or_default() += 1;
    };
    for mut datagram in datagrams {
        let header = match parse_header(&datagram) {
            Ok(header) => header,
            Err(_) => {
                count_drop(&mut report, "malformed");
                continue;
            }
        };
        match header {
            Header::HandshakeInit { .. } => {
                report.handshake_inits += 1;
                if verify_init_mac1(&mac1, &datagram) {
                    report.handshake_inits_for_key += 1;
                } else {
                    count_drop(&mut report, "bad_mac1");
                }
            }
            // The node's last handshake message as responder (Finish) or as initiator
            // (Response) names its own index: the keys logged under it were installed.
            Header::HandshakeFinish { receiver } | Header::HandshakeResponse { receiver, .. } => {
                if let Some(state) = keys.get_mut(&receiver.get()) {
                    if !state.completed {
                        state.completed = true;
                        report.handshakes_completed += 1;
                        if !state.rekey {
                            report.sessions_up += 1;
                        }
                    }
                }
            }
            Header::CookieReply { .. } => {}
            Header::Transport {
                kind,
                receiver,
                counter,
            } => {
                report.transport_packets += 1;
                let Some(state) = keys.get_mut(&receiver.get()) else {
                    count_drop(&mut report, "unknown_session");
                    continue;
                };
                if state.window.check(counter).is_err() {
                    count_drop(&mut report, "replay");
                    continue;
                }
                let Ok(len) = state.recv.open_in_place(counter, &mut datagram) else {
                    count_drop(&mut report, "crypto");
                    continue;
                };
                let _ = state.window.mark(counter);
                report.opened += 1;
                let plaintext = datagram.get(16..16 + len).unwrap_or_default();
                // Whether a Reliable segment (`seq` then the message) is seen for the first
                // time in its session chain: retransmissions are not deliveries.
                let chain = state.chain;
                let mut fresh = |segment: &[u8]| {
                    let seq = segment
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes);
                    seq.is_some_and(|seq| {
                        delivered
                            .get_mut(chain)
                            .is_some_and(|seen| seen.insert(seq))
                    })
                };
                match kind {
                    TransportKind::Realtime => report.delivered_realtime += 1,
                    TransportKind::Reliable => {
                        if fresh(plaintext) {
                            report.delivered_reliable += 1;
                        }
                    }
                    TransportKind::Bundle => {
                        if wire::check_bundle(plaintext).is_err() {
                            count_drop(&mut report, "malformed");
                            continue;
                        }
                        for frame in wire::bundle_frames(plaintext) {
                            match frame.kind {
                                FrameKind::Realtime => report.delivered_realtime += 1,
                                FrameKind::Reliable => {
                                    if fresh(frame.body) {
                                        report.delivered_reliable += 1;
                                    }
                                }
                            }
                        }
                    }
                    TransportKind::Ack => report.acks += 1,
                    TransportKind::Keepalive => report.keepalives += 1,
                    TransportKind::Close => {
                        *report
                            .sessions_down
                            .entry(CloseReason::Remote.label())
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    Ok(report)
}

/// Why the key log could not be read, in one line: a missing one is not the old format.
fn keylog_error(error: &std::io::Error, keylog: &Path) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => format!(
            "{}: key log not found; name it with --keylog (`intentra serve --capture FILE` \
             writes FILE.keylog, and with several workers FILE.workerN and \
             FILE.workerN.keylog: replay each FILE.workerN)",
            keylog.display()
        ),
        // A key log of old is one line of hex: the first line is "not a key log line".
        std::io::ErrorKind::InvalidData => {
            format!("{error} (key logs of intentra before v1 held an RNG seed and cannot be read)")
        }
        _ => error.to_string(),
    }
}

/// The receive keys of every logged key set by the node's index, and the number of session
/// chains (a new session and the rekeys that follow it for the same peer).
fn key_table(logged: &[LoggedSession]) -> (HashMap<u32, KeyState>, usize) {
    let mut keys = HashMap::new();
    let mut chain_of_peer: HashMap<[u8; 32], usize> = HashMap::new();
    let mut chains = 0;
    for session in logged {
        let chain = match chain_of_peer.get(&session.peer) {
            Some(&chain) if session.rekey => chain,
            _ => {
                chains += 1;
                chain_of_peer.insert(session.peer, chains - 1);
                chains - 1
            }
        };
        keys.insert(
            session.local_index,
            KeyState {
                recv: PacketKey::new(&session.recv),
                window: ReplayWindow::new(),
                chain,
                rekey: session.rekey,
                completed: false,
            },
        );
    }
    (keys, chains)
}

/// Why a replay that ran still says nothing about the node, with a hint; `None` if it does.
pub fn failure(
    report: &SessionReport,
    file: &Path,
    key: &Path,
    local: SocketAddr,
) -> Option<String> {
    if report.datagrams_to_local == 0
        && report.other_destinations.is_empty()
        && report.fragments_incomplete + report.fragments_conflicting > 0
    {
        return Some(format!(
            "{}: no datagram to --local {local} was whole: the capture holds {} IP fragments, \
             and {} fragmented datagrams never completed ({} more dropped for conflicting \
             overlaps). Was the capture started late or filtered to some fragments only?",
            file.display(),
            report.ip_fragments,
            report.fragments_incomplete,
            report.fragments_conflicting
        ));
    }
    if report.datagrams_to_local == 0 && report.truncated > 0 {
        return Some(format!(
            "{}: none of the {} datagrams to --local {local} was captured whole: the capture \
             cut them short at its snap length (captured < wire length). Capture again with \
             a snap length that holds a whole datagram (tcpdump/dumpcap -s 0).",
            file.display(),
            report.truncated
        ));
    }
    if report.datagrams_to_local == 0
        && report.other_destinations.is_empty()
        && !report.unsupported_link_types.is_empty()
    {
        let links: Vec<String> = report
            .unsupported_link_types
            .iter()
            .map(|(link, n)| format!("{link} ({n} frames)"))
            .collect();
        return Some(format!(
            "{}: no datagram to --local {local}: the capture's frames are on link types this \
             tool does not read: {}",
            file.display(),
            links.join(", ")
        ));
    }
    if report.datagrams_to_local == 0 {
        let mut seen: Vec<_> = report.other_destinations.iter().collect();
        seen.sort_by(|a, b| b.1.cmp(a.1));
        let seen: Vec<String> = seen
            .iter()
            .take(5)
            .map(|(addr, n)| format!("{addr} ({n})"))
            .collect();
        let seen = if seen.is_empty() {
            "none: the capture holds no UDP datagram".to_string()
        } else {
            seen.join(", ")
        };
        return Some(format!(
            "{}: no datagram is addressed to --local {local}; destinations in the capture: {seen}. \
             Is --local the node's address and port as captured?",
            file.display()
        ));
    }
    if report.handshake_inits > 0 && report.handshake_inits_for_key == 0 {
        return Some(format!(
            "{}: none of the {} HandshakeInits to {local} carries a mac1 for the key in {}: \
             is it the private key of the node that captured?",
            file.display(),
            report.handshake_inits,
            key.display()
        ));
    }
    if report.transport_packets > 0 && report.opened == 0 {
        let hint = if report.sessions_in_key_log == 0 {
            "it names no session (were the sessions set up before the capture started?)".to_string()
        } else {
            format!(
                "none of its {} sessions matches (is it this capture's key log?)",
                report.sessions_in_key_log
            )
        };
        return Some(format!(
            "{}: none of the {} transport packets to {local} opened with the keys in {}: {hint}",
            file.display(),
            report.transport_packets,
            report.keylog.display()
        ));
    }
    None
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
        "session replay: {} datagrams to the node, {} sessions in the key log",
        report.datagrams_to_local, report.sessions_in_key_log
    );
    if report.ip_fragments > 0 {
        println!(
            "  ip fragments          {} ({} datagrams reassembled, {} incomplete, {} conflicting)",
            report.ip_fragments,
            report.reassembled,
            report.fragments_incomplete,
            report.fragments_conflicting
        );
    }
    if report.truncated > 0 {
        println!(
            "  truncated (snaplen)   {} (datagrams to the node cut short, not replayed)",
            report.truncated
        );
    }
    for (link, n) in &report.unsupported_link_types {
        println!("  unsupported link {link:<5}{n} frames");
    }
    println!(
        "  handshake inits       {} ({} for this key)",
        report.handshake_inits, report.handshake_inits_for_key
    );
    println!("  handshakes completed  {}", report.handshakes_completed);
    println!("  sessions up           {}", report.sessions_up);
    println!(
        "  transport packets     {} ({} opened)",
        report.transport_packets, report.opened
    );
    println!("  delivered realtime    {}", report.delivered_realtime);
    println!("  delivered reliable    {}", report.delivered_reliable);
    println!("  acks                  {}", report.acks);
    println!("  keepalives            {}", report.keepalives);
    for (reason, n) in &report.sessions_down {
        println!("  session down: {reason:<16} {n}");
    }
    for (reason, n) in &report.dropped {
        println!("  dropped: {reason:<21} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_capture_uses_the_key_log_of_its_base_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("cap.pcap");
        std::fs::write(keylog_path(&base), "").unwrap();
        let rotated = dir.path().join("cap.pcap.3");
        assert_eq!(default_keylog(&rotated), keylog_path(&base));
        // Its own key log, when it has one, comes first.
        std::fs::write(keylog_path(&rotated), "").unwrap();
        assert_eq!(default_keylog(&rotated), keylog_path(&rotated));
        // Not a rotation number: no fallback.
        let other = dir.path().join("cap.pcap.x");
        assert_eq!(default_keylog(&other), keylog_path(&other));
    }

    #[test]
    fn an_empty_replay_fails_with_the_destinations_seen() {
        let mut report = SessionReport::default();
        report
            .other_destinations
            .insert("127.0.0.1:7700".parse().unwrap(), 12);
        let hint = failure(
            &report,
            Path::new("f.pcap"),
            Path::new("k"),
            "127.0.0.1:1".parse().unwrap(),
        )
        .unwrap();
        assert!(hint.contains("127.0.0.1:7700 (12)"), "{hint}");
        report.datagrams_to_local = 3;
        report.transport_packets = 3;
        report.opened = 1;
        assert!(failure(
            &report,
            Path::new("f"),
            Path::new("k"),
            "127.0.0.1:1".parse().unwrap()
        )
        .is_none());
    }
}
