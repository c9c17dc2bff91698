//! The Noise XX handshake (Noise_XX_25519_AESGCM_SHA256 through `snow`) framed in intentra packets.
//!
//! Owns the three handshake messages: building and reading them, mac1 and mac2
//! on the first, the allow-list-free identity check on the second, and the key
//! split. It must never decide policy (budgets, cookies under load, allow-lists)
//! and never draw randomness itself: each handshake is handed a seed, so tests
//! replay handshakes byte for byte.

use super::cookie;
use super::keys::{Keypair, PublicKey, KEY_LEN};
use super::noise_crypto::SeededResolver;
use super::wire::{
    self, finish, init, response, PacketType, SessionIndex, MAC_LEN, MSG2_PAYLOAD_LEN,
    MSG3_PAYLOAD_LEN, WINDOW_LEN,
};

/// The Noise protocol name, as PROTOCOL.md states it.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_AESGCM_SHA256";
/// Bound into the handshake hash so that a peer of another protocol or version cannot complete it.
pub const PROLOGUE: &[u8] = b"intentra v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// snow rejected the message (bad ephemeral, failed decryption, wrong state).
    Noise,
    /// The responder's static key is not the one we meant to reach.
    UnexpectedPeer,
    /// The peer presented no static key (cannot happen with XX, checked anyway).
    MissingStatic,
}

/// The first encrypted payload byte of HandshakeFinish: does the initiator continue a session
/// the responder already has (keeping its Reliable streams), or start afresh?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishIntent {
    /// A fresh session: the responder resets its Reliable streams.
    NewSession = 0,
    /// New keys for the session the responder already has.
    Rekey = 1,
}

impl FinishIntent {
    fn from_byte(byte: u8) -> Option<FinishIntent> {
        match byte {
            0 => Some(FinishIntent::NewSession),
            1 => Some(FinishIntent::Rekey),
            _ => None,
        }
    }
}

/// Encodes a receive-window advertisement (PROTOCOL.md 4.6): bytes, u32 LE. A bound
/// above `u32::MAX` cannot be configured usefully (at most `MAX_QUEUE_BYTES` is used), so
/// it saturates.
fn encode_window(bytes: usize) -> [u8; WINDOW_LEN] {
    u32::try_from(bytes).unwrap_or(u32::MAX).to_le_bytes()
}

/// Reads an advertisement: every value is valid; the sender treats values above
/// `MAX_QUEUE_BYTES` as that (`ReliableSender::set_peer_window`).
fn decode_window(bytes: &[u8]) -> Option<usize> {
    let raw: [u8; WINDOW_LEN] = bytes.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

/// The transport keys of one session, as seen by one side.
pub struct SessionKeys {
    /// Key for packets we seal.
    pub send: [u8; KEY_LEN],
    /// Key for packets we open.
    pub recv: [u8; KEY_LEN],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.send);
        zeroize::Zeroize::zeroize(&mut self.recv);
    }
}

/// An initiator between sending HandshakeInit and reading HandshakeResponse.
pub struct Initiator {
    state: snow::HandshakeState,
    remote: PublicKey,
    mac1_key: [u8; 32],
    packet: [u8; init::LEN],
    /// What the ephemeral key was drawn from, kept (and wiped on drop) so that the very same
    /// HandshakeInit can be rebuilt after a failed read left `state` unusable.
    seed: zeroize::Zeroizing<[u8; 32]>,
    sender: SessionIndex,
}

impl Initiator {
    /// Builds the HandshakeInit for `remote`, our `sender` index and the handshake's `seed`.
    pub fn start(
        local: &Keypair,
        remote: &PublicKey,
        sender: SessionIndex,
        seed: [u8; 32],
    ) -> Result<Initiator, HandshakeError> {
        let mut state = builder(seed)
            .local_private_key(local.secret.as_bytes())
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_initiator())
            .map_err(|_| HandshakeError::Noise)?;
        let mut packet = [0u8; init::LEN];
        wire::write_prefix(&mut packet, PacketType::HandshakeInit);
        packet[init::SENDER..init::NOISE].copy_from_slice(&sender.get().to_le_bytes());
        write_noise(&mut state, &[], &mut packet[init::NOISE..init::PADDING])?;
        let mac1_key = cookie::mac1_key(remote);
        let mac1 = cookie::mac(&mac1_key, &packet[..init::MAC1]);
        packet[init::MAC1..init::MAC2].copy_from_slice(&mac1);
        Ok(Initiator {
            state,
            remote: *remote,
            mac1_key,
            packet,
            seed: zeroize::Zeroizing::new(seed),
            sender,
        })
    }

    /// The same handshake from its start: the same ephemeral key, index and HandshakeInit
    /// bytes. A HandshakeResponse that fails to read (forged, or from a responder with
    /// another key) must not change what we retransmit (PROTOCOL.md 4.4).
    pub fn again(&self, local: &Keypair) -> Result<Initiator, HandshakeError> {
        Initiator::start(local, &self.remote, self.sender, *self.seed)
    }

    /// The HandshakeInit to (re)send, with mac2 computed from `cookie` when we hold one.
    pub fn init_packet(&mut self, cookie: Option<&[u8; wire::COOKIE_LEN]>) -> &[u8; init::LEN] {
        let mac2 = match cookie {
            Some(cookie) => cookie::mac(cookie, &self.packet[..init::MAC2]),
            None => [0u8; MAC_LEN],
        };
        self.packet[init::MAC2..].copy_from_slice(&mac2);
        &self.packet
    }

    /// The mac1 of our HandshakeInit: the associated data of a cookie reply to it.
    pub fn mac1(&self) -> [u8; MAC_LEN] {
        let mut mac1 = [0u8; MAC_LEN];
        mac1.copy_from_slice(&self.packet[init::MAC1..init::MAC2]);
        mac1
    }

    /// The key of mac1 on packets to this responder.
    pub fn mac1_key(&self) -> &[u8; 32] {
        &self.mac1_key
    }

    /// Reads HandshakeResponse, checks the responder is who we asked for, and writes
    /// HandshakeFinish addressed to `responder_index`, advertising our Reliable receive
    /// `window` in bytes. Also returns the responder's advertised window.
    pub fn finish(
        mut self,
        response_packet: &[u8],
        responder_index: SessionIndex,
        intent: FinishIntent,
        window: usize,
    ) -> Result<([u8; finish::LEN], SessionKeys, usize), HandshakeError> {
        let noise = response_packet
            .get(response::NOISE..response::LEN)
            .ok_or(HandshakeError::Noise)?;
        let mut payload = [0u8; 64];
        let payload_len = self
            .state
            .read_message(noise, &mut payload)
            .map_err(|_| HandshakeError::Noise)?;
        let remote = remote_static(&self.state)?;
        if remote != self.remote {
            return Err(HandshakeError::UnexpectedPeer);
        }
        // The packet length is fixed, so only a peer that encrypted another payload
        // length into it gets here: refused, like any other malformed handshake.
        let peer_window = payload
            .get(..payload_len)
            .filter(|p| p.len() == MSG2_PAYLOAD_LEN)
            .and_then(decode_window)
            .ok_or(HandshakeError::Noise)?;
        let mut packet = [0u8; finish::LEN];
        wire::write_prefix(&mut packet, PacketType::HandshakeFinish);
        packet[finish::RECEIVER..finish::NOISE]
            .copy_from_slice(&responder_index.get().to_le_bytes());
        let mut msg3_payload = [0u8; MSG3_PAYLOAD_LEN];
        msg3_payload[0] = intent as u8;
        msg3_payload[1..].copy_from_slice(&encode_window(window));
        write_noise(&mut self.state, &msg3_payload, &mut packet[finish::NOISE..])?;
        if !self.state.is_handshake_finished() {
            return Err(HandshakeError::Noise);
        }
        let (initiator_to_responder, responder_to_initiator) =
            self.state.dangerously_get_raw_split();
        Ok((
            packet,
            SessionKeys {
                send: initiator_to_responder,
                recv: responder_to_initiator,
            },
            peer_window,
        ))
    }
}

/// A responder between sending HandshakeResponse and reading HandshakeFinish.
pub struct Responder {
    state: snow::HandshakeState,
    packet: [u8; response::LEN],
}

impl Responder {
    /// Reads a HandshakeInit whose mac1 (and cookie, if required) the caller has checked,
    /// and writes the HandshakeResponse from `local_index` to the initiator's index,
    /// advertising our Reliable receive `window` in bytes.
    pub fn accept(
        local: &Keypair,
        init_packet: &[u8],
        initiator_index: SessionIndex,
        local_index: SessionIndex,
        seed: [u8; 32],
        window: usize,
    ) -> Result<Responder, HandshakeError> {
        let mut state = builder(seed)
            .local_private_key(local.secret.as_bytes())
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_responder())
            .map_err(|_| HandshakeError::Noise)?;
        let noise = init_packet
            .get(init::NOISE..init::PADDING)
            .ok_or(HandshakeError::Noise)?;
        let mut payload = [0u8; 64];
        state
            .read_message(noise, &mut payload)
            .map_err(|_| HandshakeError::Noise)?;
        let mut packet = [0u8; response::LEN];
        wire::write_prefix(&mut packet, PacketType::HandshakeResponse);
        packet[response::SENDER..response::RECEIVER]
            .copy_from_slice(&local_index.get().to_le_bytes());
        packet[response::RECEIVER..response::NOISE]
            .copy_from_slice(&initiator_index.get().to_le_bytes());
        write_noise(
            &mut state,
            &encode_window(window),
            &mut packet[response::NOISE..],
        )?;
        Ok(Responder { state, packet })
    }

    /// The HandshakeResponse, kept so a retransmitted HandshakeInit gets the same answer.
    pub fn response_packet(&self) -> &[u8; response::LEN] {
        &self.packet
    }

    /// Reads HandshakeFinish: returns the initiator's static key, the session keys, the
    /// intent and the initiator's advertised receive window in bytes.
    pub fn finish(
        mut self,
        finish_packet: &[u8],
    ) -> Result<(PublicKey, SessionKeys, FinishIntent, usize), HandshakeError> {
        let noise = finish_packet
            .get(finish::NOISE..finish::LEN)
            .ok_or(HandshakeError::Noise)?;
        let mut payload = [0u8; 64];
        let payload_len = self
            .state
            .read_message(noise, &mut payload)
            .map_err(|_| HandshakeError::Noise)?;
        if !self.state.is_handshake_finished() || payload_len != MSG3_PAYLOAD_LEN {
            return Err(HandshakeError::Noise);
        }
        let intent = FinishIntent::from_byte(payload[0]).ok_or(HandshakeError::Noise)?;
        let window = decode_window(&payload[1..MSG3_PAYLOAD_LEN]).ok_or(HandshakeError::Noise)?;
        let remote = remote_static(&self.state)?;
        let (initiator_to_responder, responder_to_initiator) =
            self.state.dangerously_get_raw_split();
        Ok((
            remote,
            SessionKeys {
                send: responder_to_initiator,
                recv: initiator_to_responder,
            },
            intent,
            window,
        ))
    }
}

/// Writes one Noise message that must fill `out` exactly. snow wants room beyond the
/// message itself, so it writes into scratch space first.
fn write_noise(
    state: &mut snow::HandshakeState,
    payload: &[u8],
    out: &mut [u8],
) -> Result<(), HandshakeError> {
    let mut scratch = [0u8; 256];
    let written = state
        .write_message(payload, &mut scratch)
        .map_err(|_| HandshakeError::Noise)?;
    if written != out.len() {
        return Err(HandshakeError::Noise);
    }
    out.copy_from_slice(&scratch[..written]);
    Ok(())
}

fn remote_static(state: &snow::HandshakeState) -> Result<PublicKey, HandshakeError> {
    let bytes = state
        .get_remote_static()
        .ok_or(HandshakeError::MissingStatic)?;
    let mut key = [0u8; KEY_LEN];
    if bytes.len() != KEY_LEN {
        return Err(HandshakeError::MissingStatic);
    }
    key.copy_from_slice(bytes);
    Ok(PublicKey(key))
}

fn builder(seed: [u8; 32]) -> snow::Builder<'static> {
    let params = NOISE_PARAMS
        .parse()
        .expect("NOISE_PARAMS is a valid Noise protocol name");
    snow::Builder::with_resolver(params, Box::new(SeededResolver::new(seed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn pair(seed: u64) -> Keypair {
        Keypair::generate(&mut ChaCha20Rng::seed_from_u64(seed))
    }

    fn index(raw: u32) -> SessionIndex {
        SessionIndex::new(raw).unwrap()
    }

    #[test]
    fn xx_completes_and_keys_cross() {
        let (a, b) = (pair(1), pair(2));
        let mut initiator = Initiator::start(&a, &b.public, index(11), [1; 32]).unwrap();
        let init_packet = *initiator.init_packet(None);
        assert!(wire::parse_header(&init_packet).is_ok());
        assert!(cookie::verify_mac(
            &cookie::mac1_key(&b.public),
            &init_packet[..init::MAC1],
            &init_packet[init::MAC1..init::MAC2]
        ));
        let responder =
            Responder::accept(&b, &init_packet, index(11), index(22), [2; 32], 700).unwrap();
        let response_packet = *responder.response_packet();
        assert!(wire::parse_header(&response_packet).is_ok());
        let (finish_packet, init_keys, responder_window) = initiator
            .finish(&response_packet, index(22), FinishIntent::Rekey, 90_000)
            .unwrap();
        assert!(wire::parse_header(&finish_packet).is_ok());
        let (seen, resp_keys, intent, initiator_window) = responder.finish(&finish_packet).unwrap();
        assert_eq!((responder_window, initiator_window), (700, 90_000));
        assert_eq!(seen, a.public);
        assert_eq!(intent, FinishIntent::Rekey);
        assert_eq!(init_keys.send, resp_keys.recv);
        assert_eq!(init_keys.recv, resp_keys.send);
        assert_ne!(init_keys.send, init_keys.recv);
    }

    #[test]
    fn same_seeds_replay_byte_for_byte() {
        let (a, b) = (pair(1), pair(2));
        let first = *Initiator::start(&a, &b.public, index(5), [9; 32])
            .unwrap()
            .init_packet(None);
        let second = *Initiator::start(&a, &b.public, index(5), [9; 32])
            .unwrap()
            .init_packet(None);
        let other = *Initiator::start(&a, &b.public, index(5), [8; 32])
            .unwrap()
            .init_packet(None);
        assert_eq!(first, second);
        assert_ne!(first[..init::PADDING], other[..init::PADDING]);
    }

    #[test]
    fn initiator_refuses_an_unexpected_responder() {
        let (a, b, mallory) = (pair(1), pair(2), pair(3));
        let mut initiator = Initiator::start(&a, &b.public, index(1), [1; 32]).unwrap();
        let init_packet = *initiator.init_packet(None);
        let responder =
            Responder::accept(&mallory, &init_packet, index(1), index(2), [2; 32], 512).unwrap();
        let result = initiator.finish(
            responder.response_packet(),
            index(2),
            FinishIntent::NewSession,
            512,
        );
        assert!(matches!(result, Err(HandshakeError::UnexpectedPeer)));
    }

    #[test]
    fn tampered_messages_fail_without_panicking() {
        let (a, b) = (pair(1), pair(2));
        for byte in [response::NOISE, response::NOISE + 40, response::LEN - 1] {
            let mut initiator = Initiator::start(&a, &b.public, index(1), [1; 32]).unwrap();
            let init_packet = *initiator.init_packet(None);
            let responder =
                Responder::accept(&b, &init_packet, index(1), index(2), [2; 32], 512).unwrap();
            let mut response_packet = *responder.response_packet();
            response_packet[byte] ^= 1;
            assert!(initiator
                .finish(&response_packet, index(2), FinishIntent::NewSession, 512)
                .is_err());
        }
        let mut initiator = Initiator::start(&a, &b.public, index(1), [1; 32]).unwrap();
        let init_packet = *initiator.init_packet(None);
        let responder =
            Responder::accept(&b, &init_packet, index(1), index(2), [2; 32], 512).unwrap();
        let (mut finish_packet, _, _) = initiator
            .finish(
                responder.response_packet(),
                index(2),
                FinishIntent::NewSession,
                512,
            )
            .unwrap();
        finish_packet[finish::LEN - 1] ^= 0x80;
        assert!(responder.finish(&finish_packet).is_err());
        assert!(Responder::accept(&b, &[0u8; 10], index(1), index(2), [2; 32], 512).is_err());
    }
}
