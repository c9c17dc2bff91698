//! Endpoint configuration: every limit and timer of the protocol core, with its default.
//!
//! Owns plain values and their validation. It must never read files or the
//! environment: the daemon's TOML configuration maps onto this.

use std::collections::HashSet;
use std::time::Duration;

use super::keys::{Keypair, PublicKey};
use super::reliable::ReliableConfig;
use super::strikes::StrikePolicy;

/// Every limit and timer of one endpoint. `new` gives the defaults PROTOCOL.md states.
#[derive(Clone)]
pub struct EndpointConfig {
    /// This endpoint's static key pair, its identity in every handshake.
    pub keypair: Keypair,
    /// Peers whose static keys may complete a handshake; `None` admits any key.
    pub allow_list: Option<HashSet<PublicKey>>,
    /// Peers held at once, established or handshaking.
    pub max_peers: usize,
    /// Responder handshakes in flight at once, in total.
    pub handshakes_in_flight: usize,
    /// Responder handshakes in flight at once from one source (an IPv4 address or an IPv6 /64).
    pub handshakes_per_ip: usize,
    /// Handshakes per second the whole endpoint answers without a cookie; past it (and
    /// `handshake_burst`) every unproven HandshakeInit is asked for a cookie.
    pub handshake_rate: u32,
    /// Handshakes the whole endpoint answers without a cookie in a burst.
    pub handshake_burst: u32,
    /// Handshakes per second answered for one source (an IPv4 address or an IPv6 /64):
    /// without a cookie, and separately with one.
    pub handshake_rate_per_source: u32,
    /// Handshakes one source gets in a burst, without a cookie and separately with one.
    pub handshake_burst_per_source: u32,
    /// Sources whose handshake rates are tracked at once (a fixed table; a new source that
    /// finds no room must prove its address with a cookie).
    pub handshake_sources: usize,
    /// Demand a cookie on every first handshake message, loaded or not.
    pub always_cookie: bool,
    /// Per-peer token bucket, checked before any AEAD work.
    pub rate_pps: u32,
    /// Tokens the per-peer bucket holds: the burst allowed above `rate_pps`.
    pub rate_burst: u32,
    /// When protocol violations close a session.
    pub strikes: StrikePolicy,
    /// Bounds and RTO clamps of Reliable delivery.
    pub reliable: ReliableConfig,
    /// Send a keepalive after this long without sending anything.
    pub keepalive_interval: Duration,
    /// Close a session after this long without receiving anything authenticated.
    pub idle_timeout: Duration,
    /// First handshake retransmission delay; doubles up to `handshake_retry_max`.
    pub handshake_retry: Duration,
    /// Upper bound of the doubling handshake retransmission delay.
    pub handshake_retry_max: Duration,
    /// Give up on a handshake this long after it started.
    pub handshake_timeout: Duration,
    /// Renegotiate keys after this age (the session's initiator does).
    pub rekey_after: Duration,
    /// Refuse keys older than this; the session closes if no rekey succeeded.
    pub reject_after: Duration,
    /// How long replaced keys still open packets in flight.
    pub previous_keys_linger: Duration,
    /// Control packets (handshake, ACK, keepalive, close) waiting for `poll_transmit`.
    pub control_queue: usize,
    /// Hand out every session's transport keys through `Endpoint::poll_session_keys`, for a
    /// capture's key log. Off by default: the keys decrypt the session.
    pub export_session_keys: bool,
}

impl EndpointConfig {
    /// The defaults for `keypair`.
    pub fn new(keypair: Keypair) -> EndpointConfig {
        EndpointConfig {
            keypair,
            allow_list: None,
            max_peers: 4096,
            handshakes_in_flight: 100,
            handshakes_per_ip: 5,
            handshake_rate: 1_000,
            handshake_burst: 100,
            handshake_rate_per_source: 10,
            handshake_burst_per_source: 10,
            handshake_sources: 4_096,
            always_cookie: false,
            rate_pps: 10_000,
            rate_burst: 1_000,
            strikes: StrikePolicy::default(),
            reliable: ReliableConfig::default(),
            keepalive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            handshake_retry: Duration::from_millis(250),
            handshake_retry_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(10),
            rekey_after: Duration::from_secs(120),
            reject_after: Duration::from_secs(180),
            previous_keys_linger: Duration::from_secs(10),
            control_queue: 4096,
            export_session_keys: false,
        }
    }
}
