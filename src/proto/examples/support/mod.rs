//! What the examples that measure a hub with many peers share: a hub that admits every
//! handshake, a distinct address per client, and running one handshake to completion in
//! memory.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use intentra_proto::{Endpoint, EndpointConfig, Keypair, Timestamp};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Where the hub is, for its clients.
pub const HUB_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5000);

/// A hub for `peers` sessions that admits every handshake: the measurement is of sessions,
/// not of the defences.
pub fn hub_config(rng: &mut ChaCha20Rng, peers: usize) -> EndpointConfig {
    let mut config = EndpointConfig::new(Keypair::generate(rng));
    config.max_peers = peers;
    config.handshake_rate = u32::MAX / 2;
    config.handshake_burst = u32::MAX / 2;
    config.handshake_rate_per_source = u32::MAX / 2;
    config.handshake_burst_per_source = u32::MAX / 2;
    config
}

/// A distinct source address per client, so no per-source budget is shared.
pub fn client_addr(i: usize) -> SocketAddr {
    let [_, b, c, d] = (i as u32).to_be_bytes();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, b, c, d)), 40_000)
}

/// Client number `i`, connected to the hub: a one-peer endpoint whose handshake has run to
/// completion at `now`, every packet passed in memory through `buf`.
pub fn connect_client(
    hub: &mut Endpoint,
    rng: &mut ChaCha20Rng,
    i: usize,
    now: Timestamp,
    buf: &mut [u8],
) -> Endpoint {
    let hub_key = hub.public_key();
    let mut client_config = EndpointConfig::new(Keypair::generate(rng));
    client_config.max_peers = 1;
    client_config.handshakes_in_flight = 1;
    let mut client = Endpoint::new(
        client_config,
        now,
        ChaCha20Rng::seed_from_u64(1_000 + i as u64),
    );
    let addr = client_addr(i);
    client
        .connect(now, HUB_ADDR, hub_key)
        .expect("the client connects");
    loop {
        let mut moved = false;
        while let Some(t) = client.poll_transmit(now, buf) {
            hub.handle_datagram(now, addr, &mut buf[..t.len])
                .for_each(drop);
            moved = true;
        }
        while let Some(t) = hub.poll_transmit(now, buf) {
            client
                .handle_datagram(now, HUB_ADDR, &mut buf[..t.len])
                .for_each(drop);
            moved = true;
        }
        while hub.poll_event().is_some() {}
        while client.poll_event().is_some() {}
        if !moved {
            return client;
        }
    }
}
