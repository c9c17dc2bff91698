//! Walks the records of a pcap or pcapng capture held in memory, with byte offsets.
//!
//! Owns record framing and the errors about it: every failure names the byte offset of
//! the record (or block) it happened in. Both formats are walked here: classic pcap with the
//! record-header variants Wireshark reads (Kuznetsov's modified pcap, Red Hat 6.1, SuSE 6.3,
//! Nokia; see `PcapVariant`) and the FCS length a link-type field may carry; pcapng because
//! pcap-file's parser rejects files tcpdump and Wireshark read, over options nothing here
//! needs (see `read_pcapng`). What is skipped or ignored is reported as a `Warning` naming
//! the block and its offset. It must never panic on any input.

use core::fmt;

use std::collections::BTreeMap;

use pcap_file::Endianness;

const PCAPNG_SECTION_HEADER: u32 = 0x0A0D_0D0A;
const PCAPNG_PACKET_BLOCK: u32 = 0x0000_0002;
const PCAPNG_SIMPLE_PACKET_BLOCK: u32 = 0x0000_0003;
const PCAPNG_ENHANCED_PACKET_BLOCK: u32 = 0x0000_0006;
/// libpcap's MAXIMUM_SNAPLEN: a record header claiming more is corrupt, not truncated.
const MAX_RECORD_LEN: u32 = 262_144;

/// The container format of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
}

impl Format {
    pub const fn label(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::PcapNg => "pcapng",
        }
    }
}

/// One captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Byte offset of the record (pcap) or block (pcapng) holding the frame.
    pub offset: usize,
    /// The LINKTYPE_ value of the interface the frame was captured on.
    pub link_type: u32,
    /// The frame as captured, without any FCS the capture says it ends with.
    pub data: &'a [u8],
    /// The frame's length on the wire (without FCS): more than `data.len()` when the capture
    /// cut it at its snapshot length.
    pub wire_len: usize,
    /// Capture time, nanoseconds since the epoch; `None` for a pcapng simple packet block,
    /// which has none.
    pub timestamp: Option<u64>,
}

/// Why a capture could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    Empty,
    /// Neither a pcap nor a pcapng magic number at offset 0.
    NotACapture {
        magic: [u8; 4],
    },
    /// The file ends inside the header, record or block starting at `offset`.
    Truncated {
        what: &'static str,
        offset: usize,
    },
    /// The header, record or block at `offset` is self-contradictory.
    Corrupt {
        what: &'static str,
        offset: usize,
        reason: String,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Empty => f.write_str("empty file"),
            ReadError::NotACapture { magic } => write!(
                f,
                "not a pcap or pcapng file (magic {:02x}{:02x}{:02x}{:02x} at offset 0)",
                magic[0], magic[1], magic[2], magic[3]
            ),
            ReadError::Truncated { what, offset } => {
                write!(f, "truncated {what} at offset {offset}")
            }
            ReadError::Corrupt {
                what,
                offset,
                reason,
            } => write!(f, "corrupt {what} at offset {offset}: {reason}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Something odd in a capture that did not stop the reading: a block skipped or ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub what: &'static str,
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.what, self.offset, self.reason
        )
    }
}

/// Calls `each` for every frame in `bytes`, in file order, and `warn` for every block
/// skipped or ignored; returns the format.
pub fn read_frames<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(Frame<'a>),
    mut warn: impl FnMut(Warning),
) -> Result<Format, ReadError> {
    let magic: [u8; 4] = match bytes.get(..4) {
        Some(m) => [m[0], m[1], m[2], m[3]],
        None if bytes.is_empty() => return Err(ReadError::Empty),
        None => {
            return Err(ReadError::Truncated {
                what: "file header",
                offset: 0,
            })
        }
    };
    if u32::from_be_bytes(magic) == PCAPNG_SECTION_HEADER {
        return read_pcapng(bytes, &mut each, &mut warn).map(|()| Format::PcapNg);
    }
    match pcap_header(bytes) {
        Some(header) => read_pcap(bytes, header?, &mut each).map(|()| Format::Pcap),
        None => Err(ReadError::NotACapture { magic }),
    }
}

/// The record layout of a classic pcap capture (`None` for pcapng or anything else), for
/// the report to name.
pub fn pcap_variant(bytes: &[u8]) -> Option<PcapVariant> {
    let header = pcap_header(bytes)?.ok()?;
    choose_variant(bytes, &header).ok()
}

/// The classic pcap variants, after Wireshark's wiretap/libpcap.c, which names them after the
/// patches (Alexey Kuznetsov's, dated 1999-04-17, 09-15 and 10-29) that added fields to the
/// record header. Some share a magic number with another and are told apart only by trying
/// the first records, as `choose_variant` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcapVariant {
    /// The 16-byte record header of libpcap (microsecond or nanosecond time stamps).
    Standard,
    /// ss990417 (Red Hat 6.1): standard magic; ifindex u32, protocol u16, pkt_type u8, pad u8.
    Ss990417,
    /// ss990915 (SuSE 6.3): modified magic; ss990417's fields, then cpu1, cpu2 and 3 pad bytes.
    Ss990915,
    /// ss991029 (`editcap -F modpcap`): modified magic; the fields of ss990417.
    Ss991029,
    /// Nokia IPSO: standard magic; 4 bytes of unknown meaning after the standard header.
    Nokia,
}

impl PcapVariant {
    const fn record_header_len(self) -> usize {
        match self {
            PcapVariant::Standard => 16,
            PcapVariant::Ss990417 | PcapVariant::Ss991029 => 24,
            PcapVariant::Ss990915 => 28,
            PcapVariant::Nokia => 20,
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            PcapVariant::Standard => "pcap",
            PcapVariant::Ss990417 => "pcap (modified, ss990417: Red Hat 6.1)",
            PcapVariant::Ss990915 => "pcap (modified, ss990915: SuSE 6.3)",
            PcapVariant::Ss991029 => "pcap (modified, ss991029)",
            PcapVariant::Nokia => "pcap (Nokia)",
        }
    }
}

const PCAP_MAGIC: u32 = 0xA1B2_C3D4;
const PCAP_NSEC_MAGIC: u32 = 0xA1B2_3C4D;
/// Kuznetsov's patched libpcap: record headers longer than the standard 16 bytes.
const PCAP_MODIFIED_MAGIC: u32 = 0xA1B2_CD34;
const PCAP_HEADER_LEN: usize = 24;

/// The fields of a classic pcap file header this reader uses.
#[derive(Debug, Clone, Copy)]
struct PcapHeader {
    endianness: Endianness,
    nanosecond: bool,
    modified: bool,
    version: (u16, u16),
    snaplen: u32,
    link_field: u32,
}

/// The file header, if `bytes` starts with a classic pcap magic in either byte order.
fn pcap_header(bytes: &[u8]) -> Option<Result<PcapHeader, ReadError>> {
    let magic: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let (endianness, magic) = match (u32::from_be_bytes(magic), u32::from_le_bytes(magic)) {
        (m @ (PCAP_MAGIC | PCAP_NSEC_MAGIC | PCAP_MODIFIED_MAGIC), _) => (Endianness::Big, m),
        (_, m @ (PCAP_MAGIC | PCAP_NSEC_MAGIC | PCAP_MODIFIED_MAGIC)) => (Endianness::Little, m),
        _ => return None,
    };
    let Some(header) = bytes.get(..PCAP_HEADER_LEN) else {
        return Some(Err(ReadError::Truncated {
            what: "file header",
            offset: 0,
        }));
    };
    let u16_at = |at: usize| read_u16(header, at, endianness).unwrap_or(0);
    let u32_at = |at: usize| read_u32(header, at, endianness).unwrap_or(0);
    Some(Ok(PcapHeader {
        endianness,
        nanosecond: magic == PCAP_NSEC_MAGIC,
        modified: magic == PCAP_MODIFIED_MAGIC,
        version: (u16_at(4), u16_at(6)),
        snaplen: u32_at(16),
        link_field: u32_at(20),
    }))
}

/// libpcap's LT_ macros: the link-type field holds LINKTYPE_ in its low 16 bits, and when the
/// "FCS length present" bit (26) is set, the FCS length in 16-bit words in its top 4 bits
/// (28-31). Bits 16-25 and 27 are reserved; a field with any of them set is not a link type
/// this reader knows, so it is kept whole (and counted as an unsupported link).
/// Returns the link type and the FCS bytes at the end of each frame.
fn split_link_field(field: u32) -> (u32, usize) {
    const RESERVED: u32 = 0x0BFF_0000;
    const FCS_PRESENT: u32 = 0x0400_0000;
    if field & RESERVED != 0 {
        return (field, 0);
    }
    let fcs = if field & FCS_PRESENT != 0 {
        (field >> 28) as usize * 2
    } else {
        0
    };
    (field & 0xFFFF, fcs)
}

/// Which record header layout the file uses, as Wireshark's libpcap.c decides it: variants
/// that share the magic are tried in order on the first three records, each scored with one
/// point per implausible field, and the first without any wins. Files of version 2.3 or
/// earlier predate the variants.
///
/// Where no variant reads cleanly, libpcap.c takes the least bad; here that is done only for
/// the modified magic, which only the variants use. A file with the standard magic is read
/// as standard pcap unless another layout reads its first records without a fault, so that
/// a damaged standard file is reported at the record that is damaged, not misread. And
/// editcap writes Nokia files with zeros where libpcap.c expects Nokia's values (Wireshark
/// versions disagree on what such a file is): one whose records read cleanly in the Nokia
/// layout but for those 4 bytes is refused as an unsupported Nokia capture.
fn choose_variant(bytes: &[u8], header: &PcapHeader) -> Result<PcapVariant, ReadError> {
    let records = bytes.get(PCAP_HEADER_LEN..).unwrap_or_default();
    let score = |variant| implausibility(records, header, variant, true);
    if header.modified {
        let (old, new) = (PcapVariant::Ss990915, PcapVariant::Ss991029);
        return Ok(if score(new) <= score(old) { new } else { old });
    }
    if header.nanosecond || header.version < (2, 4) || header.version.0 == 543 {
        return Ok(PcapVariant::Standard);
    }
    for variant in [
        PcapVariant::Standard,
        PcapVariant::Ss990417,
        PcapVariant::Nokia,
    ] {
        if score(variant) == 0 {
            return Ok(variant);
        }
    }
    if implausibility(records, header, PcapVariant::Nokia, false) == 0 {
        return Err(ReadError::Corrupt {
            what: "record",
            offset: PCAP_HEADER_LEN,
            reason: "the record headers look like those of Nokia's pcap variant (4 more bytes \
                     each, without the values Nokia writes there), which is not supported"
                .to_string(),
        });
    }
    Ok(PcapVariant::Standard)
}

/// libpcap.c's `libpcap_try_record` over the first three records read as `variant`: one point
/// for each field that makes no sense for it, and one for a record cut short. Without
/// `nokia_values`, the 4 bytes of a Nokia header are not judged.
fn implausibility(
    records: &[u8],
    header: &PcapHeader,
    variant: PcapVariant,
    nokia_values: bool,
) -> u32 {
    let e = header.endianness;
    let mut score = 0;
    let mut pos = 0usize;
    for _ in 0..3 {
        let Some(rest) = records.get(pos..).filter(|r| !r.is_empty()) else {
            break;
        };
        let Some(rec) = rest.get(..variant.record_header_len()) else {
            return score + 1;
        };
        let field = |at: usize| read_u32(rec, at, e).unwrap_or(0);
        let (frac, incl, orig) = (field(4), field(8), field(12));
        score += u32::from(frac >= 1_000_000);
        let incl_ok = incl <= MAX_RECORD_LEN;
        score += u32::from(!incl_ok);
        score += u32::from(incl > header.snaplen);
        score += u32::from(orig > 128 << 20);
        score += u32::from(incl > orig);
        match variant {
            PcapVariant::Standard => {}
            PcapVariant::Ss990417 | PcapVariant::Ss991029 | PcapVariant::Ss990915 => {
                let ifindex = field(16);
                let protocol = read_u16(rec, 20, e).unwrap_or(0);
                let pkt_type = rec.get(22).copied().unwrap_or(0);
                score += u32::from(ifindex > 10_000);
                // An Ethertype, or one of Linux's ETH_P_ values below 0x0600.
                let protocol_ok = protocol >= 0x0600
                    || matches!(protocol, 0x0000..=0x0017 | 0x0060 | 0x0200 | 0x0400);
                score += u32::from(!protocol_ok);
                // Linux PACKET_ types of 1999 were 0 to 4.
                score += u32::from(pkt_type > 4);
            }
            PcapVariant::Nokia => {
                // The values seen, per libpcap.c: 0xXfbfYZ0W, X 9 or b, Y b or d, Z 6 or 9,
                // W 1 or 2.
                let stuff = field(16);
                let seen = stuff & 0x0FFF_00F0 == 0x0FBF_0000
                    && matches!(stuff & 0xF000_0000, 0x9000_0000 | 0xB000_0000)
                    && matches!(stuff & 0x0000_F000, 0xB000 | 0xD000)
                    && matches!(stuff & 0x0000_0F00, 0x0600 | 0x0900)
                    && matches!(stuff & 0x0000_000F, 1 | 2);
                score += u32::from(nokia_values && !seen);
            }
        }
        if !incl_ok {
            return score;
        }
        let end = variant.record_header_len() + incl as usize;
        if rest.len() < end {
            return score + 1;
        }
        pos += end;
    }
    score
}

fn read_pcap<'a>(
    bytes: &'a [u8],
    header: PcapHeader,
    each: &mut impl FnMut(Frame<'a>),
) -> Result<(), ReadError> {
    let variant = choose_variant(bytes, &header)?;
    let (link_type, fcs) = split_link_field(header.link_field);
    let header_len = variant.record_header_len();
    let e = header.endianness;
    let mut offset = PCAP_HEADER_LEN;
    while offset < bytes.len() {
        let rest = bytes.get(offset..).unwrap_or_default();
        let truncated = ReadError::Truncated {
            what: "record",
            offset,
        };
        let field = |at: usize| read_u32(rest, at, e);
        // A length that no capture could hold means the header is garbage, not that the
        // file was cut, so it is checked before the record's own length.
        if let Some(incl) = field(8).filter(|&incl| incl > MAX_RECORD_LEN) {
            return Err(ReadError::Corrupt {
                what: "record",
                offset,
                reason: format!("captured length {incl} is implausible"),
            });
        }
        let (Some(ts_sec), Some(ts_frac), Some(incl), Some(orig)) =
            (field(0), field(4), field(8), field(12))
        else {
            return Err(truncated);
        };
        if rest.len() < header_len {
            return Err(truncated);
        }
        let end = header_len + incl as usize;
        let data = rest.get(header_len..end).ok_or(truncated)?;
        let frac_nanos = if header.nanosecond {
            u64::from(ts_frac)
        } else {
            u64::from(ts_frac) * 1_000
        };
        // The FCS is the frame's last `fcs` bytes on the wire; what was captured of it is cut
        // off. A record claiming less on the wire than it holds is taken at its captured size.
        let wire_len = (orig as usize).max(data.len()).saturating_sub(fcs);
        let data = data.get(..wire_len).unwrap_or(data);
        each(Frame {
            offset,
            link_type,
            data,
            wire_len,
            timestamp: Some(u64::from(ts_sec) * 1_000_000_000 + frac_nanos),
        });
        offset += end;
    }
    Ok(())
}

/// Walks pcapng blocks itself rather than through pcap-file's `PcapNgParser`, which parses
/// the options of section header and interface blocks and rejects a whole file over one it
/// dislikes (custom options, a comment that is not UTF-8, an unknown option's length) that
/// tcpdump and Wireshark read without complaint. Only the fixed fields are needed here: the
/// byte order and version of each section, each interface's link type and time stamp
/// resolution, and the packet blocks' data. Options are walked only to warn about malformed
/// ones; a block whose own fields are unusable is skipped with a warning, unless it is a
/// packet block (that is corrupt) or its length framing is broken (then nothing after it can
/// be found). Standard blocks that cannot hold packets are skipped silently (`is_metadata`);
/// a block of a type this reader does not know is skipped with one warning per type.
fn read_pcapng<'a>(
    bytes: &'a [u8],
    each: &mut impl FnMut(Frame<'a>),
    warn: &mut impl FnMut(Warning),
) -> Result<(), ReadError> {
    let mut unknown = UnknownBlocks::default();
    let result = walk_pcapng(bytes, each, warn, &mut unknown);
    unknown.report(warn);
    result
}

fn walk_pcapng<'a>(
    bytes: &'a [u8],
    each: &mut impl FnMut(Frame<'a>),
    warn: &mut impl FnMut(Warning),
    unknown: &mut UnknownBlocks,
) -> Result<(), ReadError> {
    let mut endianness = Endianness::Little;
    // The current section's interfaces, by interface id; `None` for an interface block that
    // was skipped.
    let mut interfaces: Vec<Option<Interface>> = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = bytes.get(offset..).unwrap_or_default();
        let what = if offset == 0 {
            "section header block"
        } else {
            "block"
        };
        let truncated = ReadError::Truncated { what, offset };
        let raw_type: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(truncated.clone())?;
        if u32::from_be_bytes(raw_type) == PCAPNG_SECTION_HEADER {
            // The byte-order magic sets the endianness of this block and its section.
            let magic = rest.get(8..12).ok_or(truncated.clone())?;
            endianness = match magic {
                [0x1A, 0x2B, 0x3C, 0x4D] => Endianness::Big,
                [0x4D, 0x3C, 0x2B, 0x1A] => Endianness::Little,
                _ => {
                    return Err(ReadError::Corrupt {
                        what: "section header block",
                        offset,
                        reason: "bad byte-order magic".to_string(),
                    })
                }
            };
            interfaces.clear();
        } else if offset == 0 {
            return Err(ReadError::Corrupt {
                what,
                offset,
                reason: "a pcapng file starts with a section header block".to_string(),
            });
        }
        let block_type = read_u32(rest, 0, endianness).ok_or(truncated.clone())?;
        let total = read_u32(rest, 4, endianness).ok_or(truncated.clone())? as usize;
        if total < 12 || total % 4 != 0 || total > MAX_BLOCK_LEN {
            return Err(ReadError::Corrupt {
                what,
                offset,
                reason: format!("block length {total} is not a multiple of 4 from 12 up"),
            });
        }
        let block = rest.get(..total).ok_or(truncated.clone())?;
        if read_u32(block, total - 4, endianness) != Some(total as u32) {
            return Err(ReadError::Corrupt {
                what,
                offset,
                reason: "trailing block length differs from the leading one".to_string(),
            });
        }
        let body = block.get(8..total - 4).unwrap_or_default();
        let packet = match block_type {
            PCAPNG_SECTION_HEADER => {
                let major = read_u16(body, 4, endianness).unwrap_or(0);
                if major != 1 {
                    // Only version 1 is defined; tshark refuses any other. The fixed fields
                    // are read as version 1's: the user is told, and can judge the counts.
                    warn(Warning {
                        what: "section header block",
                        offset,
                        reason: format!(
                            "pcapng major version {major} (only 1 is defined; tshark refuses \
                             it); its blocks are read as version 1"
                        ),
                    });
                }
                check_options(
                    body.get(16..),
                    16,
                    "section header block",
                    offset,
                    endianness,
                    warn,
                );
                None
            }
            PCAPNG_INTERFACE_DESCRIPTION => {
                if body.len() < 8 {
                    warn(Warning {
                        what: "interface description block",
                        offset,
                        reason: "shorter than its fixed fields; skipped, its packets are \
                                 counted as an unsupported link"
                            .to_string(),
                    });
                    interfaces.push(None);
                } else {
                    let link_type = read_u16(body, 0, endianness).unwrap_or(0);
                    let options = body.get(8..);
                    check_options(
                        options,
                        8,
                        "interface description block",
                        offset,
                        endianness,
                        warn,
                    );
                    interfaces.push(Some(Interface {
                        link_type: u32::from(link_type),
                        tick: interface_tick(options.unwrap_or_default(), endianness),
                    }));
                }
                None
            }
            PCAPNG_ENHANCED_PACKET_BLOCK => Some(packet_block(body, endianness, false)),
            PCAPNG_PACKET_BLOCK => Some(packet_block(body, endianness, true)),
            PCAPNG_SIMPLE_PACKET_BLOCK => {
                // Original length, then the data padded to 32 bits; the padding is not
                // part of the packet.
                let original = read_u32(body, 0, endianness).unwrap_or(0) as usize;
                let data = body.get(4..).unwrap_or_default();
                let data = data.get(..original).unwrap_or(data);
                Some(Ok(PacketBlock {
                    interface: 0,
                    data,
                    wire_len: original.max(data.len()),
                    time: None,
                }))
            }
            t if is_metadata(t) => None,
            t => {
                unknown.saw(t, offset);
                None
            }
        };
        if let Some(packet) = packet {
            let packet = packet.map_err(|reason| ReadError::Corrupt {
                what: "block",
                offset,
                reason: reason.to_string(),
            })?;
            let interface = match interfaces.get(packet.interface as usize) {
                Some(interface) => interface.as_ref(),
                None => {
                    return Err(ReadError::Corrupt {
                        what: "block",
                        offset,
                        reason: format!(
                            "packet refers to undeclared interface {}",
                            packet.interface
                        ),
                    })
                }
            };
            each(Frame {
                offset,
                link_type: interface.map_or(UNKNOWN_LINK, |i| i.link_type),
                data: packet.data,
                wire_len: packet.wire_len,
                timestamp: packet
                    .time
                    .and_then(|t| interface.map(|i| i.tick).unwrap_or(Tick::Micro).nanos(t)),
            });
        }
        offset += total;
    }
    Ok(())
}

/// The link type given to packets of an interface block that was skipped.
const UNKNOWN_LINK: u32 = u32::MAX;
/// Largest block accepted: a packet of libpcap's maximum snapshot length plus room for options.
const MAX_BLOCK_LEN: usize = 16 << 20;
const PCAPNG_INTERFACE_DESCRIPTION: u32 = 0x0000_0001;

/// Standard pcapng blocks that never hold packets, skipped without a word: name resolution
/// (4), interface statistics (5), systemd journal export (9), decryption secrets (10) and
/// custom blocks (0x00000BAD, 0x40000BAD). Section header, interface and packet blocks are
/// read; any other type is unknown here and warned about.
const fn is_metadata(block_type: u32) -> bool {
    matches!(
        block_type,
        0x0000_0004 | 0x0000_0005 | 0x0000_0009 | 0x0000_000A | 0x0000_0BAD | 0x4000_0BAD
    )
}

/// Unknown block types met, each with its first offset and count, so that a capture full of
/// one vendor's blocks makes one warning line, not thousands.
#[derive(Default)]
struct UnknownBlocks(BTreeMap<u32, (usize, u64)>);

impl UnknownBlocks {
    fn saw(&mut self, block_type: u32, offset: usize) {
        self.0.entry(block_type).or_insert((offset, 0)).1 += 1;
    }

    /// One warning per type, in order of first appearance.
    fn report(&self, warn: &mut impl FnMut(Warning)) {
        let mut seen: Vec<_> = self.0.iter().collect();
        seen.sort_by_key(|(_, (first, _))| *first);
        for (block_type, (first, count)) in seen {
            let more = match count {
                1 => String::new(),
                n => format!(" ({n} blocks of this type, the first here)"),
            };
            warn(Warning {
                what: "block",
                offset: *first,
                reason: format!("unknown block type 0x{block_type:08x} skipped{more}"),
            });
        }
    }
}

/// What the reader keeps of an interface description block.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u32,
    tick: Tick,
}

/// The unit of an interface's time stamps (option if_tsresol; microseconds by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    Micro,
    /// 10^-n seconds.
    Decimal(u8),
    /// 2^-n seconds.
    Binary(u8),
}

impl Tick {
    /// `ticks` since the epoch in nanoseconds, if that fits in 64 bits.
    fn nanos(self, ticks: u64) -> Option<u64> {
        match self {
            Tick::Micro => ticks.checked_mul(1_000),
            Tick::Decimal(n) if n <= 9 => ticks.checked_mul(10u64.pow(9 - u32::from(n))),
            Tick::Decimal(n) => Some(ticks / 10u64.checked_pow(u32::from(n) - 9)?),
            Tick::Binary(n) => {
                let nanos = (u128::from(ticks) * 1_000_000_000) >> n.min(127);
                u64::try_from(nanos).ok()
            }
        }
    }
}

/// The if_tsresol option (code 9) among an interface block's options.
fn interface_tick(options: &[u8], endianness: Endianness) -> Tick {
    let mut pos = 0usize;
    while let (Some(code), Some(len)) = (
        read_u16(options, pos, endianness),
        read_u16(options, pos + 2, endianness),
    ) {
        if code == 0 {
            break;
        }
        if code == 9 && len == 1 {
            return match options.get(pos + 4) {
                Some(&v) if v & 0x80 != 0 => Tick::Binary(v & 0x7f),
                Some(&v) => Tick::Decimal(v),
                None => Tick::Micro,
            };
        }
        pos += 4 + ((usize::from(len) + 3) & !3);
    }
    Tick::Micro
}

/// Walks the options of a block (code u16, length u16, value padded to 32 bits, ended by
/// opt_endofopt or the block's end) and warns about the first that runs past the block.
/// Option contents are never interpreted, so an unknown or custom option is fine.
fn check_options(
    options: Option<&[u8]>,
    at: usize,
    what: &'static str,
    offset: usize,
    endianness: Endianness,
    warn: &mut impl FnMut(Warning),
) {
    let Some(options) = options else { return };
    let mut pos = 0usize;
    while pos < options.len() {
        let field = |i: usize| {
            options.get(pos + i..pos + i + 2).map(|b| match endianness {
                Endianness::Big => u16::from_be_bytes([b[0], b[1]]),
                Endianness::Little => u16::from_le_bytes([b[0], b[1]]),
            })
        };
        let (Some(code), Some(len)) = (field(0), field(2)) else {
            break;
        };
        if code == 0 {
            return;
        }
        let padded = (usize::from(len) + 3) & !3;
        if pos + 4 + padded > options.len() {
            warn(Warning {
                what,
                offset,
                reason: format!(
                    "option {code} at block byte {} claims {len} bytes past the block's end; \
                     options ignored",
                    8 + at + pos
                ),
            });
            return;
        }
        pos += 4 + padded;
    }
}

/// What a packet block says about its packet.
struct PacketBlock<'a> {
    interface: u32,
    data: &'a [u8],
    wire_len: usize,
    /// The time stamp in the interface's ticks.
    time: Option<u64>,
}

/// Interface id, time stamp and data of an enhanced (or obsolete) packet block body.
fn packet_block(
    body: &[u8],
    endianness: Endianness,
    obsolete: bool,
) -> Result<PacketBlock<'_>, &'static str> {
    const TOO_SHORT: &str = "packet block shorter than its fixed fields";
    let interface = if obsolete {
        // Interface id and drop count are 16 bits each in the obsolete block.
        let id = read_u32(body, 0, endianness).ok_or(TOO_SHORT)?;
        match endianness {
            Endianness::Big => id >> 16,
            Endianness::Little => id & 0xffff,
        }
    } else {
        read_u32(body, 0, endianness).ok_or(TOO_SHORT)?
    };
    let high = read_u32(body, 4, endianness).ok_or(TOO_SHORT)?;
    let low = read_u32(body, 8, endianness).ok_or(TOO_SHORT)?;
    let captured = read_u32(body, 12, endianness).ok_or(TOO_SHORT)? as usize;
    let original = read_u32(body, 16, endianness).ok_or(TOO_SHORT)? as usize;
    let data = body
        .get(20..)
        .and_then(|data| data.get(..captured))
        .ok_or("captured length runs past the end of the block")?;
    Ok(PacketBlock {
        interface,
        data,
        wire_len: original.max(captured),
        time: Some((u64::from(high) << 32) | u64::from(low)),
    })
}

fn read_u16(bytes: &[u8], at: usize, endianness: Endianness) -> Option<u16> {
    let b: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(match endianness {
        Endianness::Big => u16::from_be_bytes(b),
        Endianness::Little => u16::from_le_bytes(b),
    })
}

fn read_u32(bytes: &[u8], at: usize, endianness: Endianness) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(match endianness {
        Endianness::Big => u32::from_be_bytes(b),
        Endianness::Little => u32::from_le_bytes(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pcap_le(link_type: u32, records: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&link_type.to_le_bytes());
        for r in records {
            v.extend_from_slice(&1u32.to_le_bytes());
            v.extend_from_slice(&2u32.to_le_bytes());
            v.extend_from_slice(&(r.len() as u32).to_le_bytes());
            v.extend_from_slice(&(r.len() as u32).to_le_bytes());
            v.extend_from_slice(r);
        }
        v
    }

    fn block(out: &mut Vec<u8>, block_type: u32, body: &[u8], big: bool) {
        let u32b = |x: u32| {
            if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        };
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        out.extend_from_slice(&u32b(block_type));
        out.extend_from_slice(&u32b(total));
        out.extend_from_slice(body);
        out.resize(out.len() + padded - body.len(), 0);
        out.extend_from_slice(&u32b(total));
    }

    fn pcapng(big: bool, link_type: u16, packets: &[&[u8]]) -> Vec<u8> {
        let u32b = |x: u32| {
            if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        };
        let u16b = |x: u16| {
            if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        let mut shb = u32b(0x1A2B_3C4D).to_vec();
        shb.extend_from_slice(&u16b(1));
        shb.extend_from_slice(&u16b(0));
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        block(&mut out, PCAPNG_SECTION_HEADER, &shb, big);
        let mut idb = u16b(link_type).to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&u32b(0));
        block(&mut out, 1, &idb, big);
        for p in packets {
            let mut epb = u32b(0).to_vec();
            epb.extend_from_slice(&u32b(0));
            epb.extend_from_slice(&u32b(1));
            epb.extend_from_slice(&u32b(p.len() as u32));
            epb.extend_from_slice(&u32b(p.len() as u32));
            epb.extend_from_slice(p);
            block(&mut out, PCAPNG_ENHANCED_PACKET_BLOCK, &epb, big);
        }
        let mut spb = u32b(3).to_vec();
        spb.extend_from_slice(b"xyz");
        block(&mut out, PCAPNG_SIMPLE_PACKET_BLOCK, &spb, big);
        out
    }

    /// (offset, link type, data) of each frame.
    type Frames = Vec<(usize, u32, Vec<u8>)>;

    fn collect(bytes: &[u8]) -> Result<(Format, Frames), ReadError> {
        let mut frames = Vec::new();
        let format = read_frames(
            bytes,
            |f| frames.push((f.offset, f.link_type, f.data.to_vec())),
            |_| {},
        )?;
        Ok((format, frames))
    }

    #[test]
    fn pcap_records_with_offsets() {
        let file = pcap_le(101, &[b"abc", b"", b"hello"]);
        let (format, frames) = collect(&file).unwrap();
        assert_eq!(format, Format::Pcap);
        assert_eq!(
            frames,
            vec![
                (24, 101, b"abc".to_vec()),
                (43, 101, Vec::new()),
                (59, 101, b"hello".to_vec()),
            ]
        );
    }

    #[test]
    fn truncated_pcap_names_the_record() {
        let file = pcap_le(1, &[b"abc", b"hello"]);
        for cut in [44, 50, 60, file.len() - 1] {
            assert_eq!(
                collect(&file[..cut]).unwrap_err(),
                ReadError::Truncated {
                    what: "record",
                    offset: 43
                },
                "cut at {cut}"
            );
        }
        assert_eq!(
            collect(&file[..10]).unwrap_err().to_string(),
            "truncated file header at offset 0"
        );
        let mut huge = file.clone();
        huge[43 + 8..43 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = collect(&huge).unwrap_err();
        assert!(
            matches!(err, ReadError::Corrupt { offset: 43, .. }),
            "{err}"
        );
    }

    #[test]
    fn pcapng_both_byte_orders() {
        for big in [false, true] {
            let file = pcapng(big, 113, &[b"one", b"three"]);
            let (format, frames) = collect(&file).unwrap();
            assert_eq!(format, Format::PcapNg);
            let data: Vec<_> = frames.iter().map(|f| f.2.clone()).collect();
            assert_eq!(
                data,
                vec![b"one".to_vec(), b"three".to_vec(), b"xyz".to_vec()]
            );
            assert!(frames.iter().all(|f| f.1 == 113));
            // SHB (28) + IDB (20) precede the first packet block.
            assert_eq!(frames[0].0, 48);
        }
    }

    #[test]
    fn truncated_pcapng_names_the_block() {
        let file = pcapng(false, 1, &[b"one", b"three"]);
        // Second EPB starts after SHB 28 + IDB 20 + EPB 36.
        let err = collect(&file[..84 + 10]).unwrap_err();
        assert_eq!(
            err,
            ReadError::Truncated {
                what: "block",
                offset: 84
            }
        );
    }

    #[test]
    fn pcapng_packet_on_unknown_interface_is_corrupt() {
        let mut file = pcapng(false, 1, &[b"one"]);
        // Interface id of the first EPB, right after its type and length.
        file[48 + 8..48 + 12].copy_from_slice(&5u32.to_le_bytes());
        assert!(matches!(
            collect(&file).unwrap_err(),
            ReadError::Corrupt { offset: 48, .. }
        ));
    }

    /// An SHB carrying `options`, then an IDB (link type 101) and one EPB of `packet`.
    pub(super) fn pcapng_with_shb_options(options: &[u8], packet: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        shb.extend_from_slice(options);
        block(&mut out, PCAPNG_SECTION_HEADER, &shb, false);
        block(&mut out, 1, &[101, 0, 0, 0, 0, 0, 0, 0], false);
        let mut epb = vec![0u8; 12];
        epb.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(packet.len() as u32).to_le_bytes());
        epb.extend_from_slice(packet);
        block(&mut out, PCAPNG_ENHANCED_PACKET_BLOCK, &epb, false);
        out
    }

    fn option(code: u16, value: &[u8]) -> Vec<u8> {
        let mut v = code.to_le_bytes().to_vec();
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v.resize(v.len().div_ceil(4) * 4, 0);
        v
    }

    #[test]
    fn pcapng_with_custom_and_odd_options_is_read_without_warnings() {
        let mut options = option(1, b"odd comment, \xff not utf-8: \xff");
        options.extend(option(2988, &[0, 0, 0x7f, 0xff, b'x']));
        options.extend(option(19373, &[1, 2, 3]));
        options.extend(option(0, &[]));
        let file = pcapng_with_shb_options(&options, b"hello");
        let mut warnings = Vec::new();
        let mut frames = Vec::new();
        read_frames(
            &file,
            |f| frames.push(f.data.to_vec()),
            |w| warnings.push(w),
        )
        .unwrap();
        assert_eq!(frames, vec![b"hello".to_vec()]);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn an_option_past_the_block_is_ignored_with_a_warning_naming_the_block() {
        // Claims 200 bytes in a 12-byte option area.
        let mut options = 2988u16.to_le_bytes().to_vec();
        options.extend_from_slice(&200u16.to_le_bytes());
        options.extend_from_slice(&[0; 8]);
        let file = pcapng_with_shb_options(&options, b"data");
        let mut warnings = Vec::new();
        let mut frames = Vec::new();
        read_frames(
            &file,
            |f| frames.push(f.data.to_vec()),
            |w| warnings.push(w),
        )
        .unwrap();
        assert_eq!(frames, vec![b"data".to_vec()]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].what, "section header block");
        assert_eq!(warnings[0].offset, 0);
        assert!(warnings[0]
            .to_string()
            .starts_with("section header block at offset 0: option 2988"));
    }

    #[test]
    fn a_short_interface_block_is_skipped_with_a_warning() {
        let mut file = Vec::new();
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        block(&mut file, PCAPNG_SECTION_HEADER, &shb, false);
        block(&mut file, 1, &[101, 0], false);
        let mut spb = 2u32.to_le_bytes().to_vec();
        spb.extend_from_slice(b"ab");
        block(&mut file, PCAPNG_SIMPLE_PACKET_BLOCK, &spb, false);
        let mut warnings = Vec::new();
        let mut links = Vec::new();
        read_frames(&file, |f| links.push(f.link_type), |w| warnings.push(w)).unwrap();
        assert_eq!(links, vec![UNKNOWN_LINK]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(
            (warnings[0].what, warnings[0].offset),
            ("interface description block", 28)
        );
    }

    #[test]
    fn not_a_capture() {
        assert_eq!(collect(&[]).unwrap_err(), ReadError::Empty);
        let err = collect(b"GIF89a........").unwrap_err();
        assert!(err.to_string().starts_with("not a pcap or pcapng file"));
    }

    /// A little-endian classic pcap of `magic` whose record headers carry `extra` after the
    /// standard 16 bytes.
    fn pcap_variant_file(magic: u32, link: u32, extra: &[u8], records: &[&[u8]]) -> Vec<u8> {
        let mut v = pcap_le(link, &[]);
        v[..4].copy_from_slice(&magic.to_le_bytes());
        for (i, r) in records.iter().enumerate() {
            v.extend_from_slice(&(1_700_000_000 + i as u32).to_le_bytes());
            v.extend_from_slice(&250_000u32.to_le_bytes());
            v.extend_from_slice(&(r.len() as u32).to_le_bytes());
            v.extend_from_slice(&(r.len() as u32).to_le_bytes());
            v.extend_from_slice(extra);
            v.extend_from_slice(r);
        }
        v
    }

    const RECORDS: [&[u8]; 4] = [b"first record", b"2nd", b"the third one", b"4"];

    #[test]
    fn modified_pcap_variants_are_read_as_wireshark_tells_them_apart() {
        // ifindex 2, protocol 0x0800, pkt_type 0, pad.
        let ss991029 = [2, 0, 0, 0, 0x00, 0x08, 0, 0];
        // The same, then cpu1, cpu2 and three pad bytes.
        let ss990915 = [2, 0, 0, 0, 0x00, 0x08, 0, 0, 0, 0, 0, 0];
        for (magic, extra, variant) in [
            (PCAP_MODIFIED_MAGIC, &ss991029[..], PcapVariant::Ss991029),
            (PCAP_MODIFIED_MAGIC, &ss990915[..], PcapVariant::Ss990915),
            (PCAP_MAGIC, &ss991029[..], PcapVariant::Ss990417),
            (PCAP_MAGIC, &[][..], PcapVariant::Standard),
        ] {
            let file = pcap_variant_file(magic, 1, extra, &RECORDS);
            assert_eq!(pcap_variant(&file), Some(variant));
            let (format, frames) = collect(&file).unwrap();
            assert_eq!(format, Format::Pcap);
            let data: Vec<_> = frames.iter().map(|f| f.2.clone()).collect();
            assert_eq!(data, RECORDS.map(<[u8]>::to_vec), "{variant:?}");
            assert_eq!(frames[0].0, 24);
            assert_eq!(frames[1].0, 24 + 16 + extra.len() + RECORDS[0].len());
        }
    }

    #[test]
    fn a_nokia_layout_without_nokia_values_is_refused_by_name() {
        let file = pcap_variant_file(PCAP_MAGIC, 1, &[0; 4], &RECORDS);
        let err = collect(&file).unwrap_err();
        assert!(
            matches!(&err, ReadError::Corrupt { offset: 24, reason, .. } if reason.contains("Nokia")),
            "{err}"
        );
        // With the values libpcap.c documents, it is a Nokia capture.
        let nokia = 0x9fbf_b601u32.to_le_bytes();
        let file = pcap_variant_file(PCAP_MAGIC, 1, &nokia, &RECORDS);
        assert_eq!(pcap_variant(&file), Some(PcapVariant::Nokia));
        assert_eq!(collect(&file).unwrap().1.len(), 4);
    }

    #[test]
    fn the_link_type_field_may_carry_an_fcs_length() {
        assert_eq!(split_link_field(1), (1, 0));
        // FCS present, 2 words: a 4-byte Ethernet FCS, as libpcap's LT_FCS_DATALINK_EXT(2).
        assert_eq!(split_link_field(0x2400_0001), (1, 4));
        assert_eq!(split_link_field(0x4400_0001), (1, 8));
        // A length without the presence bit says nothing.
        assert_eq!(split_link_field(0x2000_0001), (1, 0));
        // Reserved bits: not a link type this reader knows.
        assert_eq!(split_link_field(0x0001_0001), (0x0001_0001, 0));
        let file = pcap_le(0x2400_0001, &[b"frame+FCS!", b"xy"]);
        let mut frames = Vec::new();
        read_frames(
            &file,
            |f| frames.push((f.link_type, f.data.to_vec(), f.wire_len)),
            |_| {},
        )
        .unwrap();
        assert_eq!(frames, vec![(1, b"frame+".to_vec(), 6), (1, Vec::new(), 0)]);
    }

    #[test]
    fn frames_carry_their_wire_length_and_time() {
        let mut file = pcap_le(1, &[b"abcdef"]);
        // Captured 6 of 60 bytes.
        file[24 + 12..24 + 16].copy_from_slice(&60u32.to_le_bytes());
        let mut seen = Vec::new();
        read_frames(&file, |f| seen.push((f.wire_len, f.timestamp)), |_| {}).unwrap();
        assert_eq!(seen, vec![(60, Some(1_000_000_000 + 2_000))]);
        // pcapng: microseconds unless if_tsresol says otherwise.
        let file = pcapng(false, 1, &[b"one"]);
        let mut seen = Vec::new();
        read_frames(&file, |f| seen.push((f.wire_len, f.timestamp)), |_| {}).unwrap();
        assert_eq!(seen, vec![(3, Some(1_000)), (3, None)]);
        assert_eq!(Tick::Decimal(9).nanos(5), Some(5));
        assert_eq!(Tick::Decimal(3).nanos(5), Some(5_000_000));
        assert_eq!(Tick::Binary(1).nanos(3), Some(1_500_000_000));
        assert_eq!(
            interface_tick(&[9, 0, 1, 0, 9, 0, 0, 0], Endianness::Little),
            Tick::Decimal(9)
        );
    }

    #[test]
    fn unknown_blocks_warn_once_per_type_and_metadata_blocks_are_silent() {
        let mut file = pcapng(false, 1, &[b"one"]);
        let start = file.len();
        for block_type in [4, 5, 9, 10, 0x0BAD, 0x4000_0BAD] {
            block(&mut file, block_type, b"meta", false);
        }
        let first_unknown = file.len();
        block(&mut file, 0x0BAD_F00D, b"?", false);
        let local_use = file.len();
        block(&mut file, 0x8000_0001, b"local", false);
        block(&mut file, 0x0BAD_F00D, b"again", false);
        assert!(first_unknown > start);
        let mut warnings = Vec::new();
        read_frames(&file, |_| {}, |w| warnings.push(w)).unwrap();
        let lines: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                format!(
                    "block at offset {first_unknown}: unknown block type 0x0badf00d skipped \
                     (2 blocks of this type, the first here)"
                ),
                format!("block at offset {local_use}: unknown block type 0x80000001 skipped"),
            ]
        );
    }

    #[test]
    fn a_section_of_another_major_version_is_read_with_a_warning() {
        let mut file = pcapng(false, 1, &[b"one"]);
        file[12..14].copy_from_slice(&2u16.to_le_bytes());
        let mut warnings = Vec::new();
        let mut frames = 0;
        read_frames(&file, |_| frames += 1, |w| warnings.push(w)).unwrap();
        assert_eq!(frames, 2);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .to_string()
                .starts_with("section header block at offset 0: pcapng major version 2"),
            "{}",
            warnings[0]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = collect(&bytes);
        }

        #[test]
        fn corrupted_captures_never_panic(
            ng in any::<bool>(),
            flips in proptest::collection::vec((0usize..140, any::<u8>()), 1..8),
            cut in 0usize..160,
        ) {
            let mut file = if ng {
                pcapng(false, 1, &[b"one", b"three"])
            } else {
                pcap_le(1, &[b"abc", b"hello", b"0123456789"])
            };
            for (at, value) in flips {
                if let Some(b) = file.get_mut(at) {
                    *b = value;
                }
            }
            file.truncate(cut);
            let _ = collect(&file);
        }
    }
}
