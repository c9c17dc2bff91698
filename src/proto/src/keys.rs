//! Static X25519 identities: the public key that names a peer and the secret behind ours.
//!
//! Owns key types and their text form (lowercase hex, 64 characters). It must
//! never generate keys from a random source of its own: callers pass one in.

use core::fmt;
use core::str::FromStr;

use rand_core::{CryptoRng, RngCore};

use super::noise_crypto::x25519_public;

/// Bytes of an X25519 key.
pub const KEY_LEN: usize = 32;

/// A peer's static X25519 public key: its identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

/// Our static X25519 private key. Not `Debug`, not `Display`: it never reaches a log,
/// and its bytes are wiped when it is dropped.
#[derive(Clone)]
pub struct SecretKey([u8; KEY_LEN]);

impl Drop for SecretKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A static key pair.
#[derive(Clone)]
pub struct Keypair {
    /// The secret half; never printed.
    pub secret: SecretKey,
    /// The public half, the peer's identity.
    pub public: PublicKey,
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not 64 hex characters.
    BadLength(usize),
    /// Not 64 hexadecimal digits.
    BadHex,
    /// The all-zero key: a placeholder, never a real secret.
    AllZero,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::BadLength(n) => write!(f, "expected 64 hex characters, found {n}"),
            KeyError::BadHex => f.write_str("not hexadecimal"),
            KeyError::AllZero => f.write_str("the all-zero key is not a key"),
        }
    }
}

impl std::error::Error for KeyError {}

impl SecretKey {
    /// A secret key from its bytes; refuses the all-zero key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<SecretKey, KeyError> {
        if bytes == [0u8; KEY_LEN] {
            return Err(KeyError::AllZero);
        }
        Ok(SecretKey(bytes))
    }

    /// The raw bytes, for key files.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Hex text, for writing a key file. Callers must keep it out of logs.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// A secret key from 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<SecretKey, KeyError> {
        SecretKey::from_bytes(from_hex(text)?)
    }
}

impl Keypair {
    /// Generates a key pair from the caller's random source.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Keypair {
        loop {
            let mut secret = zeroize::Zeroizing::new([0u8; KEY_LEN]);
            rng.fill_bytes(&mut *secret);
            if let Ok(secret) = SecretKey::from_bytes(*secret) {
                return Keypair::from_secret(secret);
            }
        }
    }

    /// Derives the public half (X25519 scalar multiplication of the base point).
    pub fn from_secret(secret: SecretKey) -> Keypair {
        let public = x25519_public(secret.as_bytes());
        Keypair {
            secret,
            public: PublicKey(public),
        }
    }
}

impl PublicKey {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// The first 8 hex characters, for logs and tables.
    pub fn short(&self) -> String {
        to_hex(&self.0[..4])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = from_hex(text)?;
        if bytes == [0u8; KEY_LEN] {
            return Err(KeyError::AllZero);
        }
        Ok(PublicKey(bytes))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn from_hex(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let text = text.trim();
    if text.len() != KEY_LEN * 2 {
        return Err(KeyError::BadLength(text.len()));
    }
    let mut out = [0u8; KEY_LEN];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = text.get(2 * i..2 * i + 2).ok_or(KeyError::BadHex)?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| KeyError::BadHex)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn rfc7748_public_key_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let secret =
            SecretKey::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap();
        let pair = Keypair::from_secret(secret);
        assert_eq!(
            pair.public.to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn zero_keys_are_refused() {
        assert_eq!(
            SecretKey::from_bytes([0; 32]).err(),
            Some(KeyError::AllZero)
        );
        assert_eq!("00".repeat(32).parse::<PublicKey>(), Err(KeyError::AllZero));
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let pair = Keypair::generate(&mut ChaCha20Rng::seed_from_u64(1));
        assert_eq!(pair.public.to_hex().parse::<PublicKey>(), Ok(pair.public));
        assert_eq!("abc".parse::<PublicKey>(), Err(KeyError::BadLength(3)));
        assert_eq!("zz".repeat(32).parse::<PublicKey>(), Err(KeyError::BadHex));
        assert_eq!("é".repeat(32).parse::<PublicKey>(), Err(KeyError::BadHex));
    }
}
