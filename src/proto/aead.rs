//! INTERIM: replaced by the real module when its branch merges. Not for release.
use super::wire::Counter;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadError {
    TooShort,
    Auth,
}
pub trait PacketCipher: Sized {
    fn new(key: &[u8; 32]) -> Self;
    fn seal_in_place(&self, counter: Counter, packet: &mut [u8]) -> Result<(), AeadError>;
    fn open_in_place(&self, counter: Counter, packet: &mut [u8]) -> Result<usize, AeadError>;
}
pub struct RingCipher(LessSafeKey);
impl PacketCipher for RingCipher {
    fn new(key: &[u8; 32]) -> Self {
        RingCipher(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key).unwrap(),
        ))
    }
    fn seal_in_place(&self, counter: Counter, packet: &mut [u8]) -> Result<(), AeadError> {
        if packet.len() < 32 {
            return Err(AeadError::TooShort);
        }
        let n = packet.len();
        let (header, rest) = packet.split_at_mut(16);
        let (body, tag) = rest.split_at_mut(n - 32);
        let t = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(counter.nonce()),
                Aad::from(&*header),
                body,
            )
            .map_err(|_| AeadError::Auth)?;
        tag.copy_from_slice(t.as_ref());
        Ok(())
    }
    fn open_in_place(&self, counter: Counter, packet: &mut [u8]) -> Result<usize, AeadError> {
        if packet.len() < 32 {
            return Err(AeadError::TooShort);
        }
        let (header, rest) = packet.split_at_mut(16);
        let out = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(counter.nonce()),
                Aad::from(&*header),
                rest,
            )
            .map_err(|_| AeadError::Auth)?;
        Ok(out.len())
    }
}
pub type PacketKey = RingCipher;
