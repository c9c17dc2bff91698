//! intentra: a hardened UDP transport for high-frequency state between known peers.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod capture;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod metrics_http;
pub mod proto;
pub mod runtime;
