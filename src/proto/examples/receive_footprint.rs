//! How much of a peer's state one received packet touches: one endpoint (the hub) holds N
//! established sessions, every client seals M Realtime packets in advance, and the hub then
//! opens them in a random order of peers inside `receive_all`, with no cache hint. Run under
//! callgrind's cache simulator with a last-level cache much smaller than N peers' state, the
//! last-level misses of `receive_all` per packet count the lines a packet reads that no
//! earlier packet left in the cache: its peer's state and the packet itself. A count of
//! instructions and simulated misses, so it is the same on any host.
//!
//!     cargo build --release -p intentra-proto --features sim --example receive_footprint
//!     valgrind --tool=callgrind --cache-sim=yes --LL=262144,16,64 --collect-atstart=no \
//!         --toggle-collect='*receive_all*' --callgrind-out-file=/tmp/footprint.out \
//!         target/release/examples/receive_footprint 2000 20000
//!     callgrind_annotate /tmp/footprint.out | head -30
//!
//! Prints the packets opened and messages delivered, which must equal M.

use std::net::SocketAddr;
use std::time::Duration;

use intentra_proto::wire::MAX_DATAGRAM_LEN;
use intentra_proto::{Endpoint, Mode, Timestamp};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

mod support;

/// Opens every packet at the hub; returns the messages delivered. Not inlined, so that a
/// profiler can collect this function alone.
#[inline(never)]
fn receive_all(hub: &mut Endpoint, now: Timestamp, packets: &mut [(SocketAddr, Vec<u8>)]) -> usize {
    let mut delivered = 0;
    for (src, packet) in packets.iter_mut() {
        delivered += hub.handle_datagram(now, *src, packet).count();
    }
    delivered
}

fn main() {
    let mut args = std::env::args().skip(1);
    let peers: usize = args
        .next()
        .map(|arg| arg.parse().expect("the number of peers"))
        .unwrap_or(2_000);
    let packets: usize = args
        .next()
        .map(|arg| arg.parse().expect("the number of packets"))
        .unwrap_or(20_000);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let start = Timestamp::from_millis(1_000);
    let config = support::hub_config(&mut rng, peers);
    let mut hub = Endpoint::new(config, start, ChaCha20Rng::seed_from_u64(8));
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];

    let mut now = start;
    let mut clients = Vec::with_capacity(peers);
    for i in 0..peers {
        // A microsecond per handshake: no timer comes due during the run.
        now += Duration::from_micros(1);
        let client = support::connect_client(&mut hub, &mut rng, i, now, &mut buf);
        clients.push((support::client_addr(i), client));
    }
    assert_eq!(
        hub.established_peers().count(),
        peers,
        "every session is up"
    );

    // Each packet from a client drawn at random: consecutive packets seldom share a peer.
    let payload = [0x5Au8; 128];
    let mut sealed = Vec::with_capacity(packets);
    for _ in 0..packets {
        let (addr, client) = &mut clients[rng.next_u32() as usize % peers];
        let peer = client.established_peers().next().expect("the hub");
        let sent = client
            .send(now, peer, Mode::Realtime, &payload, &mut buf)
            .expect("sealed")
            .transmit()
            .expect("a Realtime message goes out at once");
        sealed.push((*addr, buf[..sent.len].to_vec()));
    }
    let delivered = receive_all(&mut hub, now, &mut sealed);
    println!("peers={peers} packets={packets} delivered={delivered}");
    assert_eq!(delivered, packets, "every packet opens");
}
