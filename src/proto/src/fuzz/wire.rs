//! The wire parser under arbitrary bytes: `parse_header` and every decoder never panic, what
//! they accept is consistent with the bytes, and what has an encoder round-trips.

use super::Input;
use crate::stats::CloseReason;
use crate::wire::{
    self, cookie_reply, finish, init, response, Ack, Counter, Header, Malformed, PacketType,
    SessionIndex, TransportKind, ACK_MAX_LEN, ACK_MIN_LEN, MAX_DATAGRAM_LEN, TAG_LEN,
    TRANSPORT_HEADER_LEN, TRANSPORT_OVERHEAD,
};

/// Runs every parser of `crate::wire` over `data`, and over a plausible packet built from it.
pub fn fuzz_wire(data: &[u8]) {
    check_datagram(data);
    // Most random bytes fail at the version or type byte; a second pass with a valid prefix
    // and a length the type allows reaches every later check.
    let mut input = Input::new(data);
    let type_byte = input.byte();
    let len_choice = input.u16();
    let rest = input.bytes(MAX_DATAGRAM_LEN + 8);
    let len = match PacketType::from_byte(type_byte % 10) {
        Some(PacketType::HandshakeInit) => init::LEN,
        Some(PacketType::HandshakeResponse) => response::LEN,
        Some(PacketType::HandshakeFinish) => finish::LEN,
        Some(PacketType::CookieReply) => cookie_reply::LEN,
        _ => usize::from(len_choice) % (MAX_DATAGRAM_LEN + 8),
    };
    let len = if type_byte & 0x80 != 0 {
        (len + usize::from(len_choice % 3)).saturating_sub(1)
    } else {
        len
    };
    let mut packet = vec![0u8; len];
    for (at, byte) in packet.iter_mut().enumerate() {
        *byte = rest.get(at).copied().unwrap_or(at as u8);
    }
    if packet.len() >= 4 {
        wire::write_prefix(
            &mut packet,
            PacketType::from_byte(type_byte % 10).unwrap_or(PacketType::Realtime),
        );
        if type_byte & 0x40 != 0 {
            packet[1] = type_byte;
        }
    }
    check_datagram(&packet);
    check_decoders(data);
}

fn check_datagram(datagram: &[u8]) {
    let header = match wire::parse_header(datagram) {
        Ok(header) => header,
        Err(malformed) => {
            check_rejection(datagram, malformed);
            return;
        }
    };
    assert!(
        datagram.len() <= MAX_DATAGRAM_LEN,
        "accepted an oversize datagram"
    );
    assert_eq!(datagram[0], wire::VERSION);
    assert_eq!(
        datagram[1],
        header.packet_type() as u8,
        "type byte round-trips"
    );
    assert_eq!(
        PacketType::from_byte(datagram[1]),
        Some(header.packet_type())
    );
    assert!(!header.packet_type().label().is_empty());
    let mut prefix = [0u8; 4];
    wire::write_prefix(&mut prefix, header.packet_type());
    assert_eq!(prefix, datagram[..4], "the prefix round-trips");
    let index_at = |at: usize| SessionIndex::new(wire::read_u32(datagram, at));
    match header {
        Header::HandshakeInit { sender } => {
            assert_eq!(datagram.len(), init::LEN);
            assert_eq!(index_at(init::SENDER), Some(sender));
        }
        Header::HandshakeResponse { sender, receiver } => {
            assert_eq!(datagram.len(), response::LEN);
            assert_eq!(index_at(response::SENDER), Some(sender));
            assert_eq!(index_at(response::RECEIVER), Some(receiver));
        }
        Header::HandshakeFinish { receiver } => {
            assert_eq!(datagram.len(), finish::LEN);
            assert_eq!(index_at(finish::RECEIVER), Some(receiver));
        }
        Header::CookieReply { receiver } => {
            assert_eq!(datagram.len(), cookie_reply::LEN);
            assert_eq!(index_at(cookie_reply::RECEIVER), Some(receiver));
        }
        Header::Transport {
            kind,
            receiver,
            counter,
        } => {
            assert!(datagram.len() >= TRANSPORT_OVERHEAD);
            let mut out = [0u8; TRANSPORT_HEADER_LEN];
            wire::write_transport_header(&mut out, kind, receiver, counter);
            assert_eq!(
                out,
                datagram[..TRANSPORT_HEADER_LEN],
                "the header round-trips"
            );
            assert_eq!(kind.packet_type(), header.packet_type());
            let body = &datagram[TRANSPORT_HEADER_LEN..datagram.len() - TAG_LEN];
            let nonce = counter.nonce();
            assert_eq!(nonce[..4], [0; 4]);
            assert_eq!(
                u64::from_le_bytes(nonce[4..].try_into().unwrap_or_default()),
                counter.0
            );
            match kind {
                TransportKind::Ack => {
                    let ack = Ack::decode(body).expect("a well-formed ACK packet has an ACK body");
                    check_ack_encoding(ack, body);
                }
                TransportKind::Close => {
                    assert_eq!(body.len(), 1);
                    let reason = CloseReason::from_wire_code(body[0]);
                    if usize::from(body[0]) < CloseReason::COUNT {
                        assert_eq!(reason.wire_code(), body[0], "a close code round-trips");
                    }
                }
                TransportKind::Keepalive => assert!(body.is_empty()),
                TransportKind::Reliable => assert!(body.len() >= wire::RELIABLE_SEQ_LEN),
                TransportKind::Realtime => assert!(body.len() <= wire::MAX_REALTIME_PAYLOAD),
                TransportKind::Bundle => check_bundle_framing(body),
            }
        }
    }
}

/// A bundle's framing is accepted exactly when its frames tile the plaintext: walking the
/// accepted frames covers every byte once, in order, with legal kinds and lengths.
fn check_bundle_framing(plaintext: &[u8]) {
    let Ok(count) = wire::check_bundle(plaintext) else {
        return;
    };
    assert!((1..=wire::MAX_BUNDLE_FRAMES).contains(&count));
    let mut end = 0;
    let mut walked = 0;
    for frame in wire::bundle_frames(plaintext) {
        assert_eq!(
            frame.offset,
            end + wire::BUNDLE_FRAME_HEADER_LEN,
            "frames are contiguous"
        );
        assert_eq!(plaintext[end], frame.kind.byte());
        if frame.kind == wire::FrameKind::Reliable {
            assert!(frame.body.len() >= wire::RELIABLE_SEQ_LEN);
        }
        end = frame.offset + frame.body.len();
        walked += 1;
    }
    assert_eq!(
        walked, count,
        "the walk yields every frame the check counted"
    );
    assert_eq!(
        end,
        plaintext.len(),
        "the frames end where the plaintext ends"
    );
}

/// A rejection must be for a reason the bytes actually show.
fn check_rejection(datagram: &[u8], malformed: Malformed) {
    assert!(!malformed.label().is_empty());
    match malformed {
        Malformed::TooShort => assert!(datagram.len() < TRANSPORT_OVERHEAD),
        Malformed::TooLong => assert!(datagram.len() > MAX_DATAGRAM_LEN),
        Malformed::BadVersion => assert_ne!(datagram[0], wire::VERSION),
        Malformed::UnknownType => assert!(PacketType::from_byte(datagram[1]).is_none()),
        Malformed::ReservedNotZero => assert!(datagram[2] != 0 || datagram[3] != 0),
        Malformed::BadLength | Malformed::ZeroIndex => {}
    }
}

/// An ACK decoded from `body` encodes to the shortest form of the same bytes: `body`
/// itself, or `body` without trailing zero words of bitmap.
fn check_ack_encoding(ack: Ack, body: &[u8]) {
    let encoded = ack.encode();
    let encoded = encoded.as_bytes();
    assert!(encoded.len() <= body.len());
    assert_eq!(encoded, &body[..encoded.len()], "an ACK round-trips");
    assert!(body[encoded.len()..].iter().all(|&byte| byte == 0));
    assert_eq!(Ack::decode(encoded), Some(ack));
}

fn check_decoders(data: &[u8]) {
    let decoded = Ack::decode(data);
    let whole_words = (ACK_MIN_LEN..=ACK_MAX_LEN).contains(&data.len()) && data.len() % 8 == 0;
    assert_eq!(decoded.is_some(), whole_words);
    if let Some(ack) = decoded {
        check_ack_encoding(ack, data);
        for seq in [
            0,
            ack.next_expected,
            ack.next_expected.wrapping_add(65),
            ack.next_expected.wrapping_add(1_025),
            u64::MAX,
        ] {
            let _ = ack.covers(seq);
        }
    }
    let mut input = Input::new(data);
    let mut ack = Ack::cumulative(input.u64());
    for _ in 0..input.byte() % 8 {
        ack.selective.insert(u64::from(input.u32() % 1_100));
    }
    assert_eq!(
        Ack::decode(ack.encode().as_bytes()),
        Some(ack),
        "an ACK round-trips"
    );
    let seq = input.u64();
    let covered = ack.covers(seq);
    if seq < ack.next_expected {
        assert!(covered, "everything below next_expected is covered");
    }
    let raw = input.u32();
    assert_eq!(
        SessionIndex::new(raw).map(SessionIndex::get),
        (raw != 0).then_some(raw)
    );
    let at = usize::from(input.byte());
    let _ = (wire::read_u32(data, at), wire::read_u64(data, at));
    let counter = Counter(input.u64());
    let mut out = [0u8; TRANSPORT_HEADER_LEN];
    for kind in [
        TransportKind::Realtime,
        TransportKind::Reliable,
        TransportKind::Ack,
        TransportKind::Keepalive,
        TransportKind::Close,
        TransportKind::Bundle,
    ] {
        let Some(receiver) = SessionIndex::new(raw.max(1)) else {
            continue;
        };
        wire::write_transport_header(&mut out, kind, receiver, counter);
        let mut packet = [0u8; TRANSPORT_OVERHEAD + ACK_MIN_LEN];
        packet[..TRANSPORT_HEADER_LEN].copy_from_slice(&out);
        let len = match kind {
            TransportKind::Ack
            | TransportKind::Realtime
            | TransportKind::Reliable
            | TransportKind::Bundle => packet.len(),
            TransportKind::Keepalive => TRANSPORT_OVERHEAD,
            TransportKind::Close => TRANSPORT_OVERHEAD + 1,
        };
        assert_eq!(
            wire::parse_header(&packet[..len]),
            Ok(Header::Transport {
                kind,
                receiver,
                counter
            }),
            "a written header parses back"
        );
    }
    for byte in [input.byte(), 0, 10, 255] {
        if let Some(ty) = PacketType::from_byte(byte) {
            assert_eq!(ty as u8, byte);
        }
        let _ = CloseReason::from_wire_code(byte);
    }
}
