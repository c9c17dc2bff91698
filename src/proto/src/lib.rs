//! The sans-IO protocol core.
//!
//! Everything here takes `now`, a source address and a byte buffer, and returns
//! events and packets to transmit. Nothing here reads a clock, touches a socket
//! or draws randomness of its own: drivers pass all three in.
#![forbid(unsafe_code)]

pub mod aead;
pub mod config;
pub mod cookie;
pub mod endpoint;
pub mod event;
pub mod keys;
pub mod keyset;
pub mod noise;
mod noise_crypto;
pub mod ratelimit;
pub mod reliable;
pub mod replay_window;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stats;
pub mod strikes;
pub mod time;
pub mod wire;
