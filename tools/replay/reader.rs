//! Walks the records of a pcap or pcapng capture held in memory, with byte offsets.
//!
//! Owns record framing and the errors about it: every failure names the byte offset of
//! the record (or block) it happened in, because pcap-file's own errors do not. Classic
//! pcap framing is delegated to pcap-file's `PcapParser`, which says how much it consumed.
//! pcapng blocks are walked here (see `read_pcapng`): pcap-file's parser rejects files
//! tcpdump and Wireshark read, over options nothing here needs. What is skipped or ignored
//! is reported as a `Warning` naming the block and its offset. It must never panic on any
//! input.

use core::fmt;

use pcap_file::pcap::PcapParser;
use pcap_file::{Endianness, PcapError};

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
    pub data: &'a [u8],
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
    match u32::from_be_bytes(magic) {
        PCAPNG_SECTION_HEADER => read_pcapng(bytes, &mut each, &mut warn).map(|()| Format::PcapNg),
        0xA1B2_C3D4 | 0xA1B2_3C4D | 0xD4C3_B2A1 | 0x4D3C_B2A1 => {
            read_pcap(bytes, &mut each).map(|()| Format::Pcap)
        }
        _ => Err(ReadError::NotACapture { magic }),
    }
}

fn read_pcap<'a>(bytes: &'a [u8], each: &mut impl FnMut(Frame<'a>)) -> Result<(), ReadError> {
    let (mut rest, parser) =
        PcapParser::new(bytes).map_err(|e| framing_error(e, "file header", 0))?;
    let header = parser.header();
    let link_type = u32::from(header.datalink);
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let (remainder, record) = match parser.next_raw_packet(rest) {
            Ok(parsed) => parsed,
            Err(PcapError::IncompleteBuffer) => {
                // A length that no capture could hold means the header is garbage, not
                // that the file was cut.
                if let Some(incl_len) = record_len(rest, header.endianness) {
                    if incl_len > MAX_RECORD_LEN {
                        return Err(ReadError::Corrupt {
                            what: "record",
                            offset,
                            reason: format!("captured length {incl_len} is implausible"),
                        });
                    }
                }
                return Err(ReadError::Truncated {
                    what: "record",
                    offset,
                });
            }
            Err(e) => return Err(framing_error(e, "record", offset)),
        };
        if record.incl_len > MAX_RECORD_LEN {
            return Err(ReadError::Corrupt {
                what: "record",
                offset,
                reason: format!("captured length {} is implausible", record.incl_len),
            });
        }
        let data: &'a [u8] = match record.data {
            std::borrow::Cow::Borrowed(data) => data,
            // The slice parser always borrows; an owned copy cannot outlive this loop.
            std::borrow::Cow::Owned(_) => {
                return Err(ReadError::Corrupt {
                    what: "record",
                    offset,
                    reason: "unexpected owned record".to_string(),
                })
            }
        };
        each(Frame {
            offset,
            link_type,
            data,
        });
        rest = remainder;
    }
    Ok(())
}

/// The captured-length field of the pcap record header at the start of `rest`.
fn record_len(rest: &[u8], endianness: Endianness) -> Option<u32> {
    let b: [u8; 4] = rest.get(8..12)?.try_into().ok()?;
    Some(match endianness {
        Endianness::Big => u32::from_be_bytes(b),
        Endianness::Little => u32::from_le_bytes(b),
    })
}

/// Walks pcapng blocks itself rather than through pcap-file's `PcapNgParser`, which parses
/// the options of section header and interface blocks and rejects a whole file over one it
/// dislikes (custom options, a comment that is not UTF-8, an unknown option's length) that
/// tcpdump and Wireshark read without complaint. Only the fixed fields are needed here: the
/// byte order of each section, each interface's link type and the packet blocks' data. Options
/// are walked only to warn about malformed ones; a block whose own fields are unusable is
/// skipped with a warning, unless it is a packet block (that is corrupt) or its length
/// framing is broken (then nothing after it can be found).
fn read_pcapng<'a>(
    bytes: &'a [u8],
    each: &mut impl FnMut(Frame<'a>),
    warn: &mut impl FnMut(Warning),
) -> Result<(), ReadError> {
    let mut endianness = Endianness::Little;
    // Link types of the current section's interfaces, by interface id; `None` for an
    // interface block that was skipped.
    let mut interfaces: Vec<Option<u32>> = Vec::new();
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
                let link_type = body.get(..2).map(|b| match endianness {
                    Endianness::Big => u16::from_be_bytes([b[0], b[1]]),
                    Endianness::Little => u16::from_le_bytes([b[0], b[1]]),
                });
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
                    interfaces.push(link_type.map(u32::from));
                    check_options(
                        body.get(8..),
                        8,
                        "interface description block",
                        offset,
                        endianness,
                        warn,
                    );
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
                Some(Ok((0, data.get(..original).unwrap_or(data))))
            }
            // Name resolution, statistics, journal, decryption secrets, custom blocks: no
            // packets in them.
            _ => None,
        };
        if let Some(packet) = packet {
            let (interface, data) = packet.map_err(|reason| ReadError::Corrupt {
                what: "block",
                offset,
                reason: reason.to_string(),
            })?;
            let link_type = match interfaces.get(interface as usize) {
                Some(link) => link.unwrap_or(UNKNOWN_LINK),
                None => {
                    return Err(ReadError::Corrupt {
                        what: "block",
                        offset,
                        reason: format!("packet refers to undeclared interface {interface}"),
                    })
                }
            };
            each(Frame {
                offset,
                link_type,
                data,
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

/// Interface id and data of an enhanced (or obsolete) packet block body.
fn packet_block(
    body: &[u8],
    endianness: Endianness,
    obsolete: bool,
) -> Result<(u32, &[u8]), &'static str> {
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
    let captured = read_u32(body, 12, endianness).ok_or(TOO_SHORT)? as usize;
    body.get(20..)
        .and_then(|data| data.get(..captured))
        .map(|data| (interface, data))
        .ok_or("captured length runs past the end of the block")
}

fn read_u32(bytes: &[u8], at: usize, endianness: Endianness) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(match endianness {
        Endianness::Big => u32::from_be_bytes(b),
        Endianness::Little => u32::from_le_bytes(b),
    })
}

fn framing_error(error: PcapError, what: &'static str, offset: usize) -> ReadError {
    match error {
        PcapError::IncompleteBuffer => ReadError::Truncated { what, offset },
        other => ReadError::Corrupt {
            what,
            offset,
            reason: other.to_string(),
        },
    }
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
        assert!(matches!(
            collect(&huge).unwrap_err(),
            ReadError::Corrupt { offset: 43, .. }
        ));
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
