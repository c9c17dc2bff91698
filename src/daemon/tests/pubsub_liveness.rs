//! The hub's presence liveness is fed by the transport, not only by pubsub HEARTBEATs:
//! a member that sends no HEARTBEAT but whose transport keeps sending keepalives stays
//! present for several detection times; once it goes quiet at both levels it is reported
//! down (reason silent). The hub is a real `intentra serve` process on loopback; the two
//! members are plain nodes in this process that speak PROTOCOL.md section 19 themselves.
//! Every loop is bounded in count and time; nothing asserts on timing.

mod pubsub_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intentra::proto::{EndpointConfig, Event, Keypair, Mode, PeerId, PublicKey};
use intentra::{Node, NodeConfig};
use intentra_pubsub::wire::{self, Message};
use intentra_pubsub::{MemberKey, PresenceReason};

use pubsub_support::*;

const DETECTION_MS: u64 = 1000;

/// A presence change one member was told about: (up, member, reason).
type Seen = Arc<Mutex<Vec<(bool, MemberKey, PresenceReason)>>>;

fn member(keepalive: Duration, seen: Option<Seen>) -> Node {
    let mut config = EndpointConfig::new(Keypair::generate(&mut rand_core::OsRng));
    config.keepalive_interval = keepalive;
    let mut node = Node::bind(NodeConfig::new("127.0.0.1:0".parse().unwrap(), config)).unwrap();
    if let Some(seen) = seen {
        node.on_event(move |_, event| {
            let Event::Message(m) = event else { return };
            let entry = match wire::parse(m.payload) {
                Ok(Message::PresenceUp(p)) => (true, p.member, p.reason),
                Ok(Message::PresenceDown(p)) => (false, p.member, p.reason),
                _ => return,
            };
            seen.lock().unwrap().push(entry);
        });
    }
    node
}

fn key_of(node: &Node) -> MemberKey {
    MemberKey(*node.public_key().as_bytes())
}

/// Connects `node` to the hub and subscribes it to `topic`; returns the hub's peer id.
fn join(node: &mut Node, hub: std::net::SocketAddr, hub_key: PublicKey, topic: &str) -> PeerId {
    let peer = node.connect(hub, hub_key).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while !node.peer_info(peer).is_some_and(|p| p.established) {
        assert!(Instant::now() < end, "no session with the hub");
        node.turn(Duration::from_millis(5)).unwrap();
    }
    node.send(peer, Mode::Reliable, wire::subscribe(topic).as_bytes())
        .unwrap();
    peer
}

#[test]
fn transport_keepalives_keep_a_member_present_and_silence_at_both_levels_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, hub_key) = keygen(dir.path(), "hub.key");
    let bind = format!("127.0.0.1:{}", free_udp());
    let toml = hub_toml(&HubSpec {
        bind: bind.clone(),
        key_file: &key_file,
        rules: vec![("*", "room", "subscribe")],
        links: Vec::new(),
        dial: Vec::new(),
        detection_ms: DETECTION_MS,
    });
    let _hub = start_hub(&[], dir.path(), "hub", &toml);
    let hub_addr: std::net::SocketAddr = bind.parse().unwrap();
    let hub_key: PublicKey = hub_key.parse().unwrap();

    // The observer sends a HEARTBEAT every 200 ms, as a member should.
    let seen: Seen = Arc::default();
    let mut observer = member(Duration::from_secs(1), Some(seen.clone()));
    let to_hub = join(&mut observer, hub_addr, hub_key, "room");
    // The quiet one never sends a HEARTBEAT; its transport sends a keepalive after
    // 200 ms without traffic, five per detection time.
    let mut quiet = member(Duration::from_millis(200), None);
    join(&mut quiet, hub_addr, hub_key, "room");
    let quiet_key = key_of(&quiet);

    let mut last_heartbeat = Instant::now();
    let mut run = |observer: &mut Node, quiet: Option<&mut Node>| {
        if last_heartbeat.elapsed() >= Duration::from_millis(200) {
            last_heartbeat = Instant::now();
            let _ = observer.send(to_hub, Mode::Realtime, wire::heartbeat().as_bytes());
        }
        observer.turn(Duration::from_millis(1)).unwrap();
        if let Some(quiet) = quiet {
            quiet.turn(Duration::from_millis(1)).unwrap();
        }
    };
    let about_quiet = |seen: &Seen| -> Vec<(bool, PresenceReason)> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(_, m, _)| *m == quiet_key)
            .map(|&(up, _, reason)| (up, reason))
            .collect()
    };

    // Up first (bounded wait), then four detection times with keepalives only.
    let end = Instant::now() + Duration::from_secs(20);
    while about_quiet(&seen).is_empty() {
        assert!(Instant::now() < end, "the quiet member never came up");
        run(&mut observer, Some(&mut quiet));
    }
    let alive_until = Instant::now() + Duration::from_millis(4 * DETECTION_MS);
    while Instant::now() < alive_until {
        run(&mut observer, Some(&mut quiet));
    }
    assert_eq!(
        about_quiet(&seen),
        vec![(true, PresenceReason::Joined)],
        "a member whose transport is heard stays present without HEARTBEATs"
    );

    // Now silent at both levels: the quiet node's loop no longer runs.
    let end = Instant::now() + Duration::from_secs(20);
    while about_quiet(&seen).len() < 2 {
        assert!(
            Instant::now() < end,
            "the silent member was never reported down"
        );
        run(&mut observer, None);
    }
    assert_eq!(
        about_quiet(&seen),
        vec![
            (true, PresenceReason::Joined),
            (false, PresenceReason::Silent)
        ]
    );
}
