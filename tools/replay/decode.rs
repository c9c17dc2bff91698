//! Link-layer, IP and UDP decoding of captured frames, down to the UDP payload.
//!
//! Owns the header walking for the link types `intentra-replay` understands (Ethernet
//! with 802.1Q/802.1ad tags, raw IPv4/IPv6, Linux cooked SLL and SLL2, BSD loopback
//! NULL/LOOP). It is a pure function of the bytes it is handed: it never allocates,
//! never panics on any input and never trusts a length field without checking it
//! against the captured bytes. Include it elsewhere with
//! `#[path = "../tools/replay/decode.rs"] mod decode;`.
//!
//! Fragments: only a complete datagram, or the first fragment of one, has a UDP header.
//! Non-first fragments are reported as `Decoded::Fragment` (the replay tool counts them
//! as not intentra: intentra datagrams fit a 1500-byte MTU and are never fragmented);
//! a first fragment is decoded with `complete == false`.

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
    /// A non-first IP fragment: no UDP header to look at.
    Fragment,
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
    let more_fragments = flags_offset & 0x2000 != 0;
    if flags_offset & 0x1fff != 0 {
        return Ok(Decoded::Fragment);
    }
    if header.get(9) != Some(&IPPROTO_UDP) {
        return Ok(Decoded::NotUdp);
    }
    let src = ipv4_addr(header, 12).ok_or(DecodeError::Truncated(Layer::Ipv4))?;
    let dst = ipv4_addr(header, 16).ok_or(DecodeError::Truncated(Layer::Ipv4))?;
    // Beyond the total length is link-layer padding (Ethernet pads to 60 bytes).
    let (body, cut) = clamp(packet, header_len, total_len);
    let decoded = udp(
        src.into(),
        dst.into(),
        body,
        total_len - header_len,
        cut,
        more_fragments,
    )?;
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
    let (mut rest, cut) = clamp(packet, 40, 40 + declared);
    let mut remaining = declared;
    let mut next = header.get(6).copied().unwrap_or(0);
    let mut first_fragment = false;
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
                if offset_flags & 0xfff8 != 0 {
                    return Ok(Decoded::Fragment);
                }
                first_fragment |= offset_flags & 1 != 0;
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
    udp(src.into(), dst.into(), rest, remaining, cut, first_fragment)
}

/// `ip_payload` is what was captured of the IP payload, which the IP header says is
/// `declared` bytes long; `cut` says the capture holds fewer than that.
fn udp(
    src: IpAddr,
    dst: IpAddr,
    ip_payload: &[u8],
    declared: usize,
    cut: bool,
    first_fragment: bool,
) -> Result<Decoded<'_>, DecodeError> {
    let header = ip_payload
        .get(..UDP_HEADER_LEN)
        .ok_or(DecodeError::Truncated(Layer::Udp))?;
    let src_port = be16(header, 0).ok_or(DecodeError::Truncated(Layer::Udp))?;
    let dst_port = be16(header, 2).ok_or(DecodeError::Truncated(Layer::Udp))?;
    let udp_len = usize::from(be16(header, 4).ok_or(DecodeError::Truncated(Layer::Udp))?);
    // A first fragment's UDP length covers the whole reassembled datagram.
    if udp_len < UDP_HEADER_LEN || (!first_fragment && udp_len > declared) {
        return Err(DecodeError::BadUdpLength);
    }
    let (payload, short) = clamp(ip_payload, UDP_HEADER_LEN, udp_len);
    Ok(Decoded::Udp(Udp {
        src: SocketAddr::new(src, src_port),
        dst: SocketAddr::new(dst, dst_port),
        payload,
        complete: !(cut || short || first_fragment),
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

fn ipv4_addr(bytes: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn ipv6_addr(bytes: &[u8], at: usize) -> Option<Ipv6Addr> {
    let b: [u8; 16] = bytes.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
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

    #[test]
    fn fragments() {
        let body = udp_bytes(1, 2, PAYLOAD);
        let later = ipv4_packet(17, 0x0010, &body);
        assert_eq!(decode(LinkType::Raw, &later), Ok(Decoded::Fragment));
        // First fragment: the UDP length claims more than this fragment carries.
        let mut first_body = udp_bytes(1, 2, &[7; 100]);
        first_body.truncate(40);
        let first = ipv4_packet(17, 0x2000, &first_body);
        let udp = expect_udp(decode(LinkType::Raw, &first));
        assert!(!udp.complete);
        assert_eq!(udp.payload.len(), 32);

        let v6_later = ipv6_packet(44, &[17, 0, 0x00, 0x09, 0, 0, 0, 1], &body);
        assert_eq!(decode(LinkType::Raw, &v6_later), Ok(Decoded::Fragment));
        let v6_first = ipv6_packet(44, &[17, 0, 0x00, 0x01, 0, 0, 0, 1], &body);
        assert!(!expect_udp(decode(LinkType::Raw, &v6_first)).complete);
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
