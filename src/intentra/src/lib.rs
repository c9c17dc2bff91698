//! intentra: a hardened UDP transport for high-frequency state between known peers.
#![forbid(unsafe_code)]

pub use intentra_proto as proto;
pub use intentra_udp as udp;

pub mod capture;
pub mod handle;
pub mod metrics;
pub mod node;
