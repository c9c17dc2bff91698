//! The AEAD seam: AES-256-GCM sealing and opening of transport packets, in place.
//!
//! Owns the two interchangeable backends (`ring`, the default, and RustCrypto's
//! `aes-gcm` behind the `rustcrypto` feature) and nothing else; a build compiles
//! the backends its features name, and sessions use exactly one of them. A packet
//! is `header (16) || plaintext || tag (16)`: the header is the associated data,
//! the nonce is `Counter::nonce()`, and the plaintext is encrypted where it lies,
//! so the per-packet path never copies into a fresh buffer. It must never choose
//! a nonce: callers pass the counter they wrote into the header, and the session
//! guarantees each key direction's counter strictly increases and never repeats.

#[cfg(not(any(feature = "ring", feature = "rustcrypto")))]
compile_error!(
    "intentra-proto needs an AEAD backend: enable the `ring` (default) or `rustcrypto` feature"
);

use super::wire::{Counter, TAG_LEN, TRANSPORT_HEADER_LEN};

/// Why sealing or opening failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadError {
    /// Shorter than header plus tag.
    TooShort,
    /// Authentication failed: wrong key, counter, header, ciphertext or tag.
    Auth,
}

/// The length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// One AES-256-GCM key of the compiled backend.
///
/// The two required methods are the primitive (a detached tag, encryption in
/// place); transport packets, CookieReplies and the Noise handshake's cipher are
/// all built on them, so one backend serves every AEAD use in the core.
pub trait PacketCipher: Sized {
    /// Expands `key` once; every later operation reuses the schedule.
    fn new(key: &[u8; 32]) -> Self;

    /// Encrypts `body` in place and returns its tag.
    fn seal_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError>;

    /// Decrypts `body` in place if `tag` authenticates it; on failure the body is unspecified.
    fn open_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError>;

    /// `packet` is `header || plaintext || 16 bytes of room`: encrypts the plaintext in place
    /// and writes the tag into the last 16 bytes. A packet too short is left untouched.
    fn seal_in_place(&self, counter: Counter, packet: &mut [u8]) -> Result<(), AeadError> {
        let parts = split(packet)?;
        let tag = self.seal_detached(&counter.nonce(), parts.header, parts.body)?;
        parts.tag.copy_from_slice(&tag);
        Ok(())
    }

    /// `packet` is `header || ciphertext || tag`: on success the plaintext is at
    /// `packet[16..16 + len]` and `len` is returned. On failure the body is unspecified.
    fn open_in_place(&self, counter: Counter, packet: &mut [u8]) -> Result<usize, AeadError> {
        let parts = split(packet)?;
        let tag: &[u8; TAG_LEN] = (&*parts.tag).try_into().map_err(|_| AeadError::TooShort)?;
        self.open_detached(&counter.nonce(), parts.header, parts.body, tag)?;
        Ok(parts.body.len())
    }
}

/// A packet split into its three parts.
struct Parts<'a> {
    header: &'a [u8],
    body: &'a mut [u8],
    tag: &'a mut [u8],
}

/// Splits `packet` into header, body and tag, or says it is too short.
fn split(packet: &mut [u8]) -> Result<Parts<'_>, AeadError> {
    let body_len = packet
        .len()
        .checked_sub(TRANSPORT_HEADER_LEN + TAG_LEN)
        .ok_or(AeadError::TooShort)?;
    let (header, rest) = packet.split_at_mut(TRANSPORT_HEADER_LEN);
    let (body, tag) = rest.split_at_mut(body_len);
    Ok(Parts { header, body, tag })
}

/// AES-256-GCM from `ring`: the faster backend here (see perf/aead.md), so the default.
#[cfg(feature = "ring")]
#[derive(Clone)]
pub struct RingCipher {
    key: ring::aead::LessSafeKey,
}

#[cfg(feature = "ring")]
impl PacketCipher for RingCipher {
    fn new(key: &[u8; 32]) -> Self {
        use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
        let unbound = match UnboundKey::new(&AES_256_GCM, key) {
            Ok(unbound) => unbound,
            // ring refuses only keys of the wrong length, and the type fixes it at 32 bytes.
            Err(_) => unreachable!("a 32-byte key is always valid for AES-256-GCM"),
        };
        RingCipher {
            key: LessSafeKey::new(unbound),
        }
    }

    fn seal_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        use ring::aead::{Aad, Nonce};
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), body)
            .map_err(|_| AeadError::Auth)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn open_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        use ring::aead::{Aad, Nonce, Tag};
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*tag),
                body,
                0..,
            )
            .map(|_| ())
            .map_err(|_| AeadError::Auth)
    }
}

/// AES-256-GCM from RustCrypto's `aes-gcm`: selected with the `rustcrypto` feature.
#[cfg(feature = "rustcrypto")]
#[derive(Clone)]
pub struct RustCryptoCipher {
    cipher: aes_gcm::Aes256Gcm,
}

#[cfg(feature = "rustcrypto")]
impl PacketCipher for RustCryptoCipher {
    fn new(key: &[u8; 32]) -> Self {
        use aes_gcm::KeyInit;
        RustCryptoCipher {
            cipher: aes_gcm::Aes256Gcm::new(key.into()),
        }
    }

    fn seal_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        use aes_gcm::aead::AeadInPlace;
        let tag = self
            .cipher
            .encrypt_in_place_detached(nonce.into(), aad, body)
            .map_err(|_| AeadError::Auth)?;
        Ok(tag.into())
    }

    fn open_detached(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        body: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        use aes_gcm::aead::AeadInPlace;
        self.cipher
            .decrypt_in_place_detached(nonce.into(), aad, body, tag.into())
            .map_err(|_| AeadError::Auth)
    }
}

/// The backend sessions use: RustCrypto's when the `rustcrypto` feature is on, else `ring`.
#[cfg(all(feature = "ring", not(feature = "rustcrypto")))]
pub type PacketKey = RingCipher;
/// The backend sessions use: RustCrypto's when the `rustcrypto` feature is on, else `ring`.
#[cfg(feature = "rustcrypto")]
pub type PacketKey = RustCryptoCipher;

/// The Noise handshake's `AESGCM` cipher on the compiled backend, so the handshake
/// and the data path share one AES-GCM implementation. Noise's nonce is 32 zero
/// bits followed by the 64-bit counter, big-endian.
pub(crate) struct NoiseAesGcm {
    key: Option<PacketKey>,
}

impl NoiseAesGcm {
    pub(crate) fn new() -> Self {
        NoiseAesGcm { key: None }
    }

    fn nonce(counter: u64) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        nonce
    }
}

impl snow::types::Cipher for NoiseAesGcm {
    fn name(&self) -> &'static str {
        "AESGCM"
    }

    fn set(&mut self, key: &[u8; 32]) {
        self.key = Some(PacketKey::new(key));
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let len = plaintext.len();
        // snow sizes `out` as plaintext plus tag and sets a key before any use;
        // anything else is a caller bug that must not produce output.
        let (Some(key), Some(room)) = (self.key.as_ref(), out.get_mut(..len + TAG_LEN)) else {
            return 0;
        };
        let (body, tag_room) = room.split_at_mut(len);
        body.copy_from_slice(plaintext);
        match key.seal_detached(&Self::nonce(nonce), authtext, body) {
            Ok(tag) => {
                tag_room.copy_from_slice(&tag);
                len + TAG_LEN
            }
            Err(_) => 0,
        }
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let key = self.key.as_ref().ok_or(snow::Error::Decrypt)?;
        let len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let body = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        body.copy_from_slice(&ciphertext[..len]);
        let tag: &[u8; TAG_LEN] = ciphertext[len..]
            .try_into()
            .map_err(|_| snow::Error::Decrypt)?;
        key.open_detached(&Self::nonce(nonce), authtext, body, tag)
            .map_err(|_| snow::Error::Decrypt)?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(feature = "ring", feature = "rustcrypto"))]
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Vector {
        key: String,
        counter: u64,
        header: String,
        plaintext: String,
        packet: String,
    }

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn vectors() -> Vec<Vector> {
        let text = include_str!("../tests/data/transport_vectors.json");
        serde_json::from_str::<Vectors>(text).unwrap().vectors
    }

    fn key_of(v: &Vector) -> [u8; 32] {
        hex(&v.key).try_into().unwrap()
    }

    fn check_vectors<C: PacketCipher>() {
        let all = vectors();
        assert!(all.len() >= 8);
        for v in &all {
            let cipher = C::new(&key_of(v));
            let header = hex(&v.header);
            let plaintext = hex(&v.plaintext);
            let expected = hex(&v.packet);
            let mut packet = header.clone();
            packet.extend_from_slice(&plaintext);
            packet.extend_from_slice(&[0u8; TAG_LEN]);
            cipher
                .seal_in_place(Counter(v.counter), &mut packet)
                .unwrap();
            assert_eq!(packet, expected, "seal, counter {}", v.counter);
            let len = cipher
                .open_in_place(Counter(v.counter), &mut packet)
                .unwrap();
            assert_eq!(&packet[16..16 + len], &plaintext[..]);
            let mut wrong_counter = expected.clone();
            assert_eq!(
                cipher.open_in_place(Counter(v.counter + 1), &mut wrong_counter),
                Err(AeadError::Auth)
            );
        }
    }

    fn check_every_bit_position<C: PacketCipher>() {
        let all = vectors();
        let v = all.iter().find(|v| v.plaintext.len() == 2 * 128).unwrap();
        let cipher = C::new(&key_of(v));
        let expected = hex(&v.packet);
        for byte in 0..expected.len() {
            for bit in 0..8 {
                let mut tampered = expected.clone();
                tampered[byte] ^= 1 << bit;
                assert_eq!(
                    cipher.open_in_place(Counter(v.counter), &mut tampered),
                    Err(AeadError::Auth),
                    "byte {byte} bit {bit}"
                );
            }
        }
        for len in 0..TRANSPORT_HEADER_LEN + TAG_LEN {
            let mut short = expected[..len].to_vec();
            assert_eq!(
                cipher.open_in_place(Counter(v.counter), &mut short),
                Err(AeadError::TooShort)
            );
            assert_eq!(
                cipher.seal_in_place(Counter(v.counter), &mut short),
                Err(AeadError::TooShort)
            );
        }
        let mut truncated = expected[..expected.len() - 1].to_vec();
        assert_eq!(
            cipher.open_in_place(Counter(v.counter), &mut truncated),
            Err(AeadError::Auth)
        );
    }

    fn check_key_header_and_short_buffers<C: PacketCipher>() {
        for v in vectors() {
            let sealed = hex(&v.packet);
            let header = hex(&v.header);
            // Opening leaves the authenticated header exactly as it was.
            let mut packet = sealed.clone();
            C::new(&key_of(&v))
                .open_in_place(Counter(v.counter), &mut packet)
                .unwrap();
            assert_eq!(&packet[..TRANSPORT_HEADER_LEN], &header[..]);
            // Any other key fails.
            let mut other_key = key_of(&v);
            other_key[31] ^= 1;
            let mut packet = sealed.clone();
            assert_eq!(
                C::new(&other_key).open_in_place(Counter(v.counter), &mut packet),
                Err(AeadError::Auth)
            );
        }
        // Sealing a buffer too short for header and tag writes nothing.
        let cipher = C::new(&[3u8; 32]);
        for len in 0..TRANSPORT_HEADER_LEN + TAG_LEN {
            let mut short = vec![0xa5u8; len];
            assert_eq!(
                cipher.seal_in_place(Counter(0), &mut short),
                Err(AeadError::TooShort)
            );
            assert!(short.iter().all(|&b| b == 0xa5));
        }
    }

    #[cfg(feature = "ring")]
    #[test]
    fn ring_checks_key_keeps_header_and_refuses_short_buffers() {
        check_key_header_and_short_buffers::<RingCipher>();
    }

    #[cfg(feature = "rustcrypto")]
    #[test]
    fn rustcrypto_checks_key_keeps_header_and_refuses_short_buffers() {
        check_key_header_and_short_buffers::<RustCryptoCipher>();
    }

    #[test]
    fn packet_key_is_the_selected_backend() {
        let name = std::any::type_name::<PacketKey>();
        if cfg!(feature = "rustcrypto") {
            assert!(name.ends_with("RustCryptoCipher"), "{name}");
        } else {
            assert!(name.ends_with("RingCipher"), "{name}");
        }
    }

    #[cfg(feature = "ring")]
    #[test]
    fn ring_matches_the_independent_vectors() {
        check_vectors::<RingCipher>();
    }

    #[cfg(feature = "rustcrypto")]
    #[test]
    fn rustcrypto_matches_the_independent_vectors() {
        check_vectors::<RustCryptoCipher>();
    }

    #[cfg(feature = "ring")]
    #[test]
    fn ring_rejects_every_single_bit_flip() {
        check_every_bit_position::<RingCipher>();
    }

    #[cfg(feature = "rustcrypto")]
    #[test]
    fn rustcrypto_rejects_every_single_bit_flip() {
        check_every_bit_position::<RustCryptoCipher>();
    }

    #[cfg(all(feature = "ring", feature = "rustcrypto"))]
    proptest! {
        #[test]
        fn backends_agree_and_round_trip(
            key in any::<[u8; 32]>(),
            counter in any::<u64>(),
            header in any::<[u8; 16]>(),
            body in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let mut a = header.to_vec();
            a.extend_from_slice(&body);
            a.extend_from_slice(&[0u8; TAG_LEN]);
            let mut b = a.clone();
            RingCipher::new(&key).seal_in_place(Counter(counter), &mut a).unwrap();
            RustCryptoCipher::new(&key).seal_in_place(Counter(counter), &mut b).unwrap();
            prop_assert_eq!(&a, &b);
            let len = RustCryptoCipher::new(&key).open_in_place(Counter(counter), &mut a).unwrap();
            prop_assert_eq!(&a[16..16 + len], &body[..]);
            let len = RingCipher::new(&key).open_in_place(Counter(counter), &mut b).unwrap();
            prop_assert_eq!(&b[16..16 + len], &body[..]);
        }
    }
}
