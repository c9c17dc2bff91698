//! mac1, mac2 and stateless cookies: cheap proof that a HandshakeInit is worth answering.
//!
//! Owns the normative formulas (PROTOCOL.md quotes them), all with
//! `mac(key, data) = HMAC-SHA256(key, data)[0..16]`:
//!
//! - `mac1_key = SHA-256("intentra-mac1-v1" || responder public key)`,
//!   `mac1 = mac(mac1_key, init[0..88])`: proves the sender knows whom it is talking to.
//! - `cookie = mac(secret, source IP || source port u16 big-endian)`, the IP being 4 bytes
//!   for IPv4 and IPv4-mapped IPv6, 16 bytes otherwise; `secret` is 32 random bytes
//!   rotated every `COOKIE_SECRET_LIFETIME`.
//! - `mac2 = mac(cookie, init[0..104])`, or 16 zero bytes without a cookie: proves, under
//!   load, that the sender can receive at its source address.
//! - CookieReply = prefix || receiver u32 LE || nonce (12) || AES-256-GCM(key =
//!   SHA-256("intentra-cookie-v1" || responder public key), nonce, plaintext = cookie,
//!   associated data = the mac1 of the HandshakeInit being answered).
//!
//! It must never draw randomness or read a clock (secrets, nonces and `now` come
//! from the caller), never allocate, and never compare a MAC in variable time.

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use hmac::digest::generic_array::GenericArray;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::aead::{PacketCipher, PacketKey};
use super::keys::PublicKey;
use super::time::Timestamp;
use super::wire::{self, cookie_reply, init, PacketType, SessionIndex, COOKIE_LEN, MAC_LEN};

const MAC1_LABEL: &[u8] = b"intentra-mac1-v1";
const COOKIE_LABEL: &[u8] = b"intentra-cookie-v1";
/// HMAC-SHA256's block size: keys up to this long are zero-padded, longer ones hashed.
const HMAC_BLOCK_LEN: usize = 64;

/// How long a cookie secret is the current one before it should be rotated.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// `SHA-256("intentra-mac1-v1" || responder)`: the key of every mac1 sent to `responder`.
pub fn mac1_key(responder: &PublicKey) -> [u8; 32] {
    labelled_hash(MAC1_LABEL, responder)
}

/// HMAC-SHA256(key, data) truncated to its first 16 bytes.
pub fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let mut hmac = keyed_hmac(key);
    hmac.update(data);
    truncate(hmac)
}

/// Whether `tag` is `mac(key, data)`, in constant time. False unless `tag` is 16 bytes.
pub fn verify_mac(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    if tag.len() != MAC_LEN {
        return false;
    }
    bool::from(mac(key, data).as_slice().ct_eq(tag))
}

/// The mac1 of a HandshakeInit: `mac(mac1_key, init[0..88])`.
pub fn init_mac1(mac1_key: &[u8; 32], init: &[u8; init::LEN]) -> [u8; MAC_LEN] {
    mac(mac1_key, &init[..init::MAC1])
}

/// Whether a received HandshakeInit carries a valid mac1 (constant time). False
/// for any length other than a HandshakeInit's.
pub fn verify_init_mac1(mac1_key: &[u8; 32], init: &[u8]) -> bool {
    match (init.get(..init::MAC1), init.get(init::MAC1..init::MAC2)) {
        (Some(covered), Some(tag)) if init.len() == init::LEN => verify_mac(mac1_key, covered, tag),
        _ => false,
    }
}

/// Fills in mac1, then mac2 (from `cookie`, or zeros without one) of an outgoing
/// HandshakeInit whose first 88 bytes are already written.
pub fn write_init_macs(
    init: &mut [u8; init::LEN],
    mac1_key: &[u8; 32],
    cookie: Option<&[u8; COOKIE_LEN]>,
) {
    let mac1 = init_mac1(mac1_key, init);
    init[init::MAC1..init::MAC2].copy_from_slice(&mac1);
    let mac2 = match cookie {
        Some(cookie) => mac(cookie, &init[..init::MAC2]),
        None => [0; MAC_LEN],
    };
    init[init::MAC2..].copy_from_slice(&mac2);
}

/// The bytes a cookie is bound to: source IP (4 or 16 bytes) then port big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrBytes {
    buf: [u8; 18],
    len: usize,
}

impl AddrBytes {
    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) fold to their IPv4 form so a
    /// dual-stack socket gives the same cookie as an IPv4 one.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut buf = [0u8; 18];
        let port = addr.port().to_be_bytes();
        let octets = match ip {
            IpAddr::V4(v4) => {
                buf[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                buf[..16].copy_from_slice(&v6.octets());
                16
            }
        };
        buf[octets..octets + 2].copy_from_slice(&port);
        AddrBytes {
            buf,
            len: octets + 2,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // len is 6 or 18, set only by `new`.
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }
}

/// The responder's cookie secrets: the current one and the one before it.
#[derive(Clone)]
pub struct CookieSecrets {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    made: Timestamp,
}

impl Drop for CookieSecrets {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.current);
        if let Some(previous) = self.previous.as_mut() {
            zeroize::Zeroize::zeroize(previous);
        }
    }
}

impl CookieSecrets {
    /// `secret` must come from a cryptographic RNG; the caller draws it.
    pub fn new(secret: [u8; 32], now: Timestamp) -> Self {
        CookieSecrets {
            current: secret,
            previous: None,
            made: now,
        }
    }

    /// Whether the current secret is `COOKIE_SECRET_LIFETIME` old or older.
    /// Verification itself has no clock, so callers check this (and `rotate`)
    /// before `cookie_for`/`verify_mac2`; a cookie then lives at most two lifetimes.
    pub fn needs_rotation(&self, now: Timestamp) -> bool {
        now.saturating_since(self.made) >= COOKIE_SECRET_LIFETIME
    }

    /// The current secret becomes the previous one and `fresh` (drawn by the caller
    /// from its RNG) the current one. Cookies made two rotations ago stop verifying.
    pub fn rotate(&mut self, fresh: [u8; 32], now: Timestamp) {
        self.previous = Some(self.current);
        self.current = fresh;
        self.made = now;
    }

    /// The cookie for `addr` under the current secret.
    pub fn cookie_for(&self, addr: SocketAddr) -> [u8; COOKIE_LEN] {
        mac(&self.current, AddrBytes::new(addr).as_slice())
    }

    /// Whether `mac2` is `mac(cookie, init[0..104])` for a cookie made for `addr` with
    /// the current or the previous secret. Constant time in the MAC values; an
    /// all-zero mac2 is just another value that almost surely fails.
    pub fn verify_mac2(&self, addr: SocketAddr, init_prefix_0_104: &[u8], mac2: &[u8]) -> bool {
        if mac2.len() != MAC_LEN {
            return false;
        }
        let addr = AddrBytes::new(addr);
        let matches = |secret: &[u8; 32]| -> Choice {
            let cookie = mac(secret, addr.as_slice());
            mac(&cookie, init_prefix_0_104).as_slice().ct_eq(mac2)
        };
        let mut ok = matches(&self.current);
        if let Some(previous) = &self.previous {
            ok |= matches(previous);
        }
        bool::from(ok)
    }
}

impl fmt::Debug for CookieSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("CookieSecrets")
            .field("made", &self.made)
            .field("has_previous", &self.previous.is_some())
            .finish()
    }
}

/// The AES-256-GCM key that seals CookieReplies from one responder, expanded once.
#[derive(Clone)]
pub struct CookieReplyKey {
    cipher: PacketKey,
}

impl CookieReplyKey {
    /// The key that seals CookieReplies from `responder` (derived from its public key alone,
    /// so an initiator and anyone else can open them).
    pub fn new(responder: &PublicKey) -> Self {
        let key = cookie_reply_key_bytes(responder);
        CookieReplyKey {
            cipher: PacketKey::new(&key),
        }
    }

    /// Writes the 52-byte CookieReply answering the HandshakeInit whose sender index
    /// is `receiver` and whose mac1 is `init_mac1`. `nonce` must be fresh random bytes.
    pub fn seal_cookie_reply(
        &self,
        out: &mut [u8; cookie_reply::LEN],
        receiver: SessionIndex,
        nonce: [u8; cookie_reply::NONCE_LEN],
        cookie: &[u8; COOKIE_LEN],
        init_mac1: &[u8; MAC_LEN],
    ) {
        let mut sealed = *cookie;
        let Ok(tag) = self.cipher.seal_detached(&nonce, init_mac1, &mut sealed) else {
            // Unreachable: AES-GCM only refuses plaintexts of gigabytes. An all-zero
            // packet has version 0, so no peer would ever accept it.
            *out = [0; cookie_reply::LEN];
            return;
        };
        wire::write_prefix(out, PacketType::CookieReply);
        out[cookie_reply::RECEIVER..cookie_reply::NONCE]
            .copy_from_slice(&receiver.get().to_le_bytes());
        out[cookie_reply::NONCE..cookie_reply::SEALED].copy_from_slice(&nonce);
        out[cookie_reply::SEALED..cookie_reply::SEALED + COOKIE_LEN].copy_from_slice(&sealed);
        out[cookie_reply::SEALED + COOKIE_LEN..].copy_from_slice(&tag);
    }

    /// The cookie inside a CookieReply answering the HandshakeInit whose mac1 was
    /// `init_mac1`. None if the packet is not a 52-byte CookieReply (version, type,
    /// reserved bytes) or fails authentication. The receiver index is not
    /// authenticated here: the caller used it to find `init_mac1`.
    pub fn open_cookie_reply(
        &self,
        packet: &[u8],
        init_mac1: &[u8; MAC_LEN],
    ) -> Option<[u8; COOKIE_LEN]> {
        let packet: &[u8; cookie_reply::LEN] = packet.try_into().ok()?;
        let mut prefix = [0u8; 4];
        wire::write_prefix(&mut prefix, PacketType::CookieReply);
        if packet[..4] != prefix {
            return None;
        }
        let mut nonce = [0u8; cookie_reply::NONCE_LEN];
        nonce.copy_from_slice(&packet[cookie_reply::NONCE..cookie_reply::SEALED]);
        let mut cookie = [0u8; COOKIE_LEN];
        cookie.copy_from_slice(&packet[cookie_reply::SEALED..cookie_reply::SEALED + COOKIE_LEN]);
        let mut tag = [0u8; wire::TAG_LEN];
        tag.copy_from_slice(&packet[cookie_reply::SEALED + COOKIE_LEN..]);
        self.cipher
            .open_detached(&nonce, init_mac1, &mut cookie, &tag)
            .ok()?;
        Some(cookie)
    }
}

impl fmt::Debug for CookieReplyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieReplyKey(..)")
    }
}

/// `SHA-256("intentra-cookie-v1" || responder)`.
fn cookie_reply_key_bytes(responder: &PublicKey) -> [u8; 32] {
    labelled_hash(COOKIE_LABEL, responder)
}

fn labelled_hash(label: &[u8], responder: &PublicKey) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(label);
    hash.update(responder.as_bytes());
    hash.finalize().into()
}

/// HMAC keyed with `key`, any length. Does RFC 2104's key preparation itself (hash
/// keys longer than a block, zero-pad the rest) so that construction is infallible
/// by type rather than by an unwrap.
fn keyed_hmac(key: &[u8]) -> Hmac<Sha256> {
    let mut block = [0u8; HMAC_BLOCK_LEN];
    if key.len() > HMAC_BLOCK_LEN {
        let digest: [u8; 32] = Sha256::digest(key).into();
        block.iter_mut().zip(digest).for_each(|(b, d)| *b = d);
    } else {
        block.iter_mut().zip(key).for_each(|(b, k)| *b = *k);
    }
    <Hmac<Sha256> as KeyInit>::new(&GenericArray::from(block))
}

fn truncate(hmac: Hmac<Sha256>) -> [u8; MAC_LEN] {
    let full = hmac.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    out.iter_mut().zip(full).for_each(|(o, f)| *o = f);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    const VECTORS: &str = include_str!("../tests/data/cookie_vectors.json");

    fn hex(v: &Value) -> Vec<u8> {
        let text = v.as_str().expect("hex string");
        assert_eq!(text.len() % 2, 0, "odd hex length: {text}");
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    fn hex_array<const N: usize>(v: &Value) -> [u8; N] {
        hex(v).try_into().expect("hex of the expected length")
    }

    fn vectors() -> Value {
        serde_json::from_str(VECTORS).expect("valid JSON")
    }

    fn handshakes(v: &Value) -> &Vec<Value> {
        let all = v["handshakes"].as_array().expect("handshakes");
        assert!(!all.is_empty());
        all
    }

    #[test]
    fn kat_hmac_sha256_truncated() {
        let v = vectors();
        let cases = v["hmac_sha256_128"].as_array().expect("cases");
        assert!(cases.len() >= 4);
        for case in cases {
            let (key, data, tag) = (hex(&case["key"]), hex(&case["data"]), hex(&case["mac"]));
            assert_eq!(mac(&key, &data).to_vec(), tag, "key {:?}", case["key"]);
            assert!(verify_mac(&key, &data, &tag));
        }
    }

    #[test]
    fn kat_keys_and_mac1() {
        let v = vectors();
        for hs in handshakes(&v) {
            let responder = PublicKey(hex_array(&hs["responder_public_key"]));
            let key = mac1_key(&responder);
            assert_eq!(key, hex_array::<32>(&hs["mac1_key"]));
            assert_eq!(
                cookie_reply_key_bytes(&responder),
                hex_array::<32>(&hs["cookie_key"])
            );
            let prefix = hex(&hs["init_without_macs"]);
            assert_eq!(prefix.len(), init::MAC1);
            let mac1 = hex_array::<16>(&hs["mac1"]);
            assert_eq!(mac(&key, &prefix), mac1);

            let mut pkt = [0u8; init::LEN];
            pkt[..init::MAC1].copy_from_slice(&prefix);
            assert_eq!(init_mac1(&key, &pkt), mac1);
            write_init_macs(&mut pkt, &key, None);
            assert_eq!(pkt.to_vec(), hex(&hs["init_without_cookie"]));
            assert!(verify_init_mac1(&key, &pkt));
            // The parser agrees this is a HandshakeInit.
            assert!(matches!(
                wire::parse_header(&pkt),
                Ok(wire::Header::HandshakeInit { .. })
            ));
        }
    }

    #[test]
    fn kat_cookies_and_mac2() {
        let v = vectors();
        for hs in handshakes(&v) {
            let key = hex_array::<32>(&hs["mac1_key"]);
            let secrets = CookieSecrets::new(hex_array(&hs["secret"]), Timestamp::ZERO);
            let cookies = hs["cookies"].as_array().expect("cookies");
            assert!(cookies.len() >= 3);
            for c in cookies {
                let addr: SocketAddr = c["addr"].as_str().expect("addr").parse().expect("addr");
                assert_eq!(
                    AddrBytes::new(addr).as_slice(),
                    hex(&c["addr_bytes"]).as_slice()
                );
                let cookie = hex_array::<16>(&c["cookie"]);
                assert_eq!(secrets.cookie_for(addr), cookie, "{addr}");
                let full = hex_array::<{ init::LEN }>(&c["init"]);
                let mut pkt = full;
                pkt[init::MAC1..].fill(0);
                write_init_macs(&mut pkt, &key, Some(&cookie));
                assert_eq!(pkt, full, "{addr}");
                let mac2 = hex_array::<16>(&c["mac2"]);
                assert_eq!(full[init::MAC2..], mac2);
                assert!(secrets.verify_mac2(addr, &full[..init::MAC2], &mac2));
            }
        }
    }

    #[test]
    fn kat_cookie_reply() {
        let v = vectors();
        for hs in handshakes(&v) {
            let responder = PublicKey(hex_array(&hs["responder_public_key"]));
            let r = &hs["cookie_reply"];
            let key = CookieReplyKey::new(&responder);
            let receiver = r["receiver"].as_u64().expect("receiver");
            let receiver =
                SessionIndex::new(u32::try_from(receiver).expect("u32")).expect("nonzero");
            let cookie = hex_array::<16>(&r["cookie"]);
            let mac1 = hex_array::<16>(&r["init_mac1"]);
            let expected = hex_array::<{ cookie_reply::LEN }>(&r["packet"]);
            let mut out = [0u8; cookie_reply::LEN];
            key.seal_cookie_reply(&mut out, receiver, hex_array(&r["nonce"]), &cookie, &mac1);
            assert_eq!(out, expected);
            assert_eq!(key.open_cookie_reply(&expected, &mac1), Some(cookie));
            assert_eq!(
                wire::parse_header(&expected),
                Ok(wire::Header::CookieReply { receiver })
            );
        }
    }

    #[test]
    fn ipv4_mapped_addresses_get_the_ipv4_cookie() {
        let secrets = CookieSecrets::new([7; 32], Timestamp::ZERO);
        let v4: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:4000".parse().unwrap();
        let compat: SocketAddr = "[::10.1.2.3]:4000".parse().unwrap();
        assert_eq!(secrets.cookie_for(v4), secrets.cookie_for(mapped));
        assert_ne!(secrets.cookie_for(v4), secrets.cookie_for(compat));
        assert_eq!(AddrBytes::new(v4).as_slice(), &[10, 1, 2, 3, 0x0f, 0xa0]);
        assert_eq!(AddrBytes::new(compat).as_slice().len(), 18);
    }

    fn sample_init(mac1_key: &[u8; 32], cookie: Option<&[u8; 16]>) -> [u8; init::LEN] {
        let mut pkt = [0u8; init::LEN];
        wire::write_prefix(&mut pkt, PacketType::HandshakeInit);
        pkt[init::SENDER..init::NOISE].copy_from_slice(&9u32.to_le_bytes());
        pkt[init::NOISE..init::PADDING].fill(0x5a);
        write_init_macs(&mut pkt, mac1_key, cookie);
        pkt
    }

    #[test]
    fn mac2_is_bound_to_ip_and_port() {
        let secrets = CookieSecrets::new([1; 32], Timestamp::ZERO);
        let addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let cookie = secrets.cookie_for(addr);
        let pkt = sample_init(&[3; 32], Some(&cookie));
        let (prefix, mac2) = pkt.split_at(init::MAC2);
        assert!(secrets.verify_mac2(addr, prefix, mac2));
        for other in [
            "192.0.2.1:51821",
            "192.0.2.2:51820",
            "[2001:db8::1]:51820",
            "127.0.0.1:51820",
        ] {
            assert!(
                !secrets.verify_mac2(other.parse().unwrap(), prefix, mac2),
                "{other}"
            );
        }
        // mac2 covers mac1 and everything before it.
        let mut changed = pkt;
        changed[init::NOISE] ^= 1;
        assert!(!secrets.verify_mac2(addr, &changed[..init::MAC2], mac2));
        // Wrong tag lengths and the all-zero "no cookie" mac2 never verify.
        assert!(!secrets.verify_mac2(addr, prefix, &mac2[..15]));
        assert!(!secrets.verify_mac2(addr, prefix, &[0; 16]));
        let no_cookie = sample_init(&[3; 32], None);
        assert_eq!(no_cookie[init::MAC2..], [0; 16]);
        assert!(!secrets.verify_mac2(addr, &no_cookie[..init::MAC2], &no_cookie[init::MAC2..]));
    }

    #[test]
    fn previous_secret_verifies_after_one_rotation_not_two() {
        let start = Timestamp::from_millis(1_000);
        let mut secrets = CookieSecrets::new([1; 32], start);
        let addr: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
        let pkt = sample_init(&[3; 32], Some(&secrets.cookie_for(addr)));
        let (prefix, mac2) = pkt.split_at(init::MAC2);
        assert!(!secrets.needs_rotation(start));
        assert!(!secrets.needs_rotation(start + Duration::from_nanos(119_999_999_999)));
        assert!(secrets.needs_rotation(start + COOKIE_SECRET_LIFETIME));
        assert!(!secrets.needs_rotation(Timestamp::ZERO));

        let later = start + COOKIE_SECRET_LIFETIME;
        secrets.rotate([2; 32], later);
        assert!(!secrets.needs_rotation(later));
        assert!(secrets.verify_mac2(addr, prefix, mac2));
        assert_ne!(
            secrets.cookie_for(addr),
            mac(&[1; 32], AddrBytes::new(addr).as_slice())
        );

        secrets.rotate([3; 32], later + COOKIE_SECRET_LIFETIME);
        assert!(!secrets.verify_mac2(addr, prefix, mac2));
        let fresh = sample_init(&[3; 32], Some(&secrets.cookie_for(addr)));
        assert!(secrets.verify_mac2(addr, &fresh[..init::MAC2], &fresh[init::MAC2..]));
    }

    #[test]
    fn mac_helpers_refuse_bad_lengths_and_tampering() {
        assert!(!verify_mac(b"k", b"data", &mac(b"k", b"data")[..15]));
        assert!(!verify_mac(b"k", b"data", &[0; 17]));
        assert!(!verify_mac(b"k", b"datA", &mac(b"k", b"data")));
        let pkt = sample_init(&[3; 32], None);
        assert!(verify_init_mac1(&[3; 32], &pkt));
        assert!(!verify_init_mac1(&[4; 32], &pkt));
        assert!(!verify_init_mac1(&[3; 32], &pkt[..119]));
        let mut longer = pkt.to_vec();
        longer.push(0);
        assert!(!verify_init_mac1(&[3; 32], &longer));
        for bit in 0..init::MAC2 * 8 {
            let mut bad = pkt;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify_init_mac1(&[3; 32], &bad), "bit {bit}");
        }
    }

    fn sealed_reply() -> (CookieReplyKey, [u8; cookie_reply::LEN], [u8; 16], [u8; 16]) {
        let key = CookieReplyKey::new(&PublicKey([9; 32]));
        let cookie = [0xc0; 16];
        let mac1 = [0x11; 16];
        let mut out = [0u8; cookie_reply::LEN];
        key.seal_cookie_reply(
            &mut out,
            SessionIndex::new(77).unwrap(),
            [5; 12],
            &cookie,
            &mac1,
        );
        (key, out, cookie, mac1)
    }

    #[test]
    fn cookie_reply_tampering_fails() {
        let (key, pkt, cookie, mac1) = sealed_reply();
        assert_eq!(key.open_cookie_reply(&pkt, &mac1), Some(cookie));
        for bit in 0..cookie_reply::LEN * 8 {
            let byte = bit / 8;
            let mut bad = pkt;
            bad[byte] ^= 1 << (bit % 8);
            let opened = key.open_cookie_reply(&bad, &mac1);
            if (cookie_reply::RECEIVER..cookie_reply::NONCE).contains(&byte) {
                // Routing only: the caller picks init_mac1 by this index, so a wrong
                // index means a wrong mac1 there, which the next test shows fails.
                assert_eq!(opened, Some(cookie), "bit {bit}");
            } else {
                assert_eq!(opened, None, "bit {bit}");
            }
        }
        let mut wrong_mac1 = mac1;
        wrong_mac1[15] ^= 0x80;
        assert_eq!(key.open_cookie_reply(&pkt, &wrong_mac1), None);
        let other = CookieReplyKey::new(&PublicKey([8; 32]));
        assert_eq!(other.open_cookie_reply(&pkt, &mac1), None);
        assert_eq!(key.open_cookie_reply(&pkt[..51], &mac1), None);
        assert_eq!(key.open_cookie_reply(&[], &mac1), None);
        let mut longer = pkt.to_vec();
        longer.push(0);
        assert_eq!(key.open_cookie_reply(&longer, &mac1), None);
    }

    #[test]
    fn secrets_are_not_printed() {
        let secrets = CookieSecrets::new([0xab; 32], Timestamp::ZERO);
        let text = format!("{secrets:?} {:?}", CookieReplyKey::new(&PublicKey([1; 32])));
        assert!(
            !text.contains("171") && !text.to_lowercase().contains("ab, "),
            "{text}"
        );
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80), mac1 in any::<[u8; 16]>()) {
            let (key, _, _, _) = sealed_reply();
            let _ = key.open_cookie_reply(&bytes, &mac1);
        }

        #[test]
        fn seal_open_round_trips(
            responder in any::<[u8; 32]>(),
            receiver in 1u32..,
            nonce in any::<[u8; 12]>(),
            cookie in any::<[u8; 16]>(),
            mac1 in any::<[u8; 16]>(),
        ) {
            let key = CookieReplyKey::new(&PublicKey(responder));
            let mut out = [0u8; cookie_reply::LEN];
            key.seal_cookie_reply(&mut out, SessionIndex::new(receiver).unwrap(), nonce, &cookie, &mac1);
            prop_assert_eq!(key.open_cookie_reply(&out, &mac1), Some(cookie));
            prop_assert_eq!(wire::read_u32(&out, cookie_reply::RECEIVER), receiver);
        }

        #[test]
        fn verify_mac2_never_panics(
            prefix in proptest::collection::vec(any::<u8>(), 0..200),
            mac2 in proptest::collection::vec(any::<u8>(), 0..20),
            port in any::<u16>(),
        ) {
            let secrets = CookieSecrets::new([4; 32], Timestamp::ZERO);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let _ = secrets.verify_mac2(addr, &prefix, &mac2);
            let _ = verify_init_mac1(&[0; 32], &prefix);
        }
    }
}
