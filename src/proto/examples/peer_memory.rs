//! Memory per established idle peer: one endpoint (the hub) accepts N sessions, made one
//! at a time by short-lived client endpoints in memory, and the process's resident set is
//! read from /proc/self/statm before and after. Each client is dropped once its handshake
//! is done, so what stays resident is the hub's (plus the allocator's fragmentation, which
//! is a real cost too). Nothing is sent after the handshakes and no timer runs: the peers
//! are established and idle.
//!
//!     cargo run --release -p intentra-proto --features sim --example peer_memory -- 10000
//!
//! With `--huge-pages` after N, the hub's peer slab is advised onto transparent huge pages
//! first, as `intentra::Node` does (`intentra_udp::advise_huge_pages`): the slab then becomes
//! resident in 2 MiB steps.
//!
//! Linux only (it reads /proc). Prints one line per measurement.

use std::time::{Duration, Instant};

use intentra_proto::wire::MAX_DATAGRAM_LEN;
use intentra_proto::{Endpoint, Timestamp};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod support;

const PAGE: u64 = 4096;

/// Resident bytes of this process (the second field of /proc/self/statm, in pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("a resident page count");
    pages * PAGE
}

fn main() {
    let peers: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse().expect("the number of peers"))
        .unwrap_or(10_000);
    let huge_pages = std::env::args().nth(2).as_deref() == Some("--huge-pages");
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let start = Timestamp::from_millis(1_000);

    let before_hub = resident_bytes();
    let config = support::hub_config(&mut rng, peers);
    let mut hub = Endpoint::new(config, start, ChaCha20Rng::seed_from_u64(8));
    let advised = if huge_pages {
        let table = hub.peer_table_memory();
        intentra_udp::advise_huge_pages(table.start, table.len).expect("madvise")
    } else {
        0
    };
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let before_peers = resident_bytes();

    let began = Instant::now();
    let mut now = start;
    for i in 0..peers {
        // A microsecond per handshake: the hub's timers never come due during the run.
        now += Duration::from_micros(1);
        // Dropped at once: what stays resident is the hub's.
        support::connect_client(&mut hub, &mut rng, i, now, &mut buf);
    }
    let established = hub.established_peers().count();
    assert_eq!(established, peers, "every session is established");
    let after_peers = resident_bytes();
    let grown = after_peers.saturating_sub(before_peers);
    println!(
        "peers={peers} established={established} hub_fixed_bytes={} rss_growth_bytes={grown} \
         bytes_per_idle_peer={:.0} huge_pages_advised_bytes={advised} elapsed_s={:.1}",
        before_peers.saturating_sub(before_hub),
        grown as f64 / peers as f64,
        began.elapsed().as_secs_f64(),
    );
    // Keep the hub alive until after the last reading.
    drop(hub);
}
