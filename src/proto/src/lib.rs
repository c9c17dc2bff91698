//! intentra's sans-IO protocol core: Noise XX handshakes, cookies under load, in-place
//! AES-256-GCM, a replay window, per-peer rate limits, and Realtime and Reliable delivery.
//!
//! An [`Endpoint`] is one deterministic state machine for every peer of one socket. It never
//! reads a clock, touches a socket or draws randomness of its own: every input takes `now`,
//! datagrams arrive as byte slices, and the RNG is handed to [`Endpoint::new`]. That makes a
//! whole network replayable on a virtual clock (the `sim` feature) and keeps all I/O in the
//! drivers.
//!
//! # The drive loop
//!
//! Inputs are [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`],
//! [`Endpoint::connect`], [`Endpoint::send`] and [`Endpoint::close`]. After every input, drain
//! [`Endpoint::poll_event`] and [`Endpoint::poll_transmit`], then sleep until
//! [`Endpoint::poll_timeout`] or the next datagram. Two endpoints wired together in memory:
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use intentra_proto::wire::MAX_DATAGRAM_LEN;
//! use intentra_proto::{Endpoint, EndpointConfig, Event, Keypair, Mode, Timestamp};
//! use rand_chacha::rand_core::SeedableRng;
//! use rand_chacha::ChaCha20Rng;
//!
//! /// What a driver does after every input: hands each side's datagrams to the other (a socket
//! /// would carry them) until both are quiet, and reports events and deliveries.
//! fn drive(now: Timestamp, a: &mut Endpoint, b: &mut Endpoint, log: &mut Vec<String>) {
//!     let (a_addr, b_addr) = (addr(1000), addr(2000));
//!     let mut buf = [0u8; MAX_DATAGRAM_LEN];
//!     loop {
//!         let mut quiet = true;
//!         while let Some(t) = a.poll_transmit(now, &mut buf) {
//!             quiet = false;
//!             for m in b.handle_datagram(now, a_addr, &mut buf[..t.len]) {
//!                 log.push(format!("b got {:?}", m.payload));
//!             }
//!         }
//!         while let Some(t) = b.poll_transmit(now, &mut buf) {
//!             quiet = false;
//!             a.handle_datagram(now, b_addr, &mut buf[..t.len]);
//!         }
//!         for (name, endpoint) in [("a", &mut *a), ("b", &mut *b)] {
//!             while let Some(event) = endpoint.poll_event() {
//!                 match event {
//!                     Event::PeerUp { .. } => log.push(format!("{name} up")),
//!                     Event::Message(m) => log.push(format!("{name} got {:?}", m.payload)),
//!                     Event::PeerDown { reason, .. } => log.push(format!("{name} down: {reason:?}")),
//!                     _ => {}
//!                 }
//!             }
//!         }
//!         if quiet {
//!             return;
//!         }
//!     }
//! }
//!
//! fn addr(port: u16) -> SocketAddr {
//!     SocketAddr::from(([127, 0, 0, 1], port))
//! }
//!
//! let mut rng = ChaCha20Rng::seed_from_u64(1);
//! let mut now = Timestamp::from_millis(1);
//! let config_b = EndpointConfig::new(Keypair::generate(&mut rng));
//! let b_key = config_b.keypair.public;
//! let config_a = EndpointConfig::new(Keypair::generate(&mut rng));
//! let mut a = Endpoint::new(config_a, now, ChaCha20Rng::seed_from_u64(2));
//! let mut b = Endpoint::new(config_b, now, ChaCha20Rng::seed_from_u64(3));
//! let mut log = Vec::new();
//!
//! // HandshakeInit, HandshakeResponse, HandshakeFinish and b's confirmation.
//! let peer = a.connect(now, addr(2000), b_key).unwrap();
//! drive(now, &mut a, &mut b, &mut log);
//! assert_eq!(log, ["a up", "b up"]);
//!
//! // `send` seals straight into the caller's buffer and says where the datagram goes.
//! let mut buf = [0u8; MAX_DATAGRAM_LEN];
//! let sent = a.send(now, peer, Mode::Reliable, b"hello", &mut buf).unwrap();
//! let t = sent.transmit().expect("the window is open: it goes out now");
//! assert_eq!(t.dst, addr(2000));
//! let message = b.handle_datagram(now, addr(1000), &mut buf[..t.len]).next().unwrap();
//! assert_eq!(message.payload, b"hello");
//! drive(now, &mut a, &mut b, &mut log); // nothing yet: b's ACK waits to cover more
//!
//! // Sleep until the earlier deadline, run the timers, drive again: here, b's delayed ACK.
//! now = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min().unwrap();
//! a.handle_timeout(now);
//! b.handle_timeout(now);
//! drive(now, &mut a, &mut b, &mut log);
//! assert_eq!(a.stats().dropped_total() + b.stats().dropped_total(), 0);
//! assert!(a.peer_info(peer).unwrap().established);
//! ```
//!
//! # Layout
//!
//! The crate root re-exports the public surface. [`wire`] holds the packet layout for tools
//! that read captures; `sim` (behind the feature of that name) is the in-memory network the
//! scenario tests run on; [`internals`] exposes the building blocks below the endpoint for
//! benchmarks and fuzzing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aead;
mod config;
mod cookie;
mod endpoint;
mod event;
#[cfg(feature = "sim")]
mod fuzz;
mod handshake_load;
mod keys;
mod keyset;
mod noise;
mod noise_crypto;
mod ratelimit;
// Its inspection methods serve its unit tests; `ReliableConfig`'s fields carry its docs.
#[cfg_attr(not(test), allow(dead_code))]
#[allow(missing_docs)]
mod reliable;
mod replay_window;
#[cfg(feature = "sim")]
pub mod sim;
mod stats;
mod strikes;
mod time;
pub mod wire;

pub use crate::config::EndpointConfig;
pub use crate::endpoint::{Bundle, Bundled, Endpoint, HotState, SendState, TableMemory};
pub use crate::event::{
    ConnectError, Deliveries, Event, Message, Mode, PeerId, PeerInfo, SendError, Sent, Transmit,
};
pub use crate::keys::{KeyError, Keypair, PublicKey, SecretKey, KEY_LEN};
pub use crate::keyset::SessionSecrets;
pub use crate::reliable::{ReliableConfig, DEFAULT_QUEUE_BYTES, MAX_ACK_DELAY, MAX_QUEUE_BYTES};
pub use crate::stats::{CloseReason, DropReason, Stats};
pub use crate::strikes::StrikePolicy;
pub use crate::time::Timestamp;

/// The building blocks below `Endpoint`, for benchmarks, fuzz bodies and attack tests that
/// craft packets. Not a stable API: it follows the core's internals.
pub mod internals {
    #[cfg(feature = "ring")]
    pub use crate::aead::RingCipher;
    #[cfg(feature = "rustcrypto")]
    pub use crate::aead::RustCryptoCipher;
    pub use crate::aead::{PacketCipher, PacketKey};
    pub use crate::cookie::{
        init_mac1, mac1_key, verify_init_mac1, write_init_macs, CookieReplyKey,
    };
    /// Fuzz bodies: the wire parser, a fresh responder, and an established pair, each driven
    /// by bytes (the cargo-fuzz targets in `fuzz/` call them; `cargo test` runs their seeds).
    #[cfg(feature = "sim")]
    pub use crate::fuzz::{fuzz_pair, fuzz_responder, fuzz_wire};
    pub use crate::handshake_load::{Admission, HandshakeLoad, HandshakeRates, SourcePrefix};
    pub use crate::noise::{FinishIntent, Initiator, Responder, SessionKeys};
    pub use crate::ratelimit::TokenBucket;
    /// The Reliable sender and receiver alone, driven by operations read from bytes.
    #[cfg(feature = "sim")]
    pub use crate::reliable::fuzz::fuzz_reliable;
    pub use crate::replay_window::{ReplayError, ReplayWindow, REPLAY_WINDOW};
    pub use crate::strikes::{StrikeOutcome, Strikes};
}
