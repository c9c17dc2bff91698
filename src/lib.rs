//! intentra: a hardened UDP transport for high-frequency state between known peers.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod io;
pub mod proto;
