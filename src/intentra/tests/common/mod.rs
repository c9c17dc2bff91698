//! Helpers shared by the node-level test binaries (each includes this module).

use std::time::Duration;

use intentra::proto::PeerId;
use intentra::Node;

/// Connects `a` to `b` and turns both until the session is up on both sides; returns a's
/// id for b. Bounded: at most 5,000 turns of 1 ms each.
pub fn establish(a: &mut Node, b: &mut Node) -> PeerId {
    let peer = a.connect(b.local_addr(), b.public_key()).unwrap();
    for _ in 0..5_000 {
        if a.peer_info(peer).is_some_and(|p| p.established) && !b.peers().is_empty() {
            break;
        }
        a.turn(Duration::from_millis(1)).unwrap();
        b.turn(Duration::from_millis(1)).unwrap();
    }
    assert!(
        a.peer_info(peer).is_some_and(|p| p.established),
        "no session"
    );
    peer
}
