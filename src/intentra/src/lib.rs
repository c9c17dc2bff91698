//! intentra: a hardened UDP transport for high-frequency state between known peers.
//!
//! A [`Node`] is one endpoint of the protocol core ([`proto`]) on a UDP socket driven by
//! one of the Linux drivers ([`udp`]), in a deterministic event loop on one thread.
//! Peers are known by their static public keys; every packet after the Noise XX
//! handshake is sealed with AES-256-GCM. Each message picks its mode: [`Mode::Realtime`]
//! (delivered at once, never retransmitted, never waits) or [`Mode::Reliable`] (in order,
//! exactly once, bounded per peer, so a full window answers `WouldBlock`).
//!
//! Three ways to use it:
//! - **Callbacks inside the loop** (zero copies): [`Node::on_event`], [`Node::on_message`],
//!   [`Node::every`], each with a [`Context`] that can send, publish and close.
//! - **From the application's own threads**: [`Node::handle`] gives a [`Handle`]
//!   (`Clone + Send + Sync`) that queues sends for the loop and wakes it, and
//!   [`Node::events`] gives an [`Events`] reader that copies messages and peer events out
//!   of the loop; neither can stall the loop.
//! - **Owning the loop yourself**: drive [`proto::Endpoint`] on any socket (see the
//!   `own_loop` example and the crate docs of `intentra-proto`).
//!
//! The quick start, compiled as a test:
//!
//! ```no_run
//! use std::time::Duration;
//! use intentra::{EndpointConfig, Keypair, Mode, Node, NodeConfig, OsRng};
//!
//! let keys = Keypair::generate(&mut OsRng);
//! let mut node = Node::bind(NodeConfig::new("127.0.0.1:7700".parse()?, EndpointConfig::new(keys)))?;
//! node.on_message(|peer, mode, bytes| println!("{peer}: {} bytes ({})", bytes.len(), mode.label()));
//! // From any thread: a feed handler publishing through a handle.
//! let handle = node.handle();
//! std::thread::spawn(move || {
//!     for _ in 0..1000 {
//!         let _ = handle.publish(Mode::Realtime, b"state update"); // to every established peer
//!         std::thread::sleep(Duration::from_millis(1));
//!     }
//!     handle.shutdown();
//! });
//! node.run()?; // until a handle or the shutdown handle says stop
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use intentra_proto as proto;
pub use intentra_udp as udp;

pub mod capture;
mod handle;
pub mod metrics;
mod node;

pub use handle::{
    EventDrops, Events, Full, Handle, HandleConfig, HandleError, HandleStats, NodeEvent, RecvError,
    SendFailures,
};
pub use node::{
    advise_huge_pages, prefetch_ahead, prefetch_next, Context, IdleStrategy, Node, NodeConfig,
    PublishReport, ShutdownHandle,
};

/// The types an application meets first, from the protocol core.
pub use intentra_proto::{
    CloseReason, ConnectError, DropReason, EndpointConfig, Event, Keypair, Mode, PeerId, PublicKey,
    ReliableConfig, SendError,
};

/// The operating system's random source, for [`Keypair::generate`] and the node's own
/// randomness (the core never draws randomness of its own).
pub use rand_core::OsRng;

/// README's library example, compiled with the crate's tests so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
