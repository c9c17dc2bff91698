//! Fuzz bodies for the protocol core: the wire parser, a fresh responder under arbitrary
//! datagrams, and an established pair under an interleaving the input chooses.
//!
//! Owns nothing but harnesses. Each body takes the fuzzer's bytes, decides everything from
//! them (so a failing input replays exactly, under cargo-fuzz and under `cargo test` alike),
//! drives only the public inputs and outputs of `Endpoint`, and panics when a promise of
//! PROTOCOL.md is broken. The cargo-fuzz targets in `fuzz/` are one-line calls of these.

mod pair;
mod responder;
mod wire;

pub use self::pair::fuzz_pair;
pub use self::responder::fuzz_responder;
pub use self::wire::fuzz_wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Reads the input one field at a time; zeros once it runs out, so every input is complete.
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `max` bytes, fewer when the input runs out.
    pub(crate) fn bytes(&mut self, max: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(max.min(self.data.len()));
        self.data = rest;
        head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// A source address drawn from a small space, so that per-source budgets, one IPv6 /64 and
/// the exact addresses of real peers are all reachable: IPv4 hosts in 127.0.0.0/8 and
/// 10.0.0.0/8, IPv6 hosts inside and outside one /64, and IPv4-mapped IPv6.
pub(crate) fn source_addr(input: &mut Input<'_>) -> SocketAddr {
    let kind = input.byte();
    let host = input.byte();
    let port = 7000 + u16::from(input.byte() % 8);
    let ip = match kind % 6 {
        0 | 1 => IpAddr::V4(Ipv4Addr::new(127, 0, 0, host % 16)),
        2 => IpAddr::V4(Ipv4Addr::new(10, host, 0, 1)),
        3 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, u16::from(host))),
        4 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, u16::from(host), 0, 0, 0, 1)),
        _ => IpAddr::V6(Ipv4Addr::new(127, 0, 0, host % 16).to_ipv6_mapped()),
    };
    SocketAddr::new(ip, port)
}
