//! The wire format: packet types, field offsets, sizes, and a parser that never panics.
//!
//! Owns every byte offset named in PROTOCOL.md and nothing else: it reads and
//! writes fields of buffers it is handed and never allocates, never does
//! cryptography and never keeps state. Every rejection is a typed `Malformed`.

use core::fmt;

/// The only protocol version this implementation speaks.
pub const VERSION: u8 = 1;

/// Largest datagram we send or accept: fits a 1500-byte MTU over IPv6 (1500 - 40 - 8).
pub const MAX_DATAGRAM_LEN: usize = 1452;

/// Bytes of a handshake MAC (mac1, mac2): truncated HMAC-SHA256.
pub const MAC_LEN: usize = 16;
/// Bytes of an AES-256-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes of a cookie (mac2 key) handed out under load.
pub const COOKIE_LEN: usize = 16;
/// Bytes of an X25519 key.
pub const KEY_LEN: usize = 32;

/// version, type, reserved u16, receiver index u32, counter u64.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Header plus tag: what a transport packet adds to its plaintext.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Sequence number that prefixes a Reliable plaintext.
pub const RELIABLE_SEQ_LEN: usize = 8;
/// Sequence numbers one ACK's selective bitmap can name above its cumulative point: one
/// per segment a sender may have in flight (`reliable::MAX_IN_FLIGHT`).
pub const ACK_SELECTIVE_BITS: usize = 1024;
/// 64-bit words of the longest selective bitmap.
const ACK_SELECTIVE_WORDS: usize = ACK_SELECTIVE_BITS / 64;
/// The shortest ACK plaintext: the cumulative u64 and one 64-bit word of bitmap.
pub const ACK_MIN_LEN: usize = 16;
/// The longest ACK plaintext: the cumulative u64 and sixteen words of bitmap.
pub const ACK_MAX_LEN: usize = 8 + 8 * ACK_SELECTIVE_WORDS;

/// Largest Realtime payload one datagram carries.
pub const MAX_REALTIME_PAYLOAD: usize = MAX_DATAGRAM_LEN - TRANSPORT_OVERHEAD;
/// Largest Reliable payload one datagram carries (its sequence number takes the rest).
pub const MAX_RELIABLE_PAYLOAD: usize = MAX_REALTIME_PAYLOAD - RELIABLE_SEQ_LEN;

/// Bytes of a receive-window advertisement in a handshake payload (u32 LE).
pub const WINDOW_LEN: usize = 4;
/// The msg2 payload: the responder's Reliable receive window.
pub const MSG2_PAYLOAD_LEN: usize = WINDOW_LEN;
/// The msg3 payload: the `FinishIntent` byte, then the initiator's receive window.
pub const MSG3_PAYLOAD_LEN: usize = 1 + WINDOW_LEN;

/// Noise XX msg1 (25519, AES-GCM): the ephemeral key, empty payload.
pub const NOISE_MSG1_LEN: usize = 32;
/// Noise XX msg2: ephemeral, encrypted static, the encrypted window and its tag.
pub const NOISE_MSG2_LEN: usize = 32 + 48 + MSG2_PAYLOAD_LEN + 16;
/// msg3: encrypted static, then the encrypted `FinishIntent` and window with their tag.
pub const NOISE_MSG3_LEN: usize = 48 + MSG3_PAYLOAD_LEN + 16;

pub mod init {
    //! HandshakeInit: 120 bytes, padded so that no reply is ever larger.
    use super::*;
    /// Offset of the initiator's session index.
    pub const SENDER: usize = 4;
    /// Offset of the Noise msg1.
    pub const NOISE: usize = 8;
    /// Offset of the zero padding that keeps every reply no larger than this packet.
    pub const PADDING: usize = NOISE + NOISE_MSG1_LEN;
    /// Bytes of padding.
    pub const PADDING_LEN: usize = 48;
    /// Offset of mac1.
    pub const MAC1: usize = PADDING + PADDING_LEN;
    /// Offset of mac2.
    pub const MAC2: usize = MAC1 + MAC_LEN;
    /// Total length.
    pub const LEN: usize = MAC2 + MAC_LEN;
}

pub mod response {
    //! HandshakeResponse: 112 bytes.
    use super::*;
    /// Offset of the responder's session index.
    pub const SENDER: usize = 4;
    /// Offset of the initiator's session index, echoed.
    pub const RECEIVER: usize = 8;
    /// Offset of the Noise msg2.
    pub const NOISE: usize = 12;
    /// Total length.
    pub const LEN: usize = NOISE + NOISE_MSG2_LEN;
}

pub mod finish {
    //! HandshakeFinish: 77 bytes.
    use super::*;
    /// Offset of the responder's session index.
    pub const RECEIVER: usize = 4;
    /// Offset of the Noise msg3.
    pub const NOISE: usize = 8;
    /// Total length.
    pub const LEN: usize = NOISE + NOISE_MSG3_LEN;
}

pub mod cookie_reply {
    //! CookieReply: 52 bytes, smaller than the HandshakeInit that caused it.
    use super::*;
    /// Offset of the initiator's session index.
    pub const RECEIVER: usize = 4;
    /// Offset of the random nonce.
    pub const NONCE: usize = 8;
    /// Bytes of the nonce.
    pub const NONCE_LEN: usize = 12;
    /// Offset of the sealed cookie and its tag.
    pub const SEALED: usize = NONCE + NONCE_LEN;
    /// Total length.
    pub const LEN: usize = SEALED + COOKIE_LEN + TAG_LEN;
}

// No answer to a HandshakeInit may be larger than it: a spoofed source must gain no amplification.
const _: () = assert!(cookie_reply::LEN < init::LEN && response::LEN <= init::LEN);

/// The type byte (offset 1) of every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// First handshake message, initiator to responder.
    HandshakeInit = 1,
    /// Second handshake message, responder to initiator.
    HandshakeResponse = 2,
    /// Third handshake message, initiator to responder.
    HandshakeFinish = 3,
    /// A cookie for an initiator the responder asks to prove its address.
    CookieReply = 4,
    /// A sealed Realtime message.
    Realtime = 5,
    /// A sealed Reliable segment.
    Reliable = 6,
    /// A sealed acknowledgement of Reliable segments.
    Ack = 7,
    /// A sealed empty packet that keeps the session alive.
    Keepalive = 8,
    /// A sealed close with its reason.
    Close = 9,
    /// Several sealed messages for one peer in one packet (PROTOCOL.md 7.5).
    Bundle = 10,
}

impl PacketType {
    /// The type a type byte names, if any.
    pub fn from_byte(byte: u8) -> Option<PacketType> {
        Some(match byte {
            1 => PacketType::HandshakeInit,
            2 => PacketType::HandshakeResponse,
            3 => PacketType::HandshakeFinish,
            4 => PacketType::CookieReply,
            5 => PacketType::Realtime,
            6 => PacketType::Reliable,
            7 => PacketType::Ack,
            8 => PacketType::Keepalive,
            9 => PacketType::Close,
            10 => PacketType::Bundle,
            _ => return None,
        })
    }

    /// The `type` label of metrics and captures.
    pub const fn label(self) -> &'static str {
        match self {
            PacketType::HandshakeInit => "handshake_init",
            PacketType::HandshakeResponse => "handshake_response",
            PacketType::HandshakeFinish => "handshake_finish",
            PacketType::CookieReply => "cookie_reply",
            PacketType::Realtime => "realtime",
            PacketType::Reliable => "reliable",
            PacketType::Ack => "ack",
            PacketType::Keepalive => "keepalive",
            PacketType::Close => "close",
            PacketType::Bundle => "bundle",
        }
    }
}

/// The kinds of sealed transport packet, a subset of `PacketType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// A Realtime message.
    Realtime,
    /// A Reliable segment.
    Reliable,
    /// An acknowledgement.
    Ack,
    /// A keepalive.
    Keepalive,
    /// A close.
    Close,
    /// Frames of several messages (PROTOCOL.md 7.5).
    Bundle,
}

impl TransportKind {
    /// The packet type byte this kind is sent with.
    pub const fn packet_type(self) -> PacketType {
        match self {
            TransportKind::Realtime => PacketType::Realtime,
            TransportKind::Reliable => PacketType::Reliable,
            TransportKind::Ack => PacketType::Ack,
            TransportKind::Keepalive => PacketType::Keepalive,
            TransportKind::Close => PacketType::Close,
            TransportKind::Bundle => PacketType::Bundle,
        }
    }

    /// Whether a plaintext of `len` bytes may be of this kind: within its bounds, and for
    /// an ACK a whole number of 8-byte bitmap words.
    const fn allows_plaintext_len(self, len: usize) -> bool {
        let (min, max) = self.plaintext_bounds();
        let whole_words = !matches!(self, TransportKind::Ack) || len % 8 == 0;
        min <= len && len <= max && whole_words
    }

    /// The plaintext length this kind allows, as an inclusive range.
    const fn plaintext_bounds(self) -> (usize, usize) {
        match self {
            TransportKind::Realtime => (0, MAX_REALTIME_PAYLOAD),
            TransportKind::Reliable => (RELIABLE_SEQ_LEN, MAX_REALTIME_PAYLOAD),
            TransportKind::Ack => (ACK_MIN_LEN, ACK_MAX_LEN),
            TransportKind::Keepalive => (0, 0),
            TransportKind::Close => (1, 1),
            TransportKind::Bundle => (BUNDLE_FRAME_HEADER_LEN, MAX_REALTIME_PAYLOAD),
        }
    }
}

/// A session index chosen by the receiver of a packet; never zero on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionIndex(u32);

impl SessionIndex {
    /// An index from its wire value; zero is not an index.
    pub fn new(raw: u32) -> Option<SessionIndex> {
        (raw != 0).then_some(SessionIndex(raw))
    }

    /// The wire value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// The 64-bit per-direction packet counter, which is also the AEAD nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Counter(pub u64);

impl Counter {
    /// The 96-bit AES-GCM nonce: four zero bytes, then the counter little-endian.
    pub fn nonce(self) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.0.to_le_bytes());
        nonce
    }
}

/// Why a datagram could not even be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// Shorter than the smallest packet.
    TooShort,
    /// Longer than `MAX_DATAGRAM_LEN`.
    TooLong,
    /// A version other than `VERSION`.
    BadVersion,
    /// A type byte no packet has.
    UnknownType,
    /// The reserved bytes are not zero.
    ReservedNotZero,
    /// The length does not fit the packet type.
    BadLength,
    /// A session index field was zero.
    ZeroIndex,
}

impl Malformed {
    /// The `reason` label of metrics and captures.
    pub const fn label(self) -> &'static str {
        match self {
            Malformed::TooShort => "too_short",
            Malformed::TooLong => "too_long",
            Malformed::BadVersion => "bad_version",
            Malformed::UnknownType => "unknown_type",
            Malformed::ReservedNotZero => "reserved_not_zero",
            Malformed::BadLength => "bad_length",
            Malformed::ZeroIndex => "zero_index",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What the fixed fields of a datagram say, checked against its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A HandshakeInit.
    HandshakeInit {
        /// The initiator's session index.
        sender: SessionIndex,
    },
    /// A HandshakeResponse.
    HandshakeResponse {
        /// The responder's session index.
        sender: SessionIndex,
        /// The initiator's session index.
        receiver: SessionIndex,
    },
    /// A HandshakeFinish.
    HandshakeFinish {
        /// The responder's session index.
        receiver: SessionIndex,
    },
    /// A CookieReply.
    CookieReply {
        /// The initiator's session index.
        receiver: SessionIndex,
    },
    /// A sealed transport packet.
    Transport {
        /// What the packet carries.
        kind: TransportKind,
        /// The receiver's session index.
        receiver: SessionIndex,
        /// The packet counter, which is also the AEAD nonce.
        counter: Counter,
    },
}

impl Header {
    /// The packet type of this header.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Header::HandshakeInit { .. } => PacketType::HandshakeInit,
            Header::HandshakeResponse { .. } => PacketType::HandshakeResponse,
            Header::HandshakeFinish { .. } => PacketType::HandshakeFinish,
            Header::CookieReply { .. } => PacketType::CookieReply,
            Header::Transport { kind, .. } => kind.packet_type(),
        }
    }
}

/// Parses the fixed fields of `datagram`. Reads nothing past a length check.
pub fn parse_header(datagram: &[u8]) -> Result<Header, Malformed> {
    if datagram.len() < 4 {
        return Err(Malformed::TooShort);
    }
    if datagram.len() > MAX_DATAGRAM_LEN {
        return Err(Malformed::TooLong);
    }
    if datagram[0] != VERSION {
        return Err(Malformed::BadVersion);
    }
    let packet_type = PacketType::from_byte(datagram[1]).ok_or(Malformed::UnknownType)?;
    if datagram[2] != 0 || datagram[3] != 0 {
        return Err(Malformed::ReservedNotZero);
    }
    let exact = |len: usize| {
        if datagram.len() == len {
            Ok(())
        } else {
            Err(Malformed::BadLength)
        }
    };
    let index = |at: usize| SessionIndex::new(read_u32(datagram, at)).ok_or(Malformed::ZeroIndex);
    match packet_type {
        PacketType::HandshakeInit => {
            exact(init::LEN)?;
            Ok(Header::HandshakeInit {
                sender: index(init::SENDER)?,
            })
        }
        PacketType::HandshakeResponse => {
            exact(response::LEN)?;
            Ok(Header::HandshakeResponse {
                sender: index(response::SENDER)?,
                receiver: index(response::RECEIVER)?,
            })
        }
        PacketType::HandshakeFinish => {
            exact(finish::LEN)?;
            Ok(Header::HandshakeFinish {
                receiver: index(finish::RECEIVER)?,
            })
        }
        PacketType::CookieReply => {
            exact(cookie_reply::LEN)?;
            Ok(Header::CookieReply {
                receiver: index(cookie_reply::RECEIVER)?,
            })
        }
        PacketType::Realtime
        | PacketType::Reliable
        | PacketType::Ack
        | PacketType::Keepalive
        | PacketType::Close
        | PacketType::Bundle => {
            let kind = match packet_type {
                PacketType::Realtime => TransportKind::Realtime,
                PacketType::Reliable => TransportKind::Reliable,
                PacketType::Ack => TransportKind::Ack,
                PacketType::Keepalive => TransportKind::Keepalive,
                PacketType::Bundle => TransportKind::Bundle,
                _ => TransportKind::Close,
            };
            let plaintext_len = datagram
                .len()
                .checked_sub(TRANSPORT_OVERHEAD)
                .ok_or(Malformed::TooShort)?;
            if !kind.allows_plaintext_len(plaintext_len) {
                return Err(Malformed::BadLength);
            }
            Ok(Header::Transport {
                kind,
                receiver: index(4)?,
                counter: Counter(read_u64(datagram, 8)),
            })
        }
    }
}

/// The header of one frame of a bundle: kind (1 byte), body length (u16 LE).
pub const BUNDLE_FRAME_HEADER_LEN: usize = 3;
/// The most frames one bundle may carry; more make it malformed (PROTOCOL.md 7.5).
pub const MAX_BUNDLE_FRAMES: usize = 64;

/// The kind of one frame of a bundle: the lone packet type whose plaintext its body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The body is a Realtime message.
    Realtime,
    /// The body is a Reliable segment: `seq` u64 LE, then the message.
    Reliable,
}

impl FrameKind {
    /// The frame's kind byte, which is the lone packet's type byte.
    pub const fn byte(self) -> u8 {
        match self {
            FrameKind::Realtime => PacketType::Realtime as u8,
            FrameKind::Reliable => PacketType::Reliable as u8,
        }
    }

    fn from_byte(byte: u8) -> Option<FrameKind> {
        match byte {
            5 => Some(FrameKind::Realtime),
            6 => Some(FrameKind::Reliable),
            _ => None,
        }
    }
}

/// One frame of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the body is.
    pub kind: FrameKind,
    /// Where the body starts, counted from the start of the bundle's plaintext.
    pub offset: usize,
    /// The body: exactly the plaintext a lone packet of `kind` would carry.
    pub body: &'a [u8],
}

/// Why a bundle's framing was refused (the whole bundle is dropped as `malformed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadBundle {
    /// A frame header or body runs past the end of the plaintext.
    Truncated,
    /// A kind byte other than 5 or 6.
    UnknownKind,
    /// A Reliable body too short for its sequence number.
    ShortReliable,
    /// More than `MAX_BUNDLE_FRAMES` frames.
    TooManyFrames,
}

/// Checks a bundle's whole framing (PROTOCOL.md 7.5) and returns its frame count. Only a
/// plaintext that passes is handed to `bundle_frames`, so no frame is acted on before the
/// bundle is known to be well formed.
pub fn check_bundle(plaintext: &[u8]) -> Result<usize, BadBundle> {
    let mut frames = 0;
    let mut at = 0;
    while at < plaintext.len() {
        if frames == MAX_BUNDLE_FRAMES {
            return Err(BadBundle::TooManyFrames);
        }
        let frame = read_frame(plaintext, at)?;
        at = frame.offset + frame.body.len();
        frames += 1;
    }
    if frames == 0 {
        return Err(BadBundle::Truncated);
    }
    Ok(frames)
}

/// The frames of a bundle that `check_bundle` accepted, in order.
pub fn bundle_frames(plaintext: &[u8]) -> impl Iterator<Item = Frame<'_>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let frame = read_frame(plaintext, at).ok()?;
        at = frame.offset + frame.body.len();
        Some(frame)
    })
}

fn read_frame(plaintext: &[u8], at: usize) -> Result<Frame<'_>, BadBundle> {
    let header = plaintext
        .get(at..at + BUNDLE_FRAME_HEADER_LEN)
        .ok_or(BadBundle::Truncated)?;
    let kind = FrameKind::from_byte(header[0]).ok_or(BadBundle::UnknownKind)?;
    let len = usize::from(u16::from_le_bytes([header[1], header[2]]));
    let offset = at + BUNDLE_FRAME_HEADER_LEN;
    let body = plaintext
        .get(offset..offset + len)
        .ok_or(BadBundle::Truncated)?;
    if kind == FrameKind::Reliable && body.len() < RELIABLE_SEQ_LEN {
        return Err(BadBundle::ShortReliable);
    }
    Ok(Frame { kind, offset, body })
}

/// Writes a frame header at `out[..3]` for a body of `len` bytes.
pub fn write_frame_header(out: &mut [u8; BUNDLE_FRAME_HEADER_LEN], kind: FrameKind, len: u16) {
    out[0] = kind.byte();
    out[1..3].copy_from_slice(&len.to_le_bytes());
}

/// Writes the 16-byte transport header into `out[..16]`.
pub fn write_transport_header(
    out: &mut [u8; TRANSPORT_HEADER_LEN],
    kind: TransportKind,
    receiver: SessionIndex,
    counter: Counter,
) {
    out[0] = VERSION;
    out[1] = kind.packet_type() as u8;
    out[2] = 0;
    out[3] = 0;
    out[4..8].copy_from_slice(&receiver.get().to_le_bytes());
    out[8..16].copy_from_slice(&counter.0.to_le_bytes());
}

/// Writes the 4-byte common prefix (version, type, reserved) of a handshake-phase packet.
pub fn write_prefix(out: &mut [u8], packet_type: PacketType) {
    out[0] = VERSION;
    out[1] = packet_type as u8;
    out[2] = 0;
    out[3] = 0;
}

/// The plaintext of an ACK: every sequence below `next_expected` was received, and bit
/// `i` of `selective` says whether `next_expected + 1 + i` was received too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    /// Every sequence number below this was received.
    pub next_expected: u64,
    /// Bit `i`: `next_expected + 1 + i` was received.
    pub selective: Selective,
}

/// An ACK's selective bitmap: bit `i` names sequence number `next_expected + 1 + i`, for
/// `i` below `ACK_SELECTIVE_BITS`.
///
/// On the wire it is a run of u64 LE words, bit `i` being bit `i % 64` of word `i / 64`
/// (so one word is exactly the 64-bit bitmap of a short ACK), as few words as hold its
/// highest set bit and at least one.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Selective {
    words: [u64; ACK_SELECTIVE_WORDS],
}

impl Selective {
    /// A bitmap whose bits 0..64 are `word` and whose higher bits are clear.
    pub const fn from_low_word(word: u64) -> Self {
        let mut words = [0; ACK_SELECTIVE_WORDS];
        words[0] = word;
        Selective { words }
    }

    /// Sets bit `bit`; a bit beyond `ACK_SELECTIVE_BITS` is ignored.
    pub fn insert(&mut self, bit: u64) {
        let (word, mask) = Self::position(bit);
        if let Some(word) = word.and_then(|word| self.words.get_mut(word)) {
            *word |= mask;
        }
    }

    /// Whether bit `bit` is set (never for a bit beyond `ACK_SELECTIVE_BITS`).
    pub fn contains(&self, bit: u64) -> bool {
        let (word, mask) = Self::position(bit);
        word.and_then(|word| self.words.get(word))
            .is_some_and(|word| word & mask != 0)
    }

    /// Whether no bit is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&word| word == 0)
    }

    /// The highest set bit, if any.
    pub fn highest(&self) -> Option<u64> {
        let (index, word) = self
            .words
            .iter()
            .enumerate()
            .rev()
            .find(|(_, &word)| word != 0)?;
        Some(64 * index as u64 + u64::from(63 - word.leading_zeros()))
    }

    /// Set bits, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let base = 64 * index as u64;
            let mut rest = word;
            core::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = u64::from(rest.trailing_zeros());
                rest &= rest - 1;
                Some(base + bit)
            })
        })
    }

    /// The words the encoding carries: up to the highest non-zero one, at least one.
    fn words_in_use(&self) -> &[u64] {
        let used = self
            .words
            .iter()
            .rposition(|&word| word != 0)
            .map_or(1, |last| last + 1);
        self.words.get(..used).unwrap_or(&self.words)
    }

    /// The word index and mask of `bit`; no word when it is out of range.
    fn position(bit: u64) -> (Option<usize>, u64) {
        let word = usize::try_from(bit / 64)
            .ok()
            .filter(|&word| word < ACK_SELECTIVE_WORDS);
        (word, 1u64 << (bit % 64))
    }
}

impl core::fmt::Debug for Selective {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut list = f.debug_list();
        for word in self.words_in_use() {
            list.entry(&format_args!("{word:#x}"));
        }
        list.finish()
    }
}

/// An encoded ACK plaintext (16 to `ACK_MAX_LEN` bytes).
#[derive(Clone, Copy)]
pub struct EncodedAck {
    bytes: [u8; ACK_MAX_LEN],
    len: usize,
}

impl EncodedAck {
    /// The plaintext to seal.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }
}

impl Ack {
    /// An ACK with no selective bits.
    pub const fn cumulative(next_expected: u64) -> Self {
        Ack {
            next_expected,
            selective: Selective::from_low_word(0),
        }
    }

    /// The plaintext of an ACK packet: `next_expected`, then the bitmap in as few
    /// words as hold its highest set bit (16 bytes when no bit above 63 is set).
    pub fn encode(&self) -> EncodedAck {
        let mut bytes = [0u8; ACK_MAX_LEN];
        bytes[..8].copy_from_slice(&self.next_expected.to_le_bytes());
        let words = self.selective.words_in_use();
        for (chunk, word) in bytes[8..].chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        EncodedAck {
            bytes,
            len: 8 + 8 * words.len(),
        }
    }

    /// Reads an ACK plaintext; `None` unless it is `ACK_MIN_LEN..=ACK_MAX_LEN` bytes and a
    /// whole number of bitmap words. Trailing zero words are accepted.
    pub fn decode(plaintext: &[u8]) -> Option<Ack> {
        let len = plaintext.len();
        if !(ACK_MIN_LEN..=ACK_MAX_LEN).contains(&len) || len % 8 != 0 {
            return None;
        }
        let mut selective = Selective::default();
        for (word, chunk) in selective
            .words
            .iter_mut()
            .zip(plaintext.get(8..)?.chunks_exact(8))
        {
            *word = read_u64(chunk, 0);
        }
        Some(Ack {
            next_expected: read_u64(plaintext, 0),
            selective,
        })
    }

    /// Whether this ACK says `seq` arrived.
    pub fn covers(&self, seq: u64) -> bool {
        match seq.checked_sub(self.next_expected) {
            None => true,
            Some(0) => false,
            Some(offset) => self.selective.contains(offset - 1),
        }
    }
}

/// Reads a little-endian u32 at `at`; callers have checked the length.
pub fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut bytes = [0u8; 4];
    if let Some(src) = buf.get(at..at + 4) {
        bytes.copy_from_slice(src);
    }
    u32::from_le_bytes(bytes)
}

/// Reads a little-endian u64 at `at`; callers have checked the length.
pub fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    if let Some(src) = buf.get(at..at + 8) {
        bytes.copy_from_slice(src);
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn transport(kind: TransportKind, plaintext_len: usize) -> Vec<u8> {
        let mut pkt = vec![0u8; TRANSPORT_OVERHEAD + plaintext_len];
        let mut header = [0u8; TRANSPORT_HEADER_LEN];
        write_transport_header(&mut header, kind, SessionIndex::new(7).unwrap(), Counter(9));
        pkt[..TRANSPORT_HEADER_LEN].copy_from_slice(&header);
        pkt
    }

    #[test]
    fn bundle_framing_follows_protocol_md_7_5() {
        // The worked example: Realtime "hi", then Reliable seq 7 "ok".
        let example = [
            0x05, 0x02, 0x00, b'h', b'i', 0x06, 0x0a, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, b'o', b'k',
        ];
        assert_eq!(check_bundle(&example), Ok(2));
        let frames: Vec<Frame<'_>> = bundle_frames(&example).collect();
        assert_eq!(frames[0].kind, FrameKind::Realtime);
        assert_eq!(frames[0].body, b"hi");
        assert_eq!(frames[1].kind, FrameKind::Reliable);
        assert_eq!(&frames[1].body[8..], b"ok");
        assert_eq!(read_u64(frames[1].body, 0), 7);
        assert_eq!(check_bundle(&example[..17]), Err(BadBundle::Truncated));
        assert_eq!(check_bundle(&example[..4]), Err(BadBundle::Truncated));
        assert_eq!(check_bundle(&[]), Err(BadBundle::Truncated));
        assert_eq!(check_bundle(&[5, 0]), Err(BadBundle::Truncated));
        assert_eq!(check_bundle(&[7, 0, 0]), Err(BadBundle::UnknownKind));
        assert_eq!(
            check_bundle(&[6, 7, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(BadBundle::ShortReliable)
        );
        assert_eq!(check_bundle(&[5, 0, 0]), Ok(1));
        let most = [5u8, 0, 0].repeat(MAX_BUNDLE_FRAMES);
        assert_eq!(check_bundle(&most), Ok(MAX_BUNDLE_FRAMES));
        let too_many = [5u8, 0, 0].repeat(MAX_BUNDLE_FRAMES + 1);
        assert_eq!(check_bundle(&too_many), Err(BadBundle::TooManyFrames));
        let mut header = [0u8; BUNDLE_FRAME_HEADER_LEN];
        write_frame_header(&mut header, FrameKind::Reliable, 10);
        assert_eq!(header, [0x06, 0x0a, 0x00]);
        // Bundle packets parse with plaintexts of 3..=1420 bytes.
        assert!(parse_header(&transport(TransportKind::Bundle, 2)).is_err());
        assert!(parse_header(&transport(TransportKind::Bundle, 3)).is_ok());
        assert!(parse_header(&transport(TransportKind::Bundle, 1420)).is_ok());
    }

    #[test]
    fn sizes_match_protocol_md() {
        assert_eq!(init::LEN, 120);
        assert_eq!(response::LEN, 112);
        assert_eq!(finish::LEN, 77);
        assert_eq!(cookie_reply::LEN, 52);
        assert_eq!(MAX_REALTIME_PAYLOAD, 1420);
    }

    #[test]
    fn transport_header_round_trips() {
        let pkt = transport(TransportKind::Realtime, 100);
        assert_eq!(
            parse_header(&pkt),
            Ok(Header::Transport {
                kind: TransportKind::Realtime,
                receiver: SessionIndex::new(7).unwrap(),
                counter: Counter(9)
            })
        );
    }

    #[test]
    fn every_fixed_field_is_checked() {
        let good = transport(TransportKind::Keepalive, 0);
        assert!(parse_header(&good).is_ok());
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(parse_header(&bad), Err(Malformed::BadVersion));
        let mut bad = good.clone();
        bad[1] = 0;
        assert_eq!(parse_header(&bad), Err(Malformed::UnknownType));
        let mut bad = good.clone();
        bad[3] = 1;
        assert_eq!(parse_header(&bad), Err(Malformed::ReservedNotZero));
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(parse_header(&bad), Err(Malformed::ZeroIndex));
        assert_eq!(parse_header(&good[..3]), Err(Malformed::TooShort));
        assert_eq!(parse_header(&good[..31]), Err(Malformed::TooShort));
        let keepalive_with_body = transport(TransportKind::Keepalive, 1);
        assert_eq!(
            parse_header(&keepalive_with_body),
            Err(Malformed::BadLength)
        );
        let short_reliable = transport(TransportKind::Reliable, 7);
        assert_eq!(parse_header(&short_reliable), Err(Malformed::BadLength));
        let huge = transport(TransportKind::Realtime, MAX_REALTIME_PAYLOAD + 1);
        assert_eq!(parse_header(&huge), Err(Malformed::TooLong));
        let mut init_pkt = vec![0u8; init::LEN + 1];
        write_prefix(&mut init_pkt, PacketType::HandshakeInit);
        init_pkt[init::SENDER] = 1;
        assert_eq!(parse_header(&init_pkt), Err(Malformed::BadLength));
        assert!(parse_header(&init_pkt[..init::LEN]).is_ok());
    }

    #[test]
    fn ack_covers_cumulative_and_selective() {
        let ack = Ack {
            next_expected: 10,
            selective: Selective::from_low_word(0b101),
        };
        assert!(ack.covers(0) && ack.covers(9));
        assert!(!ack.covers(10));
        assert!(ack.covers(11) && !ack.covers(12) && ack.covers(13));
        assert!(!ack.covers(10 + 65) && !ack.covers(u64::MAX));
        assert_eq!(ack.encode().as_bytes().len(), ACK_MIN_LEN);
        assert_eq!(Ack::decode(ack.encode().as_bytes()), Some(ack));
    }

    #[test]
    fn a_wide_ack_takes_as_many_words_as_its_highest_bit_needs() {
        let mut ack = Ack::cumulative(u64::MAX - 2);
        assert_eq!(
            ack.encode().as_bytes(),
            &[&[0xfd][..], &[0xff; 7], &[0; 8]].concat()
        );
        ack.next_expected = 100;
        ack.selective.insert(64);
        ack.selective.insert(1023);
        ack.selective.insert(1024);
        assert!(ack.covers(165) && ack.covers(1124));
        assert!(!ack.covers(1125), "bit 1024 is beyond the bitmap");
        assert_eq!(ack.selective.highest(), Some(1023));
        assert_eq!(ack.selective.iter().collect::<Vec<_>>(), [64, 1023]);
        let encoded = ack.encode();
        assert_eq!(encoded.as_bytes().len(), ACK_MAX_LEN);
        // Bit 64 is bit 0 of the second word; bit 1023 the top bit of the sixteenth.
        assert_eq!(encoded.as_bytes()[16], 1);
        assert_eq!(encoded.as_bytes()[ACK_MAX_LEN - 1], 0x80);
        assert_eq!(Ack::decode(encoded.as_bytes()), Some(ack));
        let mut short = Ack::cumulative(7);
        short.selective.insert(64);
        assert_eq!(short.encode().as_bytes().len(), 24);
        // Trailing zero words are accepted; partial words and other lengths are not.
        let padded = [short.encode().as_bytes(), &[0; 16]].concat();
        assert_eq!(Ack::decode(&padded), Some(short));
        for len in [0, 8, 15, 17, 23, ACK_MAX_LEN + 8] {
            assert_eq!(Ack::decode(&vec![0; len]), None, "{len}");
        }
        for len in (ACK_MIN_LEN..=ACK_MAX_LEN).step_by(8) {
            assert_eq!(
                Ack::decode(&vec![0; len]),
                Some(Ack::cumulative(0)),
                "{len}"
            );
        }
    }

    #[test]
    fn an_ack_packet_must_hold_whole_bitmap_words() {
        for len in 0..=ACK_MAX_LEN + 16 {
            let mut packet = vec![0u8; TRANSPORT_OVERHEAD + len];
            write_prefix(&mut packet, PacketType::Ack);
            packet[4] = 1;
            let parsed = parse_header(&packet);
            let whole = (ACK_MIN_LEN..=ACK_MAX_LEN).contains(&len) && len % 8 == 0;
            assert_eq!(parsed.is_ok(), whole, "{len}: {parsed:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = parse_header(&bytes);
        }

        #[test]
        fn parse_never_panics_on_plausible_prefixes(ty in 0u8..12, len in 0usize..1500, fill in any::<u8>()) {
            let mut bytes = vec![fill; len];
            if len >= 4 {
                bytes[0] = VERSION;
                bytes[1] = ty;
                bytes[2] = 0;
                bytes[3] = 0;
            }
            let _ = parse_header(&bytes);
        }
    }
}
