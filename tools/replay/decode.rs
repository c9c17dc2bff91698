//! Link-layer, IP and UDP decoding of captured frames, down to the UDP payload.
//!
//! Owns the header walking for the link types `intentra-replay` understands (Ethernet
//! with 802.1Q/802.1ad tags, raw IPv4/IPv6, Linux cooked SLL and SLL2, BSD loopback
//! NULL/LOOP). It is a pure function of the bytes it is handed: it never allocates,
//! never panics on any input and never trusts a length field without checking it
//! against the captured bytes. Include it elsewhere with
//! `#[path = "../tools/replay/decode.rs"] mod decode;`.
//!
//! Fragments: an IPv4 or IPv6 fragment is reported as `Decoded::Fragment`, with what
//! reassembly needs; intentra datagrams fit a 1500-byte MTU, but a path with a smaller one
//! fragments them. `Reassembler` (the one stateful, allocating part of this file) puts them
//! back together within bounds, and `Datagram::decode` walks the result down to UDP.

// Not every embedder uses every item.
#![allow(dead_code)]

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The link-layer header types this decoder walks (tcpdump.org LINKTYPE_ values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    Null,
    Ethernet,
    /// Raw IP; the version nibble says v4 or v6.
    Raw,
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    Loop,
    LinuxSll,
    Ipv4,
    Ipv6,
    LinuxSll2,
}

impl LinkType {
    pub fn from_linktype(value: u32) -> Option<LinkType> {
        Some(match value {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            // 101 is LINKTYPE_RAW; 12 and 14 are DLT_RAW on some BSDs and appear in files.
            101 | 12 | 14 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }

    pub const fn label(self) -> &'static str {
        match self {
            LinkType::Null => "null",
            LinkType::Ethernet => "ethernet",
            LinkType::Raw => "raw",
            LinkType::Loop => "loop",
            LinkType::LinuxSll => "linux_sll",
            LinkType::Ipv4 => "ipv4",
            LinkType::Ipv6 => "ipv6",
            LinkType::LinuxSll2 => "linux_sll2",
        }
    }
}

/// Which header a frame ended inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Link,
    Vlan,
    Ipv4,
    Ipv6,
    Ipv6Extension,
    Udp,
}

/// Why a frame could not be decoded down to UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The capture ended inside this header.
    Truncated(Layer),
    /// IPv4 header length below 20 bytes.
    BadIhl,
    /// The IP version nibble is not the one the link layer announced.
    BadIpVersion,
    /// IPv4 total length smaller than its own header.
    BadIpLength,
    /// UDP length below 8 or beyond the IP payload.
    BadUdpLength,
    /// More VLAN tags than any sane network stacks (a loop guard for crafted frames).
    TooManyVlanTags,
}

impl DecodeError {
    pub const ALL: [DecodeError; 11] = [
        DecodeError::Truncated(Layer::Link),
        DecodeError::Truncated(Layer::Vlan),
        DecodeError::Truncated(Layer::Ipv4),
        DecodeError::Truncated(Layer::Ipv6),
        DecodeError::Truncated(Layer::Ipv6Extension),
        DecodeError::Truncated(Layer::Udp),
        DecodeError::BadIhl,
        DecodeError::BadIpVersion,
        DecodeError::BadIpLength,
        DecodeError::BadUdpLength,
        DecodeError::TooManyVlanTags,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            DecodeError::Truncated(Layer::Link) => "truncated_link_header",
            DecodeError::Truncated(Layer::Vlan) => "truncated_vlan_tag",
            DecodeError::Truncated(Layer::Ipv4) => "truncated_ipv4_header",
            DecodeError::Truncated(Layer::Ipv6) => "truncated_ipv6_header",
            DecodeError::Truncated(Layer::Ipv6Extension) => "truncated_ipv6_extension",
            DecodeError::Truncated(Layer::Udp) => "truncated_udp_header",
            DecodeError::BadIhl => "bad_ihl",
            DecodeError::BadIpVersion => "bad_ip_version",
            DecodeError::BadIpLength => "bad_ip_length",
            DecodeError::BadUdpLength => "bad_udp_length",
            DecodeError::TooManyVlanTags => "too_many_vlan_tags",
        }
    }

    /// Position of this error in `ALL`, for counting in a fixed array.
    pub fn index(self) -> usize {
        DecodeError::ALL
            .iter()
            .position(|e| *e == self)
            .unwrap_or(0)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A UDP datagram found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The payload as far as it was captured, never past the UDP length field.
    pub payload: &'a [u8],
    /// False when the payload is cut short, by the snapshot length or because this is
    /// the first fragment of a fragmented datagram; `payload` is then only a prefix.
    pub complete: bool,
    /// The IPv4 header gave no length (total length 0, as a sending host's TSO/GSO frames are
    /// captured), so the datagram was taken to run to the end of the captured frame: if the
    /// capture cut the frame short, so is the datagram, whatever `complete` says.
    pub sized_by_capture: bool,
}

/// What a frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Udp(Udp<'a>),
    /// IP but not UDP (TCP, ICMP, ESP...), or not IP at all (ARP, LLC...).
    NotUdp,
    /// An IP fragment: only reassembly can say what it carries.
    Fragment(Fragment<'a>),
}

/// What identifies the fragments of one datagram: RFC 791 (IPv4) keys on source,
/// destination, protocol and identification; RFC 8200 4.5 (IPv6) on source, destination and
/// identification only (the next header of the offset-0 fragment is the one used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragmentKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IPv4 protocol; `None` for IPv6.
    pub protocol: Option<u8>,
    pub id: u32,
}

/// One IP fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub key: FragmentKey,
    /// Where `data` goes in the reassembled payload, in bytes.
    pub offset: usize,
    /// More fragments follow (clear on the last one).
    pub more: bool,
    /// The protocol (IPv4) or the fragment header's next header (IPv6) of the payload.
    pub next_header: u8,
    /// The fragment's share of the payload, as far as it was captured.
    pub data: &'a [u8],
    /// The capture holds less than the IP header says this fragment carries.
    pub cut: bool,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const MAX_VLAN_TAGS: usize = 8;

const IPPROTO_UDP: u8 = 17;
const UDP_HEADER_LEN: usize = 8;

/// Decodes `frame`, captured on a link of type `link`, down to its UDP payload.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    match link {
        LinkType::Ethernet => {
            let ethertype = be16(frame, 12).ok_or(DecodeError::Truncated(Layer::Link))?;
            by_ethertype(ethertype, frame.get(14..).unwrap_or_default())
        }
        LinkType::Raw => match frame.first().map(|b| b >> 4) {
            Some(4) => ipv4(frame),
            Some(6) => ipv6(frame),
            Some(_) => Err(DecodeError::BadIpVersion),
            None => Err(DecodeError::Truncated(Layer::Link)),
        },
        LinkType::Ipv4 => ipv4(frame),
        LinkType::Ipv6 => ipv6(frame),
        LinkType::LinuxSll => {
            // packet type, ARPHRD, address length, 8 address bytes, protocol.
            let protocol = be16(frame, 14).ok_or(DecodeError::Truncated(Layer::Link))?;
            by_ethertype(protocol, frame.get(16..).unwrap_or_default())
        }
        LinkType::LinuxSll2 => {
            // protocol, reserved, interface index, ARPHRD, packet type, address
            // length, 8 address bytes.
            if frame.len() < 20 {
                return Err(DecodeError::Truncated(Layer::Link));
            }
            let protocol = be16(frame, 0).ok_or(DecodeError::Truncated(Layer::Link))?;
            by_ethertype(protocol, frame.get(20..).unwrap_or_default())
        }
        LinkType::Null | LinkType::Loop => {
            let family = frame.get(..4).ok_or(DecodeError::Truncated(Layer::Link))?;
            let rest = frame.get(4..).unwrap_or_default();
            // The family is in the capturing host's byte order for NULL; accept both,
            // and the IPv6 value of every BSD flavour (Linux 10, NetBSD/OpenBSD 24,
            // FreeBSD 28, macOS 30).
            let be = u32::from_be_bytes([family[0], family[1], family[2], family[3]]);
            let le = u32::from_le_bytes([family[0], family[1], family[2], family[3]]);
            let is = |values: &[u32]| values.contains(&be) || values.contains(&le);
            if is(&[2]) {
                ipv4(rest)
            } else if is(&[10, 24, 28, 30]) {
                ipv6(rest)
            } else {
                Ok(Decoded::NotUdp)
            }
        }
    }
}

/// Dispatches on an Ethernet protocol type, peeling off any VLAN tags first.
fn by_ethertype(mut ethertype: u16, mut rest: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let mut tags = 0;
    while matches!(
        ethertype,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
    ) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Err(DecodeError::TooManyVlanTags);
        }
        // Tag control information, then the encapsulated type.
        ethertype = be16(rest, 2).ok_or(DecodeError::Truncated(Layer::Vlan))?;
        rest = rest.get(4..).unwrap_or_default();
    }
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(rest),
        ETHERTYPE_IPV6 => ipv6(rest),
        _ => Ok(Decoded::NotUdp),
    }
}

fn ipv4(packet: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let first = *packet.first().ok_or(DecodeError::Truncated(Layer::Ipv4))?;
    if first >> 4 != 4 {
        return Err(DecodeError::BadIpVersion);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 {
        return Err(DecodeError::BadIhl);
    }
    let header = packet
        .get(..header_len)
        .ok_or(DecodeError::Truncated(Layer::Ipv4))?;
    let total_len = usize::from(be16(header, 2).ok_or(DecodeError::Truncated(Layer::Ipv4))?);
    // Zero is what a host captures of its own TSO/GSO frames before the NIC segments them:
    // the packet is the rest of the frame, as Wireshark reads it.
    let sized_by_capture = total_len == 0;
    let total_len = if sized_by_capture {
        packet.len()
    } else {
        total_len
    };
    if total_len < header_len {
        return Err(DecodeError::BadIpLength);
    }
    let flags_offset = be16(header, 6).ok_or(DecodeError::Truncated(Layer::Ipv4))?;
    let protocol = header.get(9).copied().unwrap_or(0);
    let src = ipv4_addr(header, 12).ok_or(DecodeError::Truncated(Layer::Ipv4))?;
    let dst = ipv4_addr(header, 16).ok_or(DecodeError::Truncated(Layer::Ipv4))?;
    // Beyond the total length is link-layer padding (Ethernet pads to 60 bytes).
    let (body, cut) = clamp(packet, header_len, total_len);
    let more = flags_offset & 0x2000 != 0;
    if more || flags_offset & 0x1fff != 0 {
        let id = be16(header, 4).ok_or(DecodeError::Truncated(Layer::Ipv4))?;
        return Ok(Decoded::Fragment(Fragment {
            key: FragmentKey {
                src: src.into(),
                dst: dst.into(),
                protocol: Some(protocol),
                id: u32::from(id),
            },
            offset: usize::from(flags_offset & 0x1fff) * 8,
            more,
            next_header: protocol,
            data: body,
            cut,
        }));
    }
    if protocol != IPPROTO_UDP {
        return Ok(Decoded::NotUdp);
    }
    let decoded = udp(src.into(), dst.into(), body, total_len - header_len, cut)?;
    Ok(match decoded {
        Decoded::Udp(udp) => Decoded::Udp(Udp {
            sized_by_capture,
            ..udp
        }),
        other => other,
    })
}

fn ipv6(packet: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let header = packet
        .get(..40)
        .ok_or(DecodeError::Truncated(Layer::Ipv6))?;
    if header.first().map(|b| b >> 4) != Some(6) {
        return Err(DecodeError::BadIpVersion);
    }
    let payload_len = usize::from(be16(header, 4).ok_or(DecodeError::Truncated(Layer::Ipv6))?);
    let src = ipv6_addr(header, 8).ok_or(DecodeError::Truncated(Layer::Ipv6))?;
    let dst = ipv6_addr(header, 24).ok_or(DecodeError::Truncated(Layer::Ipv6))?;
    // A zero payload length means a jumbogram (length in a hop-by-hop option); the
    // captured bytes are then the best bound there is.
    let declared = if payload_len == 0 {
        packet.len() - 40
    } else {
        payload_len
    };
    let (rest, cut) = clamp(packet, 40, 40 + declared);
    let next = header.get(6).copied().unwrap_or(0);
    ipv6_upper(src.into(), dst.into(), next, rest, declared, cut, true)
}

/// Walks IPv6 extension headers from `next` over `rest` (what was captured of `declared`
/// bytes) to UDP. A fragment header makes the packet a `Fragment`, unless it is atomic
/// (offset 0, no more fragments: RFC 6946) or `fragments` is false (a reassembled payload,
/// which cannot hold another).
fn ipv6_upper(
    src: IpAddr,
    dst: IpAddr,
    mut next: u8,
    mut rest: &[u8],
    declared: usize,
    cut: bool,
    fragments: bool,
) -> Result<Decoded<'_>, DecodeError> {
    let mut remaining = declared;
    // Each extension header is at least 8 bytes, so this walk ends with the packet.
    loop {
        let len = match next {
            IPPROTO_UDP => break,
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
            0 | 43 | 60 | 135 | 139 | 140 => {
                let hdr_len = *rest
                    .get(1)
                    .ok_or(DecodeError::Truncated(Layer::Ipv6Extension))?;
                (usize::from(hdr_len) + 1) * 8
            }
            // Authentication header counts in 4-byte units, minus two.
            51 => {
                let hdr_len = *rest
                    .get(1)
                    .ok_or(DecodeError::Truncated(Layer::Ipv6Extension))?;
                (usize::from(hdr_len) + 2) * 4
            }
            44 => {
                let offset_flags =
                    be16(rest, 2).ok_or(DecodeError::Truncated(Layer::Ipv6Extension))?;
                let id = be32(rest, 4).ok_or(DecodeError::Truncated(Layer::Ipv6Extension))?;
                let more = offset_flags & 1 != 0;
                let offset = usize::from(offset_flags & 0xfff8);
                if more || offset != 0 {
                    if !fragments {
                        return Ok(Decoded::NotUdp);
                    }
                    let next_header = rest.first().copied().unwrap_or(0);
                    let data = rest.get(8..).unwrap_or_default();
                    return Ok(Decoded::Fragment(Fragment {
                        key: FragmentKey {
                            src,
                            dst,
                            protocol: None,
                            id,
                        },
                        offset,
                        more,
                        next_header,
                        data: data.get(..remaining.saturating_sub(8)).unwrap_or(data),
                        cut,
                    }));
                }
                8
            }
            // No next header, ESP (opaque), or an upper layer that is not UDP.
            _ => return Ok(Decoded::NotUdp),
        };
        next = *rest
            .first()
            .ok_or(DecodeError::Truncated(Layer::Ipv6Extension))?;
        if len > remaining {
            return Err(DecodeError::Truncated(Layer::Ipv6Extension));
        }
        rest = rest
            .get(len..)
            .ok_or(DecodeError::Truncated(Layer::Ipv6Extension))?;
        remaining -= len;
    }
    udp(src, dst, rest, remaining, cut)
}

/// `ip_payload` is what was captured of the IP payload, which the IP header says is
/// `declared` bytes long; `cut` says the capture holds fewer than that.
fn udp(
    src: IpAddr,
    dst: IpAddr,
    ip_payload: &[u8],
    declared: usize,
    cut: bool,
) -> Result<Decoded<'_>, DecodeError> {
    let header = ip_payload
        .get(..UDP_HEADER_LEN)
        .ok_or(DecodeError::Truncated(Layer::Udp))?;
    let src_port = be16(header, 0).ok_or(DecodeError::Truncated(Layer::Udp))?;
    let dst_port = be16(header, 2).ok_or(DecodeError::Truncated(Layer::Udp))?;
    let udp_len = usize::from(be16(header, 4).ok_or(DecodeError::Truncated(Layer::Udp))?);
    if udp_len < UDP_HEADER_LEN || udp_len > declared {
        return Err(DecodeError::BadUdpLength);
    }
    let (payload, short) = clamp(ip_payload, UDP_HEADER_LEN, udp_len);
    Ok(Decoded::Udp(Udp {
        src: SocketAddr::new(src, src_port),
        dst: SocketAddr::new(dst, dst_port),
        payload,
        complete: !(cut || short),
        sized_by_capture: false,
    }))
}

/// `bytes[start..end]` as far as it exists, and whether it was cut short.
fn clamp(bytes: &[u8], start: usize, end: usize) -> (&[u8], bool) {
    let available = bytes.len().min(end);
    let slice = bytes.get(start..available).unwrap_or_default();
    (slice, available < end)
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn ipv4_addr(bytes: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn ipv6_addr(bytes: &[u8], at: usize) -> Option<Ipv6Addr> {
    let b: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

// ----- reassembly ---------------------------------------------------------------------------

/// Datagrams in progress at once; past it the oldest is given up.
pub const MAX_PENDING: usize = 1024;
/// Payload bytes held for datagrams in progress (Linux's ipfrag_high_thresh default).
pub const MAX_HELD_BYTES: usize = 4 << 20;
/// The largest payload a fragmented datagram can have (a 16-bit length).
const MAX_REASSEMBLED: usize = 65_535;

/// How long, in capture time, a datagram's fragments are waited for: Linux's ipfrag_time
/// default for IPv4, RFC 8200 4.5's 60 seconds for IPv6.
pub const fn max_age_nanos(key: &FragmentKey) -> u64 {
    match key.protocol {
        Some(_) => 30_000_000_000,
        None => 60_000_000_000,
    }
}

/// A datagram put back together from its fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub key: FragmentKey,
    pub next_header: u8,
    pub payload: Vec<u8>,
}

impl Datagram {
    /// Walks the reassembled payload down to UDP, as `decode` does a whole packet.
    pub fn decode(&self) -> Result<Decoded<'_>, DecodeError> {
        let (src, dst, len) = (self.key.src, self.key.dst, self.payload.len());
        match self.key.protocol {
            Some(IPPROTO_UDP) => udp(src, dst, &self.payload, len, false),
            Some(_) => Ok(Decoded::NotUdp),
            None => ipv6_upper(src, dst, self.next_header, &self.payload, len, false, false),
        }
    }
}

/// What became of fragmented datagrams; each is counted once, when its fate is known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Fragments handed to the reassembler.
    pub fragments: u64,
    pub reassembled: u64,
    /// Never completed: fragments missing (or cut by the snapshot length) at the end of the
    /// capture, too old, or given up to stay within `MAX_PENDING`/`MAX_HELD_BYTES`.
    pub incomplete: u64,
    /// Dropped because fragments overlapped with different bytes, or disagreed on the
    /// datagram's length, as RFC 5722 and modern stacks do.
    pub conflicting: u64,
}

/// A datagram in progress.
struct Pending {
    /// Arrival order, for giving up the oldest first.
    seq: u64,
    first_seen: Option<u64>,
    /// The payload so far; `have` says which byte ranges of it arrived.
    bytes: Vec<u8>,
    have: Vec<(usize, usize)>,
    /// Known once the last fragment arrived.
    total: Option<usize>,
    next_header: Option<u8>,
    /// Dropped already: later fragments are swallowed, and it is not counted again.
    dead: bool,
}

/// Puts fragments back together, bounded in datagrams, bytes and capture time.
#[derive(Default)]
pub struct Reassembler {
    pending: std::collections::HashMap<FragmentKey, Pending>,
    held: usize,
    seq: u64,
    pub stats: ReassemblyStats,
}

impl Reassembler {
    /// Takes one fragment, captured at `now` (ns; `None` if the record has no time stamp);
    /// returns the datagram it completes, if it does.
    pub fn push(&mut self, fragment: Fragment<'_>, now: Option<u64>) -> Option<Datagram> {
        self.stats.fragments += 1;
        if let Some(now) = now {
            self.expire(now);
        }
        let end = fragment.offset + fragment.data.len();
        if !self.pending.contains_key(&fragment.key) {
            while self.pending.len() >= MAX_PENDING {
                self.give_up_oldest();
            }
            self.seq += 1;
            self.pending.insert(
                fragment.key,
                Pending {
                    seq: self.seq,
                    first_seen: now,
                    bytes: Vec::new(),
                    have: Vec::new(),
                    total: None,
                    next_header: None,
                    dead: false,
                },
            );
        }
        let pending = self.pending.get_mut(&fragment.key)?;
        if pending.dead {
            return None;
        }
        // A fragment cut by the snapshot length can never complete its datagram.
        if fragment.cut {
            self.kill(fragment.key, false);
            return None;
        }
        let total_conflict = match (fragment.more, pending.total) {
            (false, Some(total)) => total != end,
            (true, Some(total)) => end > total,
            (false, None) => pending.have.iter().any(|&(_, e)| e > end),
            (true, None) => false,
        };
        let clash = total_conflict
            || end > MAX_REASSEMBLED
            || pending.have.iter().any(|&(s, e)| {
                let (from, to) = (s.max(fragment.offset), e.min(end));
                from < to
                    && pending.bytes.get(from..to)
                        != fragment
                            .data
                            .get(from - fragment.offset..to - fragment.offset)
            });
        if clash {
            self.kill(fragment.key, true);
            return None;
        }
        let grow = end.saturating_sub(pending.bytes.len());
        while self.held + grow > MAX_HELD_BYTES && self.pending.len() > 1 {
            if !self.give_up_oldest_except(Some(fragment.key)) {
                break;
            }
        }
        let pending = self.pending.get_mut(&fragment.key)?;
        if pending.bytes.len() < end {
            pending.bytes.resize(end, 0);
        }
        self.held += grow;
        pending.bytes[fragment.offset..end].copy_from_slice(fragment.data);
        pending.have.push((fragment.offset, end));
        pending.have = merged(std::mem::take(&mut pending.have));
        if !fragment.more {
            pending.total = Some(end);
        }
        if fragment.offset == 0 {
            pending.next_header = Some(fragment.next_header);
        }
        let done = pending
            .total
            .is_some_and(|total| pending.have == [(0, total)]);
        if !done {
            return None;
        }
        let pending = self.pending.remove(&fragment.key)?;
        self.held -= pending.bytes.len();
        self.stats.reassembled += 1;
        Some(Datagram {
            key: fragment.key,
            next_header: pending.next_header.unwrap_or(fragment.next_header),
            payload: pending.bytes,
        })
    }

    /// Ends the capture: whatever is still in progress is incomplete.
    pub fn finish(&mut self) {
        let alive = self.pending.values().filter(|p| !p.dead).count() as u64;
        self.stats.incomplete += alive;
        self.pending.clear();
        self.held = 0;
    }

    /// Gives up datagrams first seen longer ago than their age bound.
    fn expire(&mut self, now: u64) {
        let old: Vec<FragmentKey> = self
            .pending
            .iter()
            .filter(|(key, p)| {
                p.first_seen
                    .is_some_and(|t| now.saturating_sub(t) > max_age_nanos(key))
            })
            .map(|(key, _)| *key)
            .collect();
        for key in old {
            self.give_up(key);
        }
    }

    fn give_up_oldest(&mut self) {
        self.give_up_oldest_except(None);
    }

    /// Gives up the oldest datagram other than `keep`; false if there is none.
    fn give_up_oldest_except(&mut self, keep: Option<FragmentKey>) -> bool {
        let oldest = self
            .pending
            .iter()
            .filter(|(k, _)| Some(**k) != keep)
            .min_by_key(|(_, p)| p.seq)
            .map(|(k, _)| *k);
        oldest.is_some_and(|key| self.give_up(key))
    }

    /// Forgets a datagram in progress, counting it as incomplete unless it was dropped
    /// (and counted) already; false if there was none.
    fn give_up(&mut self, key: FragmentKey) -> bool {
        let Some(p) = self.pending.remove(&key) else {
            return false;
        };
        self.held -= p.bytes.len();
        self.stats.incomplete += u64::from(!p.dead);
        true
    }

    /// Drops a datagram's bytes and counts it, keeping its key to swallow later fragments.
    fn kill(&mut self, key: FragmentKey, conflicting: bool) {
        if let Some(p) = self.pending.get_mut(&key) {
            self.held -= p.bytes.len();
            p.bytes = Vec::new();
            p.have.clear();
            p.dead = true;
            if conflicting {
                self.stats.conflicting += 1;
            } else {
                self.stats.incomplete += 1;
            }
        }
    }
}

/// Sorted, disjoint byte ranges covering the same bytes as `ranges`.
fn merged(mut ranges: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    ranges.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAYLOAD: &[u8] = b"intentra!";

    fn udp_bytes(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&src_port.to_be_bytes());
        v.extend_from_slice(&dst_port.to_be_bytes());
        v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        v
    }

    fn ipv4_packet(protocol: u8, flags_offset: u16, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x45, 0];
        v.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&flags_offset.to_be_bytes());
        v.extend_from_slice(&[64, protocol, 0, 0]);
        v.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        v.extend_from_slice(body);
        v
    }

    /// IPv6 with the given chain of (next header, extension bytes) and a UDP payload.
    fn ipv6_packet(first_next: u8, extensions: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend_from_slice(&((extensions.len() + body.len()) as u16).to_be_bytes());
        v.push(first_next);
        v.push(64);
        v.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let mut dst = [0u8; 16];
        dst[0] = 0xfd;
        dst[15] = 2;
        v.extend_from_slice(&dst);
        v.extend_from_slice(extensions);
        v.extend_from_slice(body);
        v
    }

    fn ethernet(ethertype: u16, tags: &[u16], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0xaa; 12];
        for &tpid in tags {
            v.extend_from_slice(&tpid.to_be_bytes());
            v.extend_from_slice(&[0x00, 0x2a]);
        }
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn expect_udp(result: Result<Decoded<'_>, DecodeError>) -> Udp<'_> {
        match result {
            Ok(Decoded::Udp(udp)) => udp,
            other => panic!("expected UDP, got {other:?}"),
        }
    }

    #[test]
    fn ipv4_over_ethernet_ignores_padding() {
        let ip = ipv4_packet(17, 0x4000, &udp_bytes(1000, 2000, PAYLOAD));
        let mut frame = ethernet(ETHERTYPE_IPV4, &[], &ip);
        frame.resize(60, 0); // minimum Ethernet frame
        let udp = expect_udp(decode(LinkType::Ethernet, &frame));
        assert_eq!(udp.payload, PAYLOAD);
        assert!(udp.complete);
        assert_eq!(udp.src, "10.0.0.1:1000".parse().unwrap());
        assert_eq!(udp.dst, "10.0.0.2:2000".parse().unwrap());
    }

    #[test]
    fn vlan_and_qinq_tags_are_peeled() {
        let ip = ipv4_packet(17, 0, &udp_bytes(1, 2, PAYLOAD));
        for tags in [&[ETHERTYPE_VLAN][..], &[ETHERTYPE_QINQ, ETHERTYPE_VLAN][..]] {
            let frame = ethernet(ETHERTYPE_IPV4, tags, &ip);
            assert_eq!(
                expect_udp(decode(LinkType::Ethernet, &frame)).payload,
                PAYLOAD
            );
        }
        let endless = ethernet(ETHERTYPE_VLAN, &[ETHERTYPE_VLAN; 9], &ip);
        assert_eq!(
            decode(LinkType::Ethernet, &endless),
            Err(DecodeError::TooManyVlanTags)
        );
        let cut = ethernet(ETHERTYPE_IPV4, &[ETHERTYPE_VLAN], &[]);
        assert_eq!(
            decode(LinkType::Ethernet, &cut[..15]),
            Err(DecodeError::Truncated(Layer::Vlan))
        );
    }

    #[test]
    fn ipv6_walks_extension_headers() {
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> UDP.
        let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
        ext.extend_from_slice(&[17, 1, 1, 12]);
        ext.extend_from_slice(&[0; 12]);
        let ip = ipv6_packet(0, &ext, &udp_bytes(5000, 6000, PAYLOAD));
        let frame = ethernet(ETHERTYPE_IPV6, &[], &ip);
        let udp = expect_udp(decode(LinkType::Ethernet, &frame));
        assert_eq!(udp.payload, PAYLOAD);
        assert_eq!(udp.src, "[::1]:5000".parse().unwrap());
        assert!(udp.complete);
        // Raw IP picks the version from the first nibble.
        assert_eq!(expect_udp(decode(LinkType::Raw, &ip)).payload, PAYLOAD);
        assert_eq!(expect_udp(decode(LinkType::Ipv6, &ip)).payload, PAYLOAD);
        // An extension header running past the packet.
        let bad = ipv6_packet(60, &[17, 200, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            decode(LinkType::Raw, &bad),
            Err(DecodeError::Truncated(Layer::Ipv6Extension))
        );
        // ESP hides the upper layer.
        let esp = ipv6_packet(50, &[], &[0; 16]);
        assert_eq!(decode(LinkType::Raw, &esp), Ok(Decoded::NotUdp));
    }

    /// `body` split into IPv4 fragments of `size` bytes (a multiple of 8), id 7.
    fn ipv4_fragments(body: &[u8], size: usize) -> Vec<Vec<u8>> {
        let pieces: Vec<&[u8]> = body.chunks(size).collect();
        pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| {
                let more = if i + 1 < pieces.len() { 0x2000 } else { 0 };
                let mut p = ipv4_packet(17, more | (i * size / 8) as u16, piece);
                p[4..6].copy_from_slice(&7u16.to_be_bytes());
                p
            })
            .collect()
    }

    fn fragment_of(packet: &[u8]) -> Fragment<'_> {
        match decode(LinkType::Raw, packet) {
            Ok(Decoded::Fragment(f)) => f,
            other => panic!("expected a fragment, got {other:?}"),
        }
    }

    fn reassemble(packets: &[Vec<u8>]) -> (Option<Datagram>, ReassemblyStats) {
        let mut r = Reassembler::default();
        let mut done = None;
        for (i, p) in packets.iter().enumerate() {
            if let Some(d) = r.push(fragment_of(p), Some(i as u64)) {
                done = Some(d);
            }
        }
        r.finish();
        (done, r.stats)
    }

    #[test]
    fn fragments_are_reported_with_what_reassembly_needs() {
        let body = udp_bytes(1, 2, &[7; 100]);
        let frags = ipv4_fragments(&body, 48);
        assert_eq!(frags.len(), 3);
        let first = fragment_of(&frags[0]);
        assert_eq!((first.offset, first.more, first.data.len()), (0, true, 48));
        assert_eq!(first.key.protocol, Some(17));
        assert_eq!(first.key.id, 7);
        let last = fragment_of(&frags[2]);
        assert_eq!((last.offset, last.more, last.data.len()), (96, false, 12));
        // IPv6: the fragment header's offset, M flag, id and next header.
        let v6 = ipv6_packet(44, &[17, 0, 0x00, 0x09, 0, 0, 0, 9], &body[..16]);
        let f = fragment_of(&v6);
        assert_eq!(
            (f.offset, f.more, f.key.id, f.next_header),
            (8, true, 9, 17)
        );
        assert_eq!(f.key.protocol, None);
        assert_eq!(f.data, &body[..16]);
        // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
        let atomic = ipv6_packet(44, &[17, 0, 0, 0, 0, 0, 0, 1], &body);
        assert!(expect_udp(decode(LinkType::Raw, &atomic)).complete);
    }

    #[test]
    fn fragments_reassemble_in_any_order() {
        let body = udp_bytes(1, 2, &(0..200).map(|i| i as u8).collect::<Vec<_>>());
        let frags = ipv4_fragments(&body, 64);
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
            let packets: Vec<_> = order.iter().map(|&i| frags[i].clone()).collect();
            let (datagram, stats) = reassemble(&packets);
            let datagram = datagram.expect("reassembled");
            assert_eq!(datagram.payload, body);
            let udp = expect_udp(datagram.decode());
            assert!(udp.complete);
            assert_eq!(udp.payload.len(), 200);
            assert_eq!(udp.dst, "10.0.0.2:2".parse().unwrap());
            assert_eq!(stats.reassembled, 1);
            assert_eq!(stats.incomplete, 0);
        }
        // IPv6, with a destination options header inside the fragmentable part.
        let mut inner = vec![17, 0, 1, 4, 0, 0, 0, 0];
        inner.extend_from_slice(&body);
        let (a, b) = inner.split_at(104);
        let f0 = ipv6_packet(44, &[60, 0, 0x00, 0x01, 0, 0, 0, 5], a);
        let f1 = ipv6_packet(44, &[60, 0, 0x00, 104, 0, 0, 0, 5], b);
        let (datagram, _) = reassemble(&[f1, f0]);
        assert_eq!(expect_udp(datagram.unwrap().decode()).payload.len(), 200);
    }

    #[test]
    fn a_missing_fragment_is_counted_incomplete() {
        let body = udp_bytes(1, 2, &[3; 200]);
        let frags = ipv4_fragments(&body, 64);
        let (datagram, stats) = reassemble(&[frags[0].clone(), frags[1].clone(), frags[3].clone()]);
        assert!(datagram.is_none());
        assert_eq!(
            (stats.fragments, stats.incomplete, stats.reassembled),
            (3, 1, 0)
        );
    }

    #[test]
    fn overlaps_with_the_same_bytes_are_harmless_and_different_bytes_drop_the_datagram() {
        let body = udp_bytes(1, 2, &[3; 200]);
        let frags = ipv4_fragments(&body, 64);
        // A duplicate (as two capture points may record) changes nothing.
        let packets = [&frags[0], &frags[1], &frags[1], &frags[2], &frags[3]].map(Clone::clone);
        let (datagram, stats) = reassemble(&packets);
        assert_eq!(datagram.unwrap().payload, body);
        assert_eq!(stats.conflicting, 0);
        // An overlapping fragment with other bytes: the datagram is dropped, and the
        // fragments after it are swallowed, not counted again.
        let mut evil = frags[1].clone();
        let at = evil.len() - 1;
        evil[at] ^= 0xff;
        let packets = [&frags[0], &frags[1], &evil, &frags[2], &frags[3]].map(Clone::clone);
        let (datagram, stats) = reassemble(&packets);
        assert!(datagram.is_none());
        assert_eq!((stats.conflicting, stats.incomplete), (1, 0));
        // Two last fragments that disagree on the length.
        let mut short_last = ipv4_fragments(&body[..150], 64).remove(2);
        short_last[4..6].copy_from_slice(&7u16.to_be_bytes());
        let packets = [&frags[3], &short_last].map(Clone::clone);
        assert_eq!(reassemble(&packets).1.conflicting, 1);
    }

    #[test]
    fn reassembly_is_bounded_in_time_datagrams_and_bytes() {
        let body = udp_bytes(1, 2, &[3; 200]);
        let frags = ipv4_fragments(&body, 64);
        // Older than 30 s of capture time: given up, and the rest cannot complete it.
        let mut r = Reassembler::default();
        assert!(r.push(fragment_of(&frags[0]), Some(0)).is_none());
        for (i, f) in frags.iter().enumerate().skip(1) {
            assert!(r
                .push(fragment_of(f), Some(31_000_000_000 + i as u64))
                .is_none());
        }
        r.finish();
        assert_eq!((r.stats.reassembled, r.stats.incomplete), (0, 2));
        // More datagrams in progress than MAX_PENDING: the oldest are given up.
        let mut r = Reassembler::default();
        for id in 0..MAX_PENDING as u16 + 10 {
            let mut f = frags[0].clone();
            f[4..6].copy_from_slice(&id.to_be_bytes());
            r.push(fragment_of(&f), None);
        }
        assert_eq!(r.pending.len(), MAX_PENDING);
        assert_eq!(r.stats.incomplete, 10);
        assert!(r.held <= MAX_HELD_BYTES);
        // Bytes: 70 datagrams of 64 KiB in progress would pass the bound.
        let mut r = Reassembler::default();
        let big = vec![0u8; 65_000 - 8];
        for id in 0..70u16 {
            let mut f = ipv4_packet(17, 0x2000, &big);
            f[4..6].copy_from_slice(&id.to_be_bytes());
            r.push(fragment_of(&f), None);
            assert!(r.held <= MAX_HELD_BYTES);
        }
        assert!(r.stats.incomplete > 0);
    }

    #[test]
    fn linux_cooked_captures() {
        let ip = ipv4_packet(17, 0, &udp_bytes(1, 2, PAYLOAD));
        let mut sll = vec![0, 0, 0, 1, 0, 6];
        sll.extend_from_slice(&[0xbb; 8]);
        sll.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(&ip);
        assert_eq!(
            expect_udp(decode(LinkType::LinuxSll, &sll)).payload,
            PAYLOAD
        );

        let ip6 = ipv6_packet(17, &[], &udp_bytes(1, 2, PAYLOAD));
        let mut sll2 = ETHERTYPE_IPV6.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6]);
        sll2.extend_from_slice(&[0xbb; 8]);
        sll2.extend_from_slice(&ip6);
        assert_eq!(
            expect_udp(decode(LinkType::LinuxSll2, &sll2)).payload,
            PAYLOAD
        );
        assert_eq!(
            decode(LinkType::LinuxSll2, &sll2[..19]),
            Err(DecodeError::Truncated(Layer::Link))
        );
        assert_eq!(
            decode(LinkType::LinuxSll, &sll[..15]),
            Err(DecodeError::Truncated(Layer::Link))
        );
    }

    #[test]
    fn loopback_families_in_either_byte_order() {
        let ip = ipv4_packet(17, 0, &udp_bytes(1, 2, PAYLOAD));
        let ip6 = ipv6_packet(17, &[], &udp_bytes(1, 2, PAYLOAD));
        for (family, packet) in [(2u32, &ip), (30, &ip6), (10, &ip6)] {
            for header in [family.to_le_bytes(), family.to_be_bytes()] {
                let mut frame = header.to_vec();
                frame.extend_from_slice(packet);
                assert_eq!(expect_udp(decode(LinkType::Null, &frame)).payload, PAYLOAD);
                assert_eq!(expect_udp(decode(LinkType::Loop, &frame)).payload, PAYLOAD);
            }
        }
    }

    #[test]
    fn truncated_and_bad_headers() {
        let ip = ipv4_packet(17, 0, &udp_bytes(1, 2, PAYLOAD));
        assert_eq!(
            decode(LinkType::Ethernet, &[0; 13]),
            Err(DecodeError::Truncated(Layer::Link))
        );
        assert_eq!(
            decode(LinkType::Raw, &ip[..19]),
            Err(DecodeError::Truncated(Layer::Ipv4))
        );
        assert_eq!(
            decode(LinkType::Raw, &ip[..24]),
            Err(DecodeError::Truncated(Layer::Udp))
        );
        let mut bad_ihl = ip.clone();
        bad_ihl[0] = 0x44;
        assert_eq!(decode(LinkType::Raw, &bad_ihl), Err(DecodeError::BadIhl));
        let mut long_ihl = ip.clone();
        long_ihl[0] = 0x4f; // 60-byte header, but only 37 bytes in the packet
        assert_eq!(
            decode(LinkType::Ipv4, &long_ihl),
            Err(DecodeError::Truncated(Layer::Ipv4))
        );
        // Total length 0: a TSO/GSO frame, the rest of the captured frame.
        let mut tso = ip.clone();
        tso[2..4].fill(0);
        let udp = expect_udp(decode(LinkType::Raw, &tso));
        assert_eq!(udp.payload, PAYLOAD);
        assert!(udp.complete && udp.sized_by_capture);
        let mut short_total = ip.clone();
        short_total[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(
            decode(LinkType::Raw, &short_total),
            Err(DecodeError::BadIpLength)
        );
        let mut bad_udp = ip.clone();
        bad_udp[24..26].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(
            decode(LinkType::Raw, &bad_udp),
            Err(DecodeError::BadUdpLength)
        );
        let mut udp_too_long = ip.clone();
        udp_too_long[24..26].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(
            decode(LinkType::Raw, &udp_too_long),
            Err(DecodeError::BadUdpLength)
        );
        assert_eq!(
            decode(LinkType::Ipv6, &ip),
            Err(DecodeError::Truncated(Layer::Ipv6))
        );
        let ip6 = ipv6_packet(17, &[], &udp_bytes(1, 2, PAYLOAD));
        assert_eq!(decode(LinkType::Ipv4, &ip6), Err(DecodeError::BadIpVersion));
        // Cut by the snapshot length: a prefix, marked incomplete.
        let udp = expect_udp(decode(LinkType::Raw, &ip[..30]));
        assert_eq!(udp.payload, &PAYLOAD[..2]);
        assert!(!udp.complete);
    }

    #[test]
    fn non_udp_traffic() {
        let tcp = ipv4_packet(6, 0, &[0; 20]);
        assert_eq!(decode(LinkType::Raw, &tcp), Ok(Decoded::NotUdp));
        let arp = ethernet(0x0806, &[], &[0; 28]);
        assert_eq!(decode(LinkType::Ethernet, &arp), Ok(Decoded::NotUdp));
        let mut null = 7u32.to_le_bytes().to_vec();
        null.extend_from_slice(&tcp);
        assert_eq!(decode(LinkType::Null, &null), Ok(Decoded::NotUdp));
    }

    #[test]
    fn error_labels_are_distinct() {
        let mut labels: Vec<_> = DecodeError::ALL.iter().map(|e| e.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), DecodeError::ALL.len());
        for (i, e) in DecodeError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }

    fn any_link() -> impl Strategy<Value = LinkType> {
        prop_oneof![
            Just(LinkType::Null),
            Just(LinkType::Ethernet),
            Just(LinkType::Raw),
            Just(LinkType::Loop),
            Just(LinkType::LinuxSll),
            Just(LinkType::Ipv4),
            Just(LinkType::Ipv6),
            Just(LinkType::LinuxSll2),
        ]
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            link in any_link(),
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            if let Ok(Decoded::Udp(udp)) = decode(link, &bytes) {
                prop_assert!(udp.payload.len() <= bytes.len());
            }
        }

        #[test]
        fn decoding_mutated_valid_frames_never_panics(
            link in any_link(),
            flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
            cut in 0usize..130,
        ) {
            let ip6 = {
                let mut ext = vec![44, 0, 0, 0, 0, 0, 0, 0];
                ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 1]);
                ipv6_packet(0, &ext, &udp_bytes(1, 2, PAYLOAD))
            };
            let mut frame = match link {
                LinkType::Ethernet => ethernet(ETHERTYPE_IPV6, &[ETHERTYPE_VLAN], &ip6),
                _ => ip6,
            };
            for (at, value) in flips {
                if let Some(b) = frame.get_mut(at) {
                    *b = value;
                }
            }
            frame.truncate(cut);
            let _ = decode(link, &frame);
        }
    }
}
