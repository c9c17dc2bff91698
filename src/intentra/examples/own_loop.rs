//! An application that owns its loop: the sans-IO `Endpoint` driven on plain
//! `std::net::UdpSocket`s, with the application's own clock and randomness.
//!
//! Two endpoints on loopback shake hands, exchange a Realtime and a Reliable message,
//! and close. Run it with `cargo run -p intentra --example own_loop`.
//!
//! The loop is what every driver of the core does: hand each datagram to
//! `handle_datagram`, call `handle_timeout` when `poll_timeout` passes, then drain
//! `poll_event` and `poll_transmit` into the socket.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use intentra::proto::wire::MAX_DATAGRAM_LEN;
use intentra::proto::Endpoint;
use intentra::proto::EndpointConfig;
use intentra::proto::Keypair;
use intentra::proto::Timestamp;
use intentra::proto::{Event, Mode, PeerId, Sent};

/// One endpoint, its socket and the epoch its timestamps count from.
struct Host {
    name: &'static str,
    socket: UdpSocket,
    endpoint: Endpoint,
    epoch: Instant,
    received: Vec<(Mode, Vec<u8>)>,
    peer: Option<PeerId>,
}

impl Host {
    fn bind(name: &'static str, keys: Keypair, epoch: Instant) -> std::io::Result<Host> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(5)))?;
        let now = Timestamp::from_nanos(epoch.elapsed().as_nanos() as u64);
        let endpoint = Endpoint::new(EndpointConfig::new(keys), now, rand_core::OsRng);
        Ok(Host {
            name,
            socket,
            endpoint,
            epoch,
            received: Vec::new(),
            peer: None,
        })
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// One turn: at most one datagram in, due timers, then everything the endpoint wants out.
    fn turn(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        if let Ok((len, src)) = self.socket.recv_from(buf) {
            let now = self.now();
            for message in self.endpoint.handle_datagram(now, src, &mut buf[..len]) {
                self.received.push((message.mode, message.payload.to_vec()));
            }
        }
        let now = self.now();
        if self.endpoint.poll_timeout().is_some_and(|due| due <= now) {
            self.endpoint.handle_timeout(now);
        }
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::PeerUp { peer, addr, .. } => {
                    println!("{}: session up with {addr}", self.name);
                    self.peer = Some(peer);
                }
                Event::PeerDown { reason, .. } => {
                    println!("{}: session down ({})", self.name, reason.label())
                }
                Event::Message(message) => {
                    self.received.push((message.mode, message.payload.to_vec()))
                }
                _ => {}
            }
        }
        while let Some(transmit) = self.endpoint.poll_transmit(now, buf) {
            self.socket.send_to(&buf[..transmit.len], transmit.dst)?;
        }
        Ok(())
    }

    fn send(&mut self, mode: Mode, payload: &[u8], buf: &mut [u8]) -> std::io::Result<()> {
        let Some(peer) = self.peer else { return Ok(()) };
        let now = self.now();
        match self.endpoint.send(now, peer, mode, payload, buf) {
            Ok(Sent::Now(transmit)) => {
                self.socket.send_to(&buf[..transmit.len], transmit.dst)?;
            }
            // Held beyond the peer's window: `poll_transmit` sends it when ACKs open it.
            Ok(Sent::Queued) => {}
            Err(err) => println!("{}: send refused: {err}", self.name),
        }
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let epoch = Instant::now();
    let server_keys = Keypair::generate(&mut rand_core::OsRng);
    let server_public = server_keys.public;
    let mut server = Host::bind("server", server_keys, epoch)?;
    let mut client = Host::bind("client", Keypair::generate(&mut rand_core::OsRng), epoch)?;
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];

    let now = client.now();
    let server_addr = server.socket.local_addr()?;
    client.peer = None;
    client
        .endpoint
        .connect(now, server_addr, server_public)
        .expect("a fresh endpoint accepts a connect");

    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sent = false;
    while Instant::now() < deadline && server.received.len() < 2 {
        client.turn(&mut buf)?;
        server.turn(&mut buf)?;
        if !sent && client.peer.is_some() {
            client.send(Mode::Realtime, b"state update", &mut buf)?;
            client.send(Mode::Reliable, b"order placed", &mut buf)?;
            sent = true;
        }
    }
    for (mode, payload) in &server.received {
        println!(
            "server: {} message {:?}",
            mode.label(),
            String::from_utf8_lossy(payload)
        );
    }
    if let Some(peer) = client.peer {
        let now = client.now();
        client.endpoint.close(now, peer);
        client.turn(&mut buf)?;
        server.turn(&mut buf)?;
    }
    if server.received.len() < 2 {
        eprintln!("only {} of 2 messages arrived", server.received.len());
        std::process::exit(1);
    }
    Ok(())
}
