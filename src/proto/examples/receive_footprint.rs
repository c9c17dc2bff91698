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

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use intentra_proto::wire::MAX_DATAGRAM_LEN;
use intentra_proto::{Endpoint, EndpointConfig, Keypair, Mode, Timestamp};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A distinct source address per client, so no per-source budget is shared.
fn client_addr(i: usize) -> SocketAddr {
    let [_, b, c, d] = (i as u32).to_be_bytes();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, b, c, d)), 40_000)
}

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
    let hub_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5000);

    let mut config = EndpointConfig::new(Keypair::generate(&mut rng));
    config.max_peers = peers;
    // Every handshake is admitted: the measurement is of sessions, not of the defences.
    config.handshake_rate = u32::MAX / 2;
    config.handshake_burst = u32::MAX / 2;
    config.handshake_rate_per_source = u32::MAX / 2;
    config.handshake_burst_per_source = u32::MAX / 2;
    let hub_key = config.keypair.public;
    let mut hub = Endpoint::new(config, start, ChaCha20Rng::seed_from_u64(8));
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];

    let mut now = start;
    let mut clients = Vec::with_capacity(peers);
    for i in 0..peers {
        // A microsecond per handshake: no timer comes due during the run.
        now += Duration::from_micros(1);
        let mut client_config = EndpointConfig::new(Keypair::generate(&mut rng));
        client_config.max_peers = 1;
        client_config.handshakes_in_flight = 1;
        let mut client = Endpoint::new(
            client_config,
            now,
            ChaCha20Rng::seed_from_u64(1_000 + i as u64),
        );
        let addr = client_addr(i);
        client
            .connect(now, hub_addr, hub_key)
            .expect("the client connects");
        loop {
            let mut moved = false;
            while let Some(t) = client.poll_transmit(now, &mut buf) {
                hub.handle_datagram(now, addr, &mut buf[..t.len]).count();
                moved = true;
            }
            while let Some(t) = hub.poll_transmit(now, &mut buf) {
                client.handle_datagram(now, hub_addr, &mut buf[..t.len]).count();
                moved = true;
            }
            while hub.poll_event().is_some() {}
            while client.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
        clients.push((addr, client));
    }
    assert_eq!(hub.established_peers().count(), peers, "every session is up");

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
