//! The primitives snow runs the handshake on: X25519 (curve25519-dalek), SHA-256
//! (sha2) and AES-256-GCM from the compiled AEAD backend, so the handshake and the
//! data path share one AES-GCM implementation and nothing here reads the
//! operating system's randomness: ephemeral keys come from a seed the endpoint
//! drew from its injected RNG, so tests replay handshakes byte for byte.

use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::{Zeroize, Zeroizing};

use super::aead::NoiseAesGcm;
use super::keys::KEY_LEN;

/// The X25519 public key of `secret`.
pub(crate) fn x25519_public(secret: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    MontgomeryPoint::mul_base_clamped(*secret).to_bytes()
}

/// Resolves exactly the primitives of `Noise_XX_25519_AESGCM_SHA256`.
pub(crate) struct SeededResolver {
    seed: Zeroizing<[u8; 32]>,
}

impl SeededResolver {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        SeededResolver {
            seed: Zeroizing::new(seed),
        }
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(*self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519::default())),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        match choice {
            HashChoice::SHA256 => Some(Box::new(Sha256Hash(Sha256::new()))),
            _ => None,
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::AESGCM => Some(Box::new(NoiseAesGcm::new())),
            _ => None,
        }
    }
}

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// An X25519 key pair; the private half is wiped on drop.
#[derive(Default)]
struct X25519 {
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

impl X25519 {
    fn set_private(&mut self, private: [u8; KEY_LEN]) {
        self.private = private;
        self.public = x25519_public(&self.private);
    }
}

impl Drop for X25519 {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        let mut private = [0u8; KEY_LEN];
        let len = privkey.len().min(KEY_LEN);
        private[..len].copy_from_slice(&privkey[..len]);
        self.set_private(private);
        private.zeroize();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut private = Zeroizing::new([0u8; KEY_LEN]);
        rng.try_fill_bytes(&mut *private)?;
        self.set_private(*private);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let public: [u8; KEY_LEN] = pubkey
            .get(..KEY_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = Zeroizing::new(MontgomeryPoint(public).mul_clamped(self.private).to_bytes());
        let out = out.get_mut(..KEY_LEN).ok_or(snow::Error::Dh)?;
        out.copy_from_slice(&*shared);
        Ok(())
    }
}

struct Sha256Hash(Sha256);

impl Hash for Sha256Hash {
    fn name(&self) -> &'static str {
        "SHA256"
    }

    fn block_len(&self) -> usize {
        64
    }

    fn hash_len(&self) -> usize {
        32
    }

    fn reset(&mut self) {
        self.0 = Sha256::new();
    }

    fn input(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn result(&mut self, out: &mut [u8]) {
        let digest = self.0.finalize_reset();
        if let Some(out) = out.get_mut(..digest.len()) {
            out.copy_from_slice(&digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748 section 6.1: Alice's and Bob's keys and their shared secret.
    #[test]
    fn x25519_matches_rfc7748() {
        let hex = |s: &str| -> [u8; 32] {
            let v: Vec<u8> = (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect();
            v.try_into().unwrap()
        };
        let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let alice_pub = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let bob_pub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(x25519_public(&alice), alice_pub);
        assert_eq!(x25519_public(&bob), bob_pub);
        let mut dh = X25519::default();
        dh.set(&alice);
        let mut out = [0u8; 32];
        dh.dh(&bob_pub, &mut out).unwrap();
        assert_eq!(out, shared);
    }

    /// FIPS 180-2's "abc".
    #[test]
    fn sha256_matches_the_standard() {
        let mut hash = Sha256Hash(Sha256::new());
        hash.input(b"abc");
        let mut out = [0u8; 32];
        hash.result(&mut out);
        assert_eq!(
            out[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(abc) begins ba7816bf"
        );
    }
}
