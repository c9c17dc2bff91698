//! Walks the records of a pcap or pcapng capture held in memory, with byte offsets.
//!
//! Owns record framing and the errors about it: every failure names the byte offset of
//! the record (or block) it happened in, because pcap-file's own errors do not. Framing
//! is delegated to pcap-file's slice parsers (`PcapParser`, `PcapNgParser`), which say
//! how much they consumed; the few fixed fields of pcapng packet blocks are read here so
//! that an odd option in a packet block cannot reject an otherwise readable file. It
//! must never panic on any input.

use core::fmt;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::PcapNgParser;
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

/// Calls `each` for every frame in `bytes`, in file order, and returns the format.
pub fn read_frames<'a>(
    bytes: &'a [u8],
    mut each: impl FnMut(Frame<'a>),
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
        PCAPNG_SECTION_HEADER => read_pcapng(bytes, &mut each).map(|()| Format::PcapNg),
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

fn read_pcapng<'a>(bytes: &'a [u8], each: &mut impl FnMut(Frame<'a>)) -> Result<(), ReadError> {
    let (mut rest, mut parser) =
        PcapNgParser::new(bytes).map_err(|e| framing_error(e, "section header block", 0))?;
    while !rest.is_empty() {
        let offset = bytes.len() - rest.len();
        let (remainder, block) = parser
            .next_raw_block(rest)
            .map_err(|e| framing_error(e, "block", offset))?;
        let endianness = parser.section().endianness;
        let body: &'a [u8] = match block.body {
            std::borrow::Cow::Borrowed(body) => body,
            std::borrow::Cow::Owned(_) => {
                return Err(ReadError::Corrupt {
                    what: "block",
                    offset,
                    reason: "unexpected owned block".to_string(),
                })
            }
        };
        let packet = match block.type_ {
            PCAPNG_ENHANCED_PACKET_BLOCK => Some(packet_block(body, endianness, false)),
            PCAPNG_PACKET_BLOCK => Some(packet_block(body, endianness, true)),
            PCAPNG_SIMPLE_PACKET_BLOCK => {
                // Original length, then the data padded to 32 bits; the padding is not
                // part of the packet.
                let original = read_u32(body, 0, endianness).unwrap_or(0) as usize;
                let data = body.get(4..).unwrap_or_default();
                Some(Ok((0, data.get(..original).unwrap_or(data))))
            }
            _ => None,
        };
        if let Some(packet) = packet {
            let (interface, data) = packet.map_err(|reason| ReadError::Corrupt {
                what: "block",
                offset,
                reason: reason.to_string(),
            })?;
            let link_type = parser
                .interfaces()
                .get(interface as usize)
                .map(|i| u32::from(i.linktype))
                .ok_or_else(|| ReadError::Corrupt {
                    what: "block",
                    offset,
                    reason: format!("packet refers to undeclared interface {interface}"),
                })?;
            each(Frame {
                offset,
                link_type,
                data,
            });
        }
        rest = remainder;
    }
    Ok(())
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
        let format = read_frames(bytes, |f| {
            frames.push((f.offset, f.link_type, f.data.to_vec()))
        })?;
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
